"""Reading checkpoints safely (no code runs on load). Kept free of Lightning so that
``protoreg check`` starts quickly."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from protoreg.errors import CheckpointError, RunDirError, first_line

CHECKPOINT_NAME = "last.ckpt"


def load_checkpoint(path: Path) -> dict[str, Any]:
    """Read a checkpoint without executing code (``torch.load(weights_only=True)``)."""
    if not path.is_file():
        raise RunDirError(f"{path}: checkpoint not found")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - unpickling refusals and corrupt files alike
        line = first_line(exc)
        raise CheckpointError(f"{path}: refused to load checkpoint safely ({line[:200]})") from None
    if not isinstance(ckpt, dict) or "state_dict" not in ckpt:
        raise CheckpointError(f"{path}: not a protoreg checkpoint (no state_dict)")
    return ckpt


def trained_steps(ckpt: dict[str, Any]) -> int:
    """The optimisation steps a checkpoint read by :func:`load_checkpoint` has trained."""
    try:
        return int(ckpt.get("protoreg", {}).get("step_count", 0))
    except (TypeError, ValueError, AttributeError):
        raise CheckpointError("not a protoreg checkpoint (unreadable step count)") from None
