"""``overlap``: a repulsor between the hidden responses of different units."""

from __future__ import annotations

import torch

from ..api import LossContext, StructuralLoss, hookimpl


class Overlap(StructuralLoss):
    """Off-diagonal mass of the hidden responses' Gram matrix.

    ``G = H^T H / N`` (``H`` the ``N x M`` hidden responses, entries in [0, 1]);
    ``L = 1/(M(M-1)) sum_{j != k} G_jk``, in [0, 1].
    """

    name = "overlap"
    role = "repulsor"
    pairs_with = ("coverage",)
    defaults: dict[str, float] = {}
    vectorized = True

    def __call__(self, ctx: LossContext) -> torch.Tensor:
        h = ctx.hidden  # (R,N,M)
        n, m = h.shape[1], h.shape[2]
        if m < 2:
            return h.sum(dim=(1, 2)) * 0.0
        # sum_{j,k} G_jk = 1/N sum_i (sum_j h_ij)^2 and tr G = 1/N sum_ij h_ij^2: O(NM), no Gram.
        off = (h.sum(-1).pow(2) - h.pow(2).sum(-1)).sum(-1) / n
        return off / (m * (m - 1))


@hookimpl
def protoreg_register_losses(register):  # type: ignore[no-untyped-def]
    register(Overlap())
