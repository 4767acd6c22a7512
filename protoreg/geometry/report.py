"""The combined geometry report of a batch of runs (:func:`geometry_report`)."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from ._common import _F64, _check_pair
from .collapse import dead_units, duplicate_prototypes, min_prototype_gap
from .hull import HullWarmStart, hull_distance, hull_extent, outside_hull


@torch.no_grad()
def geometry_report(
    prototypes: Tensor,
    x: Tensor,
    hidden: Tensor,
    *,
    rel_tol: float = 1e-6,
    warm: HullWarmStart | None = None,
) -> dict[str, Tensor]:
    """All geometry diagnostics of a batch of runs.

    Parameters
    ----------
    prototypes : Tensor, shape (R, M, d)
    x : Tensor, shape (R, N, d)
    hidden : Tensor, shape (R, N, M)
    rel_tol : float, default 1e-6
        Relative tolerance (times :func:`hull_extent` of ``x``) used for the
        hull distances (``tol``), the outside flags and duplicate detection.
    warm : HullWarmStart, optional
        Cache carried between successive reports of the same runs (see
        :class:`HullWarmStart`).

    Returns
    -------
    dict[str, Tensor]
        Per-run ``(R,)`` tensors:

        ``outside_hull_frac`` (float64)
            fraction of units with ``outside``;
        ``mean_hull_distance`` (float64)
            mean of ``hull_distance`` over units -- ``+inf`` when any unit has a
            non-finite prototype (its distance is ``+inf``);
        ``max_hull_distance`` (float64)
            maximum over units (``+inf`` likewise);
        ``min_prototype_gap`` (float64)
            :func:`min_prototype_gap`;
        ``duplicate_prototypes`` (long)
            :func:`duplicate_prototypes` with ``extent = hull_extent(x)``;
        ``dead_units`` (long)
            :func:`dead_units` of ``hidden``;

        and per-unit ``(R, M)`` tensors ``hull_distance`` (float64) and
        ``outside`` (bool).
    """
    _check_pair(prototypes, x)
    R, M, d = prototypes.shape
    if hidden.dim() != 3 or hidden.shape != (R, x.shape[1], M):
        raise ValueError(
            f"hidden must have shape {(R, x.shape[1], M)}, got {tuple(hidden.shape)}"
        )
    dist = hull_distance(prototypes, x, tol=rel_tol, warm=warm)
    outside = outside_hull(prototypes, x, rel_tol=rel_tol, distances=dist)
    ext = hull_extent(x)
    if M > 0:
        frac = outside.to(_F64).mean(dim=1)
        mean_d = dist.mean(dim=1)
        max_d = dist.amax(dim=1)
    else:
        frac = torch.zeros(R, dtype=_F64, device=dist.device)
        mean_d = torch.full((R,), math.nan, dtype=_F64, device=dist.device)
        max_d = mean_d.clone()
    return {
        "outside_hull_frac": frac,
        "mean_hull_distance": mean_d,
        "max_hull_distance": max_d,
        "min_prototype_gap": min_prototype_gap(prototypes),
        "duplicate_prototypes": duplicate_prototypes(prototypes, rel_tol=rel_tol, extent=ext),
        "dead_units": dead_units(hidden),
        "hull_distance": dist,
        "outside": outside,
    }
