"""protoreg.HullMonitor: fit's definition and certificates for anyone's prototypes."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.spatial import ConvexHull

import protoreg
from protoreg.geometry import hull_check


def exact_2d_distance(points: np.ndarray, q: np.ndarray) -> float:
    """Distance from q to the convex hull of points in 2-D: 0 inside, else to the nearest edge."""
    hull = ConvexHull(points)
    if all(np.dot(eq[:2], q) + eq[2] <= 1e-12 for eq in hull.equations):
        return 0.0
    best = np.inf
    for a, b in hull.simplices:
        p, r = points[a], points[b]
        t = np.clip(np.dot(q - p, r - p) / np.dot(r - p, r - p), 0.0, 1.0)
        best = min(best, float(np.linalg.norm(q - (p + t * (r - p)))))
    return best


def test_flags_and_distances_agree_with_an_exact_2d_hull() -> None:
    rng = np.random.default_rng(0)
    x = rng.random((60, 2))
    q = np.concatenate([rng.random((20, 2)), rng.random((20, 2)) * 1.6 - 0.3])
    monitor = protoreg.HullMonitor(torch.from_numpy(x))
    report = monitor.check(torch.from_numpy(q))
    exact = np.array([exact_2d_distance(x, p) for p in q])
    assert np.all(np.abs(report.distances.numpy() - exact) <= report.tol + 1e-12)
    clear = np.abs(exact - report.margin) > report.tol
    assert np.array_equal(report.outside.numpy()[clear], (exact > report.margin)[clear])
    assert 0 < report.outside_frac < 1 and report.margin == pytest.approx(0.1 * monitor.resolution)


def test_the_same_answers_as_fits_checker_warm_or_cold() -> None:
    g = torch.Generator().manual_seed(1)
    x = torch.rand(80, 5, generator=g, dtype=torch.float64)
    p = torch.cat([torch.rand(10, 5, generator=g, dtype=torch.float64), 1.2 * torch.rand(10, 5, generator=g, dtype=torch.float64)])
    monitor = protoreg.HullMonitor(x)
    ref = hull_check(p[None], x[None])
    for _ in range(2):  # the second check is warm-started
        report = monitor.check(p)
        assert torch.equal(report.outside, ref.outside[0]) and torch.allclose(report.distances, ref.distance[0], atol=float(ref.tol[0]))
    m = report.metrics()
    assert set(m) == {"geometry/outside_hull_frac", "geometry/mean_hull_distance", "geometry/max_hull_distance", "geometry/min_prototype_gap", "geometry/duplicate_prototypes"}
    assert m["geometry/outside_hull_frac"] == report.outside_frac and m["geometry/max_hull_distance"] == float(report.distances.max())


def test_the_margin_is_the_fraction_of_the_resolution_and_bad_values_are_refused() -> None:
    x = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    q = torch.tensor([[1.3, 0.5]])
    assert protoreg.HullMonitor(x).check(q).outside.tolist() == [True]
    assert protoreg.HullMonitor(x, margin=0.5).check(q).outside.tolist() == [False]
    for bad in (-0.1, float("nan"), "0.1"):
        with pytest.raises(ValueError, match="margin"):
            protoreg.HullMonitor(x, margin=bad)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"prototypes must have shape \(M, 2\)"):
        protoreg.HullMonitor(x).check(torch.zeros(3, 3))
    with pytest.raises(ValueError, match="NaN"):
        protoreg.HullMonitor(torch.tensor([[0.0, float("nan")], [1.0, 1.0]]))
