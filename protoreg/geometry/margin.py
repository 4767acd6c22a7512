"""Expulsion relative to the data's own resolution: the margin, and the certified check at it.

"Outside the convex hull" only means *expelled* when it is measured against the data's
resolution. In 784-D every MNIST image is a vertex of the hull, so a prototype that sits on an
image with an overshoot of 0.01 (where two nearest images are 5.6 apart) is outside by an exact
test, yet it reconstructs that image perfectly. So protoreg calls a prototype *outside* when its
distance to the hull exceeds a margin, a fraction (``geometry.margin``, default
:data:`DEFAULT_MARGIN`) of the data's :func:`resolution` (the median distance from an input to
its nearest distinct input), and reports distances certified to ``geometry.rel_tol`` (default
:data:`DEFAULT_REL_TOL`) of that resolution. :func:`hull_check` decides every flag with a
certificate at the margin; it is the one definition behind every flag, metric and warning.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from protoreg.geometry._common import _F64, _check_pair, _check_points
from protoreg.geometry.gram import gram_bytes, gram_fits
from protoreg.geometry.hull import _CHUNK_BYTES, HullWarmStart, _hull_bounds, hull_extent

#: Default margin: outside = hull distance above this fraction of the data's resolution.
DEFAULT_MARGIN = 0.1
#: Default accuracy of reported hull distances, as a fraction of the data's resolution.
DEFAULT_REL_TOL = 0.01

#: Inputs beyond which :func:`resolution` takes the median over a seeded subset of this many
#: inputs (each one's nearest neighbour is still searched among all N inputs).
RESOLUTION_SAMPLE = 4096
#: Bytes of one block of query-input distances.
_BLOCK_BYTES = 1 << 27
#: Inputs closer than this times the extent count as the same point (duplicates).
_SAME = 1e-9
_EPS = float(torch.finfo(torch.float64).eps)


@torch.no_grad()
def resolution(x: Tensor, *, sample: int = RESOLUTION_SAMPLE, block_bytes: int = _BLOCK_BYTES) -> Tensor:
    """Median distance from an input to its nearest *distinct* other input, per run.

    Parameters
    ----------
    x : Tensor, shape (R, N, d)
        Inputs of each run.
    sample : int, default :data:`RESOLUTION_SAMPLE`
        With ``N > sample`` the median is taken over ``sample`` inputs drawn without replacement
        by a generator seeded with 0 (the same subset for the same ``N``: deterministic); their
        nearest neighbours are searched among all ``N`` inputs. ``O(min(N, sample) N d)`` time.
    block_bytes : int
        Memory bound of one block of distances.

    Returns
    -------
    Tensor, shape (R,), float64
        ``median_i min_{j: x_j != x_i} ||x_i - x_j||`` (inputs within ``1e-9 * extent`` of each
        other count as one point, so duplicated inputs do not shrink the scale to 0). Runs with
        fewer than two distinct inputs, or non-finite inputs, get :func:`hull_extent` (1.0 for
        a single point), so the value can always be used as a length scale.

    >>> resolution(torch.tensor([[[0.0], [1.0], [3.0], [3.0]]]))
    tensor([1.5000], dtype=torch.float64)
    """
    _check_points("x", x)
    if sample < 1:
        raise ValueError(f"sample must be >= 1, got {sample}")
    R, N, d = x.shape
    ext = hull_extent(x)
    if N < 2 or d == 0:
        return ext
    out = ext.clone()
    for r in range(R):
        X = x[r].detach().to(_F64)
        if not bool(torch.isfinite(X).all()):
            continue
        nn = _nn_distinct_1d(X[:, 0]) if d == 1 else _nn_distinct(X, float(ext[r]), sample, block_bytes)
        nn = nn[torch.isfinite(nn)]
        if nn.numel():
            out[r] = torch.quantile(nn, 0.5)
    return out


def _nn_distinct_1d(v: Tensor) -> Tensor:
    """Distance of every value of ``v`` (N,) to the nearest different value (``inf`` if none)."""
    u, inv = torch.unique(v, sorted=True, return_inverse=True)
    if u.numel() < 2:
        return torch.full_like(v, float("inf"))
    gaps = u[1:] - u[:-1]
    inf = gaps.new_full((1,), float("inf"))
    near = torch.minimum(torch.cat((inf, gaps)), torch.cat((gaps, inf)))
    return near[inv]


def _nn_distinct(X: Tensor, extent: float, sample: int, block_bytes: int) -> Tensor:
    """Nearest-distinct-neighbour distances of (a seeded subset of) the rows of ``X`` (N, d)."""
    N = X.shape[0]
    if N > sample:
        gen = torch.Generator().manual_seed(0)
        rows = torch.randperm(N, generator=gen)[:sample].to(X.device)
    else:
        rows = torch.arange(N, device=X.device)
    Xc = X - X.mean(dim=0)  # centred: the expansion below loses less to cancellation
    sq = (Xc * Xc).sum(dim=1)
    same = (_SAME * extent) ** 2
    block = max(1, block_bytes // (8 * 2 * N))
    out = torch.empty(rows.numel(), dtype=_F64, device=X.device)
    for s in range(0, rows.numel(), block):
        q = rows[s : s + block]
        d2 = (sq[q, None] + sq[None, :] - 2.0 * (Xc[q] @ Xc.T)).clamp(min=0.0)
        d2[torch.arange(q.numel(), device=X.device), q] = float("inf")  # not itself
        # the exact distance decides what counts as the same point: recomputed from differences
        # wherever the expansion's rounding (a few ulps of the squared norms) could hide one
        window = 4 * same + 8 * (X.shape[1] + 2) * _EPS * (sq[q, None] + sq[None, :])
        d2 = _exact_where(Xc, q, d2, d2 <= window)
        d2 = torch.where(d2 <= same, float("inf"), d2)
        j = d2.argmin(dim=1)
        best = d2.gather(1, j[:, None]).squeeze(1)
        exact = (Xc[q] - Xc[j]).square().sum(dim=1)  # exact distance to the chosen neighbour
        out[s : s + block] = torch.where(torch.isfinite(best), exact, float("inf")).sqrt()
    return out


def _exact_where(Xc: Tensor, q: Tensor, d2: Tensor, near: Tensor) -> Tensor:
    """``d2`` with the entries flagged in ``near`` recomputed from differences (few of them)."""
    idx = near.nonzero()
    if idx.numel() == 0:
        return d2
    a, b = idx[:, 0], idx[:, 1]
    out = d2.clone()
    out[a, b] = (Xc[q[a]] - Xc[b]).square().sum(dim=1)
    return out


@dataclass(frozen=True)
class HullCheck:
    """The result of :func:`hull_check` for R runs of M prototypes (tensors on the prototypes'
    device).

    Attributes
    ----------
    distance : Tensor (R, M), float64
        Certified upper bound of each prototype's distance to its run's hull: within ``tol`` of
        the true distance (``+inf`` for non-finite prototypes, ``nan`` for runs with non-finite
        inputs).
    lower : Tensor (R, M), float64
        Certified lower bound (``lower <= true distance <= distance``).
    outside : Tensor (R, M), bool
        ``distance > margin`` (decided: ``distance <= margin`` or ``lower > margin`` holds),
        and always for non-finite prototypes.
    scale : Tensor (R,), float64
        The data's :func:`resolution`.
    margin, tol : Tensor (R,), float64
        The margin and the distance accuracy in input units (fractions times ``scale``).
    """

    distance: Tensor
    lower: Tensor
    outside: Tensor
    scale: Tensor
    margin: Tensor
    tol: Tensor


def check_margin(margin: float, rel_tol: float) -> None:
    """Raise ``ValueError`` unless ``margin >= 0`` and ``rel_tol > 0`` are finite numbers."""
    if isinstance(margin, bool) or not isinstance(margin, (int, float)) or not (math.isfinite(margin) and margin >= 0):
        raise ValueError(f"margin must be a finite number >= 0, got {margin!r}")
    if isinstance(rel_tol, bool) or not isinstance(rel_tol, (int, float)) or not (math.isfinite(rel_tol) and rel_tol > 0):
        raise ValueError(f"rel_tol must be a finite number > 0, got {rel_tol!r}")


@torch.no_grad()
def hull_check(
    prototypes: Tensor,
    x: Tensor,
    *,
    margin: float = DEFAULT_MARGIN,
    rel_tol: float = DEFAULT_REL_TOL,
    scale: Tensor | None = None,
    warm: HullWarmStart | None = None,
    max_iter: int = 2000,
    chunk_bytes: int = _CHUNK_BYTES,
) -> HullCheck:
    """Which prototypes are expelled from the convex hull of the inputs, with certificates.

    Parameters
    ----------
    prototypes : Tensor, shape (R, M, d)
    x : Tensor, shape (R, N, d)
    margin : float, default :data:`DEFAULT_MARGIN`
        A prototype is outside when its hull distance exceeds ``margin * scale[r]``.
    rel_tol : float, default :data:`DEFAULT_REL_TOL`
        Reported distances are within ``rel_tol * scale[r]`` of the truth.
    scale : Tensor, shape (R,), optional
        The length scale; default :func:`resolution` of ``x`` (remembered by ``warm``).
    warm : HullWarmStart, optional
        Cache carried between successive checks of the same runs.
    max_iter, chunk_bytes
        As in :func:`~protoreg.geometry.hull_distance`; every allocation is chunked to about
        ``chunk_bytes``.

    Each prototype is settled by the cheapest certificate that suffices: its nearest input
    (an upper bound, and the separating hyperplane through it, a lower bound), its previous
    convex combination (with ``warm``), or else the active-set solver; it stops once its
    bounds are within ``tol`` of each other *and* on one side of the margin. In 1-D the
    distances are exact.

    >>> x = torch.tensor([[[0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [1.0, 1.0]]])
    >>> p = torch.tensor([[[1.05, 0.5], [1.5, 0.5]]])   # resolution 1: margin 0.1
    >>> hull_check(p, x).outside
    tensor([[False,  True]])
    """
    _check_pair(prototypes, x)
    check_margin(margin, rel_tol)
    R = x.shape[0]
    if scale is None:
        scale = warm.scale(x) if warm is not None else resolution(x)
    elif tuple(scale.shape) != (R,):
        raise ValueError(f"scale must have shape {(R,)}, got {tuple(scale.shape)}")
    device = prototypes.device
    s = scale.detach().to(device=device, dtype=_F64)
    ext = hull_extent(x).to(device)
    thr, tol = margin * s, rel_tol * s
    ub, lb, _ = _hull_bounds(
        prototypes, x, tol=tol / ext, threshold=thr / ext, max_iter=max_iter, warm=warm, chunk_bytes=chunk_bytes, both=True
    )
    nonfinite = ~torch.isfinite(prototypes.detach()).all(dim=2)
    outside = (ub > thr[:, None]) | nonfinite
    return HullCheck(distance=ub, lower=lb, outside=outside, scale=s, margin=thr, tol=tol)


def check_bytes(runs: int, n: int, width: int, dim: int, *, chunk_bytes: int = _CHUNK_BYTES) -> int:
    """Upper bound on the bytes one :func:`hull_check` plus the collapse checks of a geometry
    report hold at their peak, for ``runs`` runs of ``width`` prototypes against ``n`` inputs
    of ``dim`` coordinates: the float64 copies of inputs and prototypes, the float32 copy of
    the inputs, the warm-start cache at its largest (``min(n, dim + 1)`` points per prototype),
    the working blocks (nearest-input search, hyperplane bounds, solver, Gram matrix: each at
    most ``chunk_bytes``), in many dimensions the Gram searches' matrices
    (:func:`~protoreg.geometry.gram.gram_bytes`, kept between checks) and the collapse check's
    float32/float64 blocks; the resolution's block is smaller than one working block.
    """
    if dim <= 1:  # intervals and sorted positions: O(R (N + M))
        return 64 * runs * (n + width)
    q, kcap = runs * width, min(n, dim + 1)
    k1 = min(kcap, 64) + 1
    copies = 8 * dim * (3 * q + 2 * runs * n) + 4 * dim * runs * n
    cache = 16 * q * kcap
    solver = min(chunk_bytes, 8 * q * (2 * k1 * k1 + k1 * dim + 3 * n + 4 * dim))
    screen = min(chunk_bytes, 8 * q * (2 * n + 4 * dim))
    gram = 8 * runs * n * n if 8 * runs * n * n <= chunk_bytes else 0
    if gram_fits(runs, n, q, dim, chunk_bytes):  # the Gram searches' matrices, kept between checks
        gram = gram_bytes(runs, n, q, dim)
    collapse = 32 * min(width, 1024) * width
    return copies + cache + solver + screen + gram + collapse
