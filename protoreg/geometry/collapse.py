"""Collapse diagnostics: prototypes that coincide, and hidden units that never win.

:func:`min_prototype_gap` and :func:`duplicate_prototypes` compare prototypes
pairwise (exact differences, memory bounded by row blocks);
:func:`dead_units` counts units that are no sample's strongest responder.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import torch
from torch import Tensor

from ._common import _F64, _check_points


def _pairwise_dist_blocks(p: Tensor, block: int = 512) -> Iterator[tuple[int, int, Tensor]]:
    """Yield ``(i0, i1, D)`` with ``D[r, a, b] = ||p[r, i0 + a] - p[r, b]||``.

    ``p`` (R, M, d) must be finite.  Differences are taken directly (no
    ``|a|^2 + |b|^2 - 2ab`` expansion) after an exact power-of-two rescaling
    per run (no overflow of the squares), in row blocks of ``block``
    prototypes to bound memory at ``R * block * M``.
    """
    M = p.shape[1]
    big = p.abs().flatten(1).amax(dim=1) if p.numel() else p.new_zeros(p.shape[0])
    scale = torch.where(big > 0, torch.exp2(torch.floor(torch.log2(big))), torch.ones_like(big))
    ps = p / scale[:, None, None]
    for i0 in range(0, M, block):
        i1 = min(M, i0 + block)
        D = torch.cdist(ps[:, i0:i1], ps, compute_mode="donot_use_mm_for_euclid_dist")
        yield i0, i1, D * scale[:, None, None]


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
    _check_points("prototypes", prototypes)
    R, M, d = prototypes.shape
    P = prototypes.detach().to(_F64)
    finite = torch.isfinite(P).all(dim=2)
    P = torch.where(finite[..., None], P, 0.0)
    best = torch.full((R,), math.inf, dtype=_F64, device=P.device)
    if M < 2:
        return best
    idx = torch.arange(M, device=P.device)
    for i0, i1, D in _pairwise_dist_blocks(P):
        valid = finite[:, i0:i1, None] & finite[:, None, :] & (idx[i0:i1, None] != idx[None, :])
        D = torch.where(valid, D, math.inf)
        best = torch.minimum(best, D.flatten(1).amin(dim=1))
    return best


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
    _check_points("prototypes", prototypes)
    R, M, d = prototypes.shape
    P = prototypes.detach().to(_F64)
    finite = torch.isfinite(P).all(dim=2)
    P = torch.where(finite[..., None], P, 0.0)
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
    dup = torch.zeros(R, M, dtype=torch.bool, device=P.device)
    idx = torch.arange(M, device=P.device)
    for i0, i1, D in _pairwise_dist_blocks(P):
        # D[r, a, b]: earlier prototype b < later prototype i0 + a
        earlier = idx[None, :] < idx[i0:i1, None]
        close = (D <= thr[:, None, None]) & earlier & finite[:, None, :] & finite[:, i0:i1, None]
        dup[:, i0:i1] = close.any(dim=2)
    return dup.sum(dim=1)


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
