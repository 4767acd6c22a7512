"""``overlap``: a repulsor between the hidden responses of different units."""

from __future__ import annotations

from typing import Callable

import torch

from protoreg import LossContext, StructuralLoss, functional, hookimpl


class Overlap(StructuralLoss):
    """Off-diagonal mass of the hidden responses' Gram matrix.

    ``G = H^T H / N`` (``H`` the ``N x M`` hidden responses, entries in [0, 1]);
    ``L = sum_{j != k} G_jk = mean_i sum_{j != k} h_ij h_ik``: per sample, how strongly pairs of
    distinct units respond to it together (0 when every sample excites at most one unit).
    """

    name = "overlap"
    role = "repulsor"
    pairs_with = ("coverage",)
    defaults = {}
    vectorized = True

    def __call__(self, ctx: LossContext) -> torch.Tensor:
        return functional.overlap(ctx.hidden)  # (R,N,M) -> (R,)


@hookimpl
def protoreg_register_losses(register: Callable[[StructuralLoss], None]) -> None:
    register(Overlap())
