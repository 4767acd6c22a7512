from __future__ import annotations

import os
import sys
import warnings
from typing import Any, Callable

import pytest
import torch
from hypothesis import settings

import protoreg
from helpers import fake_entry_points, make_plugin_module

# Tests run on CPU with small sizes; a couple of threads is plenty and keeps timings stable.
torch.set_num_threads(min(2, os.cpu_count() or 1))

# Property tests draw the same examples on every run (a test suite that passes once passes
# again); `HYPOTHESIS_PROFILE=explore python -m pytest tests/test_properties.py` searches new ones.
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


@pytest.fixture
def install_plugin(monkeypatch: pytest.MonkeyPatch) -> Callable[..., None]:
    """``install_plugin(*losses, dist="x-dist")``: expose losses as an installed distribution's
    entry point (and only that one)."""

    def install(*losses: protoreg.StructuralLoss, dist: str = "test-plugin") -> None:
        modname = f"_protoreg_test_plugin_{dist.replace('-', '_')}"
        monkeypatch.setitem(sys.modules, modname, make_plugin_module(modname, *losses))
        fake_entry_points(monkeypatch, [(dist, modname, dist)])

    return install


@pytest.fixture(scope="module")
def reg() -> Any:
    """The registry of the built-in plugins only (no installed distributions)."""
    from protoreg.plugins.registry import Registry, get_plugin_manager

    return Registry.load(get_plugin_manager(autoload=False))


