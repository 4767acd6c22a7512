"""The dual certificate of an assignment, and the float32 solve of large matchings it accepts."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st
from scipy.optimize import linear_sum_assignment

import protoreg.evaluation.matching as matching_mod
from protoreg.evaluation.lapcert import assignment_gap
from protoreg.evaluation.matching import MATCHING_REL_TOL, optimal_matching


def optimum(cost: np.ndarray) -> float:
    r, c = linear_sum_assignment(cost)
    return float(cost[r, c].sum())


@settings(max_examples=60, deadline=None)
@given(m=st.integers(1, 12), extra=st.integers(0, 5), seed=st.integers(0, 2**31 - 1), grid=st.booleans())
def test_the_gap_bounds_every_assignment_and_vanishes_at_the_optimum(m, extra, seed, grid):
    rng = np.random.default_rng(seed)
    cost = rng.random((m, m + extra)) * 10
    if grid:  # ties
        cost = np.round(cost)
    rows = np.arange(m)
    best = optimum(cost)
    # an arbitrary assignment: its total minus the gap never exceeds the optimum
    cols = rng.permutation(m + extra)[:m]
    total, gap = assignment_gap(cost, rows, cols)
    assert total == pytest.approx(cost[rows, cols].sum(), rel=1e-15)
    assert gap >= 0 and total - gap <= best * (1 + 1e-15) + 1e-15
    # an optimal one: the gap is only rounding
    r, c = linear_sum_assignment(cost)
    total, gap = assignment_gap(cost, r, c)
    assert total == pytest.approx(best, rel=1e-15) and gap <= 1e-12 * max(total, 1.0)


def test_a_suboptimal_assignment_gets_a_gap_at_least_its_excess():
    rng = np.random.default_rng(0)
    cost = rng.random((300, 300))
    r, c = linear_sum_assignment(cost)
    c = c.copy()
    c[[0, 1]] = c[[1, 0]]  # swap two partners: costlier than the optimum
    total, gap = assignment_gap(cost, r, c)
    excess = total - optimum(cost)
    assert excess > 0 and gap >= excess * (1 - 1e-9)
    with pytest.raises(ValueError, match="rows <= columns"):
        assignment_gap(cost[:, :10], np.arange(10), np.arange(10))


@pytest.fixture
def float32_path(monkeypatch):
    """Every d >= 2 matching beyond the dense size takes the float32 solve and its certificate."""
    monkeypatch.setattr(matching_mod, "LAPJV_FLOAT32_MIN_PAIRS", 1)


def dense_sum(p: np.ndarray, x: np.ndarray) -> float:
    return optimum(np.sqrt(((p[:, None] - x[None]) ** 2).sum(-1)))


@pytest.mark.parametrize("m,n", [(300, 300), (200, 340), (340, 200)])
def test_the_float32_solve_is_the_float64_optimum(float32_path, m, n):
    rng = np.random.default_rng(m + n)
    x = rng.random((n, 64))
    p = np.concatenate([x[rng.permutation(n)[: m // 2]] + 1e-3 * rng.standard_normal((m // 2, 64)), rng.random((m - m // 2, 64))])
    got = optimal_matching(p, x, dense_max=0)
    assert got.method == ("auction" if m == n else "lapjv") and len(got.proto_idx) == min(m, n) and len(set(got.sample_idx.tolist())) == min(m, n)
    assert got.distances.sum() == pytest.approx(dense_sum(p, x), rel=3.1 * MATCHING_REL_TOL)


@pytest.fixture
def no_auction(monkeypatch):
    """The square float32 path without its auction: lapx's float32 kernel and the fallbacks."""
    import protoreg.evaluation.auction as auction_mod

    monkeypatch.setattr(auction_mod, "MAX_BIDS_PER_ROW", 0)


def test_ties_float32_cannot_resolve_fall_back_to_float64(float32_path, no_auction, monkeypatch):
    """Prototypes within 1e-9 of the centre of a unit sphere of inputs: every distance rounds to
    1.0 in float32, the float32 assignment is arbitrary, the certificate refuses it and the float64
    solve gives the optimum."""
    rng = np.random.default_rng(5)
    x = rng.standard_normal((260, 3))
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    p = 1e-9 * rng.standard_normal((260, 3))
    calls = []
    real = matching_mod.lap.lapjvh
    monkeypatch.setattr(matching_mod.lap, "lapjvh", lambda *a, **k: calls.append(k.get("precision")) or real(*a, **k))
    got = optimal_matching(p, x, dense_max=0)
    assert calls == [None]  # the float64 fallback ran (square: lapjvs gave the float32 solve)
    want = dense_sum(p, x)
    assert got.distances.sum() - want <= 3.1 * MATCHING_REL_TOL * want


def test_ties_float32_cannot_resolve_are_resolved_by_the_auctions_float64_phases(float32_path):
    rng = np.random.default_rng(5)
    x = rng.standard_normal((260, 3))
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    p = 1e-9 * rng.standard_normal((260, 3))
    got = optimal_matching(p, x, dense_max=0)
    want = dense_sum(p, x)
    assert got.method == "auction" and got.distances.sum() - want <= 3.1 * MATCHING_REL_TOL * want


def test_a_refused_float32_solve_falls_back_to_float64(float32_path, no_auction, monkeypatch):
    rng = np.random.default_rng(6)
    p, x = rng.random((300, 16)), rng.random((300, 16))
    monkeypatch.setattr(matching_mod.lap, "lapjvs", lambda cost, **k: (np.arange(len(cost)), np.arange(len(cost))[::-1]))
    got = optimal_matching(p, x, dense_max=0)  # the bad float32 answer is refused by its certificate
    assert got.distances.sum() == pytest.approx(dense_sum(p, x), rel=1e-12)

    def infeasible(cost, **k):
        raise ValueError("No feasible assignment exists.")

    monkeypatch.setattr(matching_mod.lap, "lapjvs", infeasible)
    assert optimal_matching(p, x, dense_max=0).distances.sum() == pytest.approx(dense_sum(p, x), rel=1e-12)


def test_huge_and_tiny_distances_are_scaled_into_float32(float32_path):
    rng = np.random.default_rng(8)
    for s in (1e-30, 1e30):
        p, x = s * rng.random((260, 8)), s * rng.random((260, 8))
        got = optimal_matching(p, x, dense_max=0)
        assert got.distances.sum() == pytest.approx(dense_sum(p, x), rel=1e-11)


def test_matching_bytes_counts_the_float32_copy():
    from protoreg.evaluation.matching import LAPJV_FLOAT32_MIN_PAIRS, matching_bytes

    assert matching_bytes(20_000, 20_000, 64) >= 12 * 20_000**2
    assert LAPJV_FLOAT32_MIN_PAIRS > 5_000 * 5_000  # MNIST 5,000 keeps the float64 solve
