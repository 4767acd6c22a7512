"""Evaluation of a trained (or training) model: every metric of the run directory, per run."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Sequence

import torch

from . import geometry
from .metrics import fit_mse, recon_error, specialization_ratio
from .model import GaussianMLP

#: Per-run scalar metrics, in the order they are reported.
METRIC_NAMES: tuple[str, ...] = (
    "fit_mse",
    "recon_error",
    "specialization_ratio",
    "outside_hull_frac",
    "mean_hull_distance",
    "max_hull_distance",
    "min_prototype_gap",
    "duplicate_prototypes",
    "dead_units",
)

#: Metrics that count units (integers).
COUNT_METRICS: tuple[str, ...] = ("duplicate_prototypes", "dead_units")

#: Per-run image metrics, for data whose inputs are images (``image_shape``); None otherwise.
IMAGE_METRIC_NAMES: tuple[str, ...] = ("recon_ssim", "recon_ncc", "recon_ssim_frac")


@dataclass(frozen=True)
class Evaluation:
    """The metrics of R runs at one moment, on CPU.

    Attributes
    ----------
    scalars : dict of (R,) tensors
        One entry per name in :data:`METRIC_NAMES`.
    positions : Tensor (R, M, d)
        Prototype positions (non-finite where a unit has no finite prototype).
    hull_distance : Tensor (R, M)
        Distance of each prototype to the convex hull of its run's inputs.
    outside : Tensor (R, M), bool
        Prototype outside the hull (distance above ``rel_tol`` x extent).
    wins : Tensor (R, M), int
        Samples for which the unit is the strongest responder.
    """

    scalars: dict[str, torch.Tensor]
    positions: torch.Tensor
    hull_distance: torch.Tensor
    outside: torch.Tensor
    wins: torch.Tensor
    #: (R,) tensors under :data:`IMAGE_METRIC_NAMES` for image data (see :meth:`with_images`)
    images: dict[str, torch.Tensor] = field(default_factory=dict)

    def metrics(self, run: int) -> dict[str, float | int | None]:
        """The scalar metrics of one run as plain Python numbers; image metrics are None
        unless the inputs are images."""
        out: dict[str, float | int | None] = {key: int(v[run]) if key in COUNT_METRICS else float(v[run]) for key, v in self.scalars.items()}
        for key in IMAGE_METRIC_NAMES:
            out[key] = float(self.images[key][run]) if key in self.images else None
        return out

    def with_images(self, x: torch.Tensor, image_shape: Sequence[int]) -> "Evaluation":
        """This evaluation plus the image metrics of the prototypes against the training images
        ``x`` (R, N, d) of shape ``image_shape`` (see :func:`protoreg.metrics.image_metrics`)."""
        from .metrics import image_metrics

        return replace(self, images=image_metrics(self.positions, x.detach().cpu(), tuple(image_shape)))


@torch.no_grad()
def evaluate(
    model: GaussianMLP,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    rel_tol: float = 1e-6,
    warm: geometry.HullWarmStart | None = None,
    recon: bool = True,
) -> Evaluation:
    """All metrics for R runs on their full training data ``x`` (R,N,d), ``y`` (R,N,k).

    ``warm`` carries hull solver state between evaluations of the same runs
    (:class:`protoreg.geometry.HullWarmStart`). ``recon=False`` skips the optimal matching
    (``recon_error`` is then NaN): the geometry check during training does so for large N x M.
    """
    hidden, pred = model(x)
    positions = model.prototype_positions()
    report = geometry.geometry_report(positions, x, hidden, rel_tol=rel_tol, warm=warm)
    scalars: dict[str, torch.Tensor] = {
        "fit_mse": fit_mse(pred, y).double().cpu(),
        "recon_error": recon_error(positions, x) if recon else torch.full((x.shape[0],), float("nan"), dtype=torch.float64),
        "specialization_ratio": specialization_ratio(hidden),
    }
    for key in METRIC_NAMES[3:]:
        scalars[key] = report[key].cpu()
    winners = hidden.argmax(-1)
    wins = torch.zeros(hidden.shape[0], hidden.shape[2], dtype=torch.long, device=hidden.device)
    wins.scatter_add_(1, winners, torch.ones_like(winners))
    return Evaluation(
        scalars=scalars,
        positions=positions.cpu(),
        hull_distance=report["hull_distance"].cpu(),
        outside=report["outside"].cpu(),
        wins=wins.cpu(),
    )
