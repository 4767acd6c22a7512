"""Building and training batches of runs; the ``fit`` workflow and its run directory."""

from __future__ import annotations

import contextlib
import csv
import io
import logging
import math
import os
import signal
import threading
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Sequence

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from . import config as C
from .callbacks import GeometryCallback
from .checkpoint import CHECKPOINT_NAME, load_checkpoint  # noqa: F401 - re-exported
from .data import validate_arrays
from .errors import ConfigError, DataError, ProtoregError, RunDirError
from .evaluate import run_metrics
from .io import atomic_write_json, atomic_write_text, is_empty_dir, staging_dir
from .model import GaussianMLP
from .module import LossTerm, ProtoRegModule
from .pairing import check_pairing, unpaired_repulsors
from .plugins import LossEntry, collect_datasets, collect_losses, get_plugin_manager

log = logging.getLogger(__name__)


@dataclass
class Registry:
    """Losses and datasets of one plugin manager."""

    losses: dict[str, LossEntry]
    datasets: dict[str, tuple[Callable[..., Any], str]]

    @classmethod
    def load(cls) -> "Registry":
        pm = get_plugin_manager()
        return cls(collect_losses(pm), collect_datasets(pm))


# ---------------------------------------------------------------- data
def data_seed(cfg: DictConfig) -> int:
    return int(cfg.data.seed if cfg.data.seed is not None else cfg.train.seed)


def load_data(cfg: DictConfig, reg: Registry) -> tuple[np.ndarray, np.ndarray]:
    """The (validated) training data of one run."""
    name = "file" if cfg.data.path else cfg.data.name
    loader, source = reg.datasets[name]
    where = str(cfg.data.path) if cfg.data.path else f"dataset {name!r} ({source})"
    try:
        x, y = loader(OmegaConf.to_container(cfg.data, resolve=True), data_seed(cfg))
    except ProtoregError:
        raise
    except Exception as exc:  # noqa: BLE001 - a dataset plugin's bug
        raise DataError(f"{where}: loader failed: {type(exc).__name__}: {exc}") from exc
    return validate_arrays(x, y, where)


def parameterization(cfg: DictConfig, dim: int) -> str:
    p = cfg.model.parameterization
    if p == "auto":
        return "affine" if dim == 1 else "radial"
    if p == "affine" and dim > 1:
        raise ConfigError(f"model.parameterization: 'affine' has no point prototype for {dim}-D inputs; use radial")
    return str(p)


def torch_dtype(cfg: DictConfig) -> torch.dtype:
    prec = str(cfg.trainer.get("precision", "32-true"))
    return torch.float64 if prec.startswith("64") else torch.float32


# ---------------------------------------------------------------- batch
@dataclass
class Batch:
    """R runs of identical shapes, ready to train as one program."""

    cfgs: list[DictConfig]
    module: ProtoRegModule
    settings: list[dict[str, dict[str, Any]]]
    active: list[list[str]]
    data: list[tuple[np.ndarray, np.ndarray]] = field(default_factory=list)


#: Settings that must agree for runs to train together.
BATCH_KEYS = ("model.parameterization", "model.init", "train.steps", "train.lr", "train.batch_size", "train.log_every_n_steps", "trainer")


def batch_key(cfg: DictConfig, n: int, d: int, k: int, reg: Registry) -> tuple[Any, ...]:
    width = cfg.model.width or n
    names = tuple(sorted(C.loss_settings(cfg, reg.losses)))
    return (n, d, k, width, parameterization(cfg, d), names, float(cfg.model.init_width)) + tuple(
        str(OmegaConf.select(cfg, key)) for key in BATCH_KEYS
    )


def build_batch(cfgs: Sequence[DictConfig], reg: Registry, data: Sequence[tuple[np.ndarray, np.ndarray]] | None = None) -> Batch:
    """Model and module for runs that share shapes (see :data:`BATCH_KEYS`)."""
    data = list(data) if data is not None else [load_data(c, reg) for c in cfgs]
    first = cfgs[0]
    n, d = data[0][0].shape
    k = data[0][1].shape[1]
    key0 = batch_key(first, n, d, k, reg)
    for c, (x, y) in zip(cfgs, data):
        if batch_key(c, x.shape[0], x.shape[1], y.shape[1], reg) != key0:
            raise ConfigError("runs of one batch must share data shape, width, parameterization and training settings")
    dtype = torch_dtype(first)
    x = torch.tensor(np.stack([a for a, _ in data]), dtype=dtype)
    y = torch.tensor(np.stack([b for _, b in data]), dtype=dtype)
    width = int(first.model.width or n)
    settings = [C.loss_settings(c, reg.losses) for c in cfgs]
    active = [C.active_losses(s) for s in settings]
    terms = []
    for name in settings[0]:
        entry = reg.losses[name]
        terms.append(
            LossTerm(
                name=name,
                loss=entry.loss,
                source=entry.source,
                weight=[float(s[name]["weight"]) for s in settings],
                params={p: [s[name][p] for s in settings] for p in entry.loss.defaults},
            )
        )
    seeds = [int(c.train.seed) for c in cfgs]
    model = GaussianMLP(len(cfgs), width, d, k, parameterization(first, d)).to(dtype)  # type: ignore[arg-type]
    model.initialize(x, y, seeds, init=first.model.init, init_width=float(first.model.init_width))
    module = ProtoRegModule(
        model,
        x,
        y,
        terms,
        lr=float(first.train.lr),
        steps=int(first.train.steps),
        chunk=int(first.train.log_every_n_steps),
        batch_size=first.train.batch_size,
        seeds=seeds,
    )
    module.dry_run()
    return Batch(list(cfgs), module, settings, active, list(data))


def make_trainer(cfg: DictConfig, out: Path | None, callbacks: Sequence[Any], *, tb_name: str = "tb") -> Any:
    """A Lightning Trainer for one chunked epoch, logging to ``out/tb`` (no logger if out is None)."""
    import lightning.pytorch as pl
    from lightning.pytorch.loggers import TensorBoardLogger

    logger: Any = False
    if out is not None:
        logger = TensorBoardLogger(str(out), name=tb_name, version="", default_hp_metric=False)
    kwargs = OmegaConf.to_container(cfg.trainer, resolve=True)
    assert isinstance(kwargs, dict)
    try:
        with quiet_lightning():
            return pl.Trainer(
                max_epochs=1,
                logger=logger,
                callbacks=list(callbacks),
                enable_checkpointing=False,
                enable_progress_bar=False,
                enable_model_summary=False,
                log_every_n_steps=1,
                num_sanity_val_steps=0,
                **kwargs,
            )
    except Exception as exc:  # noqa: BLE001 - Lightning's own validation of trainer.*
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ConfigError(f"trainer: {first_line}") from None


@contextlib.contextmanager
def quiet_lightning() -> Iterator[None]:
    """Silence Lightning's informational chatter (device banners, tips) during a run."""
    names = ("lightning.pytorch", "lightning.fabric", "pytorch_lightning", "lightning_fabric")
    saved = {n: logging.getLogger(n).level for n in names}
    for n in names:
        logging.getLogger(n).setLevel(logging.WARNING)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*does not have many workers.*")
            warnings.filterwarnings("ignore", message=".*`training_step` returned `None`.*")
            warnings.filterwarnings("ignore", message=".*Checkpoint directory.*exists and is not empty.*")
            warnings.filterwarnings("ignore", message=".*LeafSpec.*")
            yield
    finally:
        for n, lvl in saved.items():
            logging.getLogger(n).setLevel(lvl)


@contextlib.contextmanager
def stop_on_signals(module: ProtoRegModule) -> Iterator[None]:
    """SIGINT/SIGTERM stop training after the current step instead of killing the process."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    old = {s: signal.signal(s, module.on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    module.handle_signals = True
    try:
        yield
    finally:
        module.handle_signals = False
        for s, h in old.items():
            signal.signal(s, h)


@contextlib.contextmanager
def flush_denormal() -> Iterator[None]:
    """Treat subnormal floats as zero on CPU while training.

    Far-away Gaussian units give ``exp(-z**2)`` in the subnormal range (float32: ``z**2`` of about
    87-103), where x86 arithmetic is 10-100x slower; a batch of many runs is then dominated by
    them. Flushing changes values below ~1e-38 (float32) / ~1e-308 (float64) only, and is the same
    for ``fit`` and ``sweep`` so that a batched run equals the run trained alone.
    """
    ok = torch.set_flush_denormal(True)
    try:
        yield
    finally:
        if ok:
            torch.set_flush_denormal(False)


def train(batch: Batch, trainer: Any) -> None:
    """Train a batch for its remaining steps."""
    module = batch.module
    with quiet_lightning(), flush_denormal():
        trainer.fit(module, train_dataloaders=module.chunks())


# ------------------------------------------------------------- checkpoints
def save_checkpoint(trainer: Any, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    trainer.save_checkpoint(str(tmp), weights_only=False)
    os.replace(tmp, path)


# ------------------------------------------------------------------- fit
@dataclass
class FitResult:
    out: Path
    status: str
    metrics: dict[str, Any]
    seconds: float
    message: str = ""
    exit_code: int = 0


def prepare(cfg: DictConfig, reg: Registry) -> tuple[DictConfig, list[str]]:
    """Validate a fit config; return the resolved config and the pairing problems (warned)."""
    C.validate(cfg, reg.losses, reg.datasets)
    settings = C.loss_settings(cfg, reg.losses)
    problems = check_pairing(C.active_losses(settings), reg.losses, strict=bool(cfg.pairing.strict))
    return C.resolved(cfg, reg.losses), problems


def default_out(root: str = "runs") -> Path:
    return Path(root) / time.strftime("%Y%m%d-%H%M%S")


def check_out(out: Path) -> None:
    """Refuse an ``--out`` that exists with content or that cannot be created (before training)."""
    if out.exists() and not out.is_dir():
        raise RunDirError(f"{out}: exists and is not a directory")
    if out.exists() and not is_empty_dir(out):
        raise RunDirError(f"{out}: output directory exists and is not empty (choose another --out)")
    ensure_parent(out)


def ensure_parent(out: Path) -> None:
    """Create ``out``'s parent folder, or raise :class:`RunDirError` saying why it cannot be."""
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        if not os.access(out.parent, os.W_OK | os.X_OK):
            raise PermissionError(13, "Permission denied", str(out.parent))
    except OSError as exc:
        raise RunDirError(f"{out}: cannot create the output directory ({exc.strerror or exc}: {exc.filename or out.parent})") from None


def _geometry_callback(cfg: DictConfig, active: Sequence[str], reg: Registry, *, figures: bool = True) -> GeometryCallback:
    every = int(cfg.geometry.every_n_steps)
    chunk = int(cfg.train.log_every_n_steps)
    every = max(chunk, int(math.ceil(every / chunk)) * chunk)
    reps = [a for a in active if reg.losses[a].loss.role == "repulsor"]
    advice = unpaired_repulsors(active, reg.losses)
    return GeometryCallback(
        every_n_steps=every,
        on_expulsion=str(cfg.geometry.on_expulsion),
        max_outside_frac=float(cfg.geometry.max_outside_frac),
        rel_tol=float(cfg.geometry.rel_tol),
        repulsors=reps,
        advice=["pair each repulsor with an active attractor (e.g. losses.coverage.weight > 0)"] if advice else [],
        figures=figures,
    )


def fit(cfg: DictConfig, out: Path | None = None, *, reg: Registry | None = None, resume: Path | None = None) -> FitResult:
    """Train one model and write its run directory (atomically). See DESIGN: the run directory."""
    reg = reg or Registry.load()
    if resume is not None:
        return _resume(resume, cfg, reg)
    out = Path(out) if out is not None else default_out()
    check_out(out)
    resolved, _ = prepare(cfg, reg)
    batch = build_batch([resolved], reg)
    with staging_dir(out) as stage:
        result = _train_and_write(batch, resolved, reg, stage, ckpt=None)
    result.out = out
    return result


def _train_and_write(batch: Batch, cfg: DictConfig, reg: Registry, stage: Path, ckpt: dict[str, Any] | None) -> FitResult:
    module = batch.module
    cb = _geometry_callback(cfg, batch.active[0], reg)
    trainer = make_trainer(cfg, stage, [cb])
    if ckpt is not None:
        _restore(module, cb, trainer, ckpt)
    t0 = time.perf_counter()
    with stop_on_signals(module):
        train(batch, trainer)
    seconds = time.perf_counter() - t0
    save_checkpoint(trainer, stage / "checkpoints" / CHECKPOINT_NAME)
    ev = cb.final_report(module)
    status, message, code = "completed", "", 0
    extra: dict[str, Any] = {}
    if 0 in module.failures:
        f = module.failures[0]
        status, message, code = "failed", f.message(), 1
        extra["reason"] = message
    elif module.stopped_reason == "interrupted":
        sig = module.stop_signal or signal.SIGINT
        status, message, code = "interrupted", f"interrupted by {signal.Signals(sig).name} at step {module.step_count}", 130
        extra["reason"] = message
    elif module.stopped_reason == "expulsion":
        status = "stopped"
        extra["stopped"] = "expulsion"
        extra["stopped_at_step"] = cb.stopped_at
        message = f"stopped at step {cb.stopped_at}: prototypes left the convex hull (geometry.on_expulsion=stop)"
    metrics = write_run_dir(stage, cfg, batch, ev, cb, status=status, extra=extra)
    if trainer.logger is not None:
        trainer.logger.finalize("success")
    fig = cb.figure(module, run=0)
    fig.savefig(stage / "prototypes.png", dpi=110)
    import matplotlib.pyplot as plt

    plt.close(fig)
    return FitResult(stage, status, metrics, seconds, message, code)


def write_run_dir(stage: Path, cfg: DictConfig, batch: Batch, ev: Mapping[str, torch.Tensor], cb: GeometryCallback, *, status: str, extra: Mapping[str, Any]) -> dict[str, Any]:
    """config.yaml, metrics.json and prototypes.csv of run 0 of ``batch``."""
    module = batch.module
    atomic_write_text(stage / "config.yaml", OmegaConf.to_yaml(cfg))
    metrics: dict[str, Any] = run_metrics(ev, 0)  # type: ignore[assignment]
    x = batch.data[0][0]
    metrics.update(
        n=int(x.shape[0]),
        dim=int(x.shape[1]),
        width=int(module.model.width),
        parameterization=module.model.parameterization,
        seed=int(cfg.train.seed),
        steps=int(module.step_count),
        losses={name: batch.settings[0][name] for name in batch.active[0]},
        status=status,
        **extra,
    )
    atomic_write_json(stage / "metrics.json", metrics)
    atomic_write_text(stage / "prototypes.csv", prototypes_csv(ev, cb, run=0))
    return metrics


def prototypes_csv(ev: Mapping[str, torch.Tensor], cb: GeometryCallback | None, run: int = 0) -> str:
    """``unit, p0..p{d-1}, outside_hull, hull_distance, expelled_at_step, wins``."""
    pos = ev["positions"][run].numpy()
    d = pos.shape[1]
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["unit", *[f"p{i}" for i in range(d)], "outside_hull", "hull_distance", "expelled_at_step", "wins"])
    expelled = cb.expelled_at[run].tolist() if cb is not None and cb.expelled_at is not None else [-1] * pos.shape[0]
    for j in range(pos.shape[0]):
        w.writerow(
            [
                j,
                *[repr(float(v)) for v in pos[j]],
                int(bool(ev["outside"][run, j])),
                repr(float(ev["hull_distance"][run, j])),
                "" if expelled[j] < 0 else expelled[j],
                int(ev["wins"][run, j]),
            ]
        )
    return buf.getvalue()


# ---------------------------------------------------------------- resume
def _restore(module: ProtoRegModule, cb: GeometryCallback, trainer: Any, ckpt: Mapping[str, Any]) -> None:
    module.load_state_dict(ckpt["state_dict"])
    module.on_load_checkpoint(dict(ckpt))
    module.failures = {}
    for key, state in ckpt.get("callbacks", {}).items():
        if key.startswith("GeometryCallback"):
            cb.load_state_dict(state)
    opt_states = ckpt.get("optimizer_states") or []
    if opt_states:
        module._resume_optimizer_state = opt_states[0]  # type: ignore[attr-defined]


def _resume(run_dir: Path, overrides_cfg: DictConfig | None, reg: Registry) -> FitResult:
    run_dir = Path(run_dir)
    cfg_path = run_dir / "config.yaml"
    ckpt_path = run_dir / "checkpoints" / CHECKPOINT_NAME
    if not cfg_path.is_file():
        raise RunDirError(f"{run_dir}: not a run directory (no config.yaml)")
    ckpt = load_checkpoint(ckpt_path)
    cfg = overrides_cfg if overrides_cfg is not None else C.load_config(cfg_path)
    resolved, _ = prepare(cfg, reg)
    batch = build_batch([resolved], reg)
    with staging_dir(run_dir, replace=True) as stage:
        import shutil

        tb = run_dir / "tb"
        if tb.is_dir():
            shutil.copytree(tb, stage / "tb")
        result = _train_and_write(batch, resolved, reg, stage, ckpt=ckpt)
    result.out = run_dir
    return result
