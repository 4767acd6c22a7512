"""Shared constants and argument checks of :mod:`protoreg.geometry`."""

from __future__ import annotations

import torch
from torch import Tensor

_F64 = torch.float64


def _check_points(name: str, t: Tensor) -> None:
    """Raise unless ``t`` is a tensor of shape ``(R, n, d)``."""
    if not isinstance(t, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if t.dim() != 3:
        raise ValueError(f"{name} must have shape (R, n, d), got {tuple(t.shape)}")


def _check_pair(prototypes: Tensor, x: Tensor) -> None:
    """Raise unless ``prototypes`` (R, M, d) and ``x`` (R, N, d) agree on ``R`` and ``d``."""
    _check_points("prototypes", prototypes)
    _check_points("x", x)
    if prototypes.shape[0] != x.shape[0]:
        raise ValueError(
            f"run axis mismatch: prototypes has R={prototypes.shape[0]}, "
            f"x has R={x.shape[0]}"
        )
    if prototypes.shape[2] != x.shape[2]:
        raise ValueError(
            f"dimension mismatch: prototypes has d={prototypes.shape[2]}, "
            f"x has d={x.shape[2]}"
        )
