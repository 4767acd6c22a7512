"""The Python API: :func:`fit`, :func:`sweep`, :func:`load_run` and the :class:`Run` and
:class:`Sweep` they return. The command line is a thin layer over these functions.

Overrides are ``"key=value"`` strings exactly as on the command line; ``config`` is a YAML file.
Bad input raises a :class:`protoreg.errors.ProtoregError` (the CLI's exit 2) and writes nothing;
a run that fails or is interrupted is returned with that ``status`` (exit 1 or 130 on the CLI).
"""

from __future__ import annotations

import contextlib
import signal
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Sequence

import numpy as np
from omegaconf import DictConfig, OmegaConf

from protoreg import config as C
from protoreg.plugin_api import Claim
from protoreg.rundirs.checkpoint import CHECKPOINT_NAME, load_checkpoint, trained_steps
from protoreg.frontend.caller import keeps_warning_filters, warn
from protoreg.errors import ConfigError, RunDirError, RunDirWarning, UsageError
from protoreg.frontend.voice import arg, on_command_line
from protoreg.plugins.registry import Registry
from protoreg.rundirs.layout import (
    CONFIG,
    METRICS,
    PROTOTYPES,
    check_consistent,
    check_not_being_written,
    check_out,
    check_resumable,
    default_out,
    read_config,
    read_metrics,
    read_prototype_positions,
    remove_if_empty,
    write_run,
    writing_run,
)
from protoreg.rundirs.status import exit_code, finished

@dataclass
class Run:
    """A run directory written by :func:`fit` (or read by :func:`load_run`).

    Attributes
    ----------
    dir : Path
    status : str
        ``completed`` (trained ``train.steps``), ``stopped`` (the geometry check or ``trainer.max_time``
        stopped it), ``failed`` or ``interrupted``.
    metrics : dict
        The contents of ``metrics.json``.
    prototypes : numpy array (M, d)
        Prototype positions from ``prototypes.csv`` (non-finite where a unit has none).
    config : DictConfig
        The resolved config (``config.yaml``).
    seconds : float or None
        Training time, when the run was trained by this process.
    check_seconds : float or None
        The part of ``seconds`` spent in the geometry checks (``geometry.every_n_steps``), when the
        run was trained by this process.
    """

    dir: Path
    status: str
    metrics: dict[str, Any]
    prototypes: np.ndarray
    config: DictConfig
    seconds: float | None = None
    check_seconds: float | None = None

    @property
    def reason(self) -> str:
        """Why the run did not complete ('' when it did)."""
        return str(self.metrics.get("reason", ""))

    @property
    def exit_code(self) -> int:
        return exit_code([self.status])


@dataclass
class Sweep:
    """A sweep directory written by :func:`sweep`.

    Attributes
    ----------
    dir : Path
    rows : list of dict
        The rows of ``results.csv``, numbers as floats/ints.
    claims : list of Claim
        The study's claims (``sweep.study``); empty when no study is named.
    """

    dir: Path
    rows: list[dict[str, Any]]
    claims: list[Claim] = field(default_factory=list)
    runs: int = 0  #: runs in the sweep
    trained: int = 0  #: runs trained by this call
    skipped: int = 0  #: runs found finished
    failed: int = 0  #: runs recorded as failed
    seconds: float = 0.0  #: wall-clock time of this call
    interrupted: bool = False

    @property
    def finished(self) -> int:
        return sum(1 for r in self.rows if finished(r.get("status")))

    def prototypes(self, run: str) -> np.ndarray:
        """The (M, d) prototype positions of run ``run`` (a name in the ``run`` column)."""
        from protoreg.sweeps.store import PROTOTYPES as SWEEP_PROTOTYPES

        found = read_prototype_positions(self.dir / SWEEP_PROTOTYPES, run)
        if not len(found):
            raise RunDirError(f"{self.dir / SWEEP_PROTOTYPES}: no prototypes of run {run!r}")
        return found

    @property
    def exit_code(self) -> int:
        return exit_code((["interrupted"] if self.interrupted else []) + (["failed"] if self.failed else []))


# ------------------------------------------------------------------- config
@keeps_warning_filters
def resolve_config(
    *overrides: str, config: str | Path | None = None, sweep: bool = False, plugins: Sequence[Any] = (), reg: Registry | None = None
) -> DictConfig:
    """The config a command would run: defaults <- ``config`` <- ``overrides``, validated, with
    every configured loss's parameters written out (what ``--print-config`` prints)."""
    reg = reg or Registry.load(plugins=plugins)
    cfg = C.load_config(config, overrides)
    if sweep:
        from protoreg.sweeps.plan import plan_sweep

        return plan_sweep(cfg, reg).base
    return _validated(cfg, reg)


def _validated(cfg: DictConfig, reg: Registry) -> DictConfig:
    """``cfg`` checked against the registries, every configured loss's parameters written out."""
    C.validate(cfg, reg.losses, reg.datasets)
    return C.resolved(cfg, reg.losses)


# ---------------------------------------------------------------------- fit
#: Keys that ``fit --resume`` may change: how long and where the run trains and what it checks
#: (prefixes end with a dot). Every other key defines the run and is refused on resume.
RESUME_MUTABLE_KEYS: tuple[str, ...] = (
    "train.steps",
    "train.log_every_n_steps",
    "train.compile",
    "trainer.accelerator",
    "trainer.devices",
    "trainer.max_time",
    "geometry.",
    "pairing.",
    "sweep.",
)


@keeps_warning_filters
def fit(
    *overrides: str,
    config: str | Path | None = None,
    out: str | Path | None = None,
    resume: str | Path | None = None,
    plugins: Sequence[Any] = (),
    reg: Registry | None = None,
    progress: bool | None = None,
) -> Run:
    """Train one model and write its run directory; return the :class:`Run`.

    ``out`` defaults to ``runs/<timestamp>``; it must be new or an empty directory (see
    :func:`protoreg.rundirs.layout.check_out`). ``resume`` continues a run directory to ``train.steps``:
    its own ``config.yaml`` with ``overrides`` on top, which may change only
    :data:`RESUME_MUTABLE_KEYS` (no ``config``/``out``). The run directory is locked while it is
    written, and files in it that protoreg did not write are kept.
    ``plugins``: plugin modules or objects with ``@protoreg.hookimpl`` functions, registered
    inline next to the installed ones (a loss defined in a notebook). ``progress``: draw a step
    bar (True), never (False), or by default on a terminal and in a Jupyter notebook
    (``PROTOREG_PROGRESS=0``/``1`` decides when set; off when ``CI`` is set).
    """
    from protoreg.frontend.display import progress_setting

    with progress_setting(progress):
        return _fit(overrides, config, out, resume, plugins, reg)


def _fit(overrides: Sequence[str], config: Any, out: Any, resume: Any, plugins: Sequence[Any], reg: Registry | None) -> Run:
    reg = reg or Registry.load(plugins=plugins)
    if resume is not None:
        return _resume(Path(resume), overrides, config, out, reg)
    prepared = _prepare(C.load_config(config, overrides), reg)
    if out is not None:
        check_out(Path(out))
        return _train_run(prepared, Path(out), reg)
    target = default_out("runs")  # reserved: a fit started in the same second gets another one
    try:
        return _train_run(prepared, target, reg)
    except BaseException:
        remove_if_empty(target)
        raise


def _train_run(cfg: DictConfig, target: Path, reg: Registry, checkpoint: Mapping[str, Any] | None = None) -> Run:
    """Train the prepared config ``cfg`` (from ``checkpoint`` when resuming) and write ``target``
    through :func:`protoreg.rundirs.layout.writing_run`. SIGINT/SIGTERM from here to the end stop
    training after the current step; one that arrives after training still gets a complete run
    directory."""
    from protoreg.training import build_group, geometry_callback, run_spec, train_group

    spec = run_spec(cfg, reg)
    group = build_group([spec], reg)
    geometry = geometry_callback(spec.cfg, spec.active, reg.losses)
    with _signals_stop(group.module), writing_run(target, resume=checkpoint is not None) as stage:
        outcome = train_group(group, geometry, log_dir=stage, checkpoint=stage / "checkpoints" / CHECKPOINT_NAME, resume=checkpoint)
        write_run(stage, spec, outcome)
    sig = group.module.stop_signal
    forced = group.module.forced_signal
    if forced is not None and not on_command_line():
        # a second Ctrl-C: the caller gets KeyboardInterrupt, as Python gives it, once the run
        # directory is complete (the command line reports the run's status instead)
        raise KeyboardInterrupt(f"stopped by a second {signal.Signals(forced).name}; {target} holds the run as it stopped ({outcome.runs[0].status})")
    if sig is not None and outcome.runs[0].status == "completed":
        warn(f"{signal.Signals(sig).name} arrived after training had finished; the run directory was completed", RunDirWarning)
    run = load_run(target)
    run.seconds = outcome.seconds
    run.check_seconds = outcome.geometry.check_seconds
    return run


@contextlib.contextmanager
def _signals_stop(module: Any) -> Iterator[None]:
    """SIGINT/SIGTERM ask ``module`` to stop (after its current step) instead of raising, until
    the run directory is written; the previous handlers come back afterwards (main thread only)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    old = {sig: signal.signal(sig, lambda signum, frame: module.request_stop(signum)) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in old.items():
            signal.signal(sig, handler)


def _prepare(cfg: DictConfig, reg: Registry) -> DictConfig:
    """Validate a fit config, warn about (or refuse) unpaired repulsors; the resolved config."""
    from protoreg.plugins.pairing import check_active

    resolved = _validated(cfg, reg)
    check_active(C.active_losses(C.loss_settings(cfg, reg.losses)), reg.losses, strict=bool(cfg.pairing.strict))
    return resolved


def _resume(run_dir: Path, overrides: Sequence[str], config: Any, out: Any, reg: Registry) -> Run:
    """Continue ``run_dir``: refuse, before anything is written, a change to what defines the run
    (anything outside :data:`RESUME_MUTABLE_KEYS`) and a ``train.steps`` it has already trained."""
    if config is not None or out is not None:
        raise UsageError(f"{arg('resume')} takes the run's own config.yaml and directory; drop {arg('config')} and {arg('out')}")
    check_resumable(run_dir)
    saved = C.load_config(run_dir / CONFIG)
    cfg = C.load_config(run_dir / CONFIG, overrides)
    changed = _defining_changes(saved, cfg)
    if changed:
        keys = ", ".join(k for k, _ in changed)
        shown = "; ".join(f"{k} {v}" for k, v in changed)
        raise ConfigError(
            f"{keys}: cannot change when resuming {run_dir} ({shown}); only {_mutable_keys()} "
            f"may change (train a new run with {arg('out')} to change the others)"
        )
    prepared = _prepare(cfg, reg)
    ckpt = load_checkpoint(run_dir / "checkpoints" / CHECKPOINT_NAME)
    trained, steps = trained_steps(ckpt), int(prepared.train.steps)
    if steps <= trained:
        raise ConfigError(f"train.steps: {run_dir} has already trained {trained} steps ({_status_of(run_dir)}); resume with train.steps above {trained} to train it longer")
    return _train_run(prepared, run_dir, reg, ckpt)


def _mutable_keys() -> str:
    """:data:`RESUME_MUTABLE_KEYS` in words (``geometry.*``); ``sweep.*`` goes unsaid: a fit has none."""
    keys = [k + "*" if k.endswith(".") else k for k in RESUME_MUTABLE_KEYS if k != "sweep."]
    return ", ".join(keys[:-1]) + " and " + keys[-1]


def _defining_changes(saved: DictConfig, cfg: DictConfig) -> list[tuple[str, str]]:
    """``(key, "old -> new")`` for every key outside :data:`RESUME_MUTABLE_KEYS` that differs."""
    a = C.flatten(OmegaConf.to_container(saved, resolve=True))
    b = C.flatten(OmegaConf.to_container(cfg, resolve=True))
    out = []
    for key in sorted(set(a) | set(b)):
        if any(key == m or (m.endswith(".") and key.startswith(m)) for m in RESUME_MUTABLE_KEYS):
            continue
        if a.get(key, "<unset>") != b.get(key, "<unset>"):
            out.append((key, f"{_show(a.get(key, '<unset>'))} -> {_show(b.get(key, '<unset>'))}"))
    return out


def _show(value: Any) -> str:
    return "null" if value is None else str(value)


def _status_of(run_dir: Path) -> str:
    try:
        return f"status {read_metrics(run_dir).get('status', 'unknown')}"
    except RunDirError:
        return f"no readable {METRICS}"


@keeps_warning_filters
def load_run(path: str | Path) -> Run:
    """Read a run directory written by :func:`fit` (``load_run(r.dir).metrics == r.metrics``)."""
    run_dir = Path(path)
    if not run_dir.is_dir():
        raise RunDirError(f"{run_dir}: run directory not found")
    check_not_being_written(run_dir)
    cfg = read_config(run_dir)
    metrics = read_metrics(run_dir)
    prototypes = read_prototype_positions(run_dir / PROTOTYPES)
    check_consistent(run_dir, metrics, prototypes)
    return Run(run_dir, str(metrics.get("status", "unknown")), metrics, prototypes, cfg)


@keeps_warning_filters
def load_data(*overrides: str, config: str | Path | None = None, plugins: Sequence[Any] = (), reg: Registry | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The training data ``(x (N, d), y (N, k))`` that a run with this config trains on."""
    from protoreg.training import load_data as _load

    reg = reg or Registry.load(plugins=plugins)
    cfg = C.load_config(config, overrides)
    C.validate(cfg, reg.losses, reg.datasets, check_trainer=False)
    x, y, _ = _load(cfg, reg)
    return x, y


@keeps_warning_filters
def load_sweep(path: str | Path) -> Sweep:
    """Read a sweep directory written by :func:`sweep`: its rows and (with a study) its claims."""
    import json

    from protoreg.sweeps.report import parse_row
    from protoreg.sweeps.store import CLAIMS, RESULTS, read_results

    out = Path(path)
    if not (out / RESULTS).is_file():
        raise RunDirError(f"{out}: not a sweep directory (no {RESULTS})")
    rows = [parse_row(r) for r in read_results(out)]
    claims: list[Claim] = []
    if (out / CLAIMS).is_file():
        try:
            stored = json.loads((out / CLAIMS).read_text(encoding="utf-8"))
            claims = [Claim.from_dict(c) for c in stored["claims"]]
        except (ValueError, KeyError, TypeError) as exc:
            raise RunDirError(f"{out / CLAIMS}: unreadable ({type(exc).__name__}: {exc})") from None
    failed = sum(1 for r in rows if r.get("status") == "failed")
    return Sweep(out, rows, claims, runs=len(rows), failed=failed)


# -------------------------------------------------------------------- sweep
@keeps_warning_filters
def sweep(
    *overrides: str,
    config: str | Path | None = None,
    out: str | Path | None = None,
    plugins: Sequence[Any] = (),
    reg: Registry | None = None,
    echo: Callable[[str], None] | None = None,
    plots: bool = True,
    progress: bool | None = None,
) -> Sweep:
    """Train a grid of runs (``sweep.*`` keys), batched, into a sweep directory; return the :class:`Sweep`.

    ``out`` defaults to ``sweeps/<timestamp>``; re-running into the same directory resumes it.
    ``plugins`` as for :func:`fit`; ``echo`` receives one line per trained group (the CLI
    prints them); ``plots=False`` skips the figures; ``progress`` as for :func:`fit` (a step bar
    per batch).
    """
    from protoreg.sweeps.runner import run_sweep
    from protoreg.sweeps.store import read_results
    from protoreg.sweeps.report import parse_row

    reg = reg or Registry.load(plugins=plugins)
    cfg = C.load_config(config, overrides)
    from protoreg.frontend.display import progress_setting

    with progress_setting(progress):
        res = run_sweep(cfg, Path(out) if out is not None else None, reg=reg, echo=echo, plots=plots)
    target = res.out
    rows = [parse_row(r) for r in read_results(target)]
    return Sweep(target, rows, res.claims, res.runs, res.trained, res.skipped, res.failed, res.seconds, res.interrupted)
