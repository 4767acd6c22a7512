from __future__ import annotations

import warnings

import pytest

from protoreg.config import load_config, loss_settings, resolved, validate
from protoreg.errors import ConfigError
from protoreg.plugins.pairing import PairingWarning, check_active
from protoreg.plugins.registry import collect_datasets, collect_losses, get_plugin_manager


@pytest.fixture
def reg(no_autoload):
    pm = get_plugin_manager()
    return collect_losses(pm), collect_datasets(pm)


def check(reg, *overrides, file=None):
    cfg = load_config(file, list(overrides))
    validate(cfg, *reg)
    return cfg


def test_defaults_file_then_overrides(tmp_path, reg):
    f = tmp_path / "c.yaml"
    f.write_text("data:\n  n: 30\ntrain:\n  lr: 0.05\n")
    cfg = check(reg, "train.lr=0.2", file=f)
    assert cfg.data.n == 30 and cfg.train.lr == 0.2 and cfg.train.steps == 2000
    assert cfg.losses.coverage.weight == 0.1  # the embedded default turns coverage on


@pytest.mark.parametrize(
    "override,needle",
    [
        ("data.n=1", "data.n: must be >= 2"),
        ("data.n=abc", "data.n"),
        ("data.bogus=1", "data.bogus"),
        ("train.lr=0", "train.lr: must be > 0"),
        ("train.lr=-1", "train.lr: must be > 0"),
        ("train.steps=0", "train.steps"),
        ("losses.separation.tau=0", "losses.separation.tau: must be > 0"),
        ("losses.coverage.tau=-2", "losses.coverage.tau: must be > 0"),
        ("losses.nosuch.weight=1", "losses.nosuch: unknown loss 'nosuch'"),
        ("losses.coverage.sigma=1", "losses.coverage.sigma: unknown parameter"),
        ("losses.coverage.weight=-1", "losses.coverage.weight"),
        ("losses.coverage.tau=abc", "losses.coverage.tau: expected a number"),
        ("model.parameterization=affine data.dim=2", "model.parameterization"),
        ("model.width=0", "model.width"),
        ("geometry.on_expulsion=explode", "geometry.on_expulsion"),
        ("geometry.margin=-0.1", "geometry.margin: must be a finite number >= 0"),
        ("geometry.margin=nan", "geometry.margin: must be a finite number >= 0"),
        ("geometry.margin=inf", "geometry.margin: must be a finite number >= 0"),
        ("geometry.margin=abc", "geometry.margin"),
        ("geometry.rel_tol=0", "geometry.rel_tol: must be a finite number > 0"),
        ("geometry.rel_tol=nan", "geometry.rel_tol: must be a finite number > 0"),
        ("trainer.max_steps=5", "trainer.max_steps: set by protoreg; use train.steps"),
        ("trainer.no_such_arg=1", "trainer.no_such_arg"),
        ("data.name=nosuch", "data.name: unknown dataset"),
        ("nonsense", "expected KEY=VALUE"),
    ],
)
def test_bad_values_name_the_dotted_key(reg, override, needle):
    with pytest.raises(ConfigError) as ei:
        check(reg, *override.split())
    assert needle in str(ei.value)
    assert "\n" not in str(ei.value)


def test_all_problems_reported_together(reg):
    with pytest.raises(ConfigError) as ei:
        check(reg, "data.n=1", "train.lr=0", "losses.separation.tau=0")
    msg = str(ei.value)
    assert "data.n" in msg and "train.lr" in msg and "losses.separation.tau" in msg


def test_bad_yaml_names_the_file(tmp_path, reg):
    f = tmp_path / "bad.yaml"
    f.write_text("data: [unclosed\n")
    with pytest.raises(ConfigError, match="bad.yaml"):
        check(reg, file=f)
    g = tmp_path / "typo.yaml"
    g.write_text("dataa:\n  n: 3\n")
    with pytest.raises(ConfigError, match="typo.yaml.*dataa"):
        check(reg, file=g)
    with pytest.raises(ConfigError, match="not found"):
        check(reg, file=tmp_path / "missing.yaml")


def test_resolved_config_fills_loss_defaults(reg):
    cfg = check(reg, "losses.separation.weight=0.5")
    out = resolved(cfg, reg[0])
    assert out.losses.separation.tau == 0.1 and out.losses.coverage.tau == 1.0
    assert loss_settings(cfg, reg[0])["separation"] == {"weight": 0.5, "tau": 0.1}


def test_pairing_warns_and_strict_errors(reg):
    losses = reg[0]
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        problems = check_active(["separation", "overlap"], losses, strict=False)
    msgs = [str(w.message) for w in rec if issubclass(w.category, PairingWarning)]
    assert len(problems) == 2 and len(msgs) == 2
    assert all("no compatible attractor" in m for m in msgs)
    assert "'separation'" in msgs[0] and "'coverage'" in msgs[0]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert check_active(["coverage", "separation", "overlap"], losses, strict=False) == []
    with pytest.raises(ConfigError, match="pairing.strict.*no compatible attractor"):
        check_active(["overlap"], losses, strict=True)
