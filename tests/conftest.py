from __future__ import annotations

import functools
import importlib.metadata
import os
import sys
import types
import warnings
from pathlib import Path
from typing import Any, Callable

import pytest
import torch
from hypothesis import settings

import protoreg

# Tests run on CPU with small sizes; a couple of threads is plenty and keeps timings stable.
torch.set_num_threads(min(2, os.cpu_count() or 1))

# Property tests draw the same examples on every run (a test suite that passes once passes
# again); `HYPOTHESIS_PROFILE=explore python -m pytest tests/test_fuzz.py` searches new ones.
settings.register_profile("repeatable", derandomize=True, database=None)
settings.register_profile("explore", derandomize=False)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "repeatable"))


@pytest.fixture
def no_autoload(monkeypatch: pytest.MonkeyPatch) -> None:
    """Only built-in plugins: installed third-party distributions are not loaded."""
    monkeypatch.setenv("PROTOREG_DISABLE_PLUGIN_AUTOLOAD", "1")


@pytest.fixture
def fast() -> list[str]:
    """Overrides for a quick CPU fit."""
    return ["data.n=8", "train.steps=40", "train.log_every_n_steps=10", "geometry.every_n_steps=20", "trainer.accelerator=cpu"]


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


warnings.filterwarnings("ignore", message=".*LeafSpec.*")


def make_plugin_module(name: str, *losses: protoreg.StructuralLoss) -> types.ModuleType:
    """A plugin module registering ``losses`` through the hook, as a third party would."""
    mod = types.ModuleType(name)

    @protoreg.hookimpl
    def protoreg_register_losses(register):  # type: ignore[no-untyped-def]
        for loss in losses:
            register(loss)

    mod.protoreg_register_losses = protoreg_register_losses  # type: ignore[attr-defined]
    return mod


class FakeDist:
    def __init__(self, name: str, version: str = "1.0") -> None:
        self.name, self.version = name, version


def fake_entry_points(monkeypatch: pytest.MonkeyPatch, eps: list[tuple[str, str, str]]) -> None:
    """Make importlib.metadata list the given (name, module, dist) entry points of group protoreg."""
    objs = [importlib.metadata.EntryPoint(n, m, "protoreg")._for(FakeDist(d)) for n, m, d in eps]  # type: ignore[attr-defined]

    def entry_points(**kw):  # type: ignore[no-untyped-def]
        return importlib.metadata.EntryPoints(objs if kw.get("group") == "protoreg" else [])

    monkeypatch.setattr(importlib.metadata, "entry_points", entry_points)
    monkeypatch.delenv("PROTOREG_DISABLE_PLUGIN_AUTOLOAD", raising=False)


@pytest.fixture
def install_plugin(monkeypatch: pytest.MonkeyPatch) -> Callable[..., None]:
    """``install_plugin(*losses, dist="x-dist")``: expose losses as an installed distribution's
    entry point (and only that one)."""

    def install(*losses: protoreg.StructuralLoss, dist: str = "test-plugin") -> None:
        modname = f"_protoreg_test_plugin_{dist.replace('-', '_')}"
        monkeypatch.setitem(sys.modules, modname, make_plugin_module(modname, *losses))
        fake_entry_points(monkeypatch, [(dist, modname, dist)])

    return install


ROOT = Path(__file__).resolve().parents[1]
#: The small paper grid (32 runs) and overrides that make its runs quick.
QUICK = ROOT / "configs" / "paper_quick.yaml"
FAST_SWEEP = ["train.steps=30", "train.log_every_n_steps=10", "geometry.every_n_steps=10"]


@functools.cache
def builtin_registries() -> tuple[Any, Any]:
    """``(losses, datasets)`` of the built-in plugins only (no installed distributions)."""
    from protoreg.plugins import collect_datasets, collect_losses, get_plugin_manager

    pm = get_plugin_manager(autoload=False)
    return collect_losses(pm), collect_datasets(pm)


@pytest.fixture(scope="module")
def reg() -> Any:
    """The registry of the built-in plugins only (no installed distributions)."""
    from protoreg.plugins import Registry, get_plugin_manager

    return Registry.load(get_plugin_manager(autoload=False))


def quick(*overrides: str) -> Any:
    """configs/paper_quick.yaml with quick runs and ``overrides`` (a sweep config)."""
    from protoreg.config import load_config

    return load_config(QUICK, [*FAST_SWEEP, *overrides])


def run_quiet(cfg: Any, out: Path, reg: Any, **kw: Any) -> Any:
    """``run_sweep`` without plots or warnings; ``engine=...`` injects a training engine."""
    from protoreg.sweeps.runner import run_sweep

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return run_sweep(cfg, out, reg=reg, plots=False, **kw)


class TrainCounter:
    """A training engine for ``run_sweep(engine=...)``: counts the runs it trains and can crash
    on the k-th group."""

    def __init__(self, fail_on_batch: int | None = None) -> None:
        self.runs = 0
        self.batches = 0
        self.fail_on_batch = fail_on_batch

    def __call__(self, group: Any, geometry: Any, **kw: Any) -> Any:
        from protoreg.training import train_group

        self.batches += 1
        if self.fail_on_batch is not None and self.batches == self.fail_on_batch:
            raise RuntimeError("simulated crash")
        self.runs += group.module.model.runs
        return train_group(group, geometry, **kw)


def cli(capsys: pytest.CaptureFixture[str], *argv: object) -> tuple[int, str, str]:
    """``protoreg`` on ``argv`` in this process: the exit code and the captured stdout, stderr."""
    from protoreg.cli import main

    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def error_lines(err: str) -> list[str]:
    """The ``protoreg: error:`` lines of a captured stderr."""
    return [line for line in err.splitlines() if line.startswith("protoreg: error:")]


def in_place_editor(attr: str) -> protoreg.StructuralLoss:
    """A loss named ``sneaky`` that reads ``ctx.<attr>`` and then halves it in place: the loss
    terms must refuse it (a :class:`~protoreg.errors.LossError` naming ``ctx.<attr>``)."""

    class Sneaky(protoreg.StructuralLoss):
        name = "sneaky"
        vectorized = True

        def __call__(self, ctx: protoreg.LossContext) -> torch.Tensor:
            t = getattr(ctx, attr)
            out = t.sum(dim=(1, 2))
            t.mul_(0.5)
            return out

    return Sneaky()
