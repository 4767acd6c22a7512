"""``protoreg check RUN_DIR``: recompute the geometry of a finished run from its checkpoint.

The checkpoint holds the model and the training data (module buffers), so the check needs no
data file; it is read with ``torch.load(weights_only=True)``. Exit 0 when no prototype is outside
the convex hull of the training inputs, 1 when some are, 2 on bad input.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import torch
from omegaconf import OmegaConf

from .errors import RunDirError
from .evaluate import IMAGE_METRIC_NAMES, METRIC_NAMES, evaluate
from .model import GaussianMLP
from .checkpoint import CHECKPOINT_NAME, load_checkpoint


def model_from_state(state: dict[str, torch.Tensor]) -> GaussianMLP:
    """A :class:`GaussianMLP` shaped and loaded from a module ``state_dict``."""
    try:
        v = state["model.v"]
        runs, width, out = v.shape
        if "model.w" in state:
            model = GaussianMLP(runs, width, 1, out, "affine")
        else:
            model = GaussianMLP(runs, width, state["model.centers"].shape[-1], out, "radial")
        model = model.to(v.dtype)
        model.load_state_dict({k[len("model."):]: t for k, t in state.items() if k.startswith("model.")})
    except (KeyError, ValueError, RuntimeError) as exc:
        raise RunDirError(f"checkpoint does not hold a protoreg model ({type(exc).__name__}: {exc})") from None
    return model


def geometry_of_run(run_dir: Path) -> dict[str, Any]:
    """Recomputed metrics and per-unit geometry of run 0 of a run directory."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise RunDirError(f"{run_dir}: run directory not found")
    for name in ("config.yaml", "metrics.json"):
        if not (run_dir / name).is_file():
            raise RunDirError(f"{run_dir}: incomplete run directory (no {name})")
    ckpt = load_checkpoint(run_dir / "checkpoints" / CHECKPOINT_NAME)
    state = ckpt["state_dict"]
    if "x" not in state or "y" not in state:
        raise RunDirError(
            f"{run_dir}: the run was saved without its training data (output.save_data=false): hull distances, "
            "outside-hull flags and reconstruction metrics cannot be computed; the prototypes are in prototypes.csv"
        )
    try:
        cfg = OmegaConf.load(run_dir / "config.yaml")
        rel_tol = float(OmegaConf.select(cfg, "geometry.rel_tol", default=1e-6))
    except Exception as exc:  # noqa: BLE001
        raise RunDirError(f"{run_dir / 'config.yaml'}: unreadable ({exc})") from None
    model = model_from_state(state)
    x, y = state["x"].to(model.v.dtype), state["y"].to(model.v.dtype)
    ev = evaluate(model, x, y, rel_tol=rel_tol)
    image_shape = _image_shape(run_dir)
    if image_shape is not None:
        ev = ev.with_images(x, image_shape)
    expelled = [-1] * model.width
    for key, cb_state in (ckpt.get("callbacks") or {}).items():
        if str(key).startswith("GeometryCallback") and cb_state.get("expelled_at") is not None:
            expelled = list(cb_state["expelled_at"][0])
    units = []
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


def _image_shape(run_dir: Path) -> tuple[int, ...] | None:
    try:
        shape = json.loads((run_dir / "metrics.json").read_text(encoding="utf-8")).get("image_shape")
    except (OSError, ValueError, AttributeError):
        return None
    return tuple(int(s) for s in shape) if isinstance(shape, list) and shape else None


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
