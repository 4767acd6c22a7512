"""End-to-end tests (real fits and sweeps, the CLI, subprocesses, signals): every test in this
folder is marked ``slow``, so ``python -m pytest -m "not slow"`` runs the unit tests alone."""

from __future__ import annotations

from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if HERE in Path(str(item.fspath)).resolve().parents:
            item.add_marker(pytest.mark.slow)
