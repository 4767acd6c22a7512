"""protoreg.training.memory: the estimate of a group's peak memory and the refusal before training."""

from __future__ import annotations

import pytest

from protoreg.errors import ConfigError
from protoreg.training.memory import MEMORY_LIMIT_ENV, _parse_bytes, available_bytes, banded_step, check_memory, estimate


@pytest.mark.parametrize("text, n", [("2G", 2 << 30), ("100M", 100 << 20), ("1.5K", 1536), ("123", 123), (" 4 gib ", 4 << 30), ("2GB", 2 << 30)])
def test_memory_limits_parse(text: str, n: int) -> None:
    assert _parse_bytes(text) == n


@pytest.mark.parametrize("text", ["", "two", "2X", "-1G"])
def test_a_bad_memory_limit_names_the_variable(text: str) -> None:
    with pytest.raises(ConfigError, match=MEMORY_LIMIT_ENV):
        _parse_bytes(text)


def test_the_variable_replaces_the_detected_memory(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(MEMORY_LIMIT_ENV, "3M")
    assert available_bytes() == 3 << 20
    monkeypatch.delenv(MEMORY_LIMIT_ENV)
    have = available_bytes()
    assert have is None or have > 0


def test_the_estimate_grows_with_the_problem_and_counts_every_part() -> None:
    small = estimate(n=100, width=100, dim=8, out=1)
    wide = estimate(n=100, width=1000, dim=8, out=1)
    assert wide.step > small.step and wide.evaluation > small.evaluation and wide.peak > small.peak
    batch = estimate(n=10_000, width=1000, dim=8, out=1, batch_size=100)
    full = estimate(n=10_000, width=1000, dim=8, out=1)
    assert batch.step * 50 < full.step and batch.evaluation == full.evaluation  # evaluation streams all N either way
    runs = estimate(n=100, width=100, dim=8, out=1, runs=4)
    assert runs.step == 4 * small.step and runs.fixed == 4 * small.fixed
    assert small.checks > 0 and small.peak == small.fixed + max(small.step, small.evaluation, small.checks)
    pairs = estimate(n=100, width=100, dim=8, out=1, losses=["separation"])
    assert pairs.step > small.step


def test_a_banded_step_holds_no_full_width_tensor() -> None:
    assert banded_step(width=100_000, dim=1, batch=1024, losses=["coverage"])
    assert not banded_step(width=100_000, dim=1, batch=1024, losses=["overlap"])  # it reads ctx.hidden
    assert not banded_step(width=100_000, dim=2, batch=1024)
    banded = estimate(n=1024, width=100_000, dim=1, out=1, banded_training=True)
    dense = estimate(n=1024, width=100_000, dim=1, out=1)
    assert banded.step < dense.step / 10


def test_refusals_name_the_key_that_helps(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(MEMORY_LIMIT_ENV, "50M")
    with pytest.raises(ConfigError, match=r"^train.batch_size: training needs about .* lower train.batch_size"):
        check_memory(n=20_000, width=20_000, dim=2, out=1, accelerator="cpu", losses=["overlap"])
    with pytest.raises(ConfigError, match=r"^model.width: the evaluation and matching need about .*a smaller train.batch_size does not help"):
        check_memory(n=20_000, width=20_000, dim=2, out=1, batch_size=16, accelerator="cpu")
    monkeypatch.setenv(MEMORY_LIMIT_ENV, "64G")
    est = check_memory(n=20_000, width=20_000, dim=2, out=1, batch_size=16, accelerator="cpu")
    assert est.peak < 64 << 30
