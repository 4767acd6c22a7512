"""Progress on long work: a step bar (rate and ETA) on a terminal and in a Jupyter notebook,
silent in logs and CI (where it is drawn: :mod:`protoreg.frontend.display`)."""

from __future__ import annotations

import sys
from typing import IO, TYPE_CHECKING, Any, cast

import lightning.pytorch as pl

from protoreg.frontend.display import in_notebook, interactive, make_bar, progress_setting

if TYPE_CHECKING:
    from protoreg.training.module import ProtoRegModule

__all__ = ["StepProgress", "in_notebook", "interactive", "make_bar", "progress_setting"]


class StepProgress(pl.Callback):
    """``tqdm`` bar over the optimisation steps of a group: steps done / ``train.steps``, steps
    per second, ETA, and the mean total loss of the live runs.

    Updated once per chunk (``train.log_every_n_steps`` steps), so drawing costs nothing
    measurable. ``desc`` labels the bar (e.g. the sweep's batch). Draws nothing unless
    ``enabled``.
    """

    def __init__(
        self, *, desc: str = "fit", enabled: bool | None = None, stream: IO[str] | None = None, mininterval: float = 0.5
    ) -> None:
        self.desc = desc
        self.mininterval = float(mininterval)  #: seconds between redraws
        self.stream = stream if stream is not None else sys.stderr
        self.enabled = interactive(self.stream) if enabled is None else enabled
        self._bar: Any = None
        self._done = 0

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not self.enabled:
            return
        module = cast("ProtoRegModule", pl_module)
        self._done = int(module.step_count)
        self._bar = make_bar(
            stream=self.stream,
            total=int(module.steps),
            initial=self._done,
            desc=self.desc,
            unit="step",
            mininterval=self.mininterval,
            leave=in_notebook(),  # a notebook keeps the finished bar; a terminal clears it
        )

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int) -> None:
        if self._bar is None:
            return
        module = cast("ProtoRegModule", pl_module)
        step = int(module.step_count)
        self._bar.update(step - self._done)
        self._done = step
        last = getattr(module, "last", {}).get("total")
        if last is not None:
            alive = module.alive
            vals = last[alive] if bool(alive.any()) else last
            self._bar.set_postfix_str(f"loss {float(vals.float().mean()):.4g}", refresh=False)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.close()

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        self.close()

    def teardown(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        self.close()

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
