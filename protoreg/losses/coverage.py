"""``coverage``: the attractor. Every training sample should have a prototype near it."""

from __future__ import annotations

from typing import Callable

import torch

from protoreg import LossContext, StructuralLoss, functional, hookimpl


class Coverage(StructuralLoss):
    """Soft minimum over prototypes of the squared distance to each sample, averaged over samples.

    ``L = mean_i [ -t log mean_j exp(-||x_i - p_j||^2 / t) ] / s^2`` with ``t = tau * s^2`` and
    ``s`` the sample spacing. The soft minimum lies between the nearest and the mean squared
    distance, so ``L >= 0``; it is measured in units of the squared spacing.

    :func:`protoreg.functional.coverage` with ``spacing``; the soft minimum takes the fastest exact path (in 1-D
    on large problems only the prototypes whose term can be non-zero: the same value up to
    summation order).
    """

    name = "coverage"
    role = "attractor"
    defaults = {"tau": 1.0}
    vectorized = True

    def __call__(self, ctx: LossContext, *, tau: float | torch.Tensor) -> torch.Tensor:
        return functional.coverage(ctx.prototypes, ctx.x, tau=ctx.per_run(tau, 3), spacing=ctx.per_run(ctx.spacing, 3), sq_dists=ctx.shared_sq_dists)


@hookimpl
def protoreg_register_losses(register: Callable[[StructuralLoss], None]) -> None:
    register(Coverage())
