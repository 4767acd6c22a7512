"""protoreg-anchor: an attractor/repulsor pair of structural losses for protoreg.

* ``anchor`` (attractor): every prototype is pulled toward its nearest training sample, the dual
  of the built-in ``coverage`` (which pulls a prototype toward every sample).
* ``spread`` (repulsor, ``pairs_with = ("anchor",)``): prototypes are pushed away from their
  centroid.

Both measure distances in units of the sample spacing ``s = ctx.spacing`` and temperatures in
units of ``s**2``, like the built-in losses, so one setting works at every dataset size. The
package imports only from top-level ``protoreg`` (and torch) and is found through the entry point
``[project.entry-points.protoreg] anchor = "protoreg_anchor"``.
"""

from __future__ import annotations

import math

import torch

import protoreg

__version__ = "0.1.0"

__all__ = ["Anchor", "Spread", "protoreg_register_losses"]


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
