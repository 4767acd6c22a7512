"""The epsilon-scaling auction of large square matchings and the dual bound that certifies it."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st
from scipy.optimize import linear_sum_assignment

import protoreg.evaluation.auction as auction_mod
import protoreg.evaluation.matching as matching_mod
from protoreg.evaluation.auction import auction_assignment
from protoreg.evaluation.lapcert import dual_bound
from protoreg.evaluation.matching import MATCHING_REL_TOL, optimal_matching

TOL = 1e-12


def optimum(cost: np.ndarray) -> float:
    r, c = linear_sum_assignment(cost)
    return float(cost[r, c].sum())


def check(cost: np.ndarray) -> None:
    n = cost.shape[0]
    got = auction_assignment(cost, TOL)
    assert got is not None
    assert sorted(got.cols.tolist()) == list(range(n))  # a permutation
    total = math.fsum(cost[np.arange(n), got.cols].tolist())
    best = optimum(cost)
    lower = dual_bound(cost, got.potentials)
    assert lower <= best * (1 + 1e-15) + 1e-300  # a proof, never above the optimum
    assert total <= best * (1 + TOL)
    if best > 0:  # a zero optimum cannot be proved past the bound's rounding slack
        assert total - lower <= TOL * total  # the prices prove it optimal to the tolerance


@settings(max_examples=60, deadline=None)
@given(
    n=st.integers(2, 90),
    seed=st.integers(0, 2**31 - 1),
    kind=st.sampled_from(["random", "ties", "points"]),
    rounds=st.booleans(),
)
def test_the_auction_reaches_the_optimum_and_its_prices_prove_it(n, seed, kind, rounds):
    rng = np.random.default_rng(seed)
    if kind == "random":
        cost = rng.random((n, n)) * 10
    elif kind == "ties":  # many equal costs: where bidding wars happen
        cost = np.round(rng.random((n, n)) * 3)
    else:  # distances of points, as the matching gives it
        p, x = rng.random((n, 8)), rng.random((n, 8))
        cost = np.sqrt(((p[:, None] - x[None]) ** 2).sum(-1))
    if kind != "ties" or cost.max() > cost.min():
        serial = auction_mod.SERIAL_BELOW
        auction_mod.SERIAL_BELOW = 0 if rounds else serial  # every bid in rounds, or the default
        try:
            check(cost)
        finally:
            auction_mod.SERIAL_BELOW = serial


@pytest.mark.parametrize("serial_below", [0, 10**9])
def test_rounds_and_serial_bids_each_reach_the_optimum(monkeypatch, serial_below):
    """All rows bidding at once in every round, or one bid at a time from the start."""
    monkeypatch.setattr(auction_mod, "SERIAL_BELOW", serial_below)
    rng = np.random.default_rng(3)
    p, x = rng.random((150, 16)), rng.random((150, 16))
    check(np.sqrt(((p[:, None] - x[None]) ** 2).sum(-1)))
    check(np.round(rng.random((150, 150)) * 4))


def test_costs_below_float32_resolution_go_straight_to_float64():
    rng = np.random.default_rng(4)
    cost = 1.0 + 1e-9 * rng.random((60, 60))  # all equal in float32
    check(cost)


def test_degenerate_and_unsuitable_problems():
    got = auction_assignment(np.full((5, 5), 2.0), TOL)
    assert got is not None and sorted(got.cols.tolist()) == list(range(5))
    bad = np.ones((4, 4))
    bad[0, 1] = np.inf
    assert auction_assignment(bad, TOL) is None
    assert auction_assignment(np.eye(4) * 1e200, TOL) is None  # beyond float32's range


def test_a_bid_budget_gives_up_and_the_matching_falls_back(monkeypatch):
    rng = np.random.default_rng(6)
    p, x = rng.random((120, 8)), rng.random((120, 8))
    cost = np.sqrt(((p[:, None] - x[None]) ** 2).sum(-1))
    monkeypatch.setattr(auction_mod, "MAX_BIDS_PER_ROW", 1)
    assert auction_assignment(cost, TOL) is None
    monkeypatch.setattr(matching_mod, "LAPJV_FLOAT32_MIN_PAIRS", 1)
    got = optimal_matching(p, x, dense_max=0)
    assert got.method == "lapjv" and got.distances.sum() == pytest.approx(optimum(cost), rel=1e-12)


def test_the_matching_uses_the_auction_on_large_square_problems(monkeypatch):
    monkeypatch.setattr(matching_mod, "LAPJV_FLOAT32_MIN_PAIRS", 1)
    rng = np.random.default_rng(7)
    x = rng.random((200, 32))
    p = x[rng.permutation(200)] + 0.05 * rng.standard_normal((200, 32))
    got = optimal_matching(p, x, dense_max=0)
    cost = np.sqrt(((p[:, None] - x[None]) ** 2).sum(-1))
    assert got.method == "auction" and got.distances.sum() == pytest.approx(optimum(cost), rel=3.1 * MATCHING_REL_TOL)
    assert optimal_matching(p[:150], x, dense_max=0).method == "lapjv"  # rectangular: lapx


def test_below_the_float32_threshold_square_problems_run_the_auction_first(monkeypatch):
    """From AUCTION_MIN_PAIRS on (far below LAPJV_FLOAT32_MIN_PAIRS) a square matching is the
    auction's; when the auction gives up, the float64 JV solve finds the same optimum; the
    memory estimate counts the auction's float32 copy there and not below."""
    from protoreg.evaluation.matching import AUCTION_MIN_PAIRS, LAPJV_FLOAT32_MIN_PAIRS, matching_bytes

    assert AUCTION_MIN_PAIRS < 5_000 * 5_000 < LAPJV_FLOAT32_MIN_PAIRS  # MNIST 5,000: the auction
    assert matching_bytes(5_000, 5_000, 784) - matching_bytes(5_000, 4_999, 784) >= 4 * 5_000 * 4_999  # the float32 copy
    assert matching_bytes(1_797, 1_797, 64) - matching_bytes(1_797, 1_796, 64) < 9 * 1_797  # digits: lapjvh alone
    rng = np.random.default_rng(9)
    x = rng.random((180, 16))
    p = x[rng.permutation(180)] + 0.05 * rng.standard_normal((180, 16))
    cost = np.sqrt(((p[:, None] - x[None]) ** 2).sum(-1))
    assert optimal_matching(p, x, dense_max=0).method == "lapjv"  # below the threshold
    monkeypatch.setattr(matching_mod, "AUCTION_MIN_PAIRS", 1)
    got = optimal_matching(p, x, dense_max=0)
    assert got.method == "auction" and got.distances.sum() == pytest.approx(optimum(cost), rel=3.1 * MATCHING_REL_TOL)
    monkeypatch.setattr(auction_mod, "MAX_BIDS_PER_ROW", 0)
    jv = optimal_matching(p, x, dense_max=0)
    assert jv.method == "lapjv" and np.array_equal(jv.sample_idx, got.sample_idx)


def test_dual_bound_is_below_the_optimum_for_any_potentials():
    rng = np.random.default_rng(8)
    cost = rng.random((30, 30))
    best = optimum(cost)
    for _ in range(20):
        assert dual_bound(cost, rng.standard_normal(30)) <= best
    rect = rng.random((10, 30))
    assert dual_bound(rect, -rng.random(30)) <= optimum(rect)
    with pytest.raises(ValueError, match="v <= 0"):
        dual_bound(rect, rng.random(30))
