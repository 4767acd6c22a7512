"""The sweep's ETA (protoreg.sweeps.eta): each remaining batch from its size, calibrated on
what has run."""

import math

import pytest

from protoreg.sweeps.eta import FIXED_ELEMENTS, BatchSize, EtaModel

# configs/paper.yaml on 2 cores: 80 runs per batch, width = N, 1-D, 2000 steps; measured seconds
PAPER_N = [3, 5, 10, 20, 50, 100]
PAPER_SECONDS = [5.8, 5.8, 6.3, 7.2, 13.9, 29.4]


def _paper():
    return [BatchSize.of(80, n, n, 1, 2000, None, radial=False) for n in PAPER_N]


def test_batch_size_counts_one_steps_distance_elements():
    assert BatchSize.of(4, 100, 50, 8, 10, None, radial=True) == BatchSize(10, 4 * 100 * 50 * 8)
    assert BatchSize.of(4, 100, 50, 8, 10, 16, radial=True).elements == 4 * 16 * 50 * 8
    assert BatchSize.of(4, 100, 50, 8, 10, 1000, radial=True).elements == 4 * 100 * 50 * 8  # minibatch capped at N
    assert BatchSize.of(4, 100, 50, 1, 10, None, radial=False).elements == 4 * 100 * 50


@pytest.mark.parametrize("k", range(1, 6))
def test_eta_after_k_batches_of_the_paper_grid_is_within_30_percent(k):
    sizes, m = _paper(), EtaModel()
    for s, t in zip(sizes[:k], PAPER_SECONDS[:k]):
        m.add(s, t)
    predicted = m.eta(sizes[k:], wall_elapsed=sum(PAPER_SECONDS[:k]))
    actual = sum(PAPER_SECONDS[k:])
    assert abs(predicted / actual - 1) < 0.3, (k, predicted, actual)


def test_a_free_fit_would_have_extrapolated_the_small_batches_noise():
    """Three small batches (all far below the fixed cost) keep the fixed part at its prior."""
    m = EtaModel()
    for s, t in zip(_paper()[:3], PAPER_SECONDS[:3]):
        m.add(s, t)
    _, a = m.coefficients()
    assert a == pytest.approx(FIXED_ELEMENTS)


def test_the_fit_follows_batches_that_scale_with_their_size():
    """Costs proportional to E (no fixed part) are learned from batches that span it."""
    m = EtaModel()
    sizes = [BatchSize(100, e) for e in (2e3, 2e4, 2e5, 2e6)]  # across the prior's fixed part
    for s in sizes:
        m.add(s, 1e-9 * s.steps * s.elements)
    big = BatchSize(100, 6.4e7)
    assert m.predict(big) == pytest.approx(1e-9 * 100 * 6.4e7, rel=0.15)
    assert m.coefficients()[1] < FIXED_ELEMENTS / 10


def test_wall_clock_overhead_scales_the_prediction():
    m = EtaModel()
    s = BatchSize(1000, 1e5)
    m.add(s, 10.0)
    assert m.eta([s], wall_elapsed=10.0) == pytest.approx(10.0)
    assert m.eta([s], wall_elapsed=15.0) == pytest.approx(15.0)  # setup and writing: 1.5x
    assert m.eta([], wall_elapsed=15.0) == 0.0


def test_failed_or_empty_batches_teach_nothing():
    m = EtaModel()
    m.add(BatchSize(100, 1e5), 0.0)
    m.add(BatchSize(0, 1e5), 3.0)
    assert m.done == []
    assert math.isfinite(m.predict(BatchSize(10, 1.0)))
