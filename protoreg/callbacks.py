"""Lightning callbacks that bring protoreg's instruments to anyone's model.

:class:`HullCallback` works with ``lightning.pytorch.Trainer`` and with the standalone
``pytorch_lightning.Trainer`` (what ``prototorch-models`` trains on): an instance is a
``Callback`` of every Lightning namespace already imported in the process (``lightning`` when
none is), so either trainer accepts it, and it logs through whatever loggers the trainer has.
"""

from __future__ import annotations

import importlib
import sys
import warnings
from typing import Any, Callable, Sequence

import numpy as np
import torch
from torch import Tensor

from protoreg.errors import ExpulsionWarning
from protoreg.geometry.monitor import HullMonitor, HullReport

__all__ = ["HullCallback"]

#: The Lightning namespaces whose ``Callback`` a :class:`HullCallback` is.
NAMESPACES: tuple[str, ...] = ("lightning.pytorch", "pytorch_lightning")
ON_EXPULSION: tuple[str, ...] = ("warn", "stop", "ignore")


def _callback_bases() -> tuple[type, ...]:
    """``Callback`` of each Lightning namespace already imported (``lightning`` if none is)."""
    loaded = [ns for ns in NAMESPACES if ns in sys.modules]
    bases = []
    for ns in loaded or NAMESPACES:
        try:
            bases.append(importlib.import_module(ns).Callback)
        except ImportError:
            continue
        if not loaded:
            break
    if not bases:
        raise ImportError("protoreg.callbacks needs lightning or pytorch_lightning installed")
    return tuple(bases)


_CLASSES: dict[tuple[type, ...], type] = {}


def _as_inputs(data: Any) -> Tensor:
    """The training inputs (N, d) of ``data``: a tensor or array, or an ``(x, y)`` pair."""
    if isinstance(data, (tuple, list)) and len(data) == 2 and not isinstance(data[0], (int, float)):
        data = data[0]
    x = torch.as_tensor(np.asarray(data) if not isinstance(data, Tensor) else data).detach()
    if x.dim() == 1:
        x = x[:, None]
    return x.reshape(x.shape[0], -1)


class HullCallback:
    """Watches a model's prototypes against the convex hull of its training inputs.

    ``data``: the training inputs (N, d) (a tensor or array, or an ``(x, y)`` pair).
    ``prototypes``: a callable ``module -> tensor (M, d)``, e.g. ``lambda m: m.centers``.
    Every ``every_n_steps`` optimisation steps (and at the start and the end of training) it
    checks them with a :class:`~protoreg.HullMonitor` (``margin`` and ``rel_tol`` as in
    ``fit``'s ``geometry.margin`` and ``geometry.rel_tol``), logs the ``geometry/*`` scalars to
    every logger of the trainer, and on expulsion (a fraction outside above
    ``max_outside_frac``) warns once (``ExpulsionWarning``), stops training (``stop``) or does
    nothing (``ignore``). At the end it logs ``metric/recon_error`` and, with ``image_shape``,
    the image reconstruction metrics. Its state (the warm start, the expulsion record) is saved
    in the trainer's checkpoints and restored on resume.
    """

    def __new__(cls, *args: Any, **kwargs: Any) -> "HullCallback":
        bases = _callback_bases()
        sub = _CLASSES.get(bases)
        if sub is None:
            sub = _CLASSES[bases] = type("HullCallback", (cls, *bases), {"__module__": __name__, "__qualname__": "HullCallback"})
        return object.__new__(sub)

    def __init__(
        self,
        data: Any,
        prototypes: Callable[[Any], Tensor],
        *,
        every_n_steps: int = 100,
        on_expulsion: str = "warn",
        margin: float | None = None,
        rel_tol: float | None = None,
        max_outside_frac: float = 0.0,
        image_shape: Sequence[int] | None = None,
    ) -> None:
        if not callable(prototypes):
            raise TypeError("prototypes must be a callable module -> tensor (M, d), e.g. lambda m: m.centers")
        if isinstance(every_n_steps, bool) or not isinstance(every_n_steps, int) or every_n_steps < 1:
            raise ValueError(f"every_n_steps must be an int >= 1, got {every_n_steps!r}")
        if on_expulsion not in ON_EXPULSION:
            raise ValueError(f"on_expulsion must be one of {', '.join(ON_EXPULSION)}, got {on_expulsion!r}")
        self.x = _as_inputs(data)
        self.monitor = HullMonitor(self.x, margin=margin, rel_tol=rel_tol)
        self.prototypes = prototypes
        self.every_n_steps, self.on_expulsion = every_n_steps, on_expulsion
        self.max_outside_frac = float(max_outside_frac)
        self.image_shape = tuple(int(s) for s in image_shape) if image_shape is not None else None
        self.last_report: HullReport | None = None
        self.last_step: int | None = None
        self.checks_run = 0
        self.expulsion_events = 0
        self.stopped_at: int | None = None
        self.reconstruction: Any = None
        self._warned = False

    # ------------------------------------------------------------------ checks
    def check(self, trainer: Any, module: Any) -> HullReport:
        """Check the prototypes now, log the scalars at the trainer's step, react to expulsion."""
        step = int(trainer.global_step)
        p = torch.as_tensor(self.prototypes(module)).detach()
        report = self.monitor.check(p.reshape(p.shape[0], -1))
        self.last_report, self.last_step = report, step
        self.checks_run += 1
        self._log(trainer, report.metrics(), step)
        if report.outside_frac > self.max_outside_frac:
            self.expulsion_events += 1
            self._react(trainer, report, step)
        return report

    def _log(self, trainer: Any, metrics: dict[str, float], step: int) -> None:
        for logger in getattr(trainer, "loggers", None) or []:
            logger.log_metrics(metrics, step=step)

    def _react(self, trainer: Any, report: HullReport, step: int) -> None:
        if self.on_expulsion == "stop":
            self.stopped_at = step
            trainer.should_stop = True
            return
        if self.on_expulsion == "ignore" or self._warned:
            return
        self._warned = True
        units = report.outside.nonzero().flatten().tolist()
        shown = ", ".join(f"{j} ({float(report.distances[j]):.3g})" for j in units[:8]) + (" ..." if len(units) > 8 else "")
        warnings.warn(
            f"{len(units)} prototype(s) outside the convex hull of the training inputs at step {step}: {shown} "
            f"[prototype (distance)]; a repulsive loss without a compatible attractor expels prototypes "
            f"(later expulsions are counted in expulsion_events, not warned again)",
            ExpulsionWarning,
            stacklevel=2,
        )

    # ----------------------------------------------------------- Lightning hooks
    def on_train_start(self, trainer: Any, pl_module: Any) -> None:
        if self.last_step != int(trainer.global_step):
            self.check(trainer, pl_module)

    def on_train_batch_end(self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, batch_idx: int) -> None:
        step = int(trainer.global_step)
        if step % self.every_n_steps == 0 and step != self.last_step:
            self.check(trainer, pl_module)

    def on_train_end(self, trainer: Any, pl_module: Any) -> None:
        if self.last_step != int(trainer.global_step):
            self.check(trainer, pl_module)
        from protoreg.evaluation.reconstruction import reconstruct

        p = torch.as_tensor(self.prototypes(pl_module)).detach()
        self.reconstruction = reconstruct(p.reshape(p.shape[0], -1), self.x, image_shape=self.image_shape)
        self._log(trainer, {f"metric/{k}": v for k, v in self.reconstruction.metrics.items()}, int(trainer.global_step))

    # ------------------------------------------------------------ checkpoints
    def state_dict(self) -> dict[str, Any]:
        return {
            "monitor": self.monitor.state_dict(),
            "last_step": self.last_step,
            "checks_run": self.checks_run,
            "expulsion_events": self.expulsion_events,
            "warned": self._warned,
            "stopped_at": self.stopped_at,
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.monitor.load_state_dict(state_dict.get("monitor") or {})
        self.last_step = state_dict.get("last_step")
        self.checks_run = int(state_dict.get("checks_run", 0))
        self.expulsion_events = int(state_dict.get("expulsion_events", 0))
        self._warned = bool(state_dict.get("warned", False))
        self.stopped_at = state_dict.get("stopped_at")
