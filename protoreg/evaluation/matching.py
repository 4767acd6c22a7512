"""The optimal one-to-one matching of prototypes to training inputs behind ``recon_error``:
exact in every dimension (sorted dynamic programming in 1-D, Jonker-Volgenant on a cost matrix
certified to :data:`MATCHING_REL_TOL` in d >= 2), cached per (prototypes, inputs), with the
memory it needs (:func:`matching_bytes`).

Each batched function takes inputs with a leading run axis R and returns shape (R,).
"""

from __future__ import annotations

import hashlib
import math
import threading
from collections import OrderedDict
from dataclasses import dataclass

import lap
import numpy as np
import torch
from scipy.optimize import linear_sum_assignment


#: Elements of one block of prototype-sample differences or distances (32 MB of float64).
_COST_BLOCK_ELEMENTS = 1 << 22

#: Up to this many prototype-sample pairs (M x N) :func:`matching` solves the dense assignment
#: problem; beyond it, the exact structured methods of :func:`optimal_matching` run.
DENSE_MAX_ELEMENTS = 1 << 16

#: Relative accuracy of every entry of the cost matrix of the d >= 2 solver (:func:`_cost_matrix`):
#: the matching found costs at most ``(1 + 2.1 MATCHING_REL_TOL)`` times the optimum, or
#: ``(1 + 3.1 MATCHING_REL_TOL)`` where a float32 solve is certified (:func:`_match_lapjv32`).
MATCHING_REL_TOL = 1e-12

#: How :func:`optimal_matching` solved a problem (see :attr:`Matching.method`).
MATCHING_METHODS: tuple[str, ...] = ("dense", "sorted", "sorted-dp", "lapjv", "auction")


@dataclass(frozen=True)
class Matching:
    """An optimal one-to-one matching of prototypes to training inputs (see :func:`optimal_matching`)."""

    proto_idx: np.ndarray  #: (K,) int, increasing
    sample_idx: np.ndarray  #: (K,) int
    distances: np.ndarray  #: (K,) float64, ``inf`` for a matched non-finite prototype
    #: one of :data:`MATCHING_METHODS`: ``dense`` (small problems, non-finite inputs),
    #: ``sorted`` (1-D, as many finite prototypes as samples), ``sorted-dp`` (1-D, different
    #: counts), ``lapjv`` (d >= 2: Jonker-Volgenant on the float64 cost matrix, or on its float32
    #: rounding with a float64 dual certificate from 8,192 x 8,192 pairs on), ``auction`` (d >= 2,
    #: square, from 8,192 x 8,192 pairs on: :mod:`protoreg.evaluation.auction`, certified by its
    #: own dual potentials)
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
      augmenting paths; from :data:`LAPJV_FLOAT32_MIN_PAIRS` pairs on the solve runs on the
      matrix's float32 rounding (12 M N bytes in all) and is accepted only with a float64 dual
      certificate (:func:`~protoreg.evaluation.lapcert.assignment_gap`), else solved again in
      float64 (:func:`_match_lapjv32`);
    - ``auction`` (d >= 2, M = N, from :data:`AUCTION_MIN_PAIRS` pairs on): the
      epsilon-scaling auction of :mod:`protoreg.evaluation.auction` (float32 phases, then float64
      ones), accepted when its prices prove it within :data:`MATCHING_REL_TOL` of the optimum
      (:func:`~protoreg.evaluation.lapcert.dual_bound`), else the ``lapjv`` path above.
      Measured on 2 cores in docs/performance.md.

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
        fi, cols, method = _match_lapjv(pf, x)
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


def _match_lapjv(p: np.ndarray, x: np.ndarray) -> tuple[np.ndarray, np.ndarray, str]:
    """Optimal pairs (rows of p, rows of x) matching every point of the smaller of finite p, x
    (d >= 2): ``lap.lapjvh`` on :func:`_cost_matrix`; from :data:`LAPJV_FLOAT32_MIN_PAIRS` pairs
    on, :func:`_match_lapjv32`."""
    if p.shape[0] == 0 or x.shape[0] == 0:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64), "lapjv"
    pairs = p.shape[0] * x.shape[0]
    if pairs >= LAPJV_FLOAT32_MIN_PAIRS:
        return _match_lapjv32(p, x)
    cost, _ = _cost_matrix(p, x)
    if cost.shape[0] == cost.shape[1] and pairs >= AUCTION_MIN_PAIRS:
        cols = _certified_auction(cost)
        if cols is not None:
            return np.arange(cost.shape[0]), cols, "auction"
    rows, cols = lap.lapjvh(cost, extend_cost=True, return_cost=False)
    return np.asarray(rows, dtype=np.int64), np.asarray(cols, dtype=np.int64), "lapjv"


#: From this many pairs on (2,048 x 2,048), square d >= 2 matchings run the auction first
#: (:func:`_certified_auction`): on trained prototypes it beats ``lapjvh`` from about 2,000 x
#: 2,000 on (64-D: 0.79 s against 2.14 s at 2,000, 2.18 s against 15.49 s at 4,096; MNIST 784-D:
#: 0.51 s against 1.65 s at 2,000, 1.15 s against 1.55 s at 5,000) and loses below (64-D: 0.39 s
#: against 0.27 s at 1,000), measured in docs/performance.md.
AUCTION_MIN_PAIRS = 1 << 22


def _certified_auction(cost: np.ndarray) -> np.ndarray | None:
    """The auction's assignment (row i -> column ``cols[i]``) of the square float64 ``cost``
    when its own prices prove it within :data:`MATCHING_REL_TOL` of the optimum
    (:func:`~protoreg.evaluation.lapcert.dual_bound`), else ``None`` (a zero optimum, entries
    beyond float32's range or not finite, the bid guard)."""
    from protoreg.evaluation.auction import auction_assignment
    from protoreg.evaluation.lapcert import dual_bound

    found = auction_assignment(cost, MATCHING_REL_TOL)
    if found is None:
        return None
    total = math.fsum(cost[np.arange(cost.shape[0]), found.cols].tolist())
    if total - dual_bound(cost, found.potentials) <= MATCHING_REL_TOL * total:
        return np.asarray(found.cols, dtype=np.int64)
    return None


#: From this many prototype-input pairs on (8,192 x 8,192), the d >= 2 matching solves in float32
#: and certifies in float64 (:func:`_match_lapjv32`): where the float64 solve takes minutes
#: (694 s at M = N = 20,000 in 64-D), the float32 kernel moves half the bytes. Below it the float64
#: solve takes seconds, so smaller problems keep it.
LAPJV_FLOAT32_MIN_PAIRS = 1 << 26


def _match_lapjv32(p: np.ndarray, x: np.ndarray) -> tuple[np.ndarray, np.ndarray, str]:
    """:func:`_match_lapjv` for large problems: the Jonker-Volgenant solve of the float32-rounded
    cost matrix (``lap.lapjvs``'s float32 kernel when square, ``lap.lapjvh`` with
    ``precision='float32'`` when rectangular), accepted when the dual certificate of
    :func:`~protoreg.evaluation.lapcert.assignment_gap` proves it within :data:`MATCHING_REL_TOL`
    of the float64 matrix's optimum; otherwise (ties closer than float32 resolves, or a solver
    refusal) the float64 solve runs on the same matrix. Either way the matching found costs at
    most ``1 + 3.1 MATCHING_REL_TOL`` times the optimum."""
    from protoreg.evaluation.lapcert import assignment_gap

    swap = p.shape[0] > x.shape[0]  # the certificate wants rows <= columns
    cost, _ = _cost_matrix(x, p) if swap else _cost_matrix(p, x)
    top = float(cost.max())
    if top > 0 and abs(math.frexp(top)[1]) > 64:  # into float32's range; a power of two: same optimum
        cost *= 2.0 ** -math.frexp(top)[1]
    if cost.shape[0] == cost.shape[1]:
        found = _certified_auction(cost)
        if found is not None:
            rows = np.arange(cost.shape[0])
            return (found, rows, "auction") if swap else (rows, found, "auction")
    try:
        if cost.shape[0] == cost.shape[1]:
            rows, cols = lap.lapjvs(cost, return_cost=False, prefer_float32=True)
        else:
            rows, cols = lap.lapjvh(cost, extend_cost=True, return_cost=False, precision="float32")
        total, gap = assignment_gap(cost, rows, cols)
        certified = gap <= MATCHING_REL_TOL * total
    except ValueError:  # float32 made it infeasible (a rounding to inf)
        certified = False
    if not certified:
        rows, cols = lap.lapjvh(cost, extend_cost=True, return_cost=False)
    rows, cols = np.asarray(rows, dtype=np.int64), np.asarray(cols, dtype=np.int64)
    return (cols, rows, "lapjv") if swap else (rows, cols, "lapjv")


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
    elif d > 1:
        float32 = m * n >= LAPJV_FLOAT32_MIN_PAIRS or (m == n and m * n >= AUCTION_MIN_PAIRS)
        pairs = (12 if float32 else 8) * m * n  # with the float32 copy
    else:
        pairs = 0
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
