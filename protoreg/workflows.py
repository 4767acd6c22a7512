"""The Python API: :func:`fit`, :func:`sweep`, :func:`load_run` and the :class:`Run` and
:class:`Sweep` they return. The command line is a thin layer over these functions.

Overrides are ``"key=value"`` strings exactly as on the command line; ``config`` is a YAML file.
Bad input raises a :class:`protoreg.errors.ProtoregError` (the CLI's exit 2) and writes nothing;
a run that fails or is interrupted is returned with that ``status`` (exit 1 or 130 on the CLI).
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
from omegaconf import DictConfig

from . import config as C
from .api import Claim
from .checkpoint import CHECKPOINT_NAME, load_checkpoint
from .errors import ProtoregError, RunDirError
from .io import staging_dir
from .plugins import Registry
from .status import exit_code
from .rundir import PROTOTYPES, check_out, default_out, read_config, read_metrics, read_prototype_positions, write_run

@dataclass
class Run:
    """A run directory written by :func:`fit` (or read by :func:`load_run`).

    Attributes
    ----------
    dir : Path
    status : str
        ``completed``, ``stopped`` (the geometry check stopped it), ``failed`` or ``interrupted``.
    metrics : dict
        The contents of ``metrics.json``.
    prototypes : numpy array (M, d)
        Prototype positions from ``prototypes.csv`` (non-finite where a unit has none).
    config : DictConfig
        The resolved config (``config.yaml``).
    seconds : float or None
        Training time, when the run was trained by this process.
    """

    dir: Path
    status: str
    metrics: dict[str, Any]
    prototypes: np.ndarray
    config: DictConfig
    seconds: float | None = None

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
        return sum(1 for r in self.rows if r.get("status") in ("completed", "failed"))

    def prototypes(self, run: str) -> np.ndarray:
        """The (M, d) prototype positions of run ``run`` (a name in the ``run`` column)."""
        from .sweeps.store import PROTOTYPES as SWEEP_PROTOTYPES

        found = read_prototype_positions(self.dir / SWEEP_PROTOTYPES, run)
        if not len(found):
            raise RunDirError(f"{self.dir / SWEEP_PROTOTYPES}: no prototypes of run {run!r}")
        return found

    @property
    def exit_code(self) -> int:
        return exit_code((["interrupted"] if self.interrupted else []) + (["failed"] if self.failed else []))


# ------------------------------------------------------------------- config
def resolve_config(
    *overrides: str, config: str | Path | None = None, sweep: bool = False, plugins: Sequence[Any] = (), reg: Registry | None = None
) -> DictConfig:
    """The config a command would run: defaults <- ``config`` <- ``overrides``, validated, with
    every configured loss's parameters written out (what ``--print-config`` prints)."""
    reg = reg or Registry.load(plugins=plugins)
    cfg = C.load_config(config, overrides)
    if sweep:
        from .sweeps.plan import plan_sweep

        return plan_sweep(cfg, reg).base
    return _validated(cfg, reg)


def _validated(cfg: DictConfig, reg: Registry) -> DictConfig:
    """``cfg`` checked against the registries, every configured loss's parameters written out."""
    C.validate(cfg, reg.losses, reg.datasets)
    return C.resolved(cfg, reg.losses)


# ---------------------------------------------------------------------- fit
def fit(
    *overrides: str,
    config: str | Path | None = None,
    out: str | Path | None = None,
    resume: str | Path | None = None,
    plugins: Sequence[Any] = (),
    reg: Registry | None = None,
) -> Run:
    """Train one model and write its run directory (atomically); return the :class:`Run`.

    ``out`` defaults to ``runs/<timestamp>``. ``resume`` continues an interrupted run directory
    to ``train.steps`` (its own ``config.yaml`` with ``overrides`` on top; no ``config``/``out``).
    ``plugins``: plugin modules or objects with ``@protoreg.hookimpl`` functions, registered
    inline next to the installed ones (a loss defined in a notebook).
    """
    reg = reg or Registry.load(plugins=plugins)
    if resume is not None:
        return _resume(Path(resume), overrides, config, out, reg)
    cfg = C.load_config(config, overrides)
    target = Path(out) if out is not None else default_out("runs")
    check_out(target)
    return _train_run(cfg, target, reg)


def _train_run(cfg: DictConfig, target: Path, reg: Registry, checkpoint: Mapping[str, Any] | None = None) -> Run:
    """Validate ``cfg``, train it (from ``checkpoint`` when resuming) and write ``target``
    atomically: a new directory, or a resumed one replaced whole (its TensorBoard history kept)."""
    from .training import build_group, geometry_callback, run_spec, train_group

    spec = run_spec(_prepare(cfg, reg), reg)
    group = build_group([spec], reg)
    geometry = geometry_callback(spec.cfg, spec.active, reg.losses)
    with staging_dir(target, replace=checkpoint is not None) as stage:
        if checkpoint is not None and (target / "tb").is_dir():
            shutil.copytree(target / "tb", stage / "tb")
        outcome = train_group(group, geometry, log_dir=stage, checkpoint=stage / "checkpoints" / CHECKPOINT_NAME, resume=checkpoint)
        write_run(stage, spec, outcome)
    run = load_run(target)
    run.seconds = outcome.seconds
    return run


def _prepare(cfg: DictConfig, reg: Registry) -> DictConfig:
    """Validate a fit config, warn about (or refuse) unpaired repulsors; the resolved config."""
    from .pairing import check_pairing

    resolved = _validated(cfg, reg)
    check_pairing(C.active_losses(C.loss_settings(cfg, reg.losses)), reg.losses, strict=bool(cfg.pairing.strict))
    return resolved


def _resume(run_dir: Path, overrides: Sequence[str], config: Any, out: Any, reg: Registry) -> Run:
    if config is not None or out is not None:
        raise ProtoregError("--resume takes the run's own config.yaml and directory; drop --config/--out")
    if not (run_dir / "config.yaml").is_file():
        raise RunDirError(f"{run_dir}: not a run directory (no config.yaml)")
    cfg = C.load_config(run_dir / "config.yaml", overrides)
    ckpt = load_checkpoint(run_dir / "checkpoints" / CHECKPOINT_NAME)
    return _train_run(cfg, run_dir, reg, ckpt)


def load_run(path: str | Path) -> Run:
    """Read a run directory written by :func:`fit` (``load_run(r.dir).metrics == r.metrics``)."""
    run_dir = Path(path)
    if not run_dir.is_dir():
        raise RunDirError(f"{run_dir}: run directory not found")
    cfg = read_config(run_dir)
    metrics = read_metrics(run_dir)
    prototypes = read_prototype_positions(run_dir / PROTOTYPES)
    return Run(run_dir, str(metrics.get("status", "unknown")), metrics, prototypes, cfg)


def load_data(*overrides: str, config: str | Path | None = None, plugins: Sequence[Any] = (), reg: Registry | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The training data ``(x (N, d), y (N, k))`` that a run with this config trains on."""
    from .training import load_data as _load

    reg = reg or Registry.load(plugins=plugins)
    cfg = C.load_config(config, overrides)
    C.validate(cfg, reg.losses, reg.datasets, check_trainer=False)
    x, y, _ = _load(cfg, reg)
    return x, y


def load_sweep(path: str | Path) -> Sweep:
    """Read a sweep directory written by :func:`sweep`: its rows and (with a study) its claims."""
    import json

    from .sweeps.report import parse_row
    from .sweeps.store import CLAIMS, RESULTS, read_results

    out = Path(path)
    if not (out / RESULTS).is_file():
        raise RunDirError(f"{out}: not a sweep directory (no {RESULTS})")
    rows = [parse_row(r) for r in read_results(out)]
    claims: list[Claim] = []
    if (out / CLAIMS).is_file():
        try:
            stored = json.loads((out / CLAIMS).read_text(encoding="utf-8"))
            claims = [Claim(c["id"], c["statement"], c["verdict"], c.get("summary", ""), c.get("numbers", {}), tuple(c.get("details", ()))) for c in stored["claims"]]
        except (ValueError, KeyError, TypeError) as exc:
            raise RunDirError(f"{out / CLAIMS}: unreadable ({type(exc).__name__}: {exc})") from None
    failed = sum(1 for r in rows if r.get("status") == "failed")
    return Sweep(out, rows, claims, runs=len(rows), failed=failed)


# -------------------------------------------------------------------- sweep
def sweep(
    *overrides: str,
    config: str | Path | None = None,
    out: str | Path | None = None,
    plugins: Sequence[Any] = (),
    reg: Registry | None = None,
    echo: Callable[[str], None] | None = None,
    plots: bool = True,
) -> Sweep:
    """Train a grid of runs (``sweep.*`` keys), batched, into a sweep directory; return the :class:`Sweep`.

    ``out`` defaults to ``sweeps/<timestamp>``; re-running into the same directory resumes it.
    ``plugins`` as for :func:`fit`; ``echo`` receives one line per trained group (the CLI
    prints them); ``plots=False`` skips the figures.
    """
    from .sweeps.runner import run_sweep
    from .sweeps.store import default_out as sweep_out
    from .sweeps.store import read_results
    from .sweeps.report import parse_row

    reg = reg or Registry.load()
    cfg = C.load_config(config, overrides)
    target = Path(out) if out is not None else sweep_out()
    res = run_sweep(cfg, target, reg=reg, echo=echo, plots=plots)
    rows = [parse_row(r) for r in read_results(target)]
    return Sweep(target, rows, res.claims, res.runs, res.trained, res.skipped, res.failed, res.seconds, res.interrupted)
