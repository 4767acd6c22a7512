"""Evaluation metrics: pure functions on tensors, one value per run.

Each takes batched inputs with a leading run axis R and returns shape (R,).
"""

from __future__ import annotations

import math

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment


def fit_mse(pred: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Mean squared error of the fit, ``mean_{i,k} (pred - y)^2``.

    Shapes: pred, y (R, N, k) -> (R,).

    >>> fit_mse(torch.zeros(1, 2, 1), torch.ones(1, 2, 1))
    tensor([1.])
    """
    return (pred - y).square().mean(dim=(1, 2))


def _matched_distances(p: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Distances of the optimal one-to-one matching of prototypes p (M,d) to inputs x (N,d)."""
    finite = np.isfinite(p).all(axis=1)
    cost = np.full((p.shape[0], x.shape[0]), np.inf)
    if finite.any():
        diff = p[finite][:, None, :] - x[None, :, :]
        # scaled so that squaring cannot overflow (coordinates up to ~1e308 keep finite distances)
        scale = np.abs(diff).max(axis=-1, keepdims=True)
        scale = np.where(np.isfinite(scale) & (scale > 0), scale, 1.0)
        with np.errstate(over="ignore", invalid="ignore"):
            cost[finite] = np.sqrt(((diff / scale) ** 2).sum(-1)) * scale[..., 0]
    # Non-finite prototypes get a cost larger than any finite assignment can reach, so they are
    # matched only when there are not enough finite ones (and then contribute inf).
    finite_cost = cost[np.isfinite(cost)]
    k = min(cost.shape) + 1
    big = min((finite_cost.max() + 1.0), np.finfo(np.float64).max / k**2) * k if finite_cost.size else 1.0
    rows, cols = linear_sum_assignment(np.where(np.isfinite(cost), cost, big))
    return cost[rows, cols]


def recon_error(prototypes: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Reconstruction error: mean distance of the Hungarian matching of prototypes to inputs.

    The matching (``scipy.optimize.linear_sum_assignment`` on Euclidean distances) pairs each
    prototype with a distinct training input; with M != N it is rectangular and has min(M, N)
    pairs. ``inf`` when a non-finite prototype has to be matched.

    Shapes: prototypes (R, M, d), x (R, N, d) -> (R,) float64.

    >>> recon_error(torch.tensor([[[0.0], [1.0]]]), torch.tensor([[[1.0], [0.5]]]))
    tensor([0.2500], dtype=torch.float64)
    """
    p = prototypes.detach().double().cpu().numpy()
    xs = x.detach().double().cpu().numpy()
    return torch.tensor([_mean(_matched_distances(p[r], xs[r])) for r in range(p.shape[0])], dtype=torch.float64)


def _mean(d: np.ndarray) -> float:
    """Mean that stays finite for finite values near the float64 limit."""
    if d.size == 0:
        return math.nan
    with np.errstate(over="ignore"):
        m = float(d.mean())
    if not math.isfinite(m) and np.isfinite(d).all():
        m = float((d / d.size).sum())
    return m


def strongest_units(hidden: torch.Tensor) -> torch.Tensor:
    """Index of the strongest-responding unit for each sample, ``(R, N, M) -> (R, N)``."""
    return hidden.argmax(dim=-1)


def specialization_ratio(hidden: torch.Tensor) -> torch.Tensor:
    """Distinct units that are some sample's strongest responder, divided by N.

    Shapes: hidden (R, N, M) -> (R,) float64, in (0, min(M, N)/N].

    >>> specialization_ratio(torch.tensor([[[1.0, 0.0], [0.9, 0.1]]]))
    tensor([0.5000], dtype=torch.float64)
    """
    r, n, m = hidden.shape
    winners = strongest_units(hidden)
    hit = torch.zeros(r, m, dtype=torch.bool, device=hidden.device)
    hit.scatter_(1, winners, True)
    return hit.sum(-1).double().cpu() / n
