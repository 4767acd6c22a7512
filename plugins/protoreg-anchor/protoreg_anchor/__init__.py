"""protoreg-anchor: an attractor/repulsor pair of structural losses for protoreg.

* ``anchor`` (attractor): every prototype is pulled toward its nearest training sample, the dual
  of the built-in ``coverage`` (which pulls a prototype toward every sample).
* ``spread`` (repulsor, ``pairs_with = ("anchor",)``): prototypes are pushed away from their
  centroid.

* ``anchor_inside`` (a study, ``sweep.study: anchor_inside``): checks on a sweep's results that
  ``anchor`` keeps every prototype inside the convex hull, with or without ``spread``, and that
  ``spread`` alone expels some.

Both losses measure distances in units of the sample spacing ``s = ctx.spacing`` and temperatures in
units of ``s**2``, like the built-in losses, so one setting works at every dataset size. The
package imports only from top-level ``protoreg`` (and torch) and is found through the entry point
``[project.entry-points.protoreg] anchor = "protoreg_anchor"``.
"""

from __future__ import annotations

import math
from typing import Any

import torch

import protoreg

__version__ = "0.1.0"

__all__ = ["Anchor", "AnchorInside", "Spread", "protoreg_register_losses", "protoreg_register_studies"]


class Anchor(protoreg.StructuralLoss):
    """Soft minimum over samples of each prototype's squared distance, averaged over prototypes.

    ``L = mean_j [ -t log mean_i exp(-||p_j - x_i||^2 / t) ] / s^2`` with ``t = tau * s^2`` and
    ``s`` the sample spacing (shapes: ``x`` (R,N,d), ``p`` (R,M,d), result (R,)). The soft minimum
    lies between the nearest and the mean squared distance, so ``L >= 0``; small ``tau`` makes it
    the squared distance to the nearest sample. Its gradient pulls ``p_j`` toward a softmax-weighted
    mean of the samples nearest to it, and grows linearly with the distance, so a prototype far
    outside the data is pulled back rather than ignored (unlike ``coverage``, whose gradient on a
    far prototype vanishes like ``exp(-d^2 / t)``).
    """

    name = "anchor"
    role = "attractor"
    defaults = {"tau": 0.1}
    vectorized = True  # ``tau`` arrives as an (R,) tensor: one value per run

    def __call__(self, ctx: protoreg.LossContext, *, tau: float | torch.Tensor) -> torch.Tensor:
        s2 = ctx.per_run(ctx.spacing, 3).pow(2)  # (R,1,1)
        t = ctx.per_run(tau, 3) * s2  # (R,1,1)
        p, x = ctx.prototypes, ctx.x  # (R,M,d), (R,N,d)
        d2 = (p.unsqueeze(2) - x.unsqueeze(1)).pow(2).sum(-1)  # (R,M,N)
        n = d2.shape[-1]
        soft_min = -t * (torch.logsumexp(-d2 / t, dim=-1, keepdim=True) - math.log(n))  # (R,M,1)
        return (soft_min / s2).mean(dim=(1, 2))


class Spread(protoreg.StructuralLoss):
    """Log-barrier push of every prototype away from the prototypes' centroid.

    ``L = -mean_j log(1 + ||p_j - c||^2 / t)`` with ``c = mean_j p_j``, ``t = tau * s^2`` and ``s``
    the sample spacing (result (R,)). ``L <= 0``, and ``L = 0`` when all prototypes sit on the
    centroid. The push on one prototype, ``2 d / (t + d^2)`` for distance ``d`` to the centroid,
    is never larger than ``1 / sqrt(t)`` and decays like ``1 / d``: the loss falls only
    logarithmically, so any attractor that grows faster (``anchor`` grows quadratically outside the
    data) bounds the combined objective from below. Alone it is unbounded below and keeps pushing
    prototypes outward, out of the data's convex hull: hence ``pairs_with = ("anchor",)``.

    Not vectorized: ``tau`` arrives as a plain float, and runs with different values are evaluated
    in groups.
    """

    name = "spread"
    role = "repulsor"
    pairs_with = ("anchor",)
    defaults = {"tau": 1.0}
    vectorized = False

    def __call__(self, ctx: protoreg.LossContext, *, tau: float) -> torch.Tensor:
        t = float(tau) * ctx.per_run(ctx.spacing, 2).pow(2)  # (R,1)
        p = ctx.prototypes  # (R,M,d)
        c = p.mean(dim=1, keepdim=True)  # (R,1,d)
        d2 = (p - c).pow(2).sum(-1)  # (R,M)
        return -torch.log1p(d2 / t).mean(dim=1)


@protoreg.hookimpl
def protoreg_register_losses(register):  # type: ignore[no-untyped-def]
    """Register ``anchor`` and ``spread``."""
    register(Anchor())
    register(Spread())


class AnchorInside(protoreg.Study):
    """Two claims about a sweep over masks of ``anchor`` and ``spread``.

    * A1: every completed run with ``anchor`` active ends with no prototype outside the hull
      (``outside_hull_frac == 0``).
    * A2: ``spread`` without ``anchor`` expels prototypes: its mean outside-hull fraction is above
      the baseline's (mask ``none``).
    """

    name = "anchor_inside"
    description = "anchor keeps every prototype inside the convex hull; spread alone expels them"

    def evaluate(self, results: protoreg.StudyResults) -> list[protoreg.Claim]:
        rows = results.completed()
        return [self._a1(rows), self._a2(rows)]

    @staticmethod
    def _a1(rows: list[Any]) -> protoreg.Claim:
        statement = "runs with anchor active keep every prototype inside the convex hull"
        anchored = [r for r in rows if "anchor" in r["mask"].split("+")]
        if not anchored:
            return protoreg.Claim("A1", statement, "NOT EVALUATED", details=("needs runs with anchor in their mask (sweep.masks: [anchor, ...])",))
        inside = [r for r in anchored if r["outside_hull_frac"] == 0.0]
        verdict = "PASS" if len(inside) == len(anchored) else "PARTIAL" if inside else "FAIL"
        worst = max(anchored, key=lambda r: r["outside_hull_frac"])
        return protoreg.Claim(
            "A1",
            statement,
            verdict,
            f"{len(inside)} of {len(anchored)} runs have no prototype outside",
            numbers={"runs": len(anchored), "inside": len(inside), "max_outside_hull_frac": worst["outside_hull_frac"]},
        )

    @staticmethod
    def _a2(rows: list[Any]) -> protoreg.Claim:
        statement = "spread without anchor has a higher mean outside-hull fraction than the baseline"
        alone = [r["outside_hull_frac"] for r in rows if r["mask"] == "spread"]
        base = [r["outside_hull_frac"] for r in rows if r["mask"] == "none"]
        if not alone or not base:
            return protoreg.Claim("A2", statement, "NOT EVALUATED", details=("needs the masks spread and none (sweep.masks: [anchor, spread])",))
        a, b = sum(alone) / len(alone), sum(base) / len(base)
        return protoreg.Claim("A2", statement, "PASS" if a > b else "FAIL", f"{a:.3g} vs {b:.3g}", numbers={"spread": a, "none": b})


@protoreg.hookimpl
def protoreg_register_studies(register):  # type: ignore[no-untyped-def]
    """Register the study ``anchor_inside``."""
    register(AnchorInside())
