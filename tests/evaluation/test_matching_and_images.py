from __future__ import annotations

import itertools
import math
import re

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from protoreg.geometry import outside_hull_frac
from helpers import specialization_ratio
from protoreg.evaluation.evaluate import fit_mse
from protoreg.evaluation.images import image_metrics, matched_image_pairs, pair_ncc, pair_ssim
from protoreg.evaluation.matching import matching, recon_error


def brute_recon(p: np.ndarray, x: np.ndarray) -> float:
    """Best one-to-one matching by enumerating every injection of the smaller set."""
    m, n = len(p), len(x)
    d = np.sqrt(((p[:, None] - x[None]) ** 2).sum(-1))
    best = math.inf
    if m <= n:
        for cols in itertools.permutations(range(n), m):
            best = min(best, d[range(m), cols].mean())
    else:
        for rows in itertools.permutations(range(m), n):
            best = min(best, d[rows, range(n)].mean())
    return float(best)


@pytest.mark.parametrize("m,n,dim", [(4, 4, 1), (5, 5, 2), (3, 5, 1), (5, 3, 2), (6, 6, 3)])
@pytest.mark.parametrize("seed", range(4))
def test_recon_error_equals_brute_force(m, n, dim, seed):
    rng = np.random.default_rng(seed)
    p, x = rng.normal(size=(m, dim)), rng.normal(size=(n, dim))
    got = recon_error(torch.tensor(p[None]), torch.tensor(x[None]))
    assert float(got[0]) == pytest.approx(brute_recon(p, x), rel=1e-12)


def test_recon_error_non_finite_prototypes():
    x = torch.tensor([[[0.0], [1.0]]])
    # one infinite prototype must be matched when M == N: error is inf
    assert math.isinf(float(recon_error(torch.tensor([[[0.0], [math.inf]]]), x)[0]))
    # with a spare finite prototype it is left unmatched
    got = recon_error(torch.tensor([[[0.0], [math.inf], [0.9]]]), x)
    assert float(got[0]) == pytest.approx(0.05)


@settings(max_examples=40, deadline=None)
@given(arrays(np.float64, (6, 2), elements=st.floats(-10, 10)), arrays(np.float64, (5, 2), elements=st.floats(-10, 10)), st.randoms())
def test_recon_error_is_permutation_invariant(p, x, rnd):
    base = float(recon_error(torch.tensor(p[None]), torch.tensor(x[None]))[0])
    pi, xi = list(range(6)), list(range(5))
    rnd.shuffle(pi)
    rnd.shuffle(xi)
    perm = float(recon_error(torch.tensor(p[pi][None]), torch.tensor(x[xi][None]))[0])
    assert perm == pytest.approx(base, rel=1e-9, abs=1e-12)


@settings(max_examples=40, deadline=None)
@given(arrays(np.float64, (7, 4), elements=st.floats(0, 1)), st.randoms())
def test_specialization_ratio_brute_force_and_unit_permutation(h, rnd):
    hidden = torch.tensor(h[None])
    winners = {int(np.argmax(row)) for row in h}
    assert float(specialization_ratio(hidden)[0]) == pytest.approx(len(winners) / 7)
    cols = list(range(4))
    rnd.shuffle(cols)
    rows = list(range(7))
    rnd.shuffle(rows)
    # permuting units and samples leaves the ratio unchanged (ties aside, argmax picks the first)
    hp = h[rows][:, cols]
    if all(len(set(r)) == len(r) for r in h):
        assert float(specialization_ratio(torch.tensor(hp[None]))[0]) == pytest.approx(len(winners) / 7)


def test_fit_mse_and_outside_interval():
    pred = torch.tensor([[[1.0], [2.0]], [[0.0], [0.0]]])
    y = torch.tensor([[[1.0], [4.0]], [[1.0], [1.0]]])
    torch.testing.assert_close(fit_mse(pred, y), torch.tensor([2.0, 1.0]))
    x = torch.tensor([[[0.0], [1.0], [0.5]]])
    p = torch.tensor([[[-0.1], [0.0], [1.0], [math.inf], [0.3]]])
    assert float(outside_hull_frac(p, x)[0]) == pytest.approx(2 / 5)  # the 1-D exact interval test


# ---------------------------------------------------------------------------------------------
# matching and image metrics, against an independent plain-numpy reference


def brute_matching(p: np.ndarray, x: np.ndarray) -> list[tuple[int, int]]:
    """Optimal (proto, sample) pairs by enumeration; non-finite prototypes are a last resort."""
    m, n = len(p), len(x)
    d = np.sqrt(((p[:, None] - x[None]) ** 2).sum(-1))
    d = np.where(np.isfinite(d), d, 1e6)  # data in [0, 1]: any finite pair is far cheaper
    best, best_pairs = math.inf, []
    if m <= n:
        for cols in itertools.permutations(range(n), m):
            pairs = list(zip(range(m), cols))
            cost = sum(d[i, j] for i, j in pairs)
            if cost < best:
                best, best_pairs = cost, pairs
    else:
        for rows in itertools.permutations(range(m), n):
            pairs = sorted(zip(rows, range(n)))
            cost = sum(d[i, j] for i, j in pairs)
            if cost < best:
                best, best_pairs = cost, pairs
    return best_pairs


def ref_ssim(a: np.ndarray, b: np.ndarray, win: int = 7) -> float:
    """SSIM of Wang et al. 2004 with scikit-image's defaults (uniform window, sample covariance,
    data_range 1), averaged over every window lying fully inside the image, which is what
    skimage's ``crop(S, (win - 1) // 2)`` of the centred filter output keeps."""
    k1, k2, data_range = 0.01, 0.03, 1.0
    c1, c2 = (k1 * data_range) ** 2, (k2 * data_range) ** 2
    if not np.isfinite(a).all():
        return 0.0
    vals = []
    for i in range(a.shape[0] - win + 1):
        for j in range(a.shape[1] - win + 1):
            wa, wb = a[i : i + win, j : j + win].ravel(), b[i : i + win, j : j + win].ravel()
            ma, mb = wa.mean(), wb.mean()
            va, vb = wa.var(ddof=1), wb.var(ddof=1)
            cov = ((wa - ma) * (wb - mb)).sum() / (wa.size - 1)
            vals.append((2 * ma * mb + c1) * (2 * cov + c2) / ((ma**2 + mb**2 + c1) * (va + vb + c2)))
    return float(np.mean(vals))


def ref_ncc(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.ravel(), b.ravel()
    if not np.isfinite(a).all() or np.ptp(a) == 0 or np.ptp(b) == 0:
        return 0.0
    return float(np.corrcoef(a, b)[0, 1])


def ref_image_metrics(p: np.ndarray, x: np.ndarray, shape, threshold: float) -> dict[str, float]:
    pairs = brute_matching(p, x)
    ssim = [ref_ssim(p[i].reshape(shape), x[j].reshape(shape)) for i, j in pairs]
    ncc = [ref_ncc(p[i], x[j]) for i, j in pairs]
    return {
        "recon_ssim": float(np.mean(ssim)),
        "recon_ncc": float(np.mean(ncc)),
        "recon_ssim_frac": sum(s >= threshold for s in ssim) / len(x),
    }


def noisy_prototypes(rng, x: np.ndarray, m: int) -> np.ndarray:
    """Prototypes near shuffled training images, with noise levels from none to large, so SSIMs
    spread over (-1, 1] instead of all sitting near 0."""
    src = x[rng.permutation(len(x))[:m]] if m <= len(x) else x[rng.integers(0, len(x), m)]
    sigma = rng.uniform(0, 0.6, size=(m, 1))
    return np.clip(src + sigma * rng.normal(size=src.shape), 0, 1)


def assert_matches_reference(p: np.ndarray, x: np.ndarray, shape, threshold: float = 0.5) -> None:
    got = image_metrics(torch.tensor(p), torch.tensor(x), shape, ssim_threshold=threshold)
    assert set(got) == {"recon_ssim", "recon_ncc", "recon_ssim_frac", "recon_ssim04_frac", "nn_ncc", "nn_ssim04_frac"}
    for r in range(len(p)):
        want = ref_image_metrics(p[r], x[r], shape, threshold)
        for key, value in want.items():
            assert got[key].dtype == torch.float64 and got[key].shape == (len(p),)
            assert float(got[key][r]) == pytest.approx(value, abs=1e-10), key


@pytest.mark.parametrize("m,n,dim", [(4, 4, 2), (3, 5, 1), (5, 3, 2), (6, 6, 3)])
@pytest.mark.parametrize("seed", range(3))
def test_matching_equals_brute_force_and_drives_recon_error(m, n, dim, seed):
    rng = np.random.default_rng(seed)
    p, x = rng.normal(size=(m, dim)), rng.normal(size=(n, dim))
    rows, cols, dist = matching(p, x)
    brute = brute_matching(p, x)
    assert len(set(cols.tolist())) == len(cols) == min(m, n) and rows.tolist() == sorted(set(rows.tolist()))
    assert dist.sum() == pytest.approx(sum(np.linalg.norm(p[i] - x[j]) for i, j in brute), rel=1e-12)
    if dim > 1:  # in 1-D equal-cost matchings are common; otherwise the optimum is unique
        assert sorted(zip(rows.tolist(), cols.tolist())) == brute
    np.testing.assert_allclose(dist, np.linalg.norm(p[rows] - x[cols], axis=1), rtol=1e-12)
    # recon_error is exactly the mean of the matching's distances
    assert float(recon_error(torch.tensor(p[None]), torch.tensor(x[None]))[0]) == float(dist.mean())


def test_matching_leaves_non_finite_prototypes_unmatched_when_possible():
    x = np.array([[0.0], [1.0]])
    rows, cols, dist = matching(np.array([[0.0], [math.nan], [0.9]]), x)
    assert rows.tolist() == [0, 2] and cols.tolist() == [0, 1]
    np.testing.assert_allclose(dist, [0.0, 0.1])
    rows, cols, dist = matching(np.array([[0.0], [math.inf]]), x)
    assert rows.tolist() == [0, 1] and math.isinf(dist[1])


def test_identical_images_give_ssim_and_ncc_one():
    rng = np.random.default_rng(0)
    x = rng.random((2, 5, 64))
    got = image_metrics(torch.tensor(x), torch.tensor(x), (8, 8))
    for key in ("recon_ssim", "recon_ncc", "recon_ssim_frac"):
        torch.testing.assert_close(got[key], torch.ones(2, dtype=torch.float64), rtol=0, atol=1e-12)
    assert pair_ssim(x[0, 0].reshape(8, 8), x[0, 0].reshape(8, 8)) == pytest.approx(1.0, abs=1e-12)
    assert pair_ncc(x[0, 0], x[0, 0]) == pytest.approx(1.0, abs=1e-12)


@pytest.mark.parametrize("seed", range(5))
def test_random_cases_agree_with_reference(seed):
    rng = np.random.default_rng(seed)
    x = rng.random((2, 5, 64))
    p = np.stack([noisy_prototypes(rng, x[0], 5), rng.random((5, 64))])  # near-copies, pure noise
    assert_matches_reference(p, x, (8, 8))


@pytest.mark.parametrize("shape", [(8, 8), (7, 9), (10, 7), (12, 12)])
@pytest.mark.parametrize("seed", range(3))
def test_pair_ssim_is_skimage_and_reference(shape, seed):
    from skimage.metrics import structural_similarity

    rng = np.random.default_rng(seed)
    a = rng.random(shape)
    b = np.clip(a + rng.uniform(0, 0.5) * rng.normal(size=shape), 0, 1)
    got = pair_ssim(a, b)
    assert got == structural_similarity(a, b, win_size=7, data_range=1)  # exactly, same call
    assert got == pytest.approx(ref_ssim(a, b), abs=1e-10)
    assert pair_ncc(a, b) == pytest.approx(float(np.corrcoef(a.ravel(), b.ravel())[0, 1]), abs=1e-12)


@pytest.mark.parametrize("m,n", [(3, 5), (6, 4), (2, 6)])
@pytest.mark.parametrize("seed", range(2))
def test_rectangular_matching_agrees_with_reference(m, n, seed):
    rng = np.random.default_rng(seed)
    x = rng.random((2, n, 49))
    p = np.stack([noisy_prototypes(rng, x[r], m) for r in range(2)])
    assert_matches_reference(p, x, (7, 7))


def test_unmatched_training_images_count_as_not_reconstructed():
    rng = np.random.default_rng(1)
    x = rng.random((1, 5, 64))
    p = x[:, [3, 0, 4]]  # exact copies of three of the five images
    got = image_metrics(torch.tensor(p), torch.tensor(x), (8, 8), ssim_threshold=0.99)
    assert float(got["recon_ssim"][0]) == pytest.approx(1.0, abs=1e-12)  # mean over matched pairs
    assert float(got["recon_ssim_frac"][0]) == pytest.approx(3 / 5, abs=1e-15)  # but fraction of N
    pairs = matched_image_pairs(p[0], x[0], (8, 8))
    assert sorted((s, q) for s, q, _ in pairs) == [(0, 1), (3, 0), (4, 2)]


def test_non_finite_prototype_counts_as_zero():
    rng = np.random.default_rng(2)
    x = rng.random((1, 4, 64))
    p = noisy_prototypes(rng, x[0], 4)[None]
    bad = p.copy()
    bad[0, 1, 5] = math.inf
    got = image_metrics(torch.tensor(bad), torch.tensor(x), (8, 8), ssim_threshold=-1.0)
    pairs = brute_matching(bad[0], x[0])
    ssim = [0.0 if i == 1 else ref_ssim(bad[0, i].reshape(8, 8), x[0, j].reshape(8, 8)) for i, j in pairs]
    ncc = [0.0 if i == 1 else ref_ncc(bad[0, i], x[0, j]) for i, j in pairs]
    assert float(got["recon_ssim"][0]) == pytest.approx(np.mean(ssim), abs=1e-10)
    assert float(got["recon_ncc"][0]) == pytest.approx(np.mean(ncc), abs=1e-10)
    assert float(got["recon_ssim_frac"][0]) == 1.0  # threshold -1: SSIM 0 still counts
    assert_matches_reference(bad, x, (8, 8))
    # with a spare finite prototype the non-finite one is left out and changes nothing
    spare = np.concatenate([p, np.full((1, 1, 64), math.nan)], axis=1)
    a = image_metrics(torch.tensor(p), torch.tensor(x), (8, 8))
    b = image_metrics(torch.tensor(spare), torch.tensor(x), (8, 8))
    for key in a:
        assert torch.equal(a[key], b[key])
    assert pair_ssim(np.full((8, 8), math.nan), x[0, 0].reshape(8, 8)) == 0.0
    assert pair_ncc(np.full(64, -math.inf), x[0, 0]) == 0.0


def test_constant_vectors_have_ncc_zero():
    rng = np.random.default_rng(3)
    x = rng.random((1, 2, 64))
    x[0, 1] = 0.25  # a constant training image
    p = np.stack([np.full(64, 0.7), x[0, 1] + 0.0])[None]  # a constant prototype, and an exact copy
    got = image_metrics(torch.tensor(p), torch.tensor(x), (8, 8))
    assert float(got["recon_ncc"][0]) == 0.0
    assert_matches_reference(p, x, (8, 8))
    assert pair_ncc(np.full(5, 1e-300), np.arange(5.0)) == 0.0


@pytest.mark.parametrize("seed", range(3))
def test_ssim_threshold_fraction(seed):
    rng = np.random.default_rng(seed)
    x = rng.random((1, 6, 64))
    p = noisy_prototypes(rng, x[0], 6)[None]
    pairs = brute_matching(p[0], x[0])
    ssim = sorted(ref_ssim(p[0, i].reshape(8, 8), x[0, j].reshape(8, 8)) for i, j in pairs)
    exact = [s for _, _, s in matched_image_pairs(p[0], x[0], (8, 8))]
    for t in [-1.0, 0.0, 0.3, 0.5, 0.9, 1.0, 1.5, ssim[2] - 1e-9, ssim[2] + 1e-9, exact[3]]:
        got = image_metrics(torch.tensor(p), torch.tensor(x), (8, 8), ssim_threshold=t)["recon_ssim_frac"]
        got = float(got[0])
        assert got == sum(s >= t for s in exact) / 6
        if abs(t - exact[3]) > 1e-9:
            assert got == sum(s >= t for s in ssim) / 6
    # a threshold equal to a pair's SSIM counts it (>=)
    t = exact[3]
    got = image_metrics(torch.tensor(p), torch.tensor(x), (8, 8), ssim_threshold=t)["recon_ssim_frac"]
    assert float(got[0]) == 4 / 6


def test_matched_image_pairs_sorted_and_consistent():
    rng = np.random.default_rng(4)
    x = rng.random((7, 64))
    p = noisy_prototypes(rng, x, 5)
    pairs = matched_image_pairs(p, x, (8, 8))
    rows, cols, _ = matching(p, x)
    assert sorted((q, s) for s, q, _ in pairs) == sorted(zip(rows.tolist(), cols.tolist()))
    ssims = [s for _, _, s in pairs]
    assert ssims == sorted(ssims, reverse=True)
    for s, q, v in pairs:
        assert isinstance(s, int) and isinstance(q, int) and isinstance(v, float)
        assert v == pytest.approx(ref_ssim(p[q].reshape(8, 8), x[s].reshape(8, 8)), abs=1e-10)
    got = image_metrics(torch.tensor(p[None]), torch.tensor(x[None]), (8, 8))
    assert float(got["recon_ssim"][0]) == pytest.approx(np.mean(ssims), abs=1e-12)


@pytest.mark.parametrize("shape", [(6, 8), (8, 6), (4, 4), (3, 3), ()])
def test_too_small_image_shape_raises(shape):
    d = math.prod(shape)
    p = torch.rand(1, 2, d, dtype=torch.float64)
    with pytest.raises(ValueError, match=re.escape(str(shape))):
        image_metrics(p, p, shape)
    with pytest.raises(ValueError, match=re.escape(str(shape))):
        matched_image_pairs(p[0].numpy(), p[0].numpy(), shape)
    if shape:
        with pytest.raises(ValueError, match=re.escape(str(shape))):
            pair_ssim(np.zeros(shape), np.zeros(shape))


def test_image_shape_must_match_input_dimension():
    p = torch.rand(1, 2, 64, dtype=torch.float64)
    with pytest.raises(ValueError, match=re.escape("(7, 7)")):
        image_metrics(p, p, (7, 7))


def test_image_metrics_invariant_to_permuting_units_and_samples():
    rng = np.random.default_rng(5)
    x = rng.random((6, 64))
    p = noisy_prototypes(rng, x, 7)
    pi, xi = rng.permutation(7), rng.permutation(6)
    a = image_metrics(torch.tensor(p[None]), torch.tensor(x[None]), (8, 8))
    b = image_metrics(torch.tensor(p[pi][None]), torch.tensor(x[xi][None]), (8, 8))
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=1e-12)


EXTREME = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True, width=64),
    st.sampled_from([0.0, 1.0, -1e300, 1e300, 1e-300, 1e154, 0.5]),
)


@settings(max_examples=40, deadline=None)
@given(arrays(np.float64, (3, 49), elements=EXTREME), arrays(np.float64, (2, 49), elements=st.floats(0, 1)))
def test_image_metrics_never_crash_on_extreme_prototypes(p, x):
    got = image_metrics(torch.tensor(p[None]), torch.tensor(x[None]), (7, 7))
    for key in ("recon_ssim", "recon_ncc"):
        v = float(got[key][0])
        assert math.isfinite(v) and -1 - 1e-9 <= v <= 1 + 1e-9, (key, v)
    assert 0 <= float(got["recon_ssim_frac"][0]) <= 1


def test_empty_sets_give_nan():
    x = torch.rand(1, 3, 64, dtype=torch.float64)
    got = image_metrics(torch.zeros(1, 0, 64, dtype=torch.float64), x, (8, 8))
    assert math.isnan(float(got["recon_ssim"][0])) and math.isnan(float(got["recon_ncc"][0]))
    assert float(got["recon_ssim_frac"][0]) == 0.0  # no prototype reconstructs any of the 3 images


def test_matching_reuses_a_recent_result_and_hands_out_copies(monkeypatch: pytest.MonkeyPatch) -> None:
    """An image run's final evaluation asks for the same matching three times; it is solved once."""
    import protoreg.evaluation.matching as M

    solved: list[int] = []
    real = M.optimal_matching
    monkeypatch.setattr(M, "optimal_matching", lambda p, x: solved.append(1) or real(p, x))
    monkeypatch.setattr(M, "_MATCHINGS", type(M._MATCHINGS)())
    rng = np.random.default_rng(0)
    p, x = rng.random((30, 4)), rng.random((25, 4))
    first = M.matching(p, x)
    first[0][:] = -1  # the caller's copy: the cache keeps its own
    again = M.matching(p.copy(), x.copy())
    assert len(solved) == 1
    ref = real(p, x)
    assert np.array_equal(again[0], ref.proto_idx) and np.array_equal(again[1], ref.sample_idx)
    assert np.array_equal(again[2], ref.distances)
    q = p.copy()
    q[3, 2] = np.nextafter(q[3, 2], 2.0)  # one bit differs: solved again
    M.matching(q, x)
    M.matching(p.astype(np.float32), x)  # another dtype: another problem
    assert len(solved) == 3
    for i in range(M.MATCHING_CACHE_SIZE + 1):
        M.matching(rng.random((5, 2)), rng.random((5, 2)))
    assert len(M._MATCHINGS) == M.MATCHING_CACHE_SIZE


def _brute_nearest(p: np.ndarray, x: np.ndarray, cap: int) -> np.ndarray:
    """The capped nearest-by-NCC reading written out with pair_ncc over every pair."""
    from protoreg.evaluation.images import pair_ncc

    sim = np.array([[pair_ncc(a, b) for b in x] for a in p])
    claim = np.full(len(p), -1)
    count = np.zeros(len(x), dtype=int)
    for i in sorted(range(len(p)), key=lambda i: (-sim[i].max(), i)):
        order = sorted(range(len(x)), key=lambda j: (-sim[i, j], j))
        free = [j for j in order if count[j] < cap]
        if free:
            claim[i] = free[0]
            count[free[0]] += 1
    return claim


@pytest.mark.parametrize("cap", [1, 2])
def test_nearest_images_equals_a_brute_force_greedy_reading(cap: int) -> None:
    from protoreg.evaluation.images import _NN_CANDIDATES, nearest_images, pair_ncc

    rng = np.random.default_rng(cap)
    for m, n in [(7, 5), (12, 40), (60, 45), (3 * _NN_CANDIDATES, 2 * _NN_CANDIDATES)]:
        x = rng.random((n, 16))
        p = np.concatenate([x[rng.integers(0, n, m // 2)] + 0.05 * rng.normal(size=(m // 2, 16)), rng.random((m - m // 2, 16))])
        p[0] = 0.5  # a constant prototype: NCC 0 with every image
        claim, ncc = nearest_images(p, x, cap=cap)
        np.testing.assert_array_equal(claim, _brute_nearest(p, x, cap))
        got = claim >= 0
        assert np.bincount(claim[got], minlength=n).max() <= cap
        assert got.sum() == min(m, cap * n)
        np.testing.assert_allclose(ncc[got], [pair_ncc(p[i], x[claim[i]]) for i in np.flatnonzero(got)], rtol=0, atol=0)


def test_literature_image_metrics_against_an_independent_computation() -> None:
    """recon_ssim04_frac on the optimal matching (scipy), nn_ncc / nn_ssim04_frac on the capped
    nearest-NCC reading, SSIM by scikit-image directly."""
    from scipy.optimize import linear_sum_assignment
    from skimage.metrics import structural_similarity

    from protoreg.evaluation.images import pair_ncc

    rng = np.random.default_rng(5)
    x = rng.random((30, 64))
    p = np.concatenate([x[:12] + 0.02 * rng.normal(size=(12, 64)), rng.random((10, 64))])
    got = {k: float(v[0]) for k, v in image_metrics(torch.tensor(p)[None], torch.tensor(x)[None], (8, 8)).items()}
    ssim = lambda a, b: structural_similarity(a.reshape(8, 8), b.reshape(8, 8), win_size=7, data_range=1)  # noqa: E731
    cost = np.sqrt(((p[:, None] - x[None]) ** 2).sum(-1))
    r, c = linear_sum_assignment(cost)
    s = np.array([ssim(p[i], x[j]) for i, j in zip(r, c)])
    assert got["recon_ssim04_frac"] == pytest.approx((s > 0.4).sum() / 30)
    assert got["recon_ssim_frac"] == pytest.approx((s >= 0.5).sum() / 30)
    claim = _brute_nearest(p, x, 1)
    assert got["nn_ncc"] == pytest.approx(np.mean([pair_ncc(p[i], x[claim[i]]) for i in range(len(p))]))
    good = {claim[i] for i in range(len(p)) if ssim(p[i], x[claim[i]]) > 0.4}
    assert got["nn_ssim04_frac"] == pytest.approx(len(good) / 30) and 12 / 30 <= got["nn_ssim04_frac"] < 1
