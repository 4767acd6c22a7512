from __future__ import annotations

import os
import warnings

import pytest
import torch

# Tests run on CPU with small sizes; a couple of threads is plenty and keeps timings stable.
torch.set_num_threads(min(2, os.cpu_count() or 1))


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
