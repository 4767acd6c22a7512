"""Tests for protoreg.geometry against exact references.

References:

* hull membership: ``scipy.optimize.linprog(method="highs")`` feasibility of
  ``lambda >= 0, sum(lambda) = 1, X^T lambda = p``;
* hull distance: brute force over all subsets of at most ``d + 1`` inputs
  (the projection lies in the relative interior of the simplex spanned by
  some affinely independent subset, and every subset whose affine minimiser
  has non-negative weights gives a feasible point), so the minimum over the
  feasible subsets is the exact distance;
* collapse diagnostics: plain numpy loops.
"""

from __future__ import annotations

import logging
import math
from itertools import combinations

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scipy.optimize import linprog

from protoreg.geometry import (
    DEFAULT_MARGIN,
    DEFAULT_REL_TOL,
    HullWarmStart,
    dead_units,
    duplicate_prototypes,
    geometry_report,
    hull_check,
    hull_distance,
    hull_extent,
    min_prototype_gap,
    outside_hull,
    outside_hull_frac,
    resolution,
)

SETTINGS = settings(
    max_examples=20,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
    derandomize=True,
    database=None,
)


# --------------------------------------------------------------------------
# references
# --------------------------------------------------------------------------
def lp_inside(p: np.ndarray, x: np.ndarray) -> bool:
    """Exact membership of ``p`` in ``conv(x)`` by LP feasibility."""
    n = x.shape[0]
    a_eq = np.vstack([x.T, np.ones((1, n))])
    b_eq = np.append(p, 1.0)
    for method in ("highs", "highs-ds", "highs-ipm"):
        res = linprog(np.zeros(n), A_eq=a_eq, b_eq=b_eq, bounds=(0, None), method=method)
        if res.status in (0, 2):
            return res.status == 0
    raise RuntimeError(f"linprog could not decide membership: {res.message}")


def exact_distance(p: np.ndarray, x: np.ndarray) -> float:
    """Distance from ``p`` to ``conv(x)`` by enumerating candidate faces."""
    n, d = x.shape
    best = math.inf
    for k in range(1, min(n, d + 1) + 1):
        for sub in combinations(range(n), k):
            xs = x[list(sub)]
            if k == 1:
                q = xs[0]
            else:
                e = (xs[1:] - xs[0]).T
                c, *_ = np.linalg.lstsq(e, p - xs[0], rcond=None)
                w = np.concatenate([[1.0 - c.sum()], c])
                if w.min() < -1e-12:
                    continue
                q = xs[0] + e @ c
            best = min(best, float(np.linalg.norm(p - q)))
    return best


def extent_np(x: np.ndarray) -> float:
    ext = float((x.max(0) - x.min(0)).max()) if x.size else 0.0
    return ext if ext > 0 else 1.0


def make_case(rng: np.random.Generator, n: int, d: int, m_each: int = 2) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Random inputs and prototypes of every kind, with their kind labels."""
    scale = 10.0 ** rng.uniform(-2, 2)
    x = rng.standard_normal((n, d)) * scale + rng.standard_normal(d) * scale
    protos, kinds = [], []
    for _ in range(m_each):
        i, j = rng.integers(n, size=2)
        protos.append(x[i].copy())
        kinds.append("vertex")
        protos.append(0.5 * (x[i] + x[j]))
        kinds.append("midpoint")
        w = rng.dirichlet(np.ones(n))
        protos.append(w @ x)
        kinds.append("combination")
        protos.append(x.mean(0) + rng.standard_normal(d) * scale * 5)
        kinds.append("far")
        protos.append(x.mean(0) + rng.standard_normal(d) * scale * 0.7)
        kinds.append("random")
    return x, np.stack(protos), kinds


def t64(a: np.ndarray) -> torch.Tensor:
    return torch.as_tensor(a, dtype=torch.float64)


# --------------------------------------------------------------------------
# distances and flags against exact references
# --------------------------------------------------------------------------
@SETTINGS
@given(seed=st.integers(0, 2**32 - 1), d=st.sampled_from([2, 3, 5]), n=st.integers(1, 7))
def test_distance_matches_exact_reference(seed: int, d: int, n: int) -> None:
    rng = np.random.default_rng(seed)
    x, p, kinds = make_case(rng, n, d)
    ext = extent_np(x)
    got = hull_distance(t64(p)[None], t64(x)[None], tol=1e-10)[0].numpy()
    assert got.dtype == np.float64
    ref = np.array([exact_distance(pi, x) for pi in p])
    np.testing.assert_allclose(got, ref, rtol=1e-7, atol=1e-8 * ext)
    for k, g in zip(kinds, got):
        if k in ("vertex", "midpoint", "combination"):
            assert g <= 1e-10 * ext  # certified: dist <= ub <= dist + tol * extent


@SETTINGS
@given(seed=st.integers(0, 2**32 - 1), d=st.sampled_from([1, 2, 3, 5]), n=st.integers(1, 9))
def test_flags_match_linprog(seed: int, d: int, n: int) -> None:
    rng = np.random.default_rng(seed)
    x, p, kinds = make_case(rng, n, d)
    ext = extent_np(x)
    flags = outside_hull(t64(p)[None], t64(x)[None])[0].numpy()
    dist = hull_distance(t64(p)[None], t64(x)[None])[0].numpy()
    flags_from_dist = outside_hull(t64(p)[None], t64(x)[None], distances=t64(dist)[None])[0].numpy()
    np.testing.assert_array_equal(flags, flags_from_dist)
    for pi, k, f, di in zip(p, kinds, flags, dist):
        if k in ("vertex", "midpoint", "combination"):
            assert not f, k
            assert di <= 1e-6 * ext
            continue
        ref = exact_distance(pi, x) if d > 1 else max(x.min() - pi[0], pi[0] - x.max(), 0.0)
        if 0 < ref < 1e-4 * ext:
            continue  # too close to the boundary for the LP's feasibility tolerance
        assert f == (not lp_inside(pi, x)), (k, ref)
        assert f == (ref > 1e-6 * ext)
        assert di >= ref - 1e-9 * ext  # returned value is an upper bound
        assert di <= ref + 1e-6 * ext  # ... within tol * extent


@SETTINGS
@given(seed=st.integers(0, 2**32 - 1), n=st.integers(1, 12))
def test_one_dimensional_exact(seed: int, n: int) -> None:
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((2, n, 1)) * 3
    p = np.concatenate([rng.standard_normal((2, 6, 1)) * 5, x[:, :2]], axis=1)
    got = hull_distance(t64(p), t64(x)).numpy()
    lo, hi = x.min(1), x.max(1)
    ref = np.maximum(np.maximum(lo - p[..., 0], p[..., 0] - hi), 0.0)
    np.testing.assert_array_equal(got, ref)
    flags = outside_hull(t64(p), t64(x)).numpy()
    ext = np.array([extent_np(x[r]) for r in range(2)])
    np.testing.assert_array_equal(flags, ref > 1e-6 * ext[:, None])


def test_unit_square_known_distances() -> None:
    x = t64(np.array([[0, 0], [1, 0], [0, 1], [1, 1], [0.5, 0.5]], dtype=float))[None]
    p = t64(
        np.array(
            [
                [0.5, 0.5],  # centre
                [1.0, 1.0],  # vertex
                [0.5, 0.0],  # edge midpoint
                [0.25, 1.0],  # on an edge
                [2.0, 0.5],  # right of the square
                [2.0, 2.0],  # corner region
                [-3.0, 0.3],  # left
                [0.5, 1.0 + 1e-3],  # just above
            ]
        )
    )[None]
    got = hull_distance(p, x, tol=1e-12)[0].numpy()
    ref = np.array([0, 0, 0, 0, 1.0, math.sqrt(2), 3.0, 1e-3])
    np.testing.assert_allclose(got, ref, rtol=1e-9, atol=1e-12)
    np.testing.assert_array_equal(
        outside_hull(p, x)[0].numpy(), [False, False, False, False, True, True, True, True]
    )


def test_few_points_high_dimension() -> None:
    """N = 20 inputs in 64-D: Delaunay is impossible, the hull is a simplex."""
    rng = np.random.default_rng(0)
    n, d = 20, 64
    x = rng.standard_normal((n, d))
    ext = extent_np(x)
    inside = [rng.dirichlet(np.ones(n)) @ x for _ in range(6)]
    inside += [rng.dirichlet(np.ones(3)) @ x[rng.choice(n, 3, replace=False)] for _ in range(4)]
    inside += [x[3], 0.5 * (x[1] + x[7])]
    # offsets orthogonal to the affine hull: distance is exactly the offset
    e = (x[1:] - x[0]).T
    qmat, _ = np.linalg.qr(e)
    outside, ref_out = [], []
    for t in (1e-3, 0.1, 1.0, 30.0):
        v = rng.standard_normal(d)
        v -= qmat @ (qmat.T @ v)
        v *= t * ext / np.linalg.norm(v)
        outside.append(rng.dirichlet(np.ones(n)) @ x + v)
        ref_out.append(t * ext)
    p = np.stack(inside + outside)
    dist = hull_distance(t64(p)[None], t64(x)[None], tol=1e-9)[0].numpy()
    flags = outside_hull(t64(p)[None], t64(x)[None])[0].numpy()
    k = len(inside)
    assert (dist[:k] <= 1e-9 * ext).all()
    np.testing.assert_allclose(dist[k:], ref_out, rtol=1e-7)
    assert not flags[:k].any()
    assert flags[k:].all()
    for i in (0, 7, k, k + 2):
        assert flags[i] == (not lp_inside(p[i], x))


def test_collinear_inputs_in_2d() -> None:
    rng = np.random.default_rng(1)
    a, u = np.array([1.0, -2.0]), np.array([3.0, 4.0]) / 5.0
    s = rng.uniform(-2, 3, size=9)
    s[:2] = [-2.0, 3.0]
    x = a + s[:, None] * u
    normal = np.array([-u[1], u[0]])
    cases = [(-1.0, 0.0), (0.5, 0.0), (3.0, 0.0), (4.5, 0.0), (-4.0, 0.0), (1.0, 2.0), (-3.0, -1.5), (2.0, 1e-3)]
    p = np.stack([a + t * u + h * normal for t, h in cases])
    ref = np.array([math.hypot(max(-2.0 - t, t - 3.0, 0.0), h) for t, h in cases])
    got = hull_distance(t64(p)[None], t64(x)[None], tol=1e-12)[0].numpy()
    np.testing.assert_allclose(got, ref, rtol=1e-9, atol=1e-12)
    flags = outside_hull(t64(p)[None], t64(x)[None])[0].numpy()
    np.testing.assert_array_equal(flags, ref > 1e-6 * extent_np(x))


@pytest.mark.parametrize("seed", range(4))
def test_anisotropic_inputs(seed: int) -> None:
    """Axis scales spanning four decades: thin hulls, ill-conditioned corrals."""
    rng = np.random.default_rng(100 + seed)
    x = rng.standard_normal((8, 3)) * np.array([1.0, 1e-2, 1e-4]) + 5.0
    ext = extent_np(x)
    inside = [rng.dirichlet(np.ones(8)) @ x for _ in range(4)] + [x[2], 0.5 * (x[0] + x[5])]
    outside = [rng.dirichlet(np.ones(8)) @ x + rng.standard_normal(3) * np.array([1e-3, 1e-2, 1e-3]) for _ in range(4)]
    p = np.stack(inside + outside)
    got = hull_distance(t64(p)[None], t64(x)[None], tol=1e-10)[0].numpy()
    ref = np.array([exact_distance(pi, x) for pi in p])
    np.testing.assert_allclose(got, ref, rtol=1e-6, atol=1e-9 * ext)
    flags = outside_hull(t64(p)[None], t64(x)[None])[0].numpy()
    np.testing.assert_array_equal(flags, ref > 1e-6 * ext)
    assert not flags[: len(inside)].any()


def test_flags_match_linprog_larger() -> None:
    """More inputs than dimensions, corrals of up to d + 1 points."""
    rng = np.random.default_rng(7)
    n, d = 150, 12
    x = rng.standard_normal((n, d))
    centre = x.mean(0)
    inside = [rng.dirichlet(np.ones(n) * a) @ x for a in (0.05, 1.0) for _ in range(5)]
    outside = [centre + s * (x[i] - centre) for s, i in zip((1.02, 1.1, 1.5, 3.0), rng.choice(n, 4))]
    outside += [centre + rng.standard_normal(d) * r for r in (0.5, 1.0, 2.0, 4.0)]
    p = np.stack(inside + outside)
    flags = outside_hull(t64(p)[None], t64(x)[None])[0].numpy()
    dist = hull_distance(t64(p)[None], t64(x)[None])[0].numpy()
    ref = np.array([not lp_inside(pi, x) for pi in p])
    np.testing.assert_array_equal(flags, ref)
    np.testing.assert_array_equal(dist > 1e-6 * extent_np(x), ref)
    assert not ref[: len(inside)].any()


def test_query_chunking() -> None:
    rng = np.random.default_rng(8)
    x = t64(rng.standard_normal((2, 15, 4)))
    p = t64(rng.standard_normal((2, 9, 4)) * 1.5)
    whole = hull_distance(p, x, tol=1e-10)
    chunked = hull_distance(p, x, tol=1e-10, chunk_bytes=1)  # one query per chunk, no Gram matrix
    torch.testing.assert_close(chunked, whole, rtol=1e-9, atol=1e-12)
    flags = outside_hull(p, x, chunk_bytes=1)
    np.testing.assert_array_equal(flags.numpy(), outside_hull(p, x).numpy())
    with pytest.raises(ValueError):
        hull_distance(p, x, chunk_bytes=0)


@pytest.mark.parametrize("d", [1, 2, 3, 5])
def test_duplicate_inputs(d: int) -> None:
    rng = np.random.default_rng(2 + d)
    base = rng.standard_normal((5, d))
    x_dup = np.concatenate([base, base, base[:2], base[:1]])
    rng.shuffle(x_dup)
    _, p, _ = make_case(rng, 5, d)
    p = np.concatenate([p, base])  # vertices that appear several times
    d_base = hull_distance(t64(p)[None], t64(base)[None], tol=1e-10)[0].numpy()
    d_dup = hull_distance(t64(p)[None], t64(x_dup)[None], tol=1e-10)[0].numpy()
    ext = extent_np(base)
    np.testing.assert_allclose(d_dup, d_base, rtol=1e-8, atol=1e-9 * ext)
    assert (d_dup[-5:] <= 1e-10 * ext).all()
    np.testing.assert_array_equal(
        outside_hull(t64(p)[None], t64(x_dup)[None]).numpy(),
        outside_hull(t64(p)[None], t64(base)[None]).numpy(),
    )
    # all inputs identical: the hull is one point
    same = np.repeat(base[:1], 4, axis=0)
    d_same = hull_distance(t64(p)[None], t64(same)[None])[0].numpy()
    np.testing.assert_allclose(d_same, np.linalg.norm(p - base[0], axis=1), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("d", [1, 2, 6])
def test_single_input(d: int) -> None:
    rng = np.random.default_rng(d)
    x = rng.standard_normal((1, d))
    p = np.concatenate([x, rng.standard_normal((4, d)), x + 1e-9])
    got = hull_distance(t64(p)[None], t64(x)[None])[0].numpy()
    np.testing.assert_allclose(got, np.linalg.norm(p - x[0], axis=1), rtol=1e-12, atol=0)
    assert hull_extent(t64(x)[None]).item() == 1.0
    flags = outside_hull(t64(p)[None], t64(x)[None])[0].numpy()
    np.testing.assert_array_equal(flags, [False, True, True, True, True, False])


@pytest.mark.parametrize("d", [1, 3])
def test_non_finite_prototypes(d: int) -> None:
    rng = np.random.default_rng(4)
    x = rng.standard_normal((2, 8, d))
    p = rng.standard_normal((2, 5, d))
    p_bad = p.copy()
    p_bad[0, 1, 0] = np.inf
    p_bad[1, 3, -1] = np.nan
    p_bad[1, 0, 0] = -np.inf
    got = hull_distance(t64(p_bad), t64(x)).numpy()
    clean = hull_distance(t64(p), t64(x)).numpy()
    bad = ~np.isfinite(p_bad).all(-1)
    assert np.isposinf(got[bad]).all()
    np.testing.assert_allclose(got[~bad], clean[~bad], rtol=1e-12, atol=1e-12)
    flags = outside_hull(t64(p_bad), t64(x)).numpy()
    assert flags[bad].all()
    np.testing.assert_array_equal(flags[~bad], outside_hull(t64(p), t64(x)).numpy()[~bad])
    # precomputed distances path treats non-finite prototypes the same way
    flags2 = outside_hull(t64(p_bad), t64(x), distances=t64(got)).numpy()
    np.testing.assert_array_equal(flags, flags2)


def test_non_finite_inputs_terminate() -> None:
    x = torch.randn(2, 6, 3, dtype=torch.float64)
    x[1, 2, 0] = math.nan
    p = torch.randn(2, 4, 3, dtype=torch.float64)
    got = hull_distance(p, x, max_iter=50)
    assert torch.isnan(got[1]).all()
    torch.testing.assert_close(got[0], hull_distance(p[:1], x[:1])[0])
    # a non-finite prototype is outside even where the distances are undefined
    p[1, 0, 1] = math.inf
    flags = outside_hull(p, x)
    assert flags[1, 0] and not flags[1, 1:].any()
    zeros = torch.zeros(2, 4, dtype=torch.float64)
    assert torch.equal(outside_hull(p, x, distances=zeros)[1], torch.tensor([True, False, False, False]))


@SETTINGS
@given(seed=st.integers(0, 2**32 - 1), d=st.sampled_from([1, 2, 3, 5]), r=st.integers(2, 4))
def test_batched_runs_equal_single_runs(seed: int, d: int, r: int) -> None:
    rng = np.random.default_rng(seed)
    xs, ps = [], []
    for _ in range(r):
        x, p, _ = make_case(rng, 7, d)
        xs.append(x)
        ps.append(p)
    x, p = t64(np.stack(xs)), t64(np.stack(ps))
    batched = hull_distance(p, x, tol=1e-10)
    flags = outside_hull(p, x)
    for i in range(r):
        single = hull_distance(p[i : i + 1], x[i : i + 1], tol=1e-10)[0]
        ext = extent_np(xs[i])
        torch.testing.assert_close(batched[i], single, rtol=1e-9, atol=1e-9 * ext)
        assert torch.equal(flags[i], outside_hull(p[i : i + 1], x[i : i + 1])[0])


@SETTINGS
@given(seed=st.integers(0, 2**32 - 1), d=st.sampled_from([2, 3, 5]))
def test_permutation_invariance(seed: int, d: int) -> None:
    rng = np.random.default_rng(seed)
    x, p, _ = make_case(rng, 9, d)
    ext = extent_np(x)
    base = hull_distance(t64(p)[None], t64(x)[None], tol=1e-10)[0]
    px = rng.permutation(len(x))
    pp = rng.permutation(len(p))
    perm = hull_distance(t64(p[pp])[None], t64(x[px])[None], tol=1e-10)[0]
    torch.testing.assert_close(perm, base[pp], rtol=1e-8, atol=1e-9 * ext)
    f_base = outside_hull(t64(p)[None], t64(x)[None])[0]
    f_perm = outside_hull(t64(p[pp])[None], t64(x[px])[None])[0]
    assert torch.equal(f_perm, f_base[pp])


def test_float32_input_and_frac() -> None:
    torch.manual_seed(0)
    x = torch.randn(3, 30, 4)
    w = torch.distributions.Dirichlet(torch.ones(30)).sample((3, 5))
    p = torch.cat([w @ x, 4 * torch.randn(3, 5, 4) + 10], dim=1)
    dist = hull_distance(p, x)
    assert dist.dtype == torch.float64 and dist.shape == (3, 10)
    flags = outside_hull(p, x)
    assert not flags[:, :5].any() and flags[:, 5:].all()
    frac = outside_hull_frac(p, x)
    torch.testing.assert_close(frac, flags.double().mean(1))
    torch.testing.assert_close(frac, torch.full((3,), 0.5, dtype=torch.float64))


def test_hull_extent() -> None:
    rng = np.random.default_rng(5)
    x = rng.standard_normal((3, 7, 4)) * np.array([1.0, 5.0, 0.1, 2.0])
    x[2] = 3.0  # zero extent
    got = hull_extent(t64(x)).numpy()
    ref = (x.max(1) - x.min(1)).max(1)
    ref[2] = 1.0
    np.testing.assert_allclose(got, ref, rtol=0, atol=0)


def test_rel_tol_threshold() -> None:
    x = t64(np.array([[0.0, 0.0], [2.0, 0.0], [0.0, 2.0]]))[None]  # extent 2
    p = t64(np.array([[1.0, -0.01], [1.0, -0.03]]))[None]  # distances 0.01, 0.03
    np.testing.assert_array_equal(outside_hull(p, x, rel_tol=0.01)[0].numpy(), [False, True])
    np.testing.assert_array_equal(outside_hull(p, x, rel_tol=0.001)[0].numpy(), [True, True])
    np.testing.assert_array_equal(outside_hull(p, x, rel_tol=0.02)[0].numpy(), [False, False])


def test_max_iter_gives_upper_bound(caplog: pytest.LogCaptureFixture) -> None:
    rng = np.random.default_rng(6)
    x = rng.standard_normal((40, 6))
    p = rng.standard_normal((5, 6)) * 0.8
    ref = hull_distance(t64(p)[None], t64(x)[None], tol=1e-12)[0]
    with caplog.at_level(logging.WARNING, logger="protoreg.geometry"):
        short = hull_distance(t64(p)[None], t64(x)[None], tol=1e-12, max_iter=2)[0]
    assert (short >= ref - 1e-12).all()
    assert (short > ref + 1e-9).any()
    assert any("stopped before" in r.getMessage() for r in caplog.records)


def test_input_validation() -> None:
    x = torch.randn(2, 5, 3)
    with pytest.raises(ValueError):
        hull_distance(torch.randn(5, 3), x)
    with pytest.raises(ValueError):
        hull_distance(torch.randn(3, 4, 3), x)
    with pytest.raises(ValueError):
        hull_distance(torch.randn(2, 4, 2), x)
    with pytest.raises(ValueError):
        outside_hull(torch.randn(2, 4, 3), x, distances=torch.zeros(2, 3))
    with pytest.raises(ValueError):
        geometry_report(torch.randn(2, 4, 3), x, torch.randn(2, 5, 3))


# --------------------------------------------------------------------------
# warm starts between checks
# --------------------------------------------------------------------------
def _rows_passed_to(monkeypatch: pytest.MonkeyPatch, name: str) -> list[int]:
    """Record the number of query rows of every call of ``protoreg.geometry.hull.<name>`` (its
    first argument's length), which still runs as before."""
    import protoreg.geometry.hull as hull_mod

    rows: list[int] = []
    real = getattr(hull_mod, name)

    def spy(q, *args, **kw):  # type: ignore[no-untyped-def]
        rows.append(q.shape[0])
        return real(q, *args, **kw)

    monkeypatch.setattr(hull_mod, name, spy)
    return rows


@SETTINGS
@given(seed=st.integers(0, 2**32 - 1), d=st.sampled_from([2, 3, 5, 16]), n=st.integers(2, 40), move=st.sampled_from([0.0, 1e-3, 0.05, 1.0]))
def test_warm_start_gives_the_cold_results(seed: int, d: int, n: int, move: float) -> None:
    """Prototypes checked again after moving: with the cache, the same flags and distances within
    the certified tolerance as a cold solve, and exact against the brute force for small cases."""
    rng = np.random.default_rng(seed)
    x, p, _ = make_case(rng, n, d)
    X, P = t64(x)[None], t64(p)[None]
    warm = HullWarmStart()
    hull_distance(P, X, warm=warm)
    P2 = P + move * float(hull_extent(X)[0]) * torch.as_tensor(rng.standard_normal(p.shape))[None]
    cold = hull_distance(P2, X)
    hot = hull_distance(P2, X, warm=warm)
    ext = float(hull_extent(X)[0])
    assert torch.all((hot - cold).abs() <= 2e-6 * ext + 1e-12)
    assert torch.equal(outside_hull(P2, X, distances=hot), outside_hull(P2, X, distances=cold))
    if d <= 3 and n <= 12:
        exact = torch.tensor([exact_distance(q, x) for q in P2[0].numpy()], dtype=torch.float64)
        assert torch.all(hot[0] >= exact - 1e-9 * ext) and torch.all(hot[0] <= exact + 1e-6 * ext + 1e-12)
    # and a third check from the updated cache
    again = hull_distance(P2, X, warm=warm)
    assert torch.all((again - cold).abs() <= 2e-6 * ext + 1e-12)


def test_warm_start_with_wrong_hints_is_still_certified() -> None:
    """The cache only proposes starting points: arbitrary corrals cannot change the answer."""
    rng = np.random.default_rng(7)
    x, p, _ = make_case(rng, 30, 4, m_each=4)
    X, P = t64(x)[None], t64(p)[None]
    warm = HullWarmStart()
    hull_distance(P, X, warm=warm)
    assert warm._corral is not None
    junk = torch.as_tensor(rng.integers(-1, 30, size=tuple(warm._corral.shape)))
    junk[..., 0] = torch.as_tensor(rng.integers(0, 30, size=tuple(junk.shape[:2])))
    warm._corral = junk
    ext = float(hull_extent(X)[0])
    assert torch.all((hull_distance(P, X, warm=warm) - hull_distance(P, X)).abs() <= 2e-6 * ext)
    # a cache from other shapes is ignored, not misused
    hull_distance(P[:, :5], X, warm=warm)
    assert warm._corral.shape[1] == 5
    assert torch.all((hull_distance(P, X, warm=warm) - hull_distance(P, X)).abs() <= 2e-6 * ext)


def test_warm_start_skips_the_solver_for_prototypes_its_combinations_settle(monkeypatch: pytest.MonkeyPatch) -> None:
    """A second check of unmoved prototypes is settled by the stored convex combinations alone
    (no active-set solve), gives the cold answer, and the cache survives a checkpoint round trip;
    an older state (corrals without weights) is dropped, not misused."""
    rng = np.random.default_rng(11)
    x = rng.standard_normal((40, 3))
    inner = rng.dirichlet(np.ones(40), size=10) @ x  # deep inside: not at an input
    outer = x[:10] * 4.0 + 10.0  # far outside
    X, P = t64(x)[None], t64(np.concatenate([inner, outer]))[None]
    warm = HullWarmStart()
    cold = hull_distance(P, X, warm=warm)
    calls = _rows_passed_to(monkeypatch, "_wolfe_bounds")
    ext = float(hull_extent(X)[0])
    assert torch.all((hull_distance(P, X, warm=warm) - cold).abs() <= 2e-6 * ext)
    assert calls == []
    again = HullWarmStart()
    again.load_state_dict(warm.state_dict())
    assert torch.all((hull_distance(P, X, warm=again) - cold).abs() <= 2e-6 * ext)
    assert calls == []
    legacy = HullWarmStart()
    legacy.load_state_dict({k: v for k, v in warm.state_dict().items() if k != "weights"})
    assert legacy.hint(1, 20, 40, 4, torch.device("cpu")) is None
    assert torch.all((hull_distance(P, X, warm=legacy) - cold).abs() <= 2e-6 * ext)
    assert calls  # cold again


@pytest.mark.parametrize("d", [5, 300])
def test_a_seeded_warm_start_settles_prototypes_on_segments_without_the_solver(monkeypatch: pytest.MonkeyPatch, d: int) -> None:
    """Prototypes where a model initialised them (on segments between inputs): seeded with those
    combinations, the first check needs no active-set solve and reports distance ~0 (d = 300
    through the Gram searches); unseeded, the same check does need the solver. A cache that
    holds something, or malformed combinations, are not seeded."""
    rng = np.random.default_rng(3)
    n, m = 40, 30
    x = rng.standard_normal((n, d))
    a, b = rng.integers(0, n, size=(2, m))
    u = rng.random(m)
    p = (1 - u)[:, None] * x[a] + u[:, None] * x[b]
    X, P = t64(x)[None], t64(p).float().double()[None]  # the model's float32 rounding
    corral = torch.as_tensor(np.stack([a, b], axis=1))[None]
    weights = torch.as_tensor(np.stack([1 - u, u], axis=1))[None]
    calls = _rows_passed_to(monkeypatch, "_wolfe_bounds")
    cold = hull_check(P, X)
    assert calls  # the nearest inputs do not settle them
    calls.clear()
    warm = HullWarmStart()
    assert warm.seed(corral, weights, n=n, dim=d)
    rows = _rows_passed_to(monkeypatch, "_bounds_at")
    hot = hull_check(P, X, warm=warm)
    assert calls == []
    # hyperplane searches only at the nearest inputs farther than the tolerance: a combination
    # within the tolerance and the margin needs no lower bound
    assert sum(rows) == int((torch.cdist(P[0], X[0]).amin(dim=1) > hot.tol[0]).sum())
    assert torch.equal(hot.outside, cold.outside) and not bool(hot.outside.any())
    # ~0 (float32 rounding) unless the nearest input, within the tolerance, settled it first
    tol = float(hot.tol[0])
    near = torch.cdist(P[0], X[0]).amin(dim=1)
    assert torch.all((hot.distance[0] <= 1e-4 * tol) | ((near <= tol) & ((hot.distance[0] - near).abs() <= 1e-9)))
    assert int((hot.distance[0] <= 1e-4 * tol).sum()) >= m // 2
    assert not warm.seed(corral, weights, n=n, dim=d)  # it holds the check's corrals now
    assert not HullWarmStart().seed(corral, weights[..., :1], n=n, dim=d)
    assert not HullWarmStart().seed(corral[0], weights[0], n=n, dim=d)


@SETTINGS
@given(seed=st.integers(0, 2**32 - 1), d=st.sampled_from([2, 3, 300]), k=st.integers(1, 4), low=st.booleans())
def test_hint_bounds_bracket_the_exact_distance(seed: int, d: int, k: int, low: bool) -> None:
    """The certificates at any stored combination (arbitrary corrals and non-negative weights,
    unused slots, repeated points) bracket the exact distance, with the float64 search, with
    the float32 one less its error bound and (d = 300) through the Gram matrix less its error
    bound; rows without a corral get (inf, 0)."""
    from protoreg.geometry.gram import gram_base, gram_search
    from protoreg.geometry.hull import _hint_bounds, _Search
    from protoreg.geometry.solver import _score_error

    rng = np.random.default_rng(seed)
    x = rng.standard_normal((8, d)) + 3.0  # far from the origin: the Gram search centres
    p = rng.standard_normal((12, d)) * 2.0 + 3.0
    corral = torch.as_tensor(rng.integers(-1, 8, size=(12, k)))
    corral[:6, 0] = torch.as_tensor(rng.integers(0, 8, size=6))
    weights = torch.as_tensor(rng.random((12, k)))
    xn = t64(x)[None]
    xt = xn.transpose(1, 2)
    run = torch.zeros(12, dtype=torch.long)
    gs = gram_search(t64(p), xn, run, gram_base(xn, 1 << 20, 12), 1 << 20)[0] if d == 300 else None
    search = _Search(xt, xt.float(), _score_error((xn * xn).sum(-1), d) if low else None, gs)
    tol = torch.full((12,), math.inf, dtype=torch.float64)  # every row may search through the Gram matrix
    sub = torch.as_tensor(rng.permutation(12))  # a subset in any order, as the open queries are
    p, corral, weights = p[sub.numpy()], corral[sub], weights[sub]
    ub, lb = _hint_bounds(t64(p), xn, run, corral, weights, search, 1 << 20, tol, sub)
    exact = np.array([exact_distance(q, x) for q in p])
    has = (corral[:, 0] >= 0).numpy()
    assert np.all(ub.numpy()[has] >= exact[has] - 1e-9) and np.all(lb.numpy() <= exact + 1e-9)
    assert np.all(np.isinf(ub.numpy()[~has])) and np.all(lb.numpy()[~has] == 0)
    if gs is not None:  # and the bounds are those of the direct float64 search, to the error bound
        direct = _hint_bounds(t64(p), xn, run, corral, weights, _Search(xt, xt.float(), None), 1 << 20, tol, sub)
        assert torch.allclose(ub[has], direct[0][has], rtol=0, atol=1e-12)
        assert torch.all((lb - direct[1]).abs() <= 1e-4)


def gap_np(p: np.ndarray) -> float:
    fin = [q for q in p if np.isfinite(q).all()]
    best = math.inf
    for i in range(len(fin)):
        for j in range(i + 1, len(fin)):
            best = min(best, float(np.linalg.norm(fin[i] - fin[j])))
    return best


def dups_np(p: np.ndarray, thr: float) -> int:
    count = 0
    for j in range(len(p)):
        if not np.isfinite(p[j]).all():
            continue
        if any(np.isfinite(p[i]).all() and np.linalg.norm(p[i] - p[j]) <= thr for i in range(j)):
            count += 1
    return count


def dead_np(h: np.ndarray) -> int:
    winners = {int(np.argmax(row)) for row in h}
    return h.shape[1] - len(winners)


@st.composite
def prototype_sets(draw: st.DrawFn) -> np.ndarray:
    seed = draw(st.integers(0, 2**32 - 1))
    r, m, d = draw(st.integers(1, 3)), draw(st.integers(0, 9)), draw(st.integers(1, 4))
    rng = np.random.default_rng(seed)
    p = rng.standard_normal((r, m, d)).round(draw(st.sampled_from([0, 1, 6])))
    if m >= 2:
        # exact copies and near copies of earlier prototypes
        for _ in range(draw(st.integers(0, 3))):
            i, j = sorted(rng.choice(m, 2, replace=False))
            p[:, j] = p[:, i] + rng.choice([0.0, 1e-9, 1e-3]) * rng.standard_normal(d)
    for _ in range(draw(st.integers(0, 3))):
        if m:
            p[rng.integers(r), rng.integers(m), rng.integers(d)] = rng.choice([np.inf, -np.inf, np.nan])
    return p


@SETTINGS
@given(p=prototype_sets())
def test_min_prototype_gap_matches_bruteforce(p: np.ndarray) -> None:
    got = min_prototype_gap(t64(p)).numpy()
    ref = np.array([gap_np(p[r]) for r in range(p.shape[0])])
    np.testing.assert_allclose(got, ref, rtol=1e-12, atol=0)


@SETTINGS
@given(p=prototype_sets(), rel_tol=st.sampled_from([1e-6, 1e-2, 0.3]))
def test_duplicate_prototypes_matches_bruteforce(p: np.ndarray, rel_tol: float) -> None:
    r = p.shape[0]
    ext = np.linspace(0.5, 3.0, r)
    got = duplicate_prototypes(t64(p), rel_tol=rel_tol, extent=t64(ext)).numpy()
    ref = np.array([dups_np(p[i], rel_tol * ext[i]) for i in range(r)])
    np.testing.assert_array_equal(got, ref)
    assert duplicate_prototypes(t64(p)).dtype == torch.long
    # default extent: bounding box of the finite prototypes
    got_default = duplicate_prototypes(t64(p), rel_tol=rel_tol).numpy()
    ref_default = []
    for i in range(r):
        fin = np.array([q for q in p[i] if np.isfinite(q).all()]).reshape(-1, p.shape[2])
        ref_default.append(dups_np(p[i], rel_tol * extent_np(fin)))
    np.testing.assert_array_equal(got_default, ref_default)


@SETTINGS
@given(
    seed=st.integers(0, 2**32 - 1),
    r=st.integers(1, 3),
    n=st.integers(0, 12),
    m=st.integers(1, 8),
    decimals=st.sampled_from([0, 1, 8]),
)
def test_dead_units_matches_bruteforce(seed: int, r: int, n: int, m: int, decimals: int) -> None:
    rng = np.random.default_rng(seed)
    h = rng.standard_normal((r, n, m)).round(decimals)  # rounding creates ties
    got = dead_units(t64(h))
    assert got.dtype == torch.long
    np.testing.assert_array_equal(got.numpy(), [dead_np(h[i]) if n else m for i in range(r)])


def test_collapse_examples() -> None:
    p = t64(np.array([[[0.0, 0.0], [3.0, 4.0], [0.0, 0.0], [np.inf, 0.0], [3.0, 4.0 + 1e-9]]]))
    assert min_prototype_gap(p).item() == 0.0
    assert duplicate_prototypes(p).item() == 2
    assert min_prototype_gap(p[:, [0, 1]]).item() == 5.0
    assert math.isinf(min_prototype_gap(p[:, [0, 3]]).item())
    h = t64(np.array([[[1.0, 0.0, 0.0], [2.0, 0.0, 3.0], [0.0, 0.0, 5.0]]]))
    assert dead_units(h).item() == 1
    # "within" includes the boundary: distance 5 == 0.5 * 10
    q = t64(np.array([[[0.0, 0.0], [3.0, 4.0]]]))
    assert duplicate_prototypes(q, rel_tol=0.5, extent=t64(np.array([10.0]))).item() == 1
    assert duplicate_prototypes(q, rel_tol=0.49, extent=t64(np.array([10.0]))).item() == 0


# --------------------------------------------------------------------------
# report
# --------------------------------------------------------------------------
def test_geometry_report() -> None:
    torch.manual_seed(3)
    r, n, m, d = 2, 25, 6, 3
    x = torch.randn(r, n, d, dtype=torch.float64)
    w = torch.distributions.Dirichlet(torch.ones(n, dtype=torch.float64)).sample((r, m))
    p = w @ x
    p[:, 0] += 10.0
    p[1, 1] = p[1, 2]
    p[1, 3, 0] = math.inf
    hidden = torch.randn(r, n, m, dtype=torch.float64)
    hidden[..., 4] = -1e9  # never wins
    rep = geometry_report(p, x, hidden)
    assert set(rep) == {
        "outside_hull_frac",
        "mean_hull_distance",
        "max_hull_distance",
        "min_prototype_gap",
        "duplicate_prototypes",
        "dead_units",
        "hull_distance",
        "outside",
        "hull_resolution",
    }
    for k, v in rep.items():
        assert v.shape == ((r, m) if k in ("hull_distance", "outside") else (r,)), k
    exact = hull_distance(p, x, tol=1e-10)
    res = resolution(x)
    fin = torch.isfinite(exact)
    assert torch.all((rep["hull_distance"] - exact)[fin].abs() <= (DEFAULT_REL_TOL * res[:, None].expand_as(exact))[fin])
    assert torch.equal(rep["outside"], (exact > DEFAULT_MARGIN * res[:, None]) | ~fin)
    dist = rep["hull_distance"]
    np.testing.assert_array_equal(rep["outside"].numpy()[0], [True] + [False] * 5)
    torch.testing.assert_close(rep["outside_hull_frac"], torch.tensor([1 / 6, 2 / 6], dtype=torch.float64))
    assert math.isinf(rep["mean_hull_distance"][1].item())
    assert math.isinf(rep["max_hull_distance"][1].item())
    torch.testing.assert_close(rep["mean_hull_distance"][0], dist[0].mean())
    torch.testing.assert_close(rep["max_hull_distance"][0], dist[0].max())
    assert rep["max_hull_distance"][0].item() > 5.0
    torch.testing.assert_close(rep["min_prototype_gap"], min_prototype_gap(p))
    assert rep["min_prototype_gap"][1].item() == 0.0
    np.testing.assert_array_equal(rep["duplicate_prototypes"].numpy(), [0, 1])
    assert (rep["dead_units"] >= 1).all()
    torch.testing.assert_close(rep["dead_units"], dead_units(hidden))


@pytest.mark.gpu
def test_cuda_matches_cpu() -> None:
    rng = np.random.default_rng(9)
    x = t64(rng.standard_normal((2, 40, 6)))
    w = torch.distributions.Dirichlet(torch.ones(40, dtype=torch.float64)).sample((2, 5))
    p = torch.cat([w @ x, t64(rng.standard_normal((2, 5, 6)) * 2.0)], dim=1)
    cpu = hull_distance(p, x, tol=1e-10)
    gpu = hull_distance(p.cuda(), x.cuda(), tol=1e-10)
    assert gpu.device.type == "cuda"
    torch.testing.assert_close(gpu.cpu(), cpu, rtol=1e-8, atol=1e-9)
    assert torch.equal(outside_hull(p.cuda(), x.cuda()).cpu(), outside_hull(p, x))
    rep = geometry_report(p.cuda(), x.cuda(), torch.rand(2, 40, 10, device="cuda"))
    assert all(v.device.type == "cuda" for v in rep.values())
