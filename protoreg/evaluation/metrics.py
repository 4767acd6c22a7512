"""Evaluation metrics: pure functions on tensors, one value per run.

Each takes batched inputs with a leading run axis R and returns shape (R,).
"""

from __future__ import annotations

import hashlib
import math
import threading
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np
import torch
import lap
from scipy.optimize import linear_sum_assignment
from skimage.metrics import structural_similarity


def fit_mse(pred: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Mean squared error of the fit, ``mean_{i,k} (pred - y)^2``.

    Shapes: pred, y (R, N, k) -> (R,).

    >>> fit_mse(torch.zeros(1, 2, 1), torch.ones(1, 2, 1))
    tensor([1.])
    """
    return (pred - y).square().mean(dim=(1, 2))


#: Elements of one block of prototype-sample differences or distances (32 MB of float64).
_COST_BLOCK_ELEMENTS = 1 << 22

#: Up to this many prototype-sample pairs (M x N) :func:`matching` solves the dense assignment
#: problem; beyond it, the exact structured methods of :func:`optimal_matching` run.
DENSE_MAX_ELEMENTS = 1 << 16

#: Relative accuracy of every entry of the cost matrix of the d >= 2 solver (:func:`_cost_matrix`):
#: the matching found costs at most ``(1 + 2.1 MATCHING_REL_TOL)`` times the optimum.
MATCHING_REL_TOL = 1e-12

#: How :func:`optimal_matching` solved a problem (see :attr:`Matching.method`).
MATCHING_METHODS: tuple[str, ...] = ("dense", "sorted", "sorted-dp", "lapjv")


@dataclass(frozen=True)
class Matching:
    """An optimal one-to-one matching of prototypes to training inputs (see :func:`optimal_matching`)."""

    proto_idx: np.ndarray  #: (K,) int, increasing
    sample_idx: np.ndarray  #: (K,) int
    distances: np.ndarray  #: (K,) float64, ``inf`` for a matched non-finite prototype
    #: one of :data:`MATCHING_METHODS`: ``dense`` (small problems, non-finite inputs),
    #: ``sorted`` (1-D, as many finite prototypes as samples), ``sorted-dp`` (1-D, different
    #: counts), ``lapjv`` (d >= 2: Jonker-Volgenant on the float64 cost matrix)
    method: str


def _pair_distances(p: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Euclidean distances of row pairs ``p[k]``, ``x[k]`` (each (K, d)), scaled so that
    squaring cannot overflow (coordinates up to ~1e308 keep finite distances); the same
    arithmetic as the dense cost matrix of :func:`_dense_matching`."""
    diff = p - x
    scale = np.abs(diff).max(axis=-1, keepdims=True) if diff.shape[-1] else np.zeros(diff.shape[:-1] + (1,))
    scale = np.where(np.isfinite(scale) & (scale > 0), scale, 1.0)
    with np.errstate(over="ignore", invalid="ignore"):
        return np.sqrt(((diff / scale) ** 2).sum(-1)) * scale[..., 0]


def _direct_costs(p: np.ndarray, x: np.ndarray, out: np.ndarray, rows: np.ndarray) -> None:
    """``out[rows]`` = the distances of ``p[rows]`` to every ``x`` from the coordinate
    differences (:func:`_pair_distances`), in blocks of prototypes so that the (block, N, d)
    difference stays small for large N and d."""
    block = max(1, _COST_BLOCK_ELEMENTS // max(1, x.shape[0] * x.shape[1]))
    for start in range(0, rows.size, block):
        idx = rows[start : start + block]
        out[idx] = _pair_distances(p[idx][:, None, :], x[None, :, :])


def _dense_matching(p: np.ndarray, x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``scipy.optimize.linear_sum_assignment`` on the full (M, N) cost matrix; non-finite
    prototypes cost more than any finite assignment can reach."""
    finite = np.isfinite(p).all(axis=1)
    cost = np.full((p.shape[0], x.shape[0]), np.inf)
    _direct_costs(p, x, cost, np.flatnonzero(finite))
    finite_cost = cost[np.isfinite(cost)]
    k = min(cost.shape) + 1
    big = min((finite_cost.max() + 1.0), np.finfo(np.float64).max / k**2) * k if finite_cost.size else 1.0
    rows, cols = linear_sum_assignment(np.where(np.isfinite(cost), cost, big))
    return rows, cols, cost[rows, cols]


def _cost_matrix(p: np.ndarray, x: np.ndarray) -> tuple[np.ndarray, int]:
    """Euclidean distances (M, N) float64 of finite p (M, d) to finite x (N, d), each within
    :data:`MATCHING_REL_TOL` of the exact distance relatively, and how many were computed directly.

    Gram expansion ``|a|^2 + |b|^2 - 2 a.b`` by BLAS on coordinates centred on the samples' mean
    and scaled by a power of two (both exact up to the rounding of the centring), in blocks of
    rows written into the result. Its rounding error is at most ``delta = gamma (|a|^2 + |b|^2)``,
    ``gamma = (2 d + 6) u`` (``u = 2^-53``; the inner products' classical bound ``d u`` for any
    summation order, twice, and the three additions); an entry whose Gram value ``g`` is below
    ``delta (1 + 1 / (2 MATCHING_REL_TOL))`` may be off by more than the tolerance and is computed
    from the coordinate differences (:func:`_pair_distances`, relative error about ``d u / 2``):
    the near pairs only, unless the data is far from its centre relative to its spread.
    """
    m, n, d = p.shape[0], x.shape[0], x.shape[1]
    cost = np.empty((m, n))
    if m == 0 or n == 0:
        return cost, 0
    centre = x.mean(0)
    a, b = p - centre, x - centre
    big = max(float(np.abs(a).max(initial=0.0)), float(np.abs(b).max(initial=0.0)))
    if not math.isfinite(big):  # centring overflowed: every distance from the differences
        _direct_costs(p, x, cost, np.arange(m))
        return cost, m * n
    scale = 2.0 ** math.frexp(big)[1] if big > 0 else 1.0
    a, b = a / scale, b / scale  # |coordinates| <= 1: no overflow in the squares
    an, bn = (a * a).sum(1), (b * b).sum(1)
    gamma = (2 * d + 6) * 2.0**-53
    # below this multiple of |a|^2 + |b|^2 a Gram value is not certainly within the tolerance
    kappa = gamma * (1.0 + 0.5 / MATCHING_REL_TOL)
    floor = 4.0 * d * np.finfo(np.float64).tiny  # subnormal leftovers of the scaling
    recomputed = 0
    block = max(1, _COST_BLOCK_ELEMENTS // n)
    pair_block = max(1, _COST_BLOCK_ELEMENTS // max(1, d))
    for s in range(0, m, block):
        g = cost[s : s + block]
        np.matmul(a[s : s + block], b.T, out=g)
        g *= -2.0
        g += an[s : s + block, None]
        g += bn[None, :]
        near = g < kappa * (an[s : s + block, None] + bn[None, :]) + floor
        np.sqrt(np.maximum(g, 0.0, out=g), out=g)
        g *= scale
        ri, cj = np.nonzero(near)
        recomputed += ri.size
        for t in range(0, ri.size, pair_block):
            r, c = ri[t : t + pair_block], cj[t : t + pair_block]
            g[r, c] = _pair_distances(p[s + r], x[c])
    return cost, recomputed


def _sorted_partial(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Optimal matching of every point of sorted ``a`` (m,) into sorted ``b`` (n >= m) for the
    cost ``|a_i - b_j|``: the positions in ``b`` of a_0 .. a_{m-1}.

    For a convex cost of the difference some optimal matching is monotone (uncross two crossing
    pairs and the cost does not grow), so a_i goes to b_{i+s_i} with skips
    ``0 <= s_0 <= ... <= s_{m-1} <= n - m``. Dynamic programme over the skip s:
    ``f_i(s) = |a_i - b_{i+s}| + min_{s' <= s} f_{i-1}(s')``; O(m (n - m + 1)) time, one bit per
    state to trace the optimum back.
    """
    m, n = a.size, b.size
    w = n - m
    if w == 0:
        return np.arange(m)
    g = np.zeros(w + 1)
    improved = np.empty(w + 1, dtype=bool)
    improved[0] = True
    bits = np.empty((m, (w + 8) // 8), dtype=np.uint8)
    for i in range(m):
        f = np.abs(a[i] - b[i : i + w + 1]) + g
        g = np.minimum.accumulate(f)
        np.less(f[1:], g[:-1], out=improved[1:])  # a new prefix minimum at s
        bits[i] = np.packbits(improved)
    pos = np.empty(m, dtype=np.int64)
    s = w
    for i in range(m - 1, -1, -1):
        s = int(np.flatnonzero(np.unpackbits(bits[i], count=s + 1))[-1])
        pos[i] = i + s
    return pos


def _match_1d(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Optimal pairs ``(i, j)`` matching every point of the smaller of a (m,), b (n,) (1-D)."""
    if a.size > b.size:
        j, i = _match_1d(b, a)
        return i, j
    oa, ob = np.argsort(a, kind="stable"), np.argsort(b, kind="stable")
    return oa, ob[_sorted_partial(a[oa], b[ob])]


def optimal_matching(p: np.ndarray, x: np.ndarray, *, dense_max: int = DENSE_MAX_ELEMENTS) -> Matching:
    """Optimal one-to-one matching of prototypes p (M, d) to training inputs x (N, d).

    Minimizes the summed Euclidean distance ``sum_k ||p[proto_idx[k]] - x[sample_idx[k]]||``
    over matchings of K = min(M, N) pairs. Non-finite prototypes are matched only when there are
    not enough finite ones (distance ``inf``): the finite prototypes are matched optimally
    (all of them, or all samples when they outnumber the samples) and non-finite ones take the
    samples left over.

    Which solver runs (:attr:`Matching.method`):

    - ``dense``: ``M * N <= dense_max`` (:data:`DENSE_MAX_ELEMENTS`) or a non-finite input:
      ``scipy.optimize.linear_sum_assignment`` on the (M, N) cost matrix of direct differences;
    - ``sorted`` (1-D, as many finite prototypes as samples): sorted order is optimal for any
      convex cost of the difference, O(N log N);
    - ``sorted-dp`` (1-D, different counts): the best monotone partial matching by dynamic
      programming (:func:`_sorted_partial`), O(N log N + min(F, N) |F - N|) for F finite prototypes;
    - ``lapjv`` (d >= 2): the Jonker-Volgenant shortest-augmenting-path algorithm
      (``lap.lapjvh`` of the ``lapx`` package, rectangular without padding) on the float64 cost
      matrix of :func:`_cost_matrix` (every entry within :data:`MATCHING_REL_TOL` of the exact
      distance): 8 M N bytes (:func:`matching_bytes`), O(M N d) to build by BLAS, then
      augmenting paths; measured on 2 cores: 0.06 s at M = N = 5,000 in 784-D for prototypes
      on their inputs, 70 s at M = N = 20,000 in 64-D for uniform ones (docs/performance.md).

    Shapes: p (M, d), x (N, d) -> :class:`Matching` with proto_idx increasing.
    """
    m, n = p.shape[0], x.shape[0]
    if m * n <= dense_max or not np.isfinite(x).all():
        return Matching(*_dense_matching(p, x), method="dense")
    finite = np.flatnonzero(np.isfinite(p).all(axis=1))
    pf = p[finite]
    if p.shape[1] == 1:
        fi, cols = _match_1d(pf[:, 0], x[:, 0])
        method = "sorted" if finite.size == n else "sorted-dp"
    else:
        fi, cols = _match_lapjv(pf, x)
        method = "lapjv"
    rows = finite[fi]
    spare = min(m, n) - rows.size  # non-finite prototypes that must be matched
    if spare:
        taken = np.zeros(n, dtype=bool)
        taken[cols] = True
        rows = np.concatenate([rows, np.setdiff1d(np.arange(m), finite)[:spare]])
        cols = np.concatenate([cols, np.flatnonzero(~taken)[:spare]])
    order = np.argsort(rows, kind="stable")
    rows, cols = rows[order], cols[order]
    dist = np.full(rows.size, np.inf)
    ok = np.isfinite(p[rows]).all(axis=1)
    dist[ok] = _pair_distances(p[rows[ok]], x[cols[ok]])
    return Matching(rows, cols, dist, method)


def _match_lapjv(p: np.ndarray, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Optimal pairs (rows of p, rows of x) matching every point of the smaller of finite p, x
    (d >= 2): ``lap.lapjvh`` on :func:`_cost_matrix`."""
    if p.shape[0] == 0 or x.shape[0] == 0:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    cost, _ = _cost_matrix(p, x)
    rows, cols = lap.lapjvh(cost, extend_cost=True, return_cost=False)
    return np.asarray(rows, dtype=np.int64), np.asarray(cols, dtype=np.int64)


#: Bytes of the bounded working blocks of a matching: the Gram block of :func:`_cost_matrix` and
#: its temporaries, the direct-difference blocks, the 1-D dynamic programme's bits.
MATCHING_WORK_BYTES = 8 * 8 * _COST_BLOCK_ELEMENTS


def matching_bytes(m: int, n: int, d: int) -> int:
    """Peak bytes of :func:`optimal_matching` for M = ``m`` prototypes and N = ``n`` inputs in
    ``d`` dimensions: the float64 cost matrix (the dense solver: with its two copies; ``lapjv``
    in d >= 2: one, 3.2 GB at M = N = 20,000), :data:`MATCHING_WORK_BYTES` and O(M + N) index
    arrays; no M x N array in 1-D beyond the dense size."""
    if m * n <= DENSE_MAX_ELEMENTS:
        pairs = 3 * 8 * m * n
    else:
        pairs = 8 * m * n if d > 1 else 0
    return pairs + MATCHING_WORK_BYTES + 64 * (m + n)


def matching(p: np.ndarray, x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Optimal one-to-one matching of prototypes p (M, d) to training inputs x (N, d).

    Minimizes the summed Euclidean distance ``sum_k ||p[proto_idx[k]] - x[sample_idx[k]]||``;
    with M != N it has K = min(M, N) pairs. Non-finite prototypes get a cost larger than any
    finite assignment can reach, so they are matched only when there are not enough finite ones
    (distance ``inf``). Solved exactly by :func:`optimal_matching` (dense for small problems,
    sorted in 1-D, Jonker-Volgenant in d >= 2).

    Shapes: p (M, d), x (N, d) -> (proto_idx (K,) int, sample_idx (K,) int, distances (K,) float64),
    proto_idx increasing. This is the matching behind :func:`recon_error` and :func:`image_metrics`.

    >>> matching(np.array([[0.0], [1.0]]), np.array([[1.0], [0.5]]))
    (array([0, 1]), array([1, 0]), array([0.5, 0. ]))
    """
    key = _arrays_key(p, x)
    with _MATCHING_LOCK:
        hit = _MATCHINGS.get(key)
        if hit is not None:
            _MATCHINGS.move_to_end(key)
    if hit is None:
        res = optimal_matching(p, x)
        hit = (res.proto_idx, res.sample_idx, res.distances)
        with _MATCHING_LOCK:
            _MATCHINGS[key] = hit
            while len(_MATCHINGS) > MATCHING_CACHE_SIZE:
                _MATCHINGS.popitem(last=False)
    return hit[0].copy(), hit[1].copy(), hit[2].copy()


#: How many recent :func:`matching` results are kept: the final evaluation of an image run asks
#: for the same matching three times (``recon_error``, the image metrics, the reconstruction
#: figure), 1.6 s each for 1,797 x 1,797 64-D pairs.
MATCHING_CACHE_SIZE = 4
_MATCHINGS: "OrderedDict[bytes, tuple[np.ndarray, np.ndarray, np.ndarray]]" = OrderedDict()
_MATCHING_LOCK = threading.Lock()


def _arrays_key(*arrays: np.ndarray) -> bytes:
    """A digest of the arrays' dtypes, shapes and contents (equal only for equal arrays)."""
    h = hashlib.blake2b(digest_size=32)
    for a in arrays:
        h.update(f"{a.dtype.str}{a.shape};".encode())
        h.update(a.tobytes())
    return h.digest()


def recon_error(prototypes: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Reconstruction error: mean distance of the optimal matching of prototypes to inputs.

    The matching (:func:`matching`: the minimum summed Euclidean distance, solved exactly by
    :func:`optimal_matching`) pairs each prototype with a distinct training input; with M != N it
    is rectangular and has min(M, N) pairs. ``inf`` when a non-finite prototype has to be matched.

    Shapes: prototypes (R, M, d), x (R, N, d) -> (R,) float64.

    >>> recon_error(torch.tensor([[[0.0], [1.0]]]), torch.tensor([[[1.0], [0.5]]]))
    tensor([0.2500], dtype=torch.float64)
    """
    p = prototypes.detach().double().cpu().numpy()
    xs = x.detach().double().cpu().numpy()
    return torch.tensor([_mean(matching(p[r], xs[r])[2]) for r in range(p.shape[0])], dtype=torch.float64)


def _mean(d: np.ndarray) -> float:
    """Mean that stays finite for finite values near the float64 limit."""
    if d.size == 0:
        return math.nan
    with np.errstate(over="ignore"):
        m = float(d.mean())
    if not math.isfinite(m) and np.isfinite(d).all():
        m = float((d / d.size).sum())
    return m


SSIM_WIN_SIZE = 7


def _check_image_shape(image_shape: tuple[int, ...], d: int | None = None) -> tuple[int, ...]:
    """``image_shape`` as a tuple of ints; ValueError (naming it) if unusable for 7-wide SSIM."""
    shape = tuple(int(s) for s in image_shape)
    if not shape or min(shape) < SSIM_WIN_SIZE:
        raise ValueError(
            f"image_shape {tuple(image_shape)} is too small for SSIM: every side must be at least "
            f"win_size={SSIM_WIN_SIZE}"
        )
    if d is not None and math.prod(shape) != d:
        raise ValueError(f"image_shape {tuple(image_shape)} has {math.prod(shape)} pixels, but inputs have d={d}")
    return shape


def pair_ssim(p_img: np.ndarray, x_img: np.ndarray) -> float:
    """SSIM of a prototype image and a training image, both of the same shape (every side >= 7).

    ``skimage.metrics.structural_similarity(p_img, x_img, win_size=7, data_range=1)`` on float64
    images (Wang et al. 2004 with scikit-image's defaults: uniform 7x7 window, sample covariance,
    K1 = 0.01, K2 = 0.03, mean over the windows that lie inside the image):
    ``S = (2 mu_p mu_x + C1)(2 s_px + C2) / ((mu_p^2 + mu_x^2 + C1)(s_p^2 + s_x^2 + C2))``,
    ``C1 = 0.01^2``, ``C2 = 0.03^2``. A non-finite prototype counts as 0, and so does a finite one
    so large (beyond ~1e150) that the float64 computation overflows (0 is then the limit).
    ValueError if a side is smaller than 7.

    >>> img = np.linspace(0, 1, 64).reshape(8, 8)
    >>> pair_ssim(img, img)
    1.0
    """
    p_img = np.asarray(p_img, dtype=np.float64)
    x_img = np.asarray(x_img, dtype=np.float64)
    _check_image_shape(p_img.shape)
    if p_img.shape != x_img.shape:
        raise ValueError(f"image shapes differ: {p_img.shape} vs {x_img.shape}")
    if not np.isfinite(p_img).all():
        return 0.0
    with np.errstate(all="ignore"):
        s = float(structural_similarity(p_img, x_img, win_size=SSIM_WIN_SIZE, data_range=1))
    return s if math.isfinite(s) else 0.0


def pair_ncc(p: np.ndarray, x: np.ndarray) -> float:
    """Pearson correlation of two vectors (images are flattened), in [-1, 1].

    ``sum (p - mean p)(x - mean x) / sqrt(sum (p - mean p)^2 * sum (x - mean x)^2)``, computed
    after scaling each vector by its largest magnitude so huge coordinates cannot overflow.
    0 when p is non-finite or either vector is constant (its correlation is undefined).

    >>> pair_ncc(np.array([0.0, 1.0, 2.0]), np.array([1.0, 3.0, 5.0]))
    1.0
    >>> pair_ncc(np.array([0.0, 1.0, 2.0]), np.array([4.0, 4.0, 4.0]))
    0.0
    """
    p = np.asarray(p, dtype=np.float64).ravel()
    x = np.asarray(x, dtype=np.float64).ravel()
    if p.size == 0 or x.size == 0 or not np.isfinite(p).all() or not np.isfinite(x).all():
        return 0.0
    if (p == p[0]).all() or (x == x[0]).all():
        return 0.0
    p = p / np.abs(p).max()
    x = x / np.abs(x).max()
    a, b = p - p.mean(), x - x.mean()
    den = math.sqrt(float(a @ a) * float(b @ b))
    if den == 0.0 or not math.isfinite(den):  # only subnormal leftovers of nearly constant vectors
        return 0.0
    return float(np.clip(float(a @ b) / den, -1.0, 1.0))


def _matched_scores(
    p: np.ndarray, x: np.ndarray, shape: tuple[int, ...]
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(proto_idx, sample_idx, ssim, ncc) of the :func:`matching` of p (M, d) to x (N, d)."""
    rows, cols, _ = matching(p, x)
    ssim = np.array([pair_ssim(p[i].reshape(shape), x[j].reshape(shape)) for i, j in zip(rows, cols)], dtype=np.float64)
    ncc = np.array([pair_ncc(p[i], x[j]) for i, j in zip(rows, cols)], dtype=np.float64)
    return rows, cols, ssim, ncc


#: The SSIM above which the reconstruction literature (Haim et al. 2022; Buzaglo et al. 2023)
#: counts a training image as reconstructed (docs/replication.md, MNIST).
LITERATURE_SSIM_THRESHOLD = 0.4
#: How many prototypes may claim the same training image in the nearest-neighbour reading
#: (:func:`nearest_images`).
NN_CAP = 1
#: Candidates per prototype kept from the NCC matrix before its full row is needed.
_NN_CANDIDATES = 32


def _zscore_rows(a: np.ndarray) -> np.ndarray:
    """Rows centred and scaled to unit norm (after scaling by their largest magnitude, as
    :func:`pair_ncc`); constant or non-finite rows become 0, so their NCC with anything is 0."""
    a = np.asarray(a, dtype=np.float64)
    out = np.zeros_like(a)
    ok = np.isfinite(a).all(axis=1) & (a != a[:, :1]).any(axis=1) if a.shape[1] else np.zeros(a.shape[0], dtype=bool)
    b = a[ok] / np.abs(a[ok]).max(axis=1, keepdims=True)
    b = b - b.mean(axis=1, keepdims=True)
    norm = np.linalg.norm(b, axis=1, keepdims=True)
    good = norm[:, 0] > 0
    rows = np.flatnonzero(ok)
    out[rows[good]] = b[good] / norm[good]
    return out


def nearest_images(p: np.ndarray, x: np.ndarray, *, cap: int = NN_CAP) -> tuple[np.ndarray, np.ndarray]:
    """The nearest-neighbour reading of the reconstruction literature: each prototype claims the
    training image most similar to it by NCC, at most ``cap`` prototypes per image.

    Greedy in order of similarity: the prototypes are taken by their best NCC, highest first,
    and each claims its most similar image that fewer than ``cap`` prototypes have claimed (ties
    by the lower index). When M > cap * N the prototypes left over claim nothing (-1).

    Shapes: p (M, d), x (N, d) -> (image index (M,) int, -1 for none; NCC (M,) float64, NaN for
    none). NCC as :func:`pair_ncc`.

    >>> claim, ncc = nearest_images(np.array([[0.0, 1, 2], [0, 1, 3]]), np.array([[0.0, 1, 2], [5, 0, 5]]))
    >>> claim, ncc.round(3)  # the second prototype's best image (NCC 0.982) is taken
    (array([0, 1]), array([1.   , 0.189]))
    """
    if cap < 1:
        raise ValueError(f"cap must be >= 1, got {cap}")
    m, n = p.shape[0], x.shape[0]
    claim = np.full(m, -1, dtype=np.int64)
    score = np.full(m, np.nan)
    if m == 0 or n == 0:
        return claim, score
    pz, xz = _zscore_rows(p), _zscore_rows(x)
    k = min(n, _NN_CANDIDATES)
    cand = np.empty((m, k), dtype=np.int64)
    cval = np.empty((m, k))
    block = max(1, _COST_BLOCK_ELEMENTS // n)
    for s in range(0, m, block):
        sim = np.clip(pz[s : s + block] @ xz.T, -1.0, 1.0)
        # stable descending order: ties by the lower image index
        top = np.argsort(-sim, axis=1, kind="stable")[:, :k]
        cand[s : s + block] = top
        cval[s : s + block] = np.take_along_axis(sim, top, axis=1)
    count = np.zeros(n, dtype=np.int64)
    for i in np.argsort(-cval[:, 0], kind="stable"):
        free = count[cand[i]] < cap
        if free.any():
            j = int(cand[i, int(np.argmax(free))])
        else:  # every candidate is taken: the whole row
            if (count >= cap).all():
                continue
            sim = np.clip(xz @ pz[i], -1.0, 1.0)
            sim[count >= cap] = -np.inf
            j = int(np.argmax(sim))
        claim[i] = j
        count[j] += 1
    for i in np.flatnonzero(claim >= 0):  # the claimed pairs' NCC exactly as pair_ncc
        score[i] = pair_ncc(p[i], x[claim[i]])
    return claim, score


def image_metrics(
    prototypes: torch.Tensor,
    x: torch.Tensor,
    image_shape: tuple[int, ...],
    *,
    ssim_threshold: float = 0.5,
    nn_cap: int = NN_CAP,
) -> dict[str, torch.Tensor]:
    """Image reconstruction quality of the prototypes, on the same matching as :func:`recon_error`.

    Inputs are flattened images: ``d = prod(image_shape)``, each side of ``image_shape`` >= 7
    (SSIM's 7-wide window), else ValueError naming ``image_shape``. With the K = min(M, N) pairs
    ``(i_k, j_k)`` of :func:`matching` (prototype i_k reconstructs training image j_k):

    - ``recon_ssim``: ``mean_k SSIM(p_{i_k}, x_{j_k})`` (:func:`pair_ssim`, i.e. scikit-image's
      ``structural_similarity(..., win_size=7, data_range=1)``);
    - ``recon_ncc``: ``mean_k NCC(p_{i_k}, x_{j_k})``, Pearson correlation of the flattened pair
      (:func:`pair_ncc`);
    - ``recon_ssim_frac``: ``#{k : SSIM_k >= ssim_threshold} / N``, the fraction of training
      images reconstructed; when M < N the N - M unmatched images count as not reconstructed;
    - ``recon_ssim04_frac``: the same with the literature's criterion ``SSIM_k > 0.4``
      (:data:`LITERATURE_SSIM_THRESHOLD`);
    - ``nn_ncc``: the nearest-neighbour reading (:func:`nearest_images`: every prototype claims
      its most similar training image by NCC, at most ``nn_cap`` prototypes per image), the mean
      NCC of the prototypes with the images they claim;
    - ``nn_ssim04_frac``: in that reading, the fraction of the N training images claimed by a
      prototype with SSIM > 0.4.

    Conventions: a pair whose prototype is non-finite has SSIM 0 and NCC 0 (non-finite prototypes
    are matched only when there are not enough finite ones); the NCC of a pair where either vector
    is constant is 0. ``recon_ssim`` and ``recon_ncc`` are NaN when M = 0 or N = 0,
    ``recon_ssim_frac`` when N = 0. Training images are assumed finite, in [0, 1] (data_range=1).

    Shapes: prototypes (R, M, d), x (R, N, d) -> dict of six (R,) float64 tensors.

    >>> img = torch.linspace(0, 1, 64, dtype=torch.float64).reshape(1, 1, 64)
    >>> {k: float(v[0]) for k, v in image_metrics(img, img, (8, 8)).items()}
    {'recon_ssim': 1.0, 'recon_ncc': 1.0, 'recon_ssim_frac': 1.0, 'recon_ssim04_frac': 1.0, 'nn_ncc': 1.0, 'nn_ssim04_frac': 1.0}
    """
    p = prototypes.detach().double().cpu().numpy()
    xs = x.detach().double().cpu().numpy()
    shape = _check_image_shape(image_shape, xs.shape[-1])
    if p.shape[-1] != xs.shape[-1]:
        raise ValueError(f"prototypes have d={p.shape[-1]}, inputs d={xs.shape[-1]}")
    names = ("recon_ssim", "recon_ncc", "recon_ssim_frac", "recon_ssim04_frac", "nn_ncc", "nn_ssim04_frac")
    out: dict[str, list[float]] = {k: [] for k in names}
    lit = LITERATURE_SSIM_THRESHOLD
    for r in range(p.shape[0]):
        _, _, ssim, ncc = _matched_scores(p[r], xs[r], shape)
        n = xs.shape[1]
        out["recon_ssim"].append(float(ssim.mean()) if ssim.size else math.nan)
        out["recon_ncc"].append(float(ncc.mean()) if ncc.size else math.nan)
        out["recon_ssim_frac"].append(float((ssim >= ssim_threshold).sum()) / n if n else math.nan)
        out["recon_ssim04_frac"].append(float((ssim > lit).sum()) / n if n else math.nan)
        claim, nn_ncc = nearest_images(p[r], xs[r], cap=nn_cap)
        got = np.flatnonzero(claim >= 0)
        nn_ssim = np.array([pair_ssim(p[r][i].reshape(shape), xs[r][claim[i]].reshape(shape)) for i in got])
        out["nn_ncc"].append(float(nn_ncc[got].mean()) if got.size else math.nan)
        out["nn_ssim04_frac"].append(float(np.unique(claim[got][nn_ssim > lit]).size) / n if n else math.nan)
    return {k: torch.tensor(v, dtype=torch.float64) for k, v in out.items()}


def matched_image_pairs(p: np.ndarray, x: np.ndarray, image_shape: tuple[int, ...]) -> list[tuple[int, int, float]]:
    """Matched (training image, prototype) pairs of one run, best reconstructed first (for figures).

    Shapes: p (M, d), x (N, d), ``d = prod(image_shape)`` -> K = min(M, N) tuples
    ``(sample_idx, proto_idx, ssim)`` on the :func:`matching` of :func:`image_metrics`, sorted by
    SSIM descending (ties by sample_idx); SSIM as in :func:`pair_ssim` (0 for a non-finite
    prototype). ValueError, naming ``image_shape``, if a side is smaller than 7.

    >>> img = np.linspace(0, 1, 64).reshape(1, 64)
    >>> matched_image_pairs(np.concatenate([img, img[:, ::-1]]), img, (8, 8))
    [(0, 0, 1.0)]
    """
    p = np.asarray(p, dtype=np.float64)
    x = np.asarray(x, dtype=np.float64)
    shape = _check_image_shape(image_shape, x.shape[-1])
    rows, cols, ssim, _ = _matched_scores(p, x, shape)
    pairs = [(int(j), int(i), float(s)) for i, j, s in zip(rows, cols, ssim)]
    return sorted(pairs, key=lambda t: (-t[2], t[0]))


def strongest_units(hidden: torch.Tensor) -> torch.Tensor:
    """Index of the strongest-responding unit for each sample, ``(R, N, M) -> (R, N)``."""
    return hidden.argmax(dim=-1)


def specialization_ratio(hidden: torch.Tensor) -> torch.Tensor:
    """Distinct units that are some sample's strongest responder, divided by N.

    Shapes: hidden (R, N, M) -> (R,) float64, in (0, min(M, N)/N].

    >>> specialization_ratio(torch.tensor([[[1.0, 0.0], [0.9, 0.1]]]))
    tensor([0.5000], dtype=torch.float64)
    """
    r, n, m = hidden.shape
    winners = strongest_units(hidden)
    hit = torch.zeros(r, m, dtype=torch.bool, device=hidden.device)
    hit.scatter_(1, winners, True)
    return hit.sum(-1).double().cpu() / n
