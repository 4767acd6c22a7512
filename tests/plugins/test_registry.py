from __future__ import annotations

import sys
import types
import warnings

import pytest
import torch

import protoreg
from protoreg.errors import PluginError
from protoreg.plugins.registry import PluginLoadWarning, collect_datasets, collect_losses, get_plugin_manager

from helpers import fake_entry_points, make_plugin_module


class Pull(protoreg.StructuralLoss):
    """Test attractor."""

    name = "pull"
    role = "attractor"
    defaults = {"tau": 1.0}

    def __call__(self, ctx, *, tau):
        return ctx.prototypes.pow(2).sum(dim=(1, 2)) * tau


def test_builtins_are_registered_like_plugins(no_autoload):
    losses = collect_losses(get_plugin_manager())
    assert list(losses) == ["coverage", "separation", "overlap"]
    assert losses["coverage"].loss.role == "attractor"
    assert losses["separation"].loss.pairs_with == ("coverage",)
    assert "built-in" in losses["overlap"].source
    assert {"uniform", "file"} <= set(collect_datasets(get_plugin_manager()))


def test_inline_plugin(no_autoload):
    pm = get_plugin_manager()
    pm.register(make_plugin_module("inline", Pull()), name="inline")
    losses = collect_losses(pm)
    assert losses["pull"].loss.defaults == {"tau": 1.0}


def test_faked_entry_point_loads_with_its_distribution(monkeypatch):
    mod = make_plugin_module("fake_pull_plugin", Pull())
    monkeypatch.setitem(sys.modules, "fake_pull_plugin", mod)
    fake_entry_points(monkeypatch, [("pull", "fake_pull_plugin", "pull-dist")])
    losses = collect_losses(get_plugin_manager())
    assert "pull" in losses and "pull-dist 1.0" in losses["pull"].source


def test_autoload_can_be_disabled(monkeypatch):
    monkeypatch.setitem(sys.modules, "fake_pull_plugin", make_plugin_module("fake_pull_plugin", Pull()))
    fake_entry_points(monkeypatch, [("pull", "fake_pull_plugin", "pull-dist")])
    monkeypatch.setenv("PROTOREG_DISABLE_PLUGIN_AUTOLOAD", "1")
    assert "pull" not in collect_losses(get_plugin_manager())


def test_broken_entry_point_warns_once_and_others_load(monkeypatch):
    monkeypatch.setitem(sys.modules, "fake_pull_plugin", make_plugin_module("fake_pull_plugin", Pull()))
    fake_entry_points(monkeypatch, [("broken", "no_such_module_xyz", "broken-dist"), ("pull", "fake_pull_plugin", "pull-dist")])
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        pm = get_plugin_manager()
    msgs = [str(w.message) for w in rec if issubclass(w.category, PluginLoadWarning)]
    assert len(msgs) == 1 and "'broken'" in msgs[0] and "broken-dist" in msgs[0]
    assert "pull" in collect_losses(pm)
    monkeypatch.setenv("PROTOREG_STRICT_PLUGINS", "1")
    with pytest.raises(PluginError, match="broken-dist"):
        get_plugin_manager()


def test_duplicate_name_names_both_sources(monkeypatch):
    class Fake(Pull):
        name = "coverage"

    monkeypatch.setitem(sys.modules, "fake_dup", make_plugin_module("fake_dup", Fake()))
    fake_entry_points(monkeypatch, [("dup", "fake_dup", "dup-dist")])
    with pytest.raises(PluginError) as ei:
        collect_losses(get_plugin_manager())
    msg = str(ei.value)
    assert "'coverage'" in msg and "built-in" in msg and "dup-dist" in msg


@pytest.mark.parametrize(
    "attrs,needle",
    [
        ({"name": "bad name"}, "identifier"),
        ({"role": "pusher"}, "role"),
        ({"pairs_with": ("coverage",)}, "only repulsors"),
        ({"defaults": {"weight": 1.0}}, "reserved"),
        ({"defaults": {"tau": -1.0}}, "> 0"),
    ],
)
def test_malformed_losses_are_rejected(no_autoload, attrs, needle):
    bad = type("Bad", (Pull,), attrs)()
    pm = get_plugin_manager()
    pm.register(make_plugin_module("m", bad), name="m")
    with pytest.raises(PluginError, match=needle):
        collect_losses(pm)


def test_registering_a_class_instead_of_instance(no_autoload):
    mod = types.ModuleType("cls")

    @protoreg.hookimpl
    def protoreg_register_losses(register):
        register(Pull)

    mod.protoreg_register_losses = protoreg_register_losses
    pm = get_plugin_manager()
    pm.register(mod, name="cls")
    with pytest.raises(PluginError, match="instance"):
        collect_losses(pm)


def test_public_api_is_small():
    assert {"StructuralLoss", "LossContext", "hookimpl"} <= set(protoreg.__all__)
    ctx = protoreg.LossContext(
        x=torch.zeros(3, 2, 1), y=torch.zeros(3, 2, 1), hidden=torch.zeros(3, 2, 4), pred=torch.zeros(3, 2, 1),
        prototypes=torch.zeros(3, 4, 1), spacing=torch.ones(3), model=torch.nn.Identity(),
    )
    assert ctx.per_run(0.5, 3).shape == (3, 1, 1)
    assert ctx.select(torch.tensor([0, 2])).x.shape == (2, 2, 1)


def test_misspelled_hook_skips_only_that_plugin(monkeypatch):
    bad = types.ModuleType("fake_typo")

    @protoreg.hookimpl
    def protoreg_register_loss(register):  # missing "es": not a protoreg hook
        pass

    bad.protoreg_register_loss = protoreg_register_loss
    monkeypatch.setitem(sys.modules, "fake_typo", bad)
    monkeypatch.setitem(sys.modules, "fake_pull_plugin", make_plugin_module("fake_pull_plugin", Pull()))
    fake_entry_points(monkeypatch, [("typo", "fake_typo", "typo-dist"), ("pull", "fake_pull_plugin", "pull-dist")])
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        losses = collect_losses(get_plugin_manager())
    msgs = [str(w.message) for w in rec if issubclass(w.category, PluginLoadWarning)]
    assert len(msgs) == 1 and "typo-dist" in msgs[0] and "protoreg_register_loss" in msgs[0]
    assert "pull" in losses
