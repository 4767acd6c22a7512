"""Collapse diagnostics: prototypes that coincide, and hidden units that never win.

:func:`min_prototype_gap` and :func:`duplicate_prototypes` compare prototypes
pairwise (a float32 matrix-product screen with exact float64 differences wherever it could
decide, memory bounded by row blocks), in 1-D on sorted positions in O(M log M) with the same
distances and comparisons; :func:`gap_and_duplicates` gives both from one pairwise pass;
:func:`dead_units` counts units that are no sample's strongest responder.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor

from protoreg.geometry._common import _F64, _check_points


#: Rows of one block of the screened pairwise pass (memory: block x M x 4 bytes, twice).
_SCREEN_BLOCK = 1024
_EPS32 = float(torch.finfo(torch.float32).eps)


def _collapse_nd(P: Tensor, finite: Tensor, thr: Tensor) -> tuple[Tensor, Tensor]:
    """Smallest gap and duplicate count per run (d >= 2) by a float32 matrix-product screen.

    Squared distances ``|a|^2 + |b|^2 - 2 a.b`` of the centred prototypes in float32 (a BLAS
    product over the pairs below the diagonal, ``O(M^2 d / 2)`` at matrix-multiply speed), with
    a rounding bound ``8 (d + 4) eps32 (|a|^2 + |b|^2)`` on their error (plus ``8 eps32`` for the
    float32 arithmetic of the screen itself); only the pairs whose screened value could be the
    minimum, or within ``thr``, are recomputed exactly from float64 differences. Same results as
    the exact pairwise loop.
    """
    R, M, d = P.shape
    gap = torch.full((R,), math.inf, dtype=_F64, device=P.device)
    dup = torch.zeros(R, dtype=torch.long, device=P.device)
    for r in range(R):
        idx = finite[r].nonzero().squeeze(1)
        m = idx.numel()
        if m < 2:
            continue
        big = P[r, idx].abs().amax()
        scale = float(torch.exp2(torch.floor(torch.log2(big)))) if bool(big > 0) else 1.0
        Q = P[r, idx] / scale  # an exact power-of-two rescaling: no overflow, same comparisons
        C = Q - Q.mean(dim=0)  # centred, for the screen only (exact values come from Q)
        Q32 = C.float()
        sq = (C * C).sum(dim=1)
        sq32 = sq.float()
        t2 = (float(thr[r]) / scale) ** 2
        best2 = float((Q[0] - Q[1]).square().sum())  # any pair bounds the gap (and the screen's first block)
        is_dup = torch.zeros(m, dtype=torch.bool, device=P.device)
        ar = torch.arange(m, device=P.device)
        # the screen runs in float32 throughout: its bound gains 8 eps32 (|a|^2 + |b|^2) for the
        # rounding of the bound itself and of the subtraction below (both at most a few eps32 of
        # |D2| <= 2 (|a|^2 + |b|^2)), and the thresholds it is compared with are rounded up, so
        # it never drops a pair the float64 screen would keep
        c_err = float(8 * (d + 5) * _EPS32)
        tiny = float(torch.finfo(torch.float32).tiny)
        t2_32 = _up32(t2)
        for i0 in range(0, m, _SCREEN_BLOCK):
            i1 = min(m, i0 + _SCREEN_BLOCK)
            # rows i0:i1 against the columns before i1: every pair once with its smaller index as
            # the column (the block's own square holds both orders), half the product's work
            D2 = torch.addmm(sq32[i0:i1, None] + sq32[None, :i1], Q32[i0:i1], Q32[:i1].T, alpha=-2.0)
            D2[ar[: i1 - i0], ar[i0:i1]] = math.inf  # not itself
            # the block's screened minimum, exactly: an upper bound of the gap
            k = int(D2.argmin())
            a, b = divmod(k, i1)
            if a + i0 != b:  # (a block of the first row alone holds only itself)
                best2 = min(best2, float((Q[i0 + a] - Q[b]).square().sum()))
            lower = D2.sub_((sq32[i0:i1, None] + sq32[None, :i1]).mul_(c_err).add_(tiny))
            cand = ((lower <= _up32(best2)) | ((lower <= t2_32) & (ar[None, :i1] < ar[i0:i1, None]))).nonzero()
            if cand.numel():
                ia, ib = cand[:, 0] + i0, cand[:, 1]
                exact = (Q[ia] - Q[ib]).square().sum(dim=1)
                best2 = min(best2, float(exact.min()))
                close = (exact <= t2) & (ib < ia)
                is_dup[ia[close]] = True
        gap[r] = math.sqrt(best2) * scale
        dup[r] = int(is_dup.sum())
    return gap, dup


def _up32(v: float) -> float:
    """The smallest float32 at least ``v`` (as a Python float): a threshold that a float32
    tensor can be compared with without rounding it down."""
    if not math.isfinite(v) or v > float(np.finfo(np.float32).max):
        return math.inf if v > 0 else v
    f = float(np.float32(v))
    return f if f >= v else float(np.nextafter(np.float32(v), np.float32(np.inf)))


def _finite_points(prototypes: Tensor) -> tuple[Tensor, Tensor]:
    """Checked float64 prototypes with non-finite ones zeroed, and the (R, M) finite mask."""
    _check_points("prototypes", prototypes)
    P = prototypes.detach().to(_F64)
    finite = torch.isfinite(P).all(dim=2)
    return torch.where(finite[..., None], P, 0.0), finite


def _sorted_runs(P: Tensor, finite: Tensor) -> list[tuple[np.ndarray, np.ndarray]]:
    """Per run of 1-D prototypes: the finite positions sorted (stable) and their unit indices."""
    p, ok = P[..., 0].cpu().numpy(), finite.cpu().numpy()
    out = []
    for r in range(p.shape[0]):
        idx = np.flatnonzero(ok[r])
        order = np.argsort(p[r, idx], kind="stable")
        out.append((p[r, idx][order], idx[order]))
    return out


def _window(sv: np.ndarray, thr: float) -> tuple[np.ndarray, np.ndarray]:
    """For sorted ``sv``, the first and last positions within ``thr`` of each position, with the
    distance computed exactly as ``|sv[a] - sv[t]|`` (rounding is monotone, so the positions
    within ``thr`` are contiguous); vectorised bisection."""
    n = sv.size
    t = np.arange(n)
    lo, hi = np.zeros(n, dtype=np.int64), t.copy()  # first a with sv[t] - sv[a] <= thr
    while (lo < hi).any():
        mid = (lo + hi) // 2
        ok = sv[t] - sv[mid] <= thr
        hi, lo = np.where(ok, mid, hi), np.where(ok, lo, mid + 1)
    first = lo
    lo, hi = t.copy(), np.full(n, n - 1, dtype=np.int64)  # last b with sv[b] - sv[t] <= thr
    while (lo < hi).any():
        mid = (lo + hi + 1) // 2
        ok = sv[mid] - sv[t] <= thr
        lo, hi = np.where(ok, mid, lo), np.where(ok, hi, mid - 1)
    return first, lo


def _range_min(a: np.ndarray, first: np.ndarray, last: np.ndarray) -> np.ndarray:
    """``min(a[first[t] : last[t] + 1])`` for every t (sparse table, O(n log n))."""
    levels = [a]
    while 2 ** len(levels) <= a.size:
        prev, half = levels[-1], 2 ** (len(levels) - 1)
        levels.append(np.minimum(prev[:-half], prev[half:]))
    level = np.floor(np.log2(last - first + 1)).astype(np.int64)
    out = np.empty(a.size, dtype=a.dtype)
    for lev in np.unique(level):
        sel = level == lev
        table = levels[lev]
        out[sel] = np.minimum(table[first[sel]], table[last[sel] - 2**lev + 1])
    return out


@torch.no_grad()
def min_prototype_gap(prototypes: Tensor) -> Tensor:
    """Smallest pairwise distance among the finite prototypes of each run.

    Parameters
    ----------
    prototypes : Tensor, shape (R, M, d)

    Returns
    -------
    Tensor, shape (R,), float64
        ``min_{i < j, p_i, p_j finite} ||p_i - p_j||``; ``+inf`` when a run has
        fewer than two finite prototypes.
    """
    R, M, d = prototypes.shape
    P, finite = _finite_points(prototypes)
    best = torch.full((R,), math.inf, dtype=_F64, device=P.device)
    if M < 2:
        return best
    if d == 1:  # adjacent sorted positions
        gaps = [float(np.diff(sv).min()) if sv.size >= 2 else math.inf for sv, _ in _sorted_runs(P, finite)]
        return torch.tensor(gaps, dtype=_F64, device=P.device)
    return _collapse_nd(P, finite, torch.zeros(R, dtype=_F64, device=P.device))[0]


@torch.no_grad()
def duplicate_prototypes(
    prototypes: Tensor,
    *,
    rel_tol: float = 1e-6,
    extent: Tensor | None = None,
) -> Tensor:
    """Number of prototypes that duplicate an earlier one, per run.

    Parameters
    ----------
    prototypes : Tensor, shape (R, M, d)
    rel_tol : float, default 1e-6
        Prototype ``j`` is a duplicate when some ``i < j`` has
        ``||p_i - p_j|| <= rel_tol * extent[r]``.
    extent : Tensor, shape (R,), optional
        Length scale per run; defaults to :func:`hull_extent` of the finite
        prototypes themselves (pass ``hull_extent(x)`` to measure against the
        data scale).

    Returns
    -------
    LongTensor, shape (R,)
        Count of such ``j``.  Non-finite prototypes are never counted and never
        serve as the earlier prototype.
    """
    R, M, d = prototypes.shape
    P, finite = _finite_points(prototypes)
    if M < 2:
        return torch.zeros(R, dtype=torch.long, device=P.device)
    if extent is None:
        big = torch.finfo(_F64).max
        lo = torch.where(finite[..., None], P, big).amin(dim=1)
        hi = torch.where(finite[..., None], P, -big).amax(dim=1)
        ext = (hi - lo).amax(dim=1) if d > 0 else torch.zeros(R, dtype=_F64, device=P.device)
        extent = torch.where(torch.isfinite(ext) & (ext > 0), ext, torch.ones_like(ext))
    else:
        if extent.shape != (R,):
            raise ValueError(f"extent must have shape {(R,)}, got {tuple(extent.shape)}")
        extent = extent.detach().to(device=P.device, dtype=_F64)
    thr = rel_tol * extent
    if d == 1:  # a duplicate has an earlier unit within thr: a window of the sorted positions
        dups = []
        for (sv, si), t in zip(_sorted_runs(P, finite), thr.tolist()):
            if sv.size < 2:
                dups.append(0)
                continue
            first, last = _window(sv, t)
            dups.append(int((_range_min(si, first, last) < si).sum()))
        return torch.tensor(dups, dtype=torch.long, device=P.device)
    return _collapse_nd(P, finite, thr)[1]


@torch.no_grad()
def dead_units(hidden: Tensor) -> Tensor:
    """Number of hidden units that never win the argmax over units.

    Parameters
    ----------
    hidden : Tensor, shape (R, N, M)
        Hidden activations per run, sample and unit.

    Returns
    -------
    LongTensor, shape (R,)
        ``M - |{argmax_j hidden[r, n, j] : n}|``.  Ties go to the lowest unit
        index (``torch.argmax``); with ``N == 0`` every unit is dead.
    """
    if not isinstance(hidden, Tensor) or hidden.dim() != 3:
        raise ValueError("hidden must be a tensor of shape (R, N, M)")
    R, N, M = hidden.shape
    if M == 0:
        return torch.zeros(R, dtype=torch.long, device=hidden.device)
    hits = torch.zeros(R, M, dtype=torch.bool, device=hidden.device)
    if N > 0:
        win = hidden.detach().argmax(dim=2)  # (R, N)
        hits.scatter_(1, win, True)
    return M - hits.sum(dim=1)


@torch.no_grad()
def gap_and_duplicates(prototypes: Tensor, *, rel_tol: float, extent: Tensor) -> tuple[Tensor, Tensor]:
    """``(min_prototype_gap(prototypes), duplicate_prototypes(prototypes, rel_tol=rel_tol,
    extent=extent))`` with one pairwise pass in d >= 2 (what a geometry report needs)."""
    R, M, d = prototypes.shape
    if d == 1 or M < 2:
        return min_prototype_gap(prototypes), duplicate_prototypes(prototypes, rel_tol=rel_tol, extent=extent)
    if extent.shape != (R,):
        raise ValueError(f"extent must have shape {(R,)}, got {tuple(extent.shape)}")
    P, finite = _finite_points(prototypes)
    return _collapse_nd(P, finite, rel_tol * extent.detach().to(device=P.device, dtype=_F64))
