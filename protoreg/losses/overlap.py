"""``overlap``: a repulsor between the hidden responses of different units."""

from __future__ import annotations

from typing import Callable

import torch

from protoreg import LossContext, StructuralLoss, hookimpl


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
        h = ctx.hidden  # (R,N,M)
        # sum_{j,k} G_jk = 1/N sum_i (sum_j h_ij)^2 and tr G = 1/N sum_ij h_ij^2: O(NM), no Gram.
        return (h.sum(-1).pow(2) - h.pow(2).sum(-1)).mean(-1)


@hookimpl
def protoreg_register_losses(register: Callable[[StructuralLoss], None]) -> None:
    register(Overlap())
