"""Expulsion relative to the data's resolution (protoreg.geometry.margin) against brute force.

References: the median nearest-distinct-neighbour distance by a numpy double loop; hull
distances by the solver at a tight tolerance (``hull_distance(tol=1e-10)``, itself tested
against face enumeration in test_geometry.py) and, in 2-D, by scipy's exact convex hull.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scipy.spatial import ConvexHull

from protoreg.geometry import HullWarmStart, hull_check, hull_distance, outside_hull, resolution
from protoreg.geometry.margin import check_margin

SETTINGS = settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow], derandomize=True, database=None)


def t64(a: np.ndarray) -> torch.Tensor:
    return torch.as_tensor(a, dtype=torch.float64)


def resolution_np(x: np.ndarray) -> float:
    """Median over inputs of the distance to the nearest input at a different position."""
    ext = float((x.max(0) - x.min(0)).max()) if x.size else 0.0
    ext = ext if ext > 0 else 1.0
    near = []
    for i in range(len(x)):
        d = np.linalg.norm(x - x[i], axis=1)
        d = d[d > 1e-9 * ext]
        if d.size:
            near.append(d.min())
    return float(np.median(near)) if near else ext


def hull_distance_2d(p: np.ndarray, x: np.ndarray) -> float:
    """Exact distance from p to the hull of 2-D points x (inside: 0), from scipy's hull."""
    hull = ConvexHull(x)
    if np.all(hull.equations[:, :2] @ p + hull.equations[:, 2] <= 1e-12):
        return 0.0
    best = math.inf
    for a, b in hull.simplices:
        e = x[b] - x[a]
        t = np.clip(np.dot(p - x[a], e) / np.dot(e, e), 0.0, 1.0)
        best = min(best, float(np.linalg.norm(p - (x[a] + t * e))))
    return best


@SETTINGS
@given(seed=st.integers(0, 2**32 - 1), d=st.sampled_from([1, 2, 5, 40]), n=st.integers(2, 60), dup=st.booleans())
def test_resolution_matches_bruteforce(seed: int, d: int, n: int, dup: bool) -> None:
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, d)) * 10.0 ** rng.uniform(-3, 3)
    if dup:
        x[: n // 2] = x[n - n // 2 :][: n // 2]  # duplicated inputs do not shrink the scale
    got = float(resolution(t64(x)[None])[0])
    assert got == pytest.approx(resolution_np(x), rel=1e-9)


def test_resolution_edge_cases_and_the_sampled_median() -> None:
    one = t64(np.array([[[1.0, 2.0]]]))
    assert float(resolution(one)[0]) == 1.0  # a single point: the extent fallback (1.0)
    same = t64(np.full((1, 5, 3), 2.0))
    assert float(resolution(same)[0]) == 1.0
    assert float(resolution(t64(np.array([[[0.0], [4.0]]])))[0]) == 4.0
    nan = t64(np.array([[[0.0, 1.0], [math.nan, 1.0], [2.0, 2.0]]]))
    assert math.isfinite(float(resolution(nan)[0]))
    # above `sample` inputs the median runs over a seeded subset: deterministic, and close
    rng = np.random.default_rng(0)
    x = t64(rng.random((1, 3000, 3)))
    full, sampled = float(resolution(x)[0]), float(resolution(x, sample=500)[0])
    assert sampled == float(resolution(x, sample=500)[0])
    assert sampled == pytest.approx(full, rel=0.1)
    # runs are independent
    two = torch.cat([x[:, :100], 3.0 * x[:, :100]])
    torch.testing.assert_close(resolution(two), torch.stack([resolution(x[:, :100])[0], 3.0 * resolution(x[:, :100])[0]]))


@SETTINGS
@given(seed=st.integers(0, 2**32 - 1), n=st.integers(3, 30), margin=st.sampled_from([0.0, 0.1, 0.5, 2.0]))
def test_flags_and_distances_match_the_exact_2d_hull(seed: int, n: int, margin: float) -> None:
    """Every flag is the exact decision `dist > margin * resolution`, every distance within the
    stated accuracy, on prototypes inside, on vertices, just outside and far outside."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, 2))
    res = resolution_np(x)
    i = rng.integers(n, size=6)
    centre = x.mean(0)
    p = np.concatenate([
        x[i],  # vertices or inside
        rng.dirichlet(np.ones(n), size=6) @ x,  # inside
        x[i] + (x[i] - centre) * rng.uniform(0.001, 0.3, size=(6, 1)),  # a little outside (or in)
        centre + rng.standard_normal((6, 2)) * 5.0,  # far
    ])
    rel_tol = 0.01
    hc = hull_check(t64(p)[None], t64(x)[None], margin=margin, rel_tol=rel_tol)
    exact = np.array([hull_distance_2d(q, x) for q in p])
    got = hc.distance[0].numpy()
    assert float(hc.scale[0]) == pytest.approx(res, rel=1e-9)
    assert np.all(got >= exact - 1e-9) and np.all(got <= exact + rel_tol * res + 1e-9)
    assert np.all(hc.lower[0].numpy() <= exact + 1e-9)
    clear = np.abs(exact - margin * res) > 1e-9 * max(1.0, res)  # exact ties are not decidable in floats
    np.testing.assert_array_equal(hc.outside[0].numpy()[clear], (exact > margin * res)[clear])


def test_a_prototype_on_an_image_with_a_tiny_overshoot_is_not_expelled() -> None:
    """High dimension: every input is a vertex, so the exact test flags prototypes that sit on an
    input with an overshoot of 1 % of the spacing; the margin does not, while prototypes pushed
    out by half the spacing or more stay flagged."""
    rng = np.random.default_rng(1)
    x = rng.random((200, 100))
    res = resolution_np(x)
    centre = x.mean(0)
    out_dir = (x[:50] - centre) / np.linalg.norm(x[:50] - centre, axis=1, keepdims=True)
    on = x[:50] + 0.01 * res * out_dir
    pushed = x[:50] + 0.5 * res * out_dir
    P, X = t64(np.concatenate([on, pushed]))[None], t64(x)[None]
    exact_flags = outside_hull(P, X)[0].numpy()
    assert exact_flags[:50].mean() > 0.9  # the exact test calls them expelled
    hc = hull_check(P, X)
    np.testing.assert_array_equal(hc.outside[0].numpy(), [False] * 50 + [True] * 50)
    ref = hull_distance(P, X, tol=1e-10)[0].numpy()
    assert np.all(np.abs(hc.distance[0].numpy() - ref) <= 0.01 * res + 1e-12)


def test_one_dimension_is_exact_and_keeps_the_papers_expulsions() -> None:
    x = t64(np.linspace(0.0, 1.0, 20))[None, :, None]  # spacing 1/19
    p = t64(np.array([0.5, 1.0 + 1e-4, -0.1, 2.5, math.inf]))[None, :, None]
    hc = hull_check(p, x)
    assert float(hc.scale[0]) == pytest.approx(1 / 19)
    np.testing.assert_allclose(hc.distance[0].numpy()[:4], [0.0, 1e-4, 0.1, 1.5], atol=1e-12)
    np.testing.assert_array_equal(hc.outside[0].numpy(), [False, False, True, True, True])


@pytest.mark.parametrize("n, d", [(80, 12), (200, 80)])  # d = 80: the resumed one-pass solve
def test_warm_checks_equal_cold_checks_and_memory_chunks_do_not_matter(n: int, d: int, monkeypatch: pytest.MonkeyPatch) -> None:
    from protoreg.geometry import hull

    rng = np.random.default_rng(4)
    x = t64(rng.random((2, n, d)))
    w = torch.distributions.Dirichlet(torch.ones(n, dtype=torch.float64)).sample((2, 30))
    p = torch.cat([w @ x, x[:, :20] + 0.05 * torch.randn(2, 20, d, dtype=torch.float64)], dim=1)
    cold = hull_check(p, x)
    tiny = hull_check(p, x, chunk_bytes=1)
    warm = HullWarmStart()
    hull_check(p, x, warm=warm)
    moved = p + 0.01 * torch.randn_like(p)
    starts: list[bool] = []
    solve = hull._wolfe_bounds
    monkeypatch.setattr(hull, "_wolfe_bounds", lambda *a, **k: starts.append(k["start"] is not None) or solve(*a, **k))
    hot = hull_check(moved, x, warm=warm)
    # only a corral capacity of 65..128 resumes every solve from the previous check's corrals
    assert starts and all(starts) == (d == 80)
    monkeypatch.setattr(hull, "_wolfe_bounds", solve)
    ref = hull_check(moved, x)
    tol = cold.tol[:, None]
    for a, b in ((cold, tiny), (hot, ref)):
        assert torch.all((a.distance - b.distance).abs() <= tol)
    clear = (ref.distance - ref.margin[:, None]).abs() > tol
    assert torch.equal(hot.outside[clear], ref.outside[clear])
    assert torch.equal(cold.outside, tiny.outside)


@pytest.mark.parametrize("margin, rel_tol", [(-0.1, 0.01), (math.nan, 0.01), ("0.1", 0.01), (True, 0.01), (0.1, 0.0), (0.1, math.inf)])
def test_bad_margins_are_refused(margin: object, rel_tol: object) -> None:
    with pytest.raises(ValueError, match="margin|rel_tol"):
        check_margin(margin, rel_tol)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        hull_check(torch.zeros(1, 2, 2), torch.rand(1, 5, 2), margin=margin, rel_tol=rel_tol)  # type: ignore[arg-type]


def test_float32_scores_stay_within_their_certified_error() -> None:
    from protoreg.geometry.solver import _score_error

    gen = torch.Generator().manual_seed(3)
    for d in (2, 64, 784):
        x = torch.rand(1, 300, d, generator=gen, dtype=torch.float64) - 0.5
        z = torch.randn(50, d, generator=gen, dtype=torch.float64) * torch.logspace(-6, 1, 50, dtype=torch.float64)[:, None]
        exact = z @ x[0].T
        approx = (z.float() @ x[0].float().T).double()
        err = _score_error((x * x).sum(-1), d)
        bound = err[0] * torch.linalg.vector_norm(z, dim=1)[:, None]
        assert bool(((approx - exact).abs() <= bound).all())
        assert float(((approx - exact).abs() / bound).max()) > 1e-4  # a bound, not a blanket


def test_the_float32_search_keeps_every_certificate(monkeypatch: pytest.MonkeyPatch) -> None:
    """Image-like data large enough for the float32 vertex search: the bounds bracket the
    solver's float64 distance at a tight tolerance, the flags equal the float64 run's, and the
    searches (the solver's and the screening bounds') do run in float32."""
    import protoreg.geometry.hull as hull
    import protoreg.geometry.solver as solver

    gen = torch.Generator().manual_seed(11)
    N, d = 400, 96
    x = torch.rand(1, N, d, generator=gen, dtype=torch.float64).round(decimals=1)
    w = torch.rand(1, 120, N, generator=gen, dtype=torch.float64) ** 8
    inside = (w / w.sum(-1, keepdim=True)) @ x
    near = x[:, :120] + 0.3 * torch.randn(1, 120, d, generator=gen, dtype=torch.float64)
    p = torch.cat([inside, near, x[:, 120:200] * 1.2 - 0.1], dim=1)
    seen = []
    real = solver._Problem.__init__

    def spy(self, *a, **k):  # type: ignore[no-untyped-def]
        real(self, *a, **k)
        seen.append(self.xt32 is not None)

    monkeypatch.setattr(solver._Problem, "__init__", spy)
    real_search = hull._search
    searches = []
    monkeypatch.setattr(hull, "_search", lambda *a: searches.append(real_search(*a)) or searches[-1])
    hc = hull_check(p, x)
    assert seen and all(seen)
    assert searches and all(s.err is not None for s in searches)
    ref = hull_distance(p, x, tol=1e-10)
    assert bool((hc.lower <= ref + 1e-9).all()) and bool((ref <= hc.distance + 1e-9).all())
    assert float((hc.distance - ref).max()) <= float(hc.tol[0]) + 1e-9
    monkeypatch.setattr(solver, "_F32_SHARE", 0.0)  # float64 search everywhere
    seen.clear()
    searches.clear()
    hc64 = hull_check(p, x)
    assert seen and not any(seen)
    assert searches and all(s.err is None for s in searches)
    assert torch.equal(hc.outside, hc64.outside)
    assert 0 < int(hc.outside.sum()) < p.shape[1]
