"""The combined geometry report of a batch of runs (:func:`geometry_report`)."""

from __future__ import annotations

import math
from typing import cast

import torch
from torch import Tensor

from protoreg.geometry._common import _F64, _check_pair
from protoreg.geometry.collapse import dead_units, gap_and_duplicates
from protoreg.geometry.hull import HullWarmStart, hull_extent
from protoreg.geometry.margin import DEFAULT_MARGIN, DEFAULT_REL_TOL, hull_check

#: Prototypes within this fraction of the data's extent of an earlier one count as duplicates.
DUPLICATE_REL_TOL = 1e-6


@torch.no_grad()
def geometry_report(
    prototypes: Tensor,
    x: Tensor,
    hidden: Tensor | None = None,
    *,
    wins: Tensor | None = None,
    margin: float = DEFAULT_MARGIN,
    rel_tol: float = DEFAULT_REL_TOL,
    warm: HullWarmStart | None = None,
    scale: Tensor | None = None,
) -> dict[str, Tensor]:
    """All geometry diagnostics of a batch of runs.

    Parameters
    ----------
    prototypes : Tensor, shape (R, M, d)
    x : Tensor, shape (R, N, d)
    hidden : Tensor, shape (R, N, M), optional
        Hidden responses, for ``dead_units``; or give ``wins``.
    wins : Tensor, shape (R, M), optional
        Samples for which each unit is the strongest responder (what
        :func:`protoreg.evaluation.evaluate.stream_responses` counts without an N x M tensor);
        ``dead_units`` is then the number of units with none. Exactly one of
        ``hidden`` and ``wins`` is given.
    margin, rel_tol : float
        The margin of the outside flags and the accuracy of the distances, as fractions of the
        data's resolution (:func:`~protoreg.geometry.hull_check`).
    warm : HullWarmStart, optional
        Cache carried between successive reports of the same runs (see
        :class:`HullWarmStart`).
    scale : Tensor, shape (R,), optional
        The data's resolution, when already known.

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
            :func:`duplicate_prototypes` with ``extent = hull_extent(x)`` and
            ``rel_tol =`` :data:`DUPLICATE_REL_TOL`;
        ``dead_units`` (long)
            :func:`dead_units` of ``hidden``;

        per-unit ``(R, M)`` tensors ``hull_distance`` (float64) and
        ``outside`` (bool), and ``hull_resolution`` (R,), the data's resolution.

    Memory: in 1-D nothing of size N x M or M x M (the hull is an interval, the
    collapse checks run on sorted positions); in d >= 2 the hull solver and the
    pairwise prototype checks work in bounded blocks, O(M^2 d) time.
    """
    _check_pair(prototypes, x)
    R, M, d = prototypes.shape
    if (hidden is None) == (wins is None):
        raise ValueError("give exactly one of hidden (R, N, M) and wins (R, M)")
    if hidden is not None and (hidden.dim() != 3 or hidden.shape != (R, x.shape[1], M)):
        raise ValueError(
            f"hidden must have shape {(R, x.shape[1], M)}, got {tuple(hidden.shape)}"
        )
    if wins is not None and wins.shape != (R, M):
        raise ValueError(f"wins must have shape {(R, M)}, got {tuple(wins.shape)}")
    hc = hull_check(prototypes, x, margin=margin, rel_tol=rel_tol, warm=warm, scale=scale)
    dist, outside = hc.distance, hc.outside
    ext = hull_extent(x)
    if M > 0:
        frac = outside.to(_F64).mean(dim=1)
        mean_d = dist.mean(dim=1)
        max_d = dist.amax(dim=1)
    else:
        frac = torch.zeros(R, dtype=_F64, device=dist.device)
        mean_d = torch.full((R,), math.nan, dtype=_F64, device=dist.device)
        max_d = mean_d.clone()
    gap, dup = gap_and_duplicates(prototypes, rel_tol=DUPLICATE_REL_TOL, extent=ext)
    dead = dead_units(hidden) if hidden is not None else (cast(Tensor, wins) == 0).sum(dim=1)  # exactly one is given
    return {
        "outside_hull_frac": frac,
        "mean_hull_distance": mean_d,
        "max_hull_distance": max_d,
        "min_prototype_gap": gap,
        "duplicate_prototypes": dup,
        "dead_units": dead,
        "hull_distance": dist,
        "outside": outside,
        "hull_resolution": hc.scale,
    }
