"""Scale: exact matching without the dense solver, streaming evaluation, the memory refusal."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy.optimize import linear_sum_assignment

import protoreg
from protoreg.frontend.cli import main
from protoreg.evaluation.evaluate import evaluate, stream_responses
from protoreg.geometry import dead_units, duplicate_prototypes, geometry_report, hull_extent, min_prototype_gap
from protoreg.training.memory import MEMORY_LIMIT_ENV, available_bytes, estimate
from helpers import specialization_ratio
from protoreg.evaluation.evaluate import fit_mse
from protoreg.evaluation.matching import optimal_matching
from protoreg.model.mlp import GaussianMLP


def dense_cost(p: np.ndarray, x: np.ndarray) -> float:
    """Optimal summed distance by ``linear_sum_assignment``, non-finite prototypes last resort."""
    cost = np.sqrt(((p[:, None] - x[None]) ** 2).sum(-1))
    finite = np.isfinite(cost)
    big = (cost[finite].max() + 1.0) * (min(cost.shape) + 1) if finite.any() else 1.0
    r, c = linear_sum_assignment(np.where(finite, cost, big))
    return float(cost[r, c].sum())


def random_case(rng: np.random.Generator, dim: int) -> tuple[np.ndarray, np.ndarray]:
    m, n = int(rng.integers(1, 45)), int(rng.integers(1, 45))
    p, x = rng.normal(size=(m, dim)), rng.normal(size=(n, dim))
    kind = rng.integers(4)
    if kind == 1:  # ties: coarse grid
        p, x = np.round(p, 1), np.round(x, 1)
    elif kind == 2:  # duplicated prototypes and samples
        p, x = p[rng.integers(0, m, m)], x[rng.integers(0, n, n)]
    if rng.random() < 0.3:
        p[rng.random(m) < 0.3] = rng.choice([np.inf, -np.inf, np.nan])
    return p, x


@pytest.mark.parametrize("dim,methods", [(1, {"sorted", "sorted-dp"}), (2, {"lapjv"}), (5, {"lapjv"})])
def test_structured_matching_equals_the_dense_solver(dim, methods):
    rng = np.random.default_rng(dim)
    seen = set()
    for _ in range(60 if dim == 1 else 25):
        p, x = random_case(rng, dim)
        got = optimal_matching(p, x, dense_max=0)
        seen.add(got.method)
        k = min(len(p), len(x))
        assert got.method in methods
        assert len(got.proto_idx) == k and len(set(got.sample_idx.tolist())) == k
        assert got.proto_idx.tolist() == sorted(set(got.proto_idx.tolist()))
        want = dense_cost(p, x)
        finite_p = np.isfinite(p).all(1)
        if k > finite_p.sum():  # non-finite prototypes must be matched: inf, like the dense solver
            assert math.isinf(got.distances.sum()) and (~finite_p[got.proto_idx]).sum() == k - finite_p.sum()
        else:
            assert np.isfinite(got.distances).all()
            assert got.distances.sum() == pytest.approx(want, rel=1e-9, abs=1e-12)
        fin = np.isfinite(got.distances)
        np.testing.assert_allclose(got.distances[fin], np.linalg.norm(p[got.proto_idx] - x[got.sample_idx], axis=1)[fin], rtol=1e-14)
    assert "sorted-dp" in seen or dim > 1
    assert "lapjv" in seen or dim == 1


def test_one_dimensional_partial_matching_is_not_the_first_min_m_n():
    p = np.array([[0.0], [10.0]])
    x = np.array([[-5.0], [0.1], [5.0], [9.9], [20.0]])
    got = optimal_matching(p, x, dense_max=0)
    assert got.method == "sorted-dp" and got.sample_idx.tolist() == [1, 3]
    assert got.distances.sum() == pytest.approx(dense_cost(p, x))
    big_p, big_x = np.random.default_rng(0).random((300, 1)), np.random.default_rng(1).random((420, 1))
    for a, b in ((big_p, big_x), (big_x, big_p)):
        got = optimal_matching(a, b, dense_max=0)
        assert got.method == "sorted-dp" and got.distances.sum() == pytest.approx(dense_cost(a, b), rel=1e-12)


def test_lapjv_matching_is_optimal_in_64_and_784_dimensions():
    rng = np.random.default_rng(3)
    p, x = rng.random((150, 64)), rng.random((120, 64))
    got = optimal_matching(p, x, dense_max=0)
    assert got.method == "lapjv"
    assert got.distances.sum() == pytest.approx(dense_cost(p, x), rel=1e-12)
    assert optimal_matching(np.tile(p, (2, 1)), np.tile(x, (2, 1))).method == "lapjv"  # M N > DENSE_MAX_ELEMENTS
    assert optimal_matching(p, x).method == "dense"
    bad_x = x.copy()
    bad_x[0, 0] = np.nan  # non-finite inputs: the dense solver's conventions
    assert optimal_matching(p, bad_x, dense_max=0).method == "dense"
    # prototypes on their images (near pairs, recomputed from the differences) and collapsed ones (ties)
    imgs = (rng.random((90, 784)) < 0.2).astype(np.float64)
    for q in (imgs[rng.permutation(90)] + 1e-9 * rng.standard_normal((90, 784)), np.repeat(imgs[:9], 12, axis=0)):
        got = optimal_matching(q, imgs, dense_max=0)
        assert got.method == "lapjv" and got.distances.sum() == pytest.approx(dense_cost(q, imgs), rel=1e-12, abs=1e-12)


@pytest.mark.parametrize("shift", [0.0, 1e6, 1e150])
def test_cost_matrix_is_accurate_near_zero_and_far_from_the_origin(shift):
    """Each entry of the Gram-expanded cost matrix is within MATCHING_REL_TOL of the direct
    difference, also for pairs much closer than the data's distance from its centre."""
    from protoreg.evaluation.matching import MATCHING_REL_TOL, _cost_matrix

    rng = np.random.default_rng(7)
    x = rng.normal(size=(60, 33)) + shift
    p = np.concatenate([x[:20] + 1e-7 * rng.normal(size=(20, 33)), x[20:25], rng.normal(size=(15, 33)) + shift])
    cost, recomputed = _cost_matrix(p, x)
    direct = np.sqrt(((p[:, None] - x[None]) ** 2).sum(-1))
    assert recomputed >= 25  # at least the near pairs and the identical ones
    np.testing.assert_allclose(cost, direct, rtol=10 * MATCHING_REL_TOL, atol=0)


def test_matching_bytes_counts_the_cost_matrix():
    from protoreg.evaluation.matching import MATCHING_WORK_BYTES, matching_bytes

    assert matching_bytes(20_000, 20_000, 64) >= 8 * 20_000**2
    assert matching_bytes(100_000, 100_000, 1) < 1e9  # 1-D: no M x N array
    assert matching_bytes(10, 10, 784) >= MATCHING_WORK_BYTES


def small_model(dim: int, m: int, seed: int = 0) -> tuple[GaussianMLP, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(2, 37, dim, generator=g, dtype=torch.float64)
    y = torch.rand(2, 37, 2, generator=g, dtype=torch.float64)
    model = GaussianMLP(2, m, dim, 2, "affine" if dim == 1 else "radial").double()
    model.initialize(x, y, [seed, seed + 1])
    if dim == 1:
        with torch.no_grad():
            model.w[0, 0] = 0.0  # a unit at infinity
            model.b[1, :3] = model.b[1, 3]  # duplicated prototypes
    return model, x, y


@pytest.mark.parametrize("dim", [1, 3])
def test_streaming_evaluation_equals_the_whole_tensor(dim):
    model, x, y = small_model(dim, 11)
    hidden, pred = model(x)
    whole = evaluate(model, x, y)
    for chunk in (1, 5, 36):
        mse, wins = stream_responses(model, x, y, chunk)
        torch.testing.assert_close(mse, fit_mse(pred, y), rtol=1e-12, atol=0)
        torch.testing.assert_close(wins, torch.zeros_like(wins).scatter_add_(1, hidden.argmax(-1), torch.ones(2, 37, dtype=torch.long)))
        ev = evaluate(model, x, y, chunk=chunk)
        assert torch.equal(ev.wins, whole.wins) and torch.equal(ev.positions.isnan(), whole.positions.isnan())
        for key, val in whole.scalars.items():
            torch.testing.assert_close(ev.scalars[key], val, rtol=1e-12, atol=0, equal_nan=True, msg=key)
    torch.testing.assert_close(whole.scalars["specialization_ratio"], specialization_ratio(hidden))
    rep = geometry_report(model.prototype_positions(), x, hidden)
    torch.testing.assert_close(whole.scalars["dead_units"], dead_units(hidden))
    for key in ("min_prototype_gap", "duplicate_prototypes", "outside_hull_frac"):
        torch.testing.assert_close(whole.scalars[key], rep[key].cpu(), msg=key)


def test_one_dimensional_collapse_checks_equal_the_pairwise_ones():
    rng = np.random.default_rng(5)
    for trial in range(30):
        m = int(rng.integers(0, 40))
        p = np.round(rng.random((3, m, 1)), int(rng.integers(1, 4)))  # ties and near-ties
        p[rng.random((3, m)) < 0.1] = np.inf
        p[0, : min(m, 3)] = p[0, :1] + np.array([0.0, 5e-7, 2e-6])[: min(m, 3), None]  # around rel_tol
        pt = torch.tensor(p)
        x = torch.tensor(rng.random((3, 9, 1)))
        rep = geometry_report(pt, x, wins=torch.ones(3, m, dtype=torch.long))
        pairwise = torch.cat([pt, torch.zeros_like(pt)], dim=2)  # the same points in 2-D: the pairwise path
        torch.testing.assert_close(rep["min_prototype_gap"], min_prototype_gap(pairwise), rtol=0, atol=0)
        torch.testing.assert_close(rep["duplicate_prototypes"], duplicate_prototypes(pairwise, extent=hull_extent(x)))
        torch.testing.assert_close(min_prototype_gap(pt), min_prototype_gap(pairwise), rtol=0, atol=0)
    with pytest.raises(ValueError, match="exactly one"):
        geometry_report(pt, x)


def test_memory_estimate_and_limit(monkeypatch):
    small = estimate(n=20000, width=20000, dim=1, out=1, batch_size=100)
    full = estimate(n=20000, width=20000, dim=1, out=1)
    assert full.step == 200 * small.step and full.peak > small.peak > full.fixed
    assert estimate(n=20000, width=20000, dim=1, out=1, batch_size=100, losses=["separation"]).step > 100 * small.step
    monkeypatch.setenv(MEMORY_LIMIT_ENV, "1.5G")
    assert available_bytes() == int(1.5 * 2**30)
    monkeypatch.delenv(MEMORY_LIMIT_ENV)
    assert (available_bytes() or 0) > 0  # /proc/meminfo or sysconf


@pytest.mark.slow  # a real fit or sweep
def test_fit_too_big_for_memory_exits_2_with_one_line_and_writes_nothing(tmp_path: Path, monkeypatch, capsys, no_autoload):
    monkeypatch.setenv(MEMORY_LIMIT_ENV, "50M")
    monkeypatch.chdir(tmp_path)
    # full batch: the training step (8 x 8,000 x 8,000 float32) outweighs the matching and the checks
    code = main(["fit", "data.n=8000", "data.dim=2", "trainer.accelerator=cpu", "--out", str(tmp_path / "r")])
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert err.startswith("protoreg: error: train.batch_size:") and "GB" in err
    assert list(tmp_path.iterdir()) == []
    # with a minibatch the 20,000 x 20,000 cost matrix of the 2-D matching dominates
    code = main(["fit", "data.n=20000", "data.dim=2", "train.batch_size=2000", "trainer.accelerator=cpu", "--out", str(tmp_path / "r")])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("protoreg: error: model.width: the evaluation and matching need about 5.")
    assert list(tmp_path.iterdir()) == []
    # 1-D at this size trains banded (no B x M tensor): the evaluation dominates, and a smaller
    # batch would not help, so the line names model.width
    code = main(["fit", "data.n=20000", "train.batch_size=2000", "trainer.accelerator=cpu", "--out", str(tmp_path / "r")])
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert err.startswith("protoreg: error: model.width: the evaluation and matching need about") and "GB" in err
    assert list(tmp_path.iterdir()) == []


def test_checks_count_in_the_memory_estimate() -> None:
    """High-dimensional checks hold float64 copies, a warm-start cache of up to d + 1 inputs per
    prototype and bounded working blocks: the estimate grows with them, in 1-D it stays O(N + M)."""
    from protoreg.geometry import check_bytes

    one = estimate(n=1000, width=1000, dim=784, out=10)
    five = estimate(n=5000, width=5000, dim=784, out=10, batch_size=512)
    assert one.checks == check_bytes(1, 1000, 1000, 784) and five.checks > one.checks
    assert five.peak >= five.fixed + five.checks
    assert check_bytes(1, 5000, 5000, 784) >= 16 * 5000 * 785  # the cache at its largest
    assert check_bytes(1, 10**5, 10**5, 1) == 64 * 2 * 10**5


@pytest.mark.slow  # a real fit or sweep
def test_fit_whose_checks_cannot_fit_is_refused_naming_model_width(tmp_path: Path, monkeypatch, capsys, no_autoload):
    """A minibatch run whose training step is small but whose geometry checks are not: refused
    before training, naming model.width (a smaller batch would not help)."""
    data = tmp_path / "wide.npz"
    rng = np.random.default_rng(0)
    np.savez(data, x=rng.random((600, 2000)).astype(np.float32), y=rng.random((600, 1)).astype(np.float32))
    est = estimate(n=600, width=600, dim=2000, out=1, batch_size=8)
    assert est.checks > max(est.step, est.evaluation)
    monkeypatch.setenv(MEMORY_LIMIT_ENV, str(est.fixed + max(est.step, est.evaluation) + (est.checks - max(est.step, est.evaluation)) // 2))
    monkeypatch.chdir(tmp_path)
    code = main(["fit", f"data.path={data}", "train.batch_size=8", "trainer.accelerator=cpu", "--out", str(tmp_path / "r")])
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert err.startswith("protoreg: error: model.width: the geometry checks need about") and "lower model.width" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["wide.npz"]


@pytest.mark.slow  # a real fit or sweep
def test_batch_larger_than_the_data_trains_full_batch_with_a_warning(tmp_path: Path, no_autoload, fast):
    with pytest.warns(UserWarning, match=r"train.batch_size: 9 is more than the 8 samples of the data; training full batch"):
        run = protoreg.fit(*fast, "train.batch_size=9", out=tmp_path / "a")
    full = protoreg.fit(*fast, out=tmp_path / "b")
    assert run.metrics["fit_mse"] == full.metrics["fit_mse"]
