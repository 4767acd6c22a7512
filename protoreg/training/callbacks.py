"""Lightning callbacks: the geometry check of prototypes against the data's convex hull."""

from __future__ import annotations

import logging
import math
import time
from typing import TYPE_CHECKING, Any, Protocol, Sequence, cast

import lightning.pytorch as pl
import numpy as np
import torch

from protoreg.frontend.caller import warn
from protoreg.errors import ExpulsionWarning
from protoreg.evaluation.evaluate import Evaluation, evaluate
from protoreg.geometry import DEFAULT_MARGIN, DEFAULT_REL_TOL, HullWarmStart

if TYPE_CHECKING:
    from protoreg.model.mlp import GaussianMLP

log = logging.getLogger(__name__)


#: Above this N x M the geometry checks during training skip the optimal matching (the
#: ``recon_error`` metric, seconds per check for thousands of units); the final check computes it.
RECON_EVERY_CHECK_MAX = 1_000_000


def _writer(trainer: pl.Trainer) -> Any | None:
    logger = trainer.logger
    exp = getattr(logger, "experiment", None) if logger is not None else None
    return exp if exp is not None and hasattr(exp, "add_scalar") else None


class CheckedModule(Protocol):
    """What :class:`GeometryCallback` reads of the module it checks, a
    :class:`~protoreg.training.module.ProtoRegModule`, and the one thing it may ask of it."""

    x: torch.Tensor  #: (R, N, d) training inputs
    y: torch.Tensor  #: (R, N, k) targets
    model: GaussianMLP  #: the R runs
    step_count: int  #: optimisation steps done
    steps: int  #: optimisation steps to do
    alive: torch.Tensor  #: (R,) bool, False for a failed run

    def stop_for_expulsion(self) -> None:
        """Stop training at the end of this chunk (``on_expulsion=stop``)."""


class GeometryCallback(pl.Callback):
    """Checks prototypes against the convex hull every ``every_n_steps`` optimisation steps.

    Logs ``geometry/*`` (outside fraction, mean/max hull distance, minimum prototype gap,
    duplicates, dead units), ``metric/recon_error`` and ``metric/specialization_ratio`` (means
    over runs), a histogram of prototype positions, and at the end the prototype figure (and, for
    d > 2, the prototypes as a TensorBoard embedding). Records for every unit the first step at
    which it was outside (:attr:`expelled_at`, -1 = never).

    ``on_expulsion``: ``warn`` (an *expulsion event* is a check at which a run's outside fraction
    crosses ``max_outside_frac`` or more of its units leave; the first event of the callback's
    runs is one :class:`~protoreg.errors.ExpulsionWarning`, every event is counted per run in
    :attr:`expulsion_events`), ``stop`` (stop training cleanly; the module's
    ``stopped_reason`` becomes ``"expulsion"``), or ``ignore``.
    """

    def __init__(
        self,
        *,
        every_n_steps: int = 100,
        on_expulsion: str = "warn",
        max_outside_frac: float = 0.0,
        margin: float = DEFAULT_MARGIN,
        rel_tol: float = DEFAULT_REL_TOL,
        repulsors: Sequence[str] = (),
        advice: Sequence[str] = (),
        figures: bool = True,
        recon_every_check_max: int = RECON_EVERY_CHECK_MAX,
    ) -> None:
        self.every = max(1, int(every_n_steps))
        self.recon_every_check_max = int(recon_every_check_max)
        self.on_expulsion = on_expulsion
        self.max_outside_frac = float(max_outside_frac)
        self.margin = float(margin)
        self.rel_tol = float(rel_tol)
        self.repulsors = list(repulsors)
        self.advice = list(advice)
        self.figures = figures
        self.expelled_at: torch.Tensor | None = None
        self.steps: list[int] = []
        #: 1-D models only (the prototype figure draws it): (R, M, 1) per check. In d > 1 nothing
        #: draws it, and each checkpoint held R x M x d floats per check as Python lists: MNIST
        #: 5,000's 2,000-step fit peaked at 6.52 GB with them, 1.81 GB without (docs/performance.md)
        self.trajectory: list[np.ndarray] = []
        self.stopped_at: int | None = None
        self._last_checked = -1
        self._was_over: torch.Tensor | None = None
        self.last_report: Evaluation | None = None
        #: hull solver state between checks: prototypes still inside their last corral are cheap
        self._warm = HullWarmStart()
        self._last_recon = True  #: the last check computed recon_error
        #: checks run by this process and their wall-clock seconds (not saved: a resumed run
        #: counts its own, like its training time)
        self.checks_run = 0
        self.check_seconds = 0.0
        #: expulsion events per run (``on_expulsion=warn``); only the first one is warned
        self.expulsion_events: list[int] = []
        self._warned = False
        #: the inputs' image shape (the projector then shows images); set by the engine
        self.image_shape: tuple[int, ...] | None = None

    # -------------------------------------------------------------- state
    def state_dict(self) -> dict[str, Any]:
        return {
            "expelled_at": None if self.expelled_at is None else self.expelled_at.tolist(),
            "steps": list(self.steps),
            "trajectory": [t.tolist() for t in self.trajectory],
            "hull_warm_start": self._warm.state_dict(),
            "expulsion_events": list(self.expulsion_events),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("expelled_at") is not None:
            self.expelled_at = torch.tensor(state["expelled_at"], dtype=torch.long)
        self.steps = list(state.get("steps", []))
        self.trajectory = [np.asarray(t, dtype=float) for t in state.get("trajectory", [])]
        self.expulsion_events = [int(k) for k in state.get("expulsion_events", [])]
        if self.steps:
            self._last_checked = self.steps[-1]
        # a resumed run continues the hull checks exactly where they were
        self._warm.load_state_dict(state.get("hull_warm_start") or {})

    # -------------------------------------------------------------- check
    def _recon_now(self, module: CheckedModule, final: bool) -> bool:
        """The exact matching behind ``recon_error`` costs seconds for large N x M: then only
        the final check computes it (``recon_every_check_max``, default :data:`RECON_EVERY_CHECK_MAX`)."""
        return final or module.x.shape[1] * module.model.width <= self.recon_every_check_max

    def check(self, trainer: pl.Trainer, module: CheckedModule, *, final: bool = False) -> Evaluation:
        t0 = time.perf_counter()
        try:
            return self._check(trainer, module, final=final)
        finally:
            self.checks_run += 1
            self.check_seconds += time.perf_counter() - t0

    def _check(self, trainer: pl.Trainer, module: CheckedModule, *, final: bool) -> Evaluation:
        step = int(module.step_count)
        self._last_recon = self._recon_now(module, final)
        if not self.steps and module.model.initial_combinations is not None:
            # the first check starts where the prototypes were initialised (on segments between
            # inputs, or on inputs): settled there without the solver
            self._warm.seed(*module.model.initial_combinations, n=module.x.shape[1], dim=module.model.dim)
        ev = evaluate(module.model, module.x, module.y, margin=self.margin, rel_tol=self.rel_tol, warm=self._warm, recon=self._last_recon)
        self.last_report = ev
        self._last_checked = step
        outside = ev.outside
        if self.expelled_at is None:
            self.expelled_at = torch.full(outside.shape, -1, dtype=torch.long)
        newly = outside & (self.expelled_at < 0)
        self.expelled_at[newly] = step
        self.steps.append(step)
        if module.model.dim == 1:
            self.trajectory.append(ev.positions.numpy().copy())
        writer = _writer(trainer)
        alive = module.alive.cpu()
        sel = alive if bool(alive.any()) else torch.ones_like(alive)
        if writer is not None:
            for key in ("outside_hull_frac", "mean_hull_distance", "max_hull_distance", "min_prototype_gap", "duplicate_prototypes", "dead_units"):
                v = ev.scalars[key][sel].double()
                writer.add_scalar(f"geometry/{key}", float(v.mean()), step)
            for key in ("recon_error", "specialization_ratio") if self._last_recon else ("specialization_ratio",):
                writer.add_scalar(f"metric/{key}", float(ev.scalars[key][sel].double().mean()), step)
            pos = ev.positions[sel]
            flat = pos[..., 0] if pos.shape[-1] == 1 else pos.norm(dim=-1)
            flat = flat[torch.isfinite(flat)]
            if flat.numel():
                writer.add_histogram("geometry/prototype_positions", flat.float(), step)
        self._react(trainer, module, ev, step, newly)
        return ev

    def _react(self, trainer: pl.Trainer, module: CheckedModule, ev: Evaluation, step: int, newly: torch.Tensor) -> None:
        over = (ev.scalars["outside_hull_frac"] > self.max_outside_frac) & module.alive.cpu()
        prev = self._was_over if self._was_over is not None else torch.zeros_like(over)
        crossed = over & ~prev
        more = over & newly.any(-1)
        self._was_over = over
        if self.on_expulsion == "ignore" or not bool(over.any()):
            return
        if self.on_expulsion == "stop":
            self.stopped_at = step
            module.stop_for_expulsion()
            log.info("stopping at step %d: prototypes outside the convex hull", step)
            return
        if not bool((crossed | more).any()):
            return
        runs = (crossed | more).nonzero().flatten().tolist()
        if len(self.expulsion_events) < over.shape[0]:
            self.expulsion_events += [0] * (over.shape[0] - len(self.expulsion_events))
        for r in runs:
            self.expulsion_events[r] += 1
        if self._warned:  # one warning per run: later events are counted (metrics.json)
            return
        self._warned = True
        parts = []
        for r in runs[:3]:
            units = ev.outside[r].nonzero().flatten().tolist()
            dist = ev.hull_distance[r]
            shown = ", ".join(f"{u} ({float(dist[u]):.3g})" for u in units[:8]) + (" ..." if len(units) > 8 else "")
            prefix = f"run {r}: " if module.model.runs > 1 else ""
            parts.append(f"{prefix}{len(units)} unit(s) outside the convex hull at step {step}: {shown}")
        reps = ", ".join(self.repulsors) if self.repulsors else "none"
        msg = "; ".join(parts) + (" ..." if len(runs) > 3 else "") + f" [unit (distance)]; active repulsors: {reps}"
        if self.advice:
            msg += "; " + " ".join(self.advice)
        msg += " (later expulsions of this run are counted in metrics.json's expulsion_events, not warned again)"
        warn(msg, ExpulsionWarning)

    def final_report(self, module: CheckedModule) -> Evaluation:
        """The metrics of ``module`` now: the last check's if it was at this step, else fresh
        (training stopped between checks, e.g. interrupted or failed)."""
        last = self.last_report
        if last is not None and self._last_checked == int(module.step_count) and self._last_recon:
            return last
        return evaluate(module.model, module.x, module.y, margin=self.margin, rel_tol=self.rel_tol, warm=self._warm)

    # -------------------------------------------------------------- hooks
    # Lightning passes the module as a LightningModule: the one it trains is a CheckedModule.
    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # the initial state (a resumed run continues on the checks' own schedule instead)
        if self._last_checked < 0:
            self.check(trainer, cast(CheckedModule, pl_module))

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int) -> None:
        module = cast(CheckedModule, pl_module)
        step = int(module.step_count)
        if step // self.every > self._last_checked // self.every or step >= module.steps:
            if step != self._last_checked:
                self.check(trainer, module, final=step >= module.steps)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        module = cast(CheckedModule, pl_module)
        if int(module.step_count) != self._last_checked:
            self.check(trainer, module, final=True)
        writer = _writer(trainer)
        if writer is None or not self.figures:
            return
        from protoreg.evaluation.figures import figure_image

        fig = self.figure(module, run=0)
        writer.add_image("geometry/prototypes", figure_image(fig), int(module.step_count), dataformats="CHW")
        ev = self.last_report
        assert ev is not None
        if module.model.dim > 2:
            emb = projector_embedding(ev, module.x[0].detach().cpu(), module.y[0].detach().cpu(), self.image_shape)
            if emb is not None:
                mat, meta, header, images = emb
                writer.add_embedding(mat, metadata=meta, metadata_header=header, label_img=images, tag="prototypes", global_step=int(module.step_count))
        writer.flush()

    def figure(self, pl_module: CheckedModule, run: int = 0) -> Any:
        from protoreg.evaluation.figures import prototype_figure

        ev = self.last_report
        assert ev is not None
        traj = None
        if pl_module.model.dim == 1 and self.trajectory:
            traj = np.stack([t[run, :, 0] for t in self.trajectory])
        return prototype_figure(
            pl_module.x[run].detach().double().cpu().numpy(),
            pl_module.y[run].detach().double().cpu().numpy(),
            ev.positions[run].numpy(),
            ev.outside[run].numpy(),
            steps=self.steps,
            trajectory=traj,
        )


#: Training samples shown next to the prototypes in TensorBoard's projector (the first ones).
PROJECTOR_SAMPLES = 2000
#: Columns of the projector's metadata (``PROJECTOR_COLUMNS + ("label",)`` for labelled data).
PROJECTOR_COLUMNS: tuple[str, ...] = ("kind", "unit", "hull", "hull_distance", "matched_sample", "matched_distance")


def labels_of(y: torch.Tensor) -> np.ndarray | None:
    """Class labels (N,) of targets ``y`` (N, k) that are labels (k = 1, whole numbers) or one-hot
    rows (k > 1, one 1 per row); None for regression targets."""
    v = y.double().numpy()
    if v.shape[1] == 1:
        col = v[:, 0]
        return col.astype(np.int64) if np.isfinite(col).all() and np.array_equal(col, np.round(col)) and len(np.unique(col)) <= 100 else None
    onehot = np.isin(v, (0.0, 1.0)).all() and (v.sum(1) == 1).all()
    return v.argmax(1).astype(np.int64) if onehot else None


def projector_embedding(
    ev: Evaluation, x: torch.Tensor, y: torch.Tensor, image_shape: Sequence[int] | None, *, samples: int = PROJECTOR_SAMPLES
) -> tuple[torch.Tensor, list[list[str]], list[str], torch.Tensor | None] | None:
    """What TensorBoard's projector shows for run 0: its finite prototypes and (up to ``samples``)
    training inputs as points, ``(matrix (K, d), metadata rows, header, sprite images or None)``.

    Metadata columns (:data:`PROJECTOR_COLUMNS`): ``kind`` (prototype | sample), ``unit``,
    ``hull`` (inside | outside), ``hull_distance``, ``matched_sample`` and ``matched_distance``
    (the prototype's partner in the optimal matching behind ``recon_error``) and, for labelled
    data, ``label`` (a prototype's: its matched sample's). For image inputs every point carries its
    image (prototypes clipped to [0, 1]), so the projector draws a sprite."""
    from protoreg.evaluation.matching import matching

    pos = ev.positions[0]
    finite = torch.isfinite(pos).all(-1)
    if not bool(finite.any()):
        return None
    xs = x.double()
    labels = labels_of(y)
    proto_idx, sample_idx, dist = matching(pos.double().numpy(), xs.numpy())
    partner = {int(j): (int(i), float(d)) for j, i, d in zip(proto_idx, sample_idx, dist)}
    header = [*PROJECTOR_COLUMNS, *(["label"] if labels is not None else [])]
    rows: list[list[str]] = []
    units = [j for j in range(pos.shape[0]) if bool(finite[j])]
    for j in units:
        i, d = partner.get(j, (-1, math.inf))
        row = ["prototype", str(j), "outside" if bool(ev.outside[0, j]) else "inside", f"{float(ev.hull_distance[0, j]):.4g}",
               "" if i < 0 else str(i), "" if i < 0 else f"{d:.4g}"]
        if labels is not None:
            row.append("" if i < 0 else str(int(labels[i])))
        rows.append(row)
    shown = min(int(samples), xs.shape[0])
    for i in range(shown):
        row = ["sample", "", "", "", str(i), ""]
        if labels is not None:
            row.append(str(int(labels[i])))
        rows.append(row)
    mat = torch.cat([pos[finite].double(), xs[:shown]]).float()
    images = None
    if image_shape is not None:
        shape = tuple(int(s) for s in image_shape)
        h, w = (shape[0], shape[1]) if len(shape) >= 2 else (1, shape[0])
        images = torch.nan_to_num(mat.double(), nan=0.0, posinf=1.0, neginf=0.0).clamp(0, 1).reshape(-1, 1, h, w).float()
    return mat, rows, header, images


def geometry_callback(
    cfg: Any, active: Sequence[str], losses: Any, *, on_expulsion: str | None = None, figures: bool = True
) -> GeometryCallback:
    """The geometry check configured by ``cfg.geometry`` for runs whose active losses are ``active``.

    The check interval is rounded up to a multiple of ``train.log_every_n_steps`` (checks happen
    between chunks of steps). ``losses`` is the loss registry (roles and pairing advice).
    """
    from protoreg.plugins.pairing import unpaired_repulsors

    chunk = int(cfg.train.log_every_n_steps)
    every = max(chunk, int(math.ceil(int(cfg.geometry.every_n_steps) / chunk)) * chunk)
    return GeometryCallback(
        every_n_steps=every,
        on_expulsion=str(on_expulsion or cfg.geometry.on_expulsion),
        max_outside_frac=float(cfg.geometry.max_outside_frac),
        margin=float(cfg.geometry.margin),
        rel_tol=float(cfg.geometry.rel_tol),
        repulsors=[a for a in active if losses[a].loss.role == "repulsor"],
        advice=["pair each repulsor with an active attractor (e.g. losses.coverage.weight > 0)"] if unpaired_repulsors(active, losses) else [],
        figures=figures,
    )
