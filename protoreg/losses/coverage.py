"""``coverage``: the attractor. Every training sample should have a prototype near it."""

from __future__ import annotations

from typing import Callable

import torch

from protoreg import LossContext, StructuralLoss, hookimpl


class Coverage(StructuralLoss):
    """Soft minimum over prototypes of the squared distance to each sample, averaged over samples.

    ``L = mean_i [ -t log mean_j exp(-||x_i - p_j||^2 / t) ] / s^2`` with ``t = tau * s^2`` and
    ``s`` the sample spacing. The soft minimum lies between the nearest and the mean squared
    distance, so ``L >= 0``; it is measured in units of the squared spacing.

    The soft minimum is :meth:`LossContext.soft_min`, which takes the fastest exact path (in 1-D
    on large problems only the prototypes whose term can be non-zero: the same value up to
    summation order).
    """

    name = "coverage"
    role = "attractor"
    defaults = {"tau": 1.0}
    vectorized = True

    def __call__(self, ctx: LossContext, *, tau: float | torch.Tensor) -> torch.Tensor:
        s2 = ctx.per_run(ctx.spacing, 3).pow(2)
        t = ctx.per_run(tau, 3) * s2  # (R,1,1)
        return (ctx.soft_min(t) / s2).mean(dim=(1, 2))


@hookimpl
def protoreg_register_losses(register: Callable[[StructuralLoss], None]) -> None:
    register(Coverage())
