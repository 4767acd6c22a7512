"""Evaluation of a trained (or training) model: every metric of the run directory, per run."""

from __future__ import annotations

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


@torch.no_grad()
def evaluate(
    model: GaussianMLP, x: torch.Tensor, y: torch.Tensor, *, rel_tol: float = 1e-6, warm: geometry.HullWarmStart | None = None
) -> dict[str, torch.Tensor]:
    """All metrics for R runs on their full training data.

    Returns (R,) tensors under :data:`METRIC_NAMES`, plus per-unit ``positions`` (R,M,d),
    ``hull_distance`` (R,M), ``outside`` (R,M) and ``wins`` (R,M): samples for which the unit is
    the strongest responder. ``warm`` carries hull solver state between evaluations of the same
    runs (:class:`protoreg.geometry.HullWarmStart`).
    """
    hidden, pred = model(x)
    positions = model.prototype_positions()
    report = geometry.geometry_report(positions, x, hidden, rel_tol=rel_tol, warm=warm)
    out: dict[str, torch.Tensor] = {
        "fit_mse": fit_mse(pred, y).double().cpu(),
        "recon_error": recon_error(positions, x),
        "specialization_ratio": specialization_ratio(hidden),
    }
    for key in METRIC_NAMES[3:]:
        out[key] = report[key].cpu()
    winners = hidden.argmax(-1)
    wins = torch.zeros(hidden.shape[0], hidden.shape[2], dtype=torch.long, device=hidden.device)
    wins.scatter_add_(1, winners, torch.ones_like(winners))
    out.update(
        positions=positions.cpu(),
        hull_distance=report["hull_distance"].cpu(),
        outside=report["outside"].cpu(),
        wins=wins.cpu(),
    )
    return out


def run_metrics(ev: dict[str, torch.Tensor], run: int) -> dict[str, float | int]:
    """The scalar metrics of one run as plain Python numbers."""
    res: dict[str, float | int] = {}
    for key in METRIC_NAMES:
        v = ev[key][run]
        res[key] = int(v) if key in ("duplicate_prototypes", "dead_units") else float(v)
    return res
