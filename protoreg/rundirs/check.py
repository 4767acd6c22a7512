"""``protoreg check RUN_DIR``: recompute the geometry of a finished run from its checkpoint.

The checkpoint holds the model and the training data (module buffers), so the check needs no
data file; it is read with ``torch.load(weights_only=True)``. Exit 0 when no prototype is outside
the convex hull of the training inputs, 1 when some are, 2 on bad input: a checkpoint that does
not hold a consistent model and finite training data (edited, or from another program) is one
line naming the file.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import torch
from omegaconf import OmegaConf

from protoreg.datasets.rules import check_image_shape
from protoreg.errors import RunDirError, first_line
from protoreg.rundirs.layout import SWEEP_MANIFEST, check_not_being_written
from protoreg.evaluation.evaluate import IMAGE_METRIC_NAMES, METRIC_NAMES, evaluate
from protoreg.geometry import DEFAULT_MARGIN, DEFAULT_REL_TOL
from protoreg.model.mlp import GaussianMLP
from protoreg.rundirs.checkpoint import CHECKPOINT_NAME, load_checkpoint


#: What reading a checkpoint that was edited or written by another program can raise.
_MALFORMED = (KeyError, ValueError, RuntimeError, TypeError, IndexError, AttributeError)


def model_from_state(state: dict[str, torch.Tensor], where: str = "checkpoint") -> GaussianMLP:
    """A :class:`GaussianMLP` shaped and loaded from a module ``state_dict`` (``where`` names
    the checkpoint in errors)."""
    try:
        v = state["model.v"]
        runs, width, out = v.shape
        if "model.w" in state:
            model = GaussianMLP(runs, width, 1, out, "affine")
        else:
            model = GaussianMLP(runs, width, state["model.centers"].shape[-1], out, "radial")
        model = model.to(v.dtype)
        model.load_state_dict({k[len("model."):]: t for k, t in state.items() if k.startswith("model.")})
    except _MALFORMED as exc:
        raise RunDirError(f"{where} does not hold a protoreg model ({_first_line(exc)})") from None
    return model


def _first_line(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {first_line(exc)[:200]}" if str(exc).strip() else type(exc).__name__


def stored_data(state: Any, model: GaussianMLP, where: str) -> tuple[torch.Tensor, torch.Tensor]:
    """The training data ``(x (R, N, d), y (R, N, k))`` saved in a checkpoint's ``state_dict``,
    checked: floating tensors shaped for ``model``, every value finite."""
    x, y = state["x"], state["y"]
    for name, t, cols in (("inputs", x, model.dim), ("targets", y, model.v.shape[-1])):
        if not isinstance(t, torch.Tensor) or not t.is_floating_point():
            raise RunDirError(f"{where}: the stored training {name} are not a floating-point tensor")
        if t.ndim != 3 or t.shape[0] != model.runs or t.shape[2] != cols or t.shape[1] != x.shape[1] or t.shape[1] < 1:
            raise RunDirError(f"{where}: the stored training {name} have shape {tuple(t.shape)}, which does not fit the model")
        bad = ~torch.isfinite(t)
        if bool(bad.any()):
            run, row, col = (int(i) for i in bad.nonzero()[0])
            raise RunDirError(f"{where}: the stored training {name} hold NaN/inf (first at run {run}, sample {row}, column {col})")
    return x.to(model.v.dtype), y.to(model.v.dtype)


def _expelled_at(ckpt: dict[str, Any], width: int, where: str) -> list[int]:
    """Per unit, the step at which the geometry check first saw it outside (-1: never)."""
    for key, cb_state in (ckpt.get("callbacks") or {}).items():
        if str(key).startswith("GeometryCallback") and cb_state.get("expelled_at") is not None:
            steps = list(cb_state["expelled_at"][0])
            if len(steps) != width or not all(isinstance(v, int) and not isinstance(v, bool) for v in steps):
                raise RunDirError(f"{where}: the geometry callback's expelled_at does not list one step per unit ({width})")
            return steps
    return [-1] * width


def _check_against_metrics(run_dir: Path, model: GaussianMLP, state: dict[str, Any]) -> None:
    """The checkpoint's model and data must be the run that ``metrics.json`` describes."""
    try:
        metrics = json.loads((run_dir / "metrics.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise RunDirError(f"{run_dir / 'metrics.json'}: unreadable ({type(exc).__name__}: {exc})") from None
    x = state.get("x")
    have = {"width": model.width, "dim": model.dim, "n": int(x.shape[1]) if isinstance(x, torch.Tensor) and x.ndim == 3 else None}
    for key, value in have.items():
        want = metrics.get(key) if isinstance(metrics, dict) else None
        if value is not None and isinstance(want, int) and want != value:
            raise RunDirError(
                f"{run_dir / 'checkpoints' / CHECKPOINT_NAME}: holds a model with {key} {value}, but metrics.json says {key} {want}; "
                "the run directory's files disagree (truncated, edited or mixed from two runs)"
            )


def geometry_of_run(run_dir: Path) -> dict[str, Any]:
    """Recomputed metrics and per-unit geometry of run 0 of a run directory."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise RunDirError(f"{run_dir}: run directory not found")
    if (run_dir / SWEEP_MANIFEST).is_file():
        raise RunDirError(
            f"{run_dir}: a sweep directory; protoreg check takes a run directory of protoreg fit "
            "(a sweep's geometry is in its results.csv, prototypes.csv and summary.md)"
        )
    check_not_being_written(run_dir)
    for name in ("config.yaml", "metrics.json"):
        if not (run_dir / name).is_file():
            raise RunDirError(f"{run_dir}: incomplete run directory (no {name})")
    path = run_dir / "checkpoints" / CHECKPOINT_NAME
    ckpt = load_checkpoint(path)
    state = ckpt["state_dict"]
    if not isinstance(state, dict):
        raise RunDirError(f"{path}: not a protoreg checkpoint (its state_dict is not a mapping)")
    if "x" not in state or "y" not in state:
        raise RunDirError(
            f"{run_dir}: the run was saved without its training data (output.save_data=false): hull distances, "
            "outside-hull flags and reconstruction metrics cannot be computed; the prototypes are in prototypes.csv"
        )
    try:
        cfg = OmegaConf.load(run_dir / "config.yaml")
        margin = float(OmegaConf.select(cfg, "geometry.margin", default=DEFAULT_MARGIN))
        rel_tol = float(OmegaConf.select(cfg, "geometry.rel_tol", default=DEFAULT_REL_TOL))
    except Exception as exc:  # noqa: BLE001
        raise RunDirError(f"{run_dir / 'config.yaml'}: unreadable ({exc})") from None
    model = model_from_state(state, str(path))
    _check_against_metrics(run_dir, model, state)
    try:
        x, y = stored_data(state, model, str(path))
        expelled = _expelled_at(ckpt, model.width, str(path))
        ev = evaluate(model, x, y, margin=margin, rel_tol=rel_tol)
    except _MALFORMED as exc:
        raise RunDirError(f"{path}: the stored model and data cannot be evaluated ({_first_line(exc)})") from None
    image_shape = _image_shape(run_dir, model.dim)
    if image_shape is not None:
        ev = ev.with_images(x, image_shape)
    units: list[dict[str, Any]] = []
    pos = ev.positions[0]
    for j in range(model.width):
        p = pos[j]
        units.append(
            {
                "unit": j,
                "position": [float(v) for v in p],
                "norm": float(p.norm()) if bool(torch.isfinite(p).all()) else math.inf,
                "hull_distance": float(ev.hull_distance[0, j]),
                "outside": bool(ev.outside[0, j]),
                "expelled_at_step": None if expelled[j] < 0 else int(expelled[j]),
            }
        )
    metrics = ev.metrics(0)
    n_out = sum(u["outside"] for u in units)
    return {
        "run_dir": str(run_dir),
        "dim": int(model.dim),
        "width": int(model.width),
        "n": int(x.shape[1]),
        "metrics": metrics,
        "units": units,
        "outside": n_out,
        "verdict": (
            f"expulsion: {n_out} of {model.width} prototypes outside the convex hull of the training inputs"
            if n_out
            else f"ok: all {model.width} prototypes inside the convex hull of the training inputs"
        ),
    }


def _image_shape(run_dir: Path, dim: int) -> tuple[int, ...] | None:
    """The ``image_shape`` recorded in ``metrics.json`` (checked against the inputs' ``dim``)."""
    try:
        shape = json.loads((run_dir / "metrics.json").read_text(encoding="utf-8")).get("image_shape")
    except (OSError, ValueError, AttributeError):
        return None
    return check_image_shape(shape, dim, str(run_dir / "metrics.json")) if shape else None


def _pos(u: dict[str, Any], dim: int) -> str:
    if dim <= 3:
        return ", ".join(f"{v:.4g}" for v in u["position"])
    return f"|p|={u['norm']:.4g}"


def run_check(run_dir: Path, *, as_json: bool = False) -> int:
    report = geometry_of_run(run_dir)
    if as_json:
        print(json.dumps(report, indent=2))
    else:
        dim = report["dim"]
        head = ("unit", "position" if dim <= 3 else "norm", "hull_distance", "outside", "expelled_at_step")
        rows = [head] + [
            (
                str(u["unit"]),
                _pos(u, dim),
                f"{u['hull_distance']:.4g}",
                "yes" if u["outside"] else "no",
                "" if u["expelled_at_step"] is None else str(u["expelled_at_step"]),
            )
            for u in report["units"]
        ]
        widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
        for r in rows:
            print("  ".join(c.rjust(w) for c, w in zip(r, widths)))
        m = report["metrics"]
        print(" ".join(f"{k}={m[k]:.4g}" for k in (*METRIC_NAMES, *IMAGE_METRIC_NAMES) if m.get(k) is not None))
        print(report["verdict"])
    return 1 if report["outside"] else 0
