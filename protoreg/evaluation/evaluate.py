"""Evaluation of a trained (or training) model: every metric of the run directory, per run."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Sequence

import torch

from protoreg import geometry
from protoreg.model.banded import stream_banded
from protoreg.evaluation.matching import recon_error
from protoreg.model.mlp import GaussianMLP

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
IMAGE_METRIC_NAMES: tuple[str, ...] = ("recon_ssim", "recon_ncc", "recon_ssim_frac", "recon_ssim04_frac", "nn_ncc", "nn_ssim04_frac")


def fit_mse(pred: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Mean squared error of the fit, ``mean_{i,k} (pred - y)^2``.

    Shapes: pred, y (R, N, k) -> (R,).

    >>> fit_mse(torch.zeros(1, 2, 1), torch.ones(1, 2, 1))
    tensor([1.])
    """
    return (pred - y).square().mean(dim=(1, 2))


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
        Prototype outside the hull: distance above the margin (``margin`` x the data's
        resolution, :func:`protoreg.geometry.hull_check`).
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
        ``x`` (R, N, d) of shape ``image_shape`` (see :func:`protoreg.evaluation.images.image_metrics`)."""
        from protoreg.evaluation.images import image_metrics

        return replace(self, images=image_metrics(self.positions, x.detach().cpu(), tuple(image_shape)))


#: Largest R x chunk x M block of hidden responses one evaluation pass holds (64 MB in float32):
#: larger problems stream over chunks of samples, so no N x M matrix is ever whole.
EVAL_CHUNK_ELEMENTS = 1 << 24


def eval_chunk(runs: int, n: int, width: int) -> int:
    """Samples per evaluation chunk: all N when ``R N M <= EVAL_CHUNK_ELEMENTS``, else fewer."""
    return max(1, min(n, EVAL_CHUNK_ELEMENTS // max(1, runs * width)))


@torch.no_grad()
def stream_responses(model: GaussianMLP, x: torch.Tensor, y: torch.Tensor, chunk: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """``fit_mse`` (R,) and ``wins`` (R, M) (samples per strongest-responding unit, ties to the
    lowest index) over chunks of ``chunk`` samples (default :func:`eval_chunk`).

    With one chunk this is exactly ``fit_mse(pred, y)`` and the argmax counts of ``model(x)``;
    with several, the squared errors are summed per chunk in float64 (equal to float rounding)
    and the counts are identical.

    In 1-D with more than :data:`protoreg.model.banded.BANDED_MIN_ELEMENTS` kernels per run (``N M``) only
    the units near each sample are computed (:func:`protoreg.model.banded.stream_banded`, chunks of
    ``chunk`` samples or bounded by :data:`protoreg.model.banded.BANDED_EVAL_ELEMENTS`): the same
    counts, ``fit_mse`` to float rounding.
    """
    r, n, _ = x.shape
    if model.path(x) == "banded":
        banded = stream_banded(model, x, y, chunk)
        if banded is not None:
            return banded
    chunk = chunk or eval_chunk(r, n, model.width)
    wins = torch.zeros(r, model.width, dtype=torch.long, device=x.device)
    if chunk >= n:
        hidden, pred = model(x)
        winners = hidden.argmax(-1)
        wins.scatter_add_(1, winners, torch.ones_like(winners))
        return fit_mse(pred, y), wins
    sq = torch.zeros(r, dtype=torch.float64, device=x.device)
    for s in range(0, n, chunk):
        hidden, pred = model(x[:, s : s + chunk])
        sq += (pred - y[:, s : s + chunk]).square().sum(dim=(1, 2), dtype=torch.float64)
        winners = hidden.argmax(-1)
        wins.scatter_add_(1, winners, torch.ones_like(winners))
    return (sq / (n * y.shape[2])).to(y.dtype), wins


@torch.no_grad()
def evaluate(
    model: GaussianMLP,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    margin: float = geometry.DEFAULT_MARGIN,
    rel_tol: float = geometry.DEFAULT_REL_TOL,
    warm: geometry.HullWarmStart | None = None,
    recon: bool = True,
    chunk: int | None = None,
) -> Evaluation:
    """All metrics for R runs on their full training data ``x`` (R,N,d), ``y`` (R,N,k).

    ``margin`` and ``rel_tol`` (fractions of the data's resolution) define the outside flags and
    the accuracy of the hull distances (:func:`protoreg.geometry.hull_check`). ``warm`` carries
    hull solver state between evaluations of the same runs
    (:class:`protoreg.geometry.HullWarmStart`). ``recon=False`` skips the optimal matching
    (``recon_error`` is then NaN): the geometry check during training does so for large N x M.
    The model is evaluated over chunks of ``chunk`` samples (default :func:`eval_chunk`, see
    :func:`stream_responses`): memory O(R x chunk x M), never a whole R x N x M tensor.
    """
    mse, wins = stream_responses(model, x, y, chunk)
    positions = model.prototype_positions()
    report = geometry.geometry_report(positions, x, wins=wins, margin=margin, rel_tol=rel_tol, warm=warm)
    n = x.shape[1]
    scalars: dict[str, torch.Tensor] = {
        "fit_mse": mse.double().cpu(),
        "recon_error": recon_error(positions, x) if recon else torch.full((x.shape[0],), float("nan"), dtype=torch.float64),
        "specialization_ratio": (wins > 0).sum(-1).double().cpu() / n,
    }
    for key in METRIC_NAMES[3:]:
        scalars[key] = report[key].cpu()
    return Evaluation(
        scalars=scalars,
        positions=positions.cpu(),
        hull_distance=report["hull_distance"].cpu(),
        outside=report["outside"].cpu(),
        wins=wins.cpu(),
    )
