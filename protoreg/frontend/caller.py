"""Warnings attributed to the user's call: the caller's file and line, never protoreg's own (or
Lightning's, or torch's) source.

:func:`warn` walks up the stack to the first frame outside :data:`INTERNAL_PACKAGES` and issues
the warning there with :func:`warnings.warn_explicit`, exactly as ``warnings.warn`` with the
right ``stacklevel`` would: the active filters decide, the ``default`` action shows it once per
calling line, and a notebook shows the user's cell.
"""

from __future__ import annotations

import functools
import sys
import warnings
from types import FrameType
from typing import Any, Callable, TypeVar, cast

#: Top-level packages whose frames are never shown as the origin of a protoreg warning.
INTERNAL_PACKAGES: frozenset[str] = frozenset(
    {"protoreg", "lightning", "lightning_fabric", "lightning_utilities", "pytorch_lightning", "torch", "pluggy", "contextlib", "threading"}
)


def _internal(frame: FrameType) -> bool:
    name = str(frame.f_globals.get("__name__", ""))
    return name.split(".", 1)[0] in INTERNAL_PACKAGES


def user_frame() -> FrameType | None:
    """The innermost frame of the stack outside :data:`INTERNAL_PACKAGES` (the outermost frame
    when every frame is internal, e.g. the ``protoreg`` command itself)."""
    frame: FrameType | None = sys._getframe(1)
    last = frame
    while frame is not None and _internal(frame):
        last = frame
        frame = frame.f_back
    return frame if frame is not None else last


def warn(message: str, category: type[Warning]) -> None:
    """Issue ``message`` as ``category``, attributed to the user's line (:func:`user_frame`)."""
    frame = user_frame()
    if frame is None:  # pragma: no cover - no Python frame at all
        warnings.warn(message, category, stacklevel=2)
        return
    g = frame.f_globals
    registry = g.setdefault("__warningregistry__", {}) if isinstance(g, dict) else None
    warnings.warn_explicit(
        message,
        category,
        frame.f_code.co_filename,
        frame.f_lineno,
        module=str(g.get("__name__", "<unknown>")),
        registry=registry,
    )


F = TypeVar("F", bound=Callable[..., Any])


def keeps_warning_filters(func: F) -> F:
    """Run ``func`` with the process's warning filters (and ``warnings.showwarning``) put back
    as they were when it returns or raises.

    The libraries training imports on first use (Lightning, torchmetrics, scipy, sympy) add
    filters of their own when they are imported; a call into protoreg leaves the caller's
    filters as it found them. Warnings issued during the call still go through the caller's
    filters."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        with warnings.catch_warnings():
            return func(*args, **kwargs)

    return cast(F, wrapper)  # functools.wraps keeps func's signature
