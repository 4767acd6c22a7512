"""Vertex searches through the Gram matrix (protoreg.geometry.gram): scores within their
certified error, hull checks that equal the direct searches' (flags, and distances within the
tolerance), the cache of the Gram matrices between checks, and the memory they are counted
with. References: the direct float64 products, and the solver at a tight tolerance."""

from __future__ import annotations

import pytest
import torch

import protoreg.geometry.gram as gram
import protoreg.geometry.hull as hull
from protoreg.geometry import HullWarmStart, check_bytes, hull_check, hull_distance
from protoreg.geometry.gram import GRAM_MIN_DIM, gram_base, gram_bytes, gram_search


def _pixels(gen: torch.Generator, n: int, d: int) -> torch.Tensor:
    """Image-like inputs: mostly background (0), a few bright pixels, far from the box centre."""
    x = torch.rand(1, n, d, generator=gen, dtype=torch.float64)
    return torch.where(x > 0.8, x, 0.0)


def test_scores_stay_within_their_certified_error() -> None:
    gen = torch.Generator().manual_seed(5)
    N, d, Q, K = 300, GRAM_MIN_DIM + 44, 60, 6
    xn = _pixels(gen, N, d) - 0.5  # centred on the bounding box, as the hull code does
    xn[..., :40] = -0.5  # constant pixels (a border): x_i - mu is exactly 0 there
    p = xn[0, :Q] + 0.2 * torch.randn(Q, d, generator=gen, dtype=torch.float64)
    run = torch.zeros(Q, dtype=torch.long)
    gs, nn = gram_search(p, xn, run, gram_base(xn, 1 << 24, Q), 1 << 24)
    assert torch.equal(gs.base.cols, torch.arange(40, d))  # the products leave those out, and
    # the prototypes' own coordinates there change nothing in the scores below
    assert torch.equal(nn, torch.cdist(p, xn[0]).argmin(dim=1))
    S = torch.randint(0, N, (Q, K), generator=gen)
    mask = torch.rand(Q, K, generator=gen) < 0.7
    mask[:, 0] = True
    lam = torch.where(mask, torch.rand(Q, K, generator=gen, dtype=torch.float64), 0.0)
    lam = lam / lam.sum(dim=1, keepdim=True)
    q = torch.einsum("ak,akd->ad", lam, xn[0, S])
    z = q - p
    sc, off = gs.scores(torch.arange(Q), run, S, lam, mask, z)
    err = gs.error(torch.arange(Q), run, S, lam, mask)
    dev = (sc.double() + off[:, None] - z @ xn[0].T).abs()
    assert bool((dev <= err[:, None]).all())
    assert float((dev.amax(dim=1) / err).max()) > 1e-3  # a bound, not a blanket
    assert float(err.max()) < 1e-3  # and tight enough to certify distances to 1 % of a spacing


@pytest.mark.parametrize("warm", [False, True])
def test_hull_checks_through_the_gram_matrix_equal_the_direct_ones(warm: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    """Image-like data in GRAM_MIN_DIM dimensions and more: the bounds bracket the tightly
    solved distance, the flags equal those of the direct searches and the distances are within
    the tolerance of theirs; the searches do go through the Gram matrix (with a warm start too,
    whose previous combinations are scored there)."""
    gen = torch.Generator().manual_seed(7)
    N, d = 300, GRAM_MIN_DIM + 44
    x = torch.cat([_pixels(gen, N, d), 0.5 * _pixels(gen, N, d) + 0.25])  # two runs, two data sets
    w = torch.rand(2, 60, N, generator=gen, dtype=torch.float64) ** 8
    inside = (w / w.sum(-1, keepdim=True)) @ x
    near = x[:, :60] + 0.15 * torch.randn(2, 60, d, generator=gen, dtype=torch.float64)
    far = x[:, 60:100] * 1.3 + 0.2
    p = torch.cat([inside, near, far], dim=1)
    cache = HullWarmStart() if warm else None
    if cache is not None:
        hull_check(p + 0.05 * torch.randn(p.shape, generator=gen, dtype=torch.float64), x, warm=cache)
    rows = []
    real = gram.GramSearch.scores

    def spy(self, rows_, *a):  # type: ignore[no-untyped-def]
        rows.append(rows_.numel())
        return real(self, rows_, *a)

    monkeypatch.setattr(gram.GramSearch, "scores", spy)
    hc = hull_check(p, x, warm=cache)
    assert sum(rows) > p.shape[1]  # the screening's and the solver's searches
    monkeypatch.setattr(gram, "GRAM_MIN_DIM", d + 1)
    monkeypatch.setattr(hull, "gram_fits", lambda *a: False)
    rows.clear()
    direct = hull_check(p, x)
    assert not rows
    ref = hull_distance(p, x, tol=1e-10)
    assert bool((hc.lower <= ref + 1e-9).all()) and bool((ref <= hc.distance + 1e-9).all())
    assert bool(((hc.distance - direct.distance).abs() <= hc.tol[:, None]).all())
    assert torch.equal(hc.outside, direct.outside)
    assert all(0 < int(o.sum()) < p.shape[1] for o in hc.outside)


def test_the_gram_matrices_are_kept_while_the_inputs_stay_the_same(monkeypatch: pytest.MonkeyPatch) -> None:
    gen = torch.Generator().manual_seed(9)
    N, d = 200, GRAM_MIN_DIM
    x = _pixels(gen, N, d)
    p = x[:, :50] + 0.1 * torch.randn(1, 50, d, generator=gen, dtype=torch.float64)
    built = []
    real = hull.gram_base
    monkeypatch.setattr(hull, "gram_base", lambda *a, **k: built.append(1) or real(*a, **k))
    warm = HullWarmStart()
    first = hull_check(p, x, warm=warm)
    again = hull_check(p, x, warm=warm)
    assert len(built) == 1 and torch.equal(first.outside, again.outside)
    x2 = x.clone()
    x2[0, 3, 5] += 0.25  # one pixel of one image: a different data set
    changed = hull_check(p, x2, warm=warm)
    assert len(built) == 2
    cold = hull_check(p, x2)  # a cache-free call builds its own
    assert len(built) == 3
    assert torch.equal(changed.outside, cold.outside)
    assert float((changed.distance - cold.distance).abs().max()) <= float(cold.tol[0])
    warm.clear()
    hull_check(p, x2, warm=warm)
    assert len(built) == 4


def test_the_memory_estimate_counts_the_gram_searches() -> None:
    q, n, d = 5000, 5000, 784
    assert gram_bytes(1, n, q, d) == 12 * n * n + 4 * q * n + 16 * n * d
    assert gram_bytes(1, n, q, GRAM_MIN_DIM - 1) == 0
    assert check_bytes(1, n, q, d) >= gram_bytes(1, n, q, d) + 16 * q * (d + 1)
    # beyond the budget no Gram search is built, and none is counted
    assert check_bytes(1, 20000, 20000, d) < 12 * 20000 * 20000


@pytest.mark.parametrize("tol", [1e-6, 1e-3])
def test_the_solver_in_gram_space_certifies_what_the_coordinates_do(tol: float, monkeypatch: pytest.MonkeyPatch) -> None:
    """With Gram searches and the float64 Gram matrix the solver keeps no corral coordinates: its
    distances come from look-ups (rows too close to the hull for their rounding go back to the
    coordinates). Its bounds bracket the tightly solved distance, meet the tolerance, resolve
    every query, and it does run in Gram space."""
    import protoreg.geometry.solver as solver

    gen = torch.Generator().manual_seed(11)
    N, d, Q = 240, GRAM_MIN_DIM + 44, 90
    xn = _pixels(gen, N, d) - 0.5
    w = torch.rand(1, 30, N, generator=gen, dtype=torch.float64) ** 8
    inside = (w / w.sum(-1, keepdim=True)) @ xn
    near = xn[:, :30] + 0.1 * torch.randn(1, 30, d, generator=gen, dtype=torch.float64)
    far = xn[:, 30:60] * 1.2
    p = torch.cat([inside, near, far], dim=1)[0]
    run = torch.zeros(Q, dtype=torch.long)
    base = gram_base(xn, 1 << 26, Q)
    gs, nn = gram_search(p, xn, run, base, 1 << 26)
    looked = []
    real = solver._gss
    monkeypatch.setattr(solver, "_gss", lambda *a: looked.append(1) or real(*a))
    ub, lb, _, unresolved = solver._wolfe_bounds(
        p, xn, run, base.gram, tol=tol, threshold=None, max_iter=5000, near=nn, gram_search=gs, gram_rows=torch.arange(Q)
    )
    assert looked and unresolved == 0
    coords = solver._wolfe_bounds(p, xn, run, base.gram, tol=tol, threshold=None, max_iter=5000, near=nn)
    ref = hull_distance(p[None], xn, tol=1e-10)[0]
    assert bool((lb <= ref + 1e-9).all()) and bool((ref <= ub + 1e-9).all())
    assert bool((ub - lb <= tol * (1 + 1e-9)).all())
    assert float((ub - coords[0]).abs().max()) <= tol
    assert int((ref < 1e-9).sum()) >= 20 and int((ref > 0.1).sum()) >= 20  # both kinds of query


def test_gram_space_distances_near_zero_come_from_the_coordinates(monkeypatch: pytest.MonkeyPatch) -> None:
    """A look-up distance carries its float64 rounding (``sqrt(e)`` at distance 0); a row where
    that would be felt takes its point from the coordinates, so queries on the inputs certify
    distance 0 even when every search goes through the Gram matrix."""
    import protoreg.geometry.solver as solver

    gen = torch.Generator().manual_seed(12)
    N, d = 120, GRAM_MIN_DIM
    xn = _pixels(gen, N, d) - 0.5
    p = xn[0, :20].clone()
    run = torch.zeros(20, dtype=torch.long)
    base = gram_base(xn, 1 << 26, 20)
    gs, nn = gram_search(p, xn, run, base, 1 << 26)
    monkeypatch.setattr(gram, "GRAM_SHARE", 1e30)  # every search through the Gram matrix
    ub, lb, _, unresolved = solver._wolfe_bounds(
        p, xn, run, base.gram, tol=1e-12, threshold=None, max_iter=100, near=nn, gram_search=gs, gram_rows=torch.arange(20)
    )
    assert unresolved == 0 and bool((ub <= 1e-12).all())
