"""``separation``: a repulsor between prototypes."""

from __future__ import annotations

from typing import Callable

import torch

from protoreg import LossContext, StructuralLoss, functional, hookimpl


class Separation(StructuralLoss):
    """Gaussian kernel repulsion between every pair of prototypes.

    ``L = 1/(M(M-1)) sum_{j != k} exp(-||p_j - p_k||^2 / t)`` with ``t = tau * s^2`` and ``s`` the
    sample spacing; ``L`` lies in [0, 1].
    """

    name = "separation"
    role = "repulsor"
    pairs_with = ("coverage",)
    defaults = {"tau": 0.1}
    vectorized = True

    def __call__(self, ctx: LossContext, *, tau: float | torch.Tensor) -> torch.Tensor:
        return functional.separation(ctx.prototypes, tau=ctx.per_run(tau, 3), spacing=ctx.per_run(ctx.spacing, 3))


@hookimpl
def protoreg_register_losses(register: Callable[[StructuralLoss], None]) -> None:
    register(Separation())
