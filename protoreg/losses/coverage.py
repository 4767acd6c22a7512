"""``coverage``: the attractor. Every training sample should have a prototype near it."""

from __future__ import annotations

import math

import torch

from protoreg.plugin_api import LossContext, StructuralLoss, hookimpl
from protoreg.model.banded import banded_coverage, coverage_uses_banded
from protoreg.model.kernels import logsumexp_flushed


class Coverage(StructuralLoss):
    """Soft minimum over prototypes of the squared distance to each sample, averaged over samples.

    ``L = mean_i [ -t log mean_j exp(-||x_i - p_j||^2 / t) ] / s^2`` with ``t = tau * s^2`` and
    ``s`` the sample spacing. The soft minimum lies between the nearest and the mean squared
    distance, so ``L >= 0``; it is measured in units of the squared spacing.

    In 1-D with more than :data:`protoreg.model.banded.BANDED_MIN_ELEMENTS` sample-prototype pairs only
    the prototypes whose term can be non-zero are computed, run by run
    (:func:`protoreg.model.banded.banded_coverage`): the same value up to summation order.
    """

    name = "coverage"
    role = "attractor"
    defaults = {"tau": 1.0}
    vectorized = True

    def __call__(self, ctx: LossContext, *, tau: float | torch.Tensor) -> torch.Tensor:
        s2 = ctx.per_run(ctx.spacing, 3).pow(2)
        t = ctx.per_run(tau, 3) * s2  # (R,1,1)
        if coverage_uses_banded(ctx.x, ctx.prototypes):
            lme = banded_coverage(ctx.x, ctx.prototypes, t)
        else:
            d2 = ctx.sq_dists  # (R,N,M), shared with the hidden layer on large radial problems
            lme = logsumexp_flushed(d2 / -t, -1) - math.log(d2.shape[-1])  # = -d2 / t exactly
        soft_min = -t * lme
        return (soft_min / s2).mean(dim=(1, 2))


@hookimpl
def protoreg_register_losses(register):  # type: ignore[no-untyped-def]
    register(Coverage())
