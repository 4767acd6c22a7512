"""Collapse diagnostics (protoreg.geometry.collapse) against a numpy brute force: the smallest
prototype gap and the duplicate count, in 1-D (sorted path) and d >= 2 (screened path)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from protoreg.geometry.collapse import dead_units, duplicate_prototypes, gap_and_duplicates, min_prototype_gap


def brute(P: np.ndarray, thr: np.ndarray) -> tuple[list[float], list[int]]:
    gaps, dups = [], []
    for r in range(P.shape[0]):
        ok = np.isfinite(P[r]).all(axis=1)
        best, count = math.inf, 0
        for j in range(P.shape[1]):
            if not ok[j]:
                continue
            is_dup = False
            for i in range(P.shape[1]):
                if i != j and ok[i]:
                    dist = float(np.sqrt(((P[r, i] - P[r, j]) ** 2).sum()))
                    best = min(best, dist)
                    if i < j and dist <= thr[r]:
                        is_dup = True
            count += is_dup
        gaps.append(best)
        dups.append(count)
    return gaps, dups


def points(d: int, seed: int) -> torch.Tensor:
    g = np.random.default_rng(seed)
    P = g.normal(size=(3, 9, d)) * 10.0
    P[0, 4] = P[0, 1]  # an exact duplicate
    P[0, 7] = P[0, 1] + 1e-9  # a near one
    P[1, 2] = P[1, 5] + 1e-3
    P[1, 6, 0] = np.inf  # never counted
    P[2, :7] = np.nan  # two finite ones only
    return torch.tensor(P)


@pytest.mark.parametrize("d", [1, 2, 5])
@pytest.mark.parametrize("seed", [0, 1])
def test_gap_and_duplicates_against_brute_force(d: int, seed: int) -> None:
    P = points(d, seed)
    extent = torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64)
    for rel in (1e-6, 1e-2, 0.0):
        thr = (rel * extent).numpy()
        gaps, dups = brute(P.numpy(), thr)
        gap = min_prototype_gap(P)
        dup = duplicate_prototypes(P, rel_tol=rel, extent=extent)
        assert gap.dtype == torch.float64 and dup.dtype == torch.long
        np.testing.assert_allclose(gap.numpy(), gaps, rtol=1e-12, atol=0)
        assert dup.tolist() == dups
        g2, d2 = gap_and_duplicates(P, rel_tol=rel, extent=extent)
        np.testing.assert_allclose(g2.numpy(), gaps, rtol=1e-12, atol=0)
        assert d2.tolist() == dups


def test_fewer_than_two_finite_prototypes_have_infinite_gap() -> None:
    P = torch.tensor([[[0.0, 0.0], [math.nan, 1.0]], [[1.0, 2.0], [3.0, 2.0]]], dtype=torch.float64)
    assert min_prototype_gap(P).tolist() == [math.inf, 2.0]
    assert min_prototype_gap(torch.zeros(2, 1, 3)).tolist() == [math.inf, math.inf]
    assert duplicate_prototypes(torch.zeros(2, 1, 3)).tolist() == [0, 0]


def test_default_extent_is_the_prototypes_own() -> None:
    P = torch.tensor([[[0.0], [10.0], [10.0 + 1e-6], [10.0 + 2e-5]]], dtype=torch.float64)
    # extent 10 + 2e-5: the threshold is about 1e-5, so 1e-6 apart is a duplicate and 2e-5 is not
    assert duplicate_prototypes(P).tolist() == [1]
    with pytest.raises(ValueError, match=r"extent must have shape \(1,\), got \(2,\)"):
        duplicate_prototypes(P, extent=torch.ones(2))


def test_dead_units_against_brute_force() -> None:
    g = torch.Generator().manual_seed(0)
    h = torch.rand(2, 6, 5, generator=g)
    h[1] = 0.0  # all ties: unit 0 wins every sample
    ref = [5 - len(set(h[r].argmax(dim=1).tolist())) for r in range(2)]
    assert dead_units(h).tolist() == ref and ref[1] == 4
    assert dead_units(torch.zeros(2, 0, 3)).tolist() == [3, 3]
    with pytest.raises(ValueError, match=r"hidden must be a tensor of shape \(R, N, M\)"):
        dead_units(torch.zeros(2, 3))


@pytest.mark.parametrize("block", [1, 2, 4])
def test_screened_blocks_match_brute_force(monkeypatch: pytest.MonkeyPatch, block: int) -> None:
    """Rows in several screening blocks (each against the columns before its end): pairs across
    blocks and within one, duplicates whose earlier partner sits in an earlier block, and points
    far from the origin whose gaps are below float32's resolution there."""
    import protoreg.geometry.collapse as collapse

    monkeypatch.setattr(collapse, "_SCREEN_BLOCK", block)
    g = np.random.default_rng(7)
    P = g.normal(size=(2, 11, 6))
    P[0, 9] = P[0, 0]  # duplicate across blocks
    P[0, 3] = P[0, 2] + 1e-9
    P[1] = 1e4 + g.normal(size=(11, 6)) * 1e-3  # float32 cannot tell these apart
    P[1, 10] = P[1, 1] + 2e-7
    for rel in (1e-6, 1e-3, 0.0):
        extent = torch.tensor([1.0, 1.0], dtype=torch.float64)
        thr = (rel * extent).numpy()
        gaps, dups = brute(P, thr)
        g2, d2 = gap_and_duplicates(torch.tensor(P), rel_tol=rel, extent=extent)
        np.testing.assert_allclose(g2.numpy(), gaps, rtol=1e-12, atol=0)
        assert d2.tolist() == dups


def test_thresholds_beyond_float32_count_every_pair_as_a_duplicate() -> None:
    """A duplicate threshold above float32's range (a huge ``rel_tol``) cannot overflow the
    float32 screen into dropping pairs: every later prototype is some earlier one's duplicate."""
    import warnings

    P = torch.tensor(np.random.default_rng(3).normal(size=(1, 6, 3)))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no overflow warning from the conversion either
        gap, dup = gap_and_duplicates(P, rel_tol=1e30, extent=torch.tensor([1.0], dtype=torch.float64))
    assert dup.tolist() == [5]
    assert gap.tolist() == brute(P.numpy(), np.array([1e30]))[0]
