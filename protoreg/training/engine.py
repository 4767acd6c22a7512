"""The training engine: one function trains a group of R runs and returns a typed outcome per run.

``fit`` is the engine with R = 1; ``sweep`` calls it once per group. The sequence is always the
same: geometry check and signal handling as callbacks -> Lightning Trainer -> (restore a
checkpoint) -> train the remaining steps -> (save a checkpoint) -> final evaluation -> status of
every run -> HParams -> close the TensorBoard logger.
"""

from __future__ import annotations

import signal
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence, cast

import numpy as np
from omegaconf import OmegaConf

from lightning.fabric.utilities.exceptions import MisconfigurationException

from protoreg.errors import ConfigError, first_line
from protoreg.evaluation.evaluate import IMAGE_METRIC_NAMES, METRIC_NAMES, Evaluation
from protoreg.training.callbacks import GeometryCallback
from protoreg.training.group import RunGroup
from protoreg.training.progress import StepProgress
from protoreg.training.trainer import StopOnSignals, fit_chunks, make_trainer, save_checkpoint

@dataclass
class Units:
    """Per-unit results of one run: prototype positions and geometry."""

    positions: np.ndarray  #: (M, d), non-finite where a unit has no finite prototype
    outside: np.ndarray  #: (M,) bool, outside the convex hull of the inputs
    hull_distance: np.ndarray  #: (M,)
    expelled_at: np.ndarray  #: (M,) first step at which the unit was outside; -1 never
    wins: np.ndarray  #: (M,) samples for which the unit is the strongest responder


@dataclass
class RunOutcome:
    """How one run of a group ended."""

    status: str  #: ``completed`` (trained ``train.steps``) | ``failed`` | ``interrupted`` | ``stopped`` (see :data:`protoreg.rundirs.status.EXIT_CODES`)
    reason: str  #: why it did not complete ('' when completed)
    metrics: dict[str, float | int | None]  #: every name of :data:`~protoreg.evaluation.evaluate.METRIC_NAMES` and ``IMAGE_METRIC_NAMES`` (None: not images)
    steps: int  #: optimisation steps trained
    units: Units
    extra: dict[str, Any] = field(default_factory=dict)  #: e.g. ``stopped_at_step``

    @property
    def prototypes(self) -> np.ndarray:
        return self.units.positions


@dataclass
class GroupOutcome:
    """The outcome of training a group: one :class:`RunOutcome` per run, in group order."""

    runs: list[RunOutcome]
    seconds: float  #: wall-clock training time of the group
    interrupted: bool
    group: RunGroup
    geometry: GeometryCallback
    #: run 0's matched (sample, prototype, SSIM) pairs, best first, when its inputs are images and
    #: figures are drawn (shared by the TensorBoard image and ``reconstructions.png``)
    reconstruction_pairs: list[tuple[int, int, float]] | None = None

    def figure(self, run: int = 0) -> Any:
        """The prototype figure of run ``run`` (matplotlib Figure)."""
        return self.geometry.figure(self.group.module, run=run)


def train_group(
    group: RunGroup,
    geometry: GeometryCallback,
    *,
    log_dir: Path | None = None,
    tb_name: str = "tb",
    checkpoint: Path | None = None,
    resume: Mapping[str, Any] | None = None,
    hparams: Sequence[tuple[str, Mapping[str, Any]]] | None = None,
) -> GroupOutcome:
    """Train ``group`` to ``train.steps`` and evaluate every run.

    Parameters
    ----------
    geometry : the hull check during training (see :func:`~protoreg.training.callbacks.geometry_callback`).
    log_dir, tb_name : TensorBoard events go to ``log_dir/tb_name`` (none when ``log_dir`` is None).
    checkpoint : where to save the trainer's checkpoint after training (none when None).
    resume : a checkpoint of this same group to continue from.
    hparams : per run, ``(session name, hyper-parameters)``: one HParams session per run with
        its metrics (sweeps).
    """
    module = group.module
    geometry.image_shape = group.image_shape
    progress = StepProgress(desc="fit" if tb_name == "tb" else tb_name.rsplit("/", 1)[-1])  # drawn on a terminal only
    callbacks = [geometry, StopOnSignals(), progress]
    trainer = make_trainer(cast(dict[str, Any], OmegaConf.to_container(group.cfg.trainer, resolve=True)), log_dir, callbacks, tb_name=tb_name)
    if resume is not None:
        module.restore(resume)
        for key, state in resume.get("callbacks", {}).items():
            if key.startswith("GeometryCallback"):
                geometry.load_state_dict(state)
    t0 = time.perf_counter()
    try:
        fit_chunks(module, trainer)
    except MisconfigurationException as exc:  # Lightning refusing a trainer.* setting when fitting starts
        line = first_line(exc)
        raise ConfigError(f"trainer: {line}") from None
    seconds = time.perf_counter() - t0
    if geometry.last_report is None:  # training ended before its first check (trainer.max_time=0)
        geometry.check(trainer, module, final=True)
    if checkpoint is not None:
        save_checkpoint(trainer, checkpoint)
    interrupted = module.stopped_reason == "interrupted"
    ev = geometry.final_report(module)
    if group.image_shape is not None:
        ev = ev.with_images(module.x, group.image_shape)
    runs = [_outcome(group, geometry, ev, r) for r in range(module.model.runs)]
    logger = trainer.logger
    writer = getattr(logger, "experiment", None) if logger is not None else None
    pairs = None
    if group.image_shape is not None and geometry.figures:
        from protoreg.evaluation.images import matched_image_pairs
        from protoreg.evaluation.figures import figure_image, reconstruction_figure

        spec = group.specs[0]
        pairs = matched_image_pairs(runs[0].prototypes, spec.x, group.image_shape)
        if writer is not None:
            fig = reconstruction_figure(spec.x, runs[0].prototypes, group.image_shape, pairs=pairs)
            writer.add_image("images/reconstructions", figure_image(fig), int(module.step_count), dataformats="CHW")
    if hparams is not None and writer is not None and not interrupted:
        for (name, hp), run in zip(hparams, runs):
            metric_dict = {f"hparam/{k}": float(cast(float, run.metrics[k])) for k in METRIC_NAMES}  # never None
            metric_dict.update({f"hparam/{k}": float(v) for k in IMAGE_METRIC_NAMES if (v := run.metrics[k]) is not None})
            metric_dict["hparam/failed"] = float(run.status == "failed")
            writer.add_hparams(dict(hp), metric_dict, run_name=name, global_step=run.steps)
    if logger is not None:
        logger.finalize("interrupted" if interrupted else "success")
    return GroupOutcome(runs, seconds, interrupted, group, geometry, pairs)


def _outcome(group: RunGroup, geometry: GeometryCallback, ev: Evaluation, r: int) -> RunOutcome:
    """Status, reason, metrics and units of run ``r`` after training."""
    module = group.module
    failure = module.failures.get(r)
    extra: dict[str, Any] = {}
    status, reason, steps = "completed", "", int(module.step_count)
    if failure is not None:
        status, reason, steps = "failed", failure.message(), int(failure.step)
    elif module.stopped_reason == "interrupted":
        sig = module.stop_signal or signal.SIGINT
        status, reason = "interrupted", f"interrupted by {signal.Signals(sig).name} at step {module.step_count}"
    elif module.stopped_reason == "expulsion":
        status = "stopped"
        reason = f"stopped at step {geometry.stopped_at}: prototypes left the convex hull (geometry.on_expulsion=stop)"
        extra = {"stopped": "expulsion", "stopped_at_step": geometry.stopped_at}
    elif steps < module.steps:  # Lightning ended the loop early: say so, never "completed"
        max_time = group.cfg.trainer.get("max_time")
        if max_time is not None:
            status, reason = "stopped", f"trainer.max_time={max_time} reached after {steps} of {module.steps} steps"
            extra = {"stopped": "max_time", "stopped_at_step": steps}
        else:
            status, reason = "failed", f"training ended after {steps} of {module.steps} steps (stopped early by Lightning)"
    events = geometry.expulsion_events[r] if r < len(geometry.expulsion_events) else 0
    if events:
        extra["expulsion_events"] = int(events)
    m = ev.positions.shape[1]
    expelled = geometry.expelled_at[r].numpy() if geometry.expelled_at is not None else np.full(m, -1)
    units = Units(
        positions=ev.positions[r].numpy(),
        outside=ev.outside[r].numpy().astype(bool),
        hull_distance=ev.hull_distance[r].numpy(),
        expelled_at=np.asarray(expelled, dtype=np.int64),
        wins=ev.wins[r].numpy(),
    )
    return RunOutcome(status, reason, ev.metrics(r), steps, units, extra)
