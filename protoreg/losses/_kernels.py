"""Small tensor helpers shared by the built-in losses."""

from __future__ import annotations

import torch


def sq_dists(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Squared Euclidean distances, ``(R, P, d) x (R, Q, d) -> (R, P, Q)``.

    Computed as an explicit difference (not the Gram expansion) so that it is exact and never
    negative; sizes here are small (P, Q <= a few thousand).
    """
    return (a.unsqueeze(2) - b.unsqueeze(1)).pow(2).sum(-1)
