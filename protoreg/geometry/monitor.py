"""The hull check of ``fit`` for anyone's prototypes: :class:`HullMonitor`.

Built once from the training inputs, it checks prototypes of any model against their convex hull
with the same definition (a margin relative to the data's resolution) and the same certificates
as ``fit``'s checker (:func:`protoreg.geometry.hull_check`), warm-started between calls.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from protoreg.geometry.collapse import gap_and_duplicates
from protoreg.geometry.hull import HullWarmStart, hull_extent
from protoreg.geometry.margin import DEFAULT_MARGIN, DEFAULT_REL_TOL, check_margin, hull_check, resolution
from protoreg.geometry.report import DUPLICATE_REL_TOL

__all__ = ["HullMonitor", "HullReport"]


@dataclass(frozen=True)
class HullReport:
    """One check of M prototypes (see :meth:`HullMonitor.check`)."""

    outside: Tensor  #: (M,) bool: hull distance above the margin
    distances: Tensor  #: (M,) float64 hull distances, certified to ``tol``
    margin: float  #: the distance above which a prototype is outside, in input units
    tol: float  #: the accuracy of ``distances``, in input units
    min_prototype_gap: float
    duplicate_prototypes: int

    @property
    def outside_frac(self) -> float:
        """The fraction of prototypes outside (0 for none)."""
        return float(self.outside.double().mean()) if self.outside.numel() else 0.0

    def metrics(self) -> dict[str, float]:
        """The ``geometry/*`` scalars ``fit`` logs to TensorBoard, by their tag names."""
        d = self.distances
        n = d.numel()
        return {
            "geometry/outside_hull_frac": self.outside_frac,
            "geometry/mean_hull_distance": float(d.mean()) if n else math.nan,
            "geometry/max_hull_distance": float(d.max()) if n else math.nan,
            "geometry/min_prototype_gap": self.min_prototype_gap,
            "geometry/duplicate_prototypes": float(self.duplicate_prototypes),
        }


class HullMonitor:
    """Watches prototypes against the convex hull of the training inputs ``x`` (N, d).

    ``margin`` (default 0.1, ``geometry.margin``) and ``rel_tol`` (default 0.01,
    ``geometry.rel_tol``) are fractions of the data's resolution, the median distance from an
    input to its nearest distinct input (computed once here): a prototype is *outside*
    (expelled) when its hull distance exceeds ``margin`` resolutions, and distances are
    certified to ``rel_tol`` resolutions. Works on CPU and GPU (the device of ``x``); each
    :meth:`check` starts from the previous one's convex combinations, so checking a slowly
    moving set of prototypes is cheap.

    >>> x = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    >>> monitor = HullMonitor(x)
    >>> report = monitor.check(torch.tensor([[0.5, 0.5], [1.05, 0.5], [1.5, 0.5]]))
    >>> report.outside.tolist(), round(report.outside_frac, 3)
    ([False, False, True], 0.333)
    """

    def __init__(self, x: Tensor, *, margin: float | None = None, rel_tol: float | None = None) -> None:
        margin = DEFAULT_MARGIN if margin is None else margin
        rel_tol = DEFAULT_REL_TOL if rel_tol is None else rel_tol
        check_margin(margin, rel_tol)
        x = torch.as_tensor(x)
        if x.dim() != 2 or x.shape[0] < 1 or x.shape[1] < 1:
            raise ValueError(f"x must be the training inputs, shape (N, d), got {tuple(x.shape)}")
        if not bool(torch.isfinite(x).all()):
            raise ValueError("x holds NaN or inf")
        self.x = x.detach().to(torch.float64)[None]  # (1, N, d)
        self.margin_frac, self.rel_tol = float(margin), float(rel_tol)
        self.scale = resolution(self.x)  # (1,)
        self.extent = hull_extent(self.x)
        self._warm = HullWarmStart()

    @property
    def resolution(self) -> float:
        """The data's resolution, in input units."""
        return float(self.scale[0])

    @torch.no_grad()
    def check(self, prototypes: Tensor) -> HullReport:
        """Check ``prototypes`` (M, d): which are outside, their hull distances, collapse."""
        p = torch.as_tensor(prototypes).detach()
        if p.dim() != 2 or p.shape[1] != self.x.shape[2]:
            raise ValueError(f"prototypes must have shape (M, {self.x.shape[2]}), got {tuple(p.shape)}")
        p = p.to(device=self.x.device, dtype=torch.float64)[None]
        hc = hull_check(p, self.x, margin=self.margin_frac, rel_tol=self.rel_tol, scale=self.scale, warm=self._warm)
        gap, dup = gap_and_duplicates(p, rel_tol=DUPLICATE_REL_TOL, extent=self.extent)
        return HullReport(
            outside=hc.outside[0].cpu(),
            distances=hc.distance[0].cpu(),
            margin=float(hc.margin[0]),
            tol=float(hc.tol[0]),
            min_prototype_gap=float(gap[0]),
            duplicate_prototypes=int(dup[0]),
        )

    def state_dict(self) -> dict[str, object]:
        """The warm start, for a checkpoint (:meth:`load_state_dict` restores it)."""
        return {"warm": self._warm.state_dict()}

    def load_state_dict(self, state: dict[str, object]) -> None:
        self._warm.load_state_dict(state.get("warm") or {})  # type: ignore[arg-type]  # what state_dict wrote
