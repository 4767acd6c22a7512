"""``protoreg sweep``: a grid of ordinary ``fit`` runs, trained as a few batched programs.

A sweep config is a ``fit`` config plus a ``sweep`` section:

* ``sweep.grid``: dotted key -> list of values (``data.n: [3, 5, 10]``,
  ``losses.separation.tau: [0.1, 1, 10]``); the runs are the Cartesian product;
* ``sweep.masks``: losses whose on/off subsets are enumerated (``2**k`` masks, the baseline
  ``none`` first); the weight of an "on" loss is ``losses.<name>.weight``, an "off" loss gets 0;
* ``sweep.seeds``: a count (seeds ``0..n-1``) or a list; each becomes ``train.seed``;
* ``sweep.max_runs_per_batch``: the most runs trained together.

Every run is validated like a ``fit`` run before anything is trained or written. Runs of the same
shapes and training settings (:data:`protoreg.run.BATCH_KEYS`) train as one R-run
:class:`~protoreg.module.ProtoRegModule` in one ``Trainer.fit``: per-run weights, temperatures
and seeds are tensors along the run axis, so a run trained in a batch gives the same metrics as
the same run trained alone by ``protoreg fit``.

The sweep directory holds

* ``sweep.yaml``: the resolved config that started it (a different config is refused);
* ``results.csv``: one row per run (see :func:`result_columns`); every finished batch rewrites it
  atomically with its rows appended, so it is never torn and re-running skips finished runs;
* ``prototypes.csv``: every run's prototypes (``run, unit, p0.., outside_hull, ...``);
* ``summary.md``: mean ± std (and median for ``recon_error``) per N x mask and the study's claims
  C1-C4 evaluated on the results; plots (``*.png``); TensorBoard logs under ``tb/``
  (``tb/batch_<i>/``: ``loss/*``, ``geometry/*`` over the batch's runs, and HParams per run).
"""

from __future__ import annotations

import contextlib
import csv
import io
import itertools
import logging
import math
import os
import re
import sys
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Mapping, Sequence

import numpy as np
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from . import config as C
from .errors import ConfigError, ProtoregError, RunDirError
from .evaluate import METRIC_NAMES, run_metrics
from .io import atomic_write_text
from .pairing import PairingWarning, unpaired_repulsors
from .run import (
    Registry,
    _geometry_callback,
    batch_key,
    build_batch,
    ensure_parent,
    load_data,
    make_trainer,
    stop_on_signals,
    train,
)

log = logging.getLogger(__name__)

MANIFEST = "sweep.yaml"
RESULTS = "results.csv"
PROTOTYPES = "prototypes.csv"
SUMMARY = "summary.md"
LOCK = ".sweep.lock"
TB = "tb"

#: Leading and trailing columns of ``results.csv``; swept keys and metrics go in between.
HEAD_COLUMNS: tuple[str, ...] = ("run", "mask", "n", "seed")
TAIL_COLUMNS: tuple[str, ...] = ("steps", "seconds", "status", "reason", "batch")
PROTOTYPE_COLUMNS_TAIL: tuple[str, ...] = ("outside_hull", "hull_distance", "expelled_at_step", "wins")

#: Keys that a sweep sets itself (and the setting that controls them).
RESERVED_GRID_KEYS: dict[str, str] = {"train.seed": "sweep.seeds"}

#: Summary statistics and plots.
PLOT_FILES = {
    "recon_error": "recon_error_vs_n.png",
    "specialization_ratio": "specialization_vs_n.png",
    "outside_hull_frac": "outside_hull_vs_n.png",
    "tau": "tau_sweep.png",
}

Echo = Callable[[str], None]


# ======================================================================= the grid
@dataclass
class SweepRun:
    """One run of a sweep: an ordinary ``fit`` config plus its place in the grid."""

    index: int
    name: str  #: ``<mask>__<key>=<value>...__seed=<seed>``, unique in the sweep
    mask: str  #: active losses joined by ``+``; ``none`` for the baseline
    seed: int
    values: dict[str, Any]  #: swept key -> value
    cfg: DictConfig  #: the run's full config (``sweep`` section at its defaults)


def format_value(value: Any) -> str:
    """A grid value as written in run names and ``results.csv`` (YAML-like scalars)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, (list, tuple, dict)) or OmegaConf.is_config(value):
        return str(OmegaConf.to_container(value) if OmegaConf.is_config(value) else value).replace(" ", "")
    return str(value)


def mask_name(active: Sequence[str]) -> str:
    """Active losses joined by ``+``; ``none`` when no structural loss is active."""
    return "+".join(active) if active else "none"


def mask_subsets(masks: Sequence[str]) -> list[tuple[str, ...]]:
    """Every on/off subset of ``masks``: the empty one first, then by size, in ``masks`` order."""
    return [c for k in range(len(masks) + 1) for c in itertools.combinations(masks, k)]


def sweep_seeds(value: Any) -> list[int]:
    """``sweep.seeds``: a count n (seeds 0..n-1) or a list of distinct seeds >= 0."""
    if OmegaConf.is_config(value):
        value = OmegaConf.to_container(value)
    if isinstance(value, bool):
        raise ConfigError(f"sweep.seeds: expected a count >= 1 or a list of seeds, got {value!r}")
    if isinstance(value, int):
        if value < 1:
            raise ConfigError(f"sweep.seeds: a count must be >= 1, got {value}")
        return list(range(value))
    if isinstance(value, str) and value.strip().isdigit():
        return sweep_seeds(int(value))
    if isinstance(value, (list, tuple)):
        if not value:
            raise ConfigError("sweep.seeds: the list of seeds is empty")
        bad = [v for v in value if isinstance(v, bool) or not isinstance(v, int) or v < 0]
        if bad:
            raise ConfigError(f"sweep.seeds: seeds must be integers >= 0, got {bad[0]!r}")
        if len(set(value)) != len(value):
            raise ConfigError(f"sweep.seeds: a seed is listed twice in {list(value)}")
        return [int(v) for v in value]
    raise ConfigError(f"sweep.seeds: expected a count >= 1 or a list of seeds, got {value!r}")


def _grid(base: DictConfig) -> dict[str, list[Any]]:
    problems: list[str] = []
    grid: dict[str, list[Any]] = {}
    for key, values in OmegaConf.to_container(base.sweep.grid).items():  # type: ignore[union-attr]
        where = f"sweep.grid.{key}"
        if key.split(".")[0] == "sweep":
            problems.append(f"{where}: the sweep section itself cannot be swept")
        elif key in RESERVED_GRID_KEYS:
            problems.append(f"{where}: set by the sweep; use {RESERVED_GRID_KEYS[key]} instead")
        elif not isinstance(values, list) or not values:
            problems.append(f"{where}: expected a non-empty list of values, got {values!r}")
        else:
            shown = [format_value(v) for v in values]
            dup = sorted({s for s in shown if shown.count(s) > 1})
            if dup:
                problems.append(f"{where}: value {dup[0]} is listed twice")
            else:
                grid[str(key)] = values
    if problems:
        raise ConfigError("; ".join(problems))
    return grid


def expand(base: DictConfig, reg: Registry) -> list[SweepRun]:
    """The runs of a sweep config: masks x grid x seeds, in that nesting order.

    Checks the sweep section's structure (keys, masks, seeds) and applies the values; the runs'
    values themselves are checked by :func:`plan_sweep`. Raises :class:`ConfigError`.
    """
    sw = base.sweep
    grid = _grid(base)
    seeds = sweep_seeds(sw.seeds)
    masks = [str(m) for m in sw.masks]
    problems: list[str] = []
    for m in masks:
        if m not in reg.losses:
            problems.append(f"sweep.masks: unknown loss {m!r}; registered: {', '.join(reg.losses) or 'none'}")
    if len(set(masks)) != len(masks):
        problems.append(f"sweep.masks: a loss is listed twice in {masks}")
    if not isinstance(sw.max_runs_per_batch, int) or sw.max_runs_per_batch < 1:
        problems.append(f"sweep.max_runs_per_batch: must be >= 1, got {sw.max_runs_per_batch}")
    if problems:
        raise ConfigError("; ".join(problems))

    template = base.copy()
    template.sweep = OmegaConf.structured(C.SweepConfig)
    keys = list(grid)
    runs: list[SweepRun] = []
    for on in mask_subsets(masks):
        for combo in itertools.product(*(grid[k] for k in keys)):
            for seed in seeds:
                cfg = template.copy()
                values = dict(zip(keys, combo))
                for key, value in values.items():
                    try:
                        OmegaConf.update(cfg, key, value, merge=True)
                    except OmegaConfBaseException as exc:
                        problems.append(f"sweep.grid.{key}: value {format_value(value)}: {C._one_line(exc)}")
                        continue
                for m in masks:
                    if m in on:
                        continue
                    if m in cfg.losses:
                        cfg.losses[m].weight = 0.0
                cfg.train.seed = int(seed)
                active = _active_names(cfg, masks, on)
                parts = [mask_name(active)] + [f"{k}={format_value(v)}" for k, v in values.items()] + [f"seed={seed}"]
                runs.append(SweepRun(len(runs), "__".join(parts), mask_name(active), int(seed), values, cfg))
    if problems:
        raise ConfigError("; ".join(sorted(set(problems))))
    return runs


def _active_names(cfg: DictConfig, masks: Sequence[str], on: Sequence[str]) -> list[str]:
    """Active losses of a run (weight > 0), in the order of the config's ``losses`` section."""
    active = []
    for name, params in cfg.losses.items():
        if name in masks and name not in on:
            continue
        w = params.get("weight", 0.0) if OmegaConf.is_dict(params) or isinstance(params, Mapping) else 0.0
        if isinstance(w, (int, float)) and not isinstance(w, bool) and w > 0:
            active.append(str(name))
    # a mask loss switched on without a configured weight is reported by plan_sweep; name it anyway
    return active + [m for m in masks if m in on and m not in active]


# ======================================================================= validation
@dataclass
class Plan:
    """A validated sweep: runs, their data, and what the summary needs to know."""

    base: DictConfig  #: the resolved sweep config (what ``sweep.yaml`` holds)
    runs: list[SweepRun]
    keys: list[str]  #: swept keys, in order
    masks: list[str]
    data: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)
    unpaired: dict[str, list[str]] = field(default_factory=dict)  #: mask -> pairing problems
    #: run -> the earlier run with identical effective settings (trained once, result shared)
    twins: dict[str, str] = field(default_factory=dict)

    def columns(self) -> list[str]:
        return result_columns(self.keys)

    def prototype_columns(self) -> list[str]:
        dim = max((x.shape[1] for x, _ in self.data.values()), default=1)
        return ["run", "unit", *[f"p{j}" for j in range(dim)], *PROTOTYPE_COLUMNS_TAIL]


def effective_settings(cfg: DictConfig, reg: Registry) -> str:
    """A run's config with inactive losses' parameters dropped: runs with equal keys train identically."""
    c = OmegaConf.to_container(cfg, resolve=True)
    assert isinstance(c, dict)
    settings = C.loss_settings(cfg, reg.losses)
    c["losses"] = {name: s for name, s in settings.items() if float(s.get("weight", 0.0)) > 0}
    c.pop("sweep", None)
    return repr(sorted(_flat(c).items()))


def result_columns(keys: Sequence[str]) -> list[str]:
    """``run, mask, n, seed, <swept keys>, <metrics>, steps, seconds, status, reason, batch``."""
    return [*HEAD_COLUMNS, *keys, *METRIC_NAMES, *TAIL_COLUMNS]


def _run_problems(run: SweepRun, reg: Registry, masks: Sequence[str]) -> list[str]:
    cfg = run.cfg
    try:
        C.validate(cfg, reg.losses, reg.datasets)
    except ConfigError as exc:
        return [p.strip() for p in str(exc).split("; ") if p.strip()]
    problems: list[str] = []
    for m in masks:
        on = m in run.mask.split("+")
        weight = cfg.losses[m].get("weight", 0.0) if m in cfg.losses else 0.0
        if on and not (isinstance(weight, (int, float)) and weight > 0):
            problems.append(f"losses.{m}.weight: {m!r} is in sweep.masks, so its 'on' runs need a weight > 0, got {weight!r}")
    if str(cfg.geometry.on_expulsion) == "stop":
        problems.append("geometry.on_expulsion: 'stop' would stop every run of a batch; a sweep takes warn or ignore")
    return problems


def plan_sweep(base: DictConfig, reg: Registry) -> Plan:
    """Expand and validate every run (config values, data, pairing, trainer) before training.

    Problems are collected over all runs and reported together in one :class:`ConfigError` (or
    the first :class:`ProtoregError` of a data loader), each with the dotted key and an example run.
    """
    runs = expand(base, reg)
    masks = [str(m) for m in base.sweep.masks]
    plan = Plan(C.resolved(base, reg.losses), runs, list(_grid(base)), masks)
    by_problem: dict[str, list[str]] = {}
    trainers: dict[str, DictConfig] = {}
    for run in runs:
        problems = _run_problems(run, reg, masks)
        if not problems:
            settings = C.loss_settings(run.cfg, reg.losses)
            active = C.active_losses(settings)
            unpaired = unpaired_repulsors(active, reg.losses)
            if unpaired and bool(run.cfg.pairing.strict):
                problems = ["pairing.strict: " + "; ".join(unpaired)]
            elif unpaired:
                plan.unpaired.setdefault(run.mask, unpaired)
        if not problems:
            try:
                plan.data[run.name] = load_data(run.cfg, reg)
            except ProtoregError as exc:
                problems = [str(exc)]
            trainers.setdefault(OmegaConf.to_yaml(run.cfg.trainer), run.cfg)
        for p in problems:
            by_problem.setdefault(p, []).append(run.name)
    if not by_problem:
        first: dict[str, str] = {}
        for run in runs:
            rep = first.setdefault(effective_settings(run.cfg, reg), run.name)
            if rep != run.name:
                plan.twins[run.name] = rep
        for cfg in trainers.values():  # Lightning's own checks of trainer.* (accelerator, precision)
            make_trainer(cfg, None, [])
    if by_problem:
        parts = []
        for p, names in list(by_problem.items())[:8]:
            more = f" and {len(names) - 1} more" if len(names) > 1 else ""
            parts.append(f"{p} (run {names[0]}{more})")
        if len(by_problem) > 8:
            parts.append(f"... {len(by_problem) - 8} more problems")
        raise ConfigError("; ".join(parts))
    return plan


def pairing_line(plan: Plan) -> str | None:
    """One line for every mask with an unpaired active repulsor (instead of a warning per run)."""
    if not plan.unpaired:
        return None
    counts = {m: sum(1 for r in plan.runs if r.mask == m) for m in plan.unpaired}
    masks = ", ".join(f"{m} ({counts[m]} runs)" for m in plan.unpaired)
    reps = sorted({re.search(r"repulsor '([^']+)'", p).group(1) for ps in plan.unpaired.values() for p in ps if re.search(r"repulsor '([^']+)'", p)})  # type: ignore[union-attr]
    return (
        f"{len(plan.unpaired)} mask(s) run a repulsor ({', '.join(reps)}) with no compatible attractor and may expel "
        f"prototypes from the data's convex hull: {masks}; pairing.strict=true refuses them"
    )


# ======================================================================= the directory
def default_out(root: str = "sweeps") -> Path:
    return Path(root) / time.strftime("%Y%m%d-%H%M%S")


def _flat(d: Any, prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    if isinstance(d, dict):
        for k, v in d.items():
            out.update(_flat(v, f"{prefix}{k}."))
        if not d and prefix:
            out[prefix[:-1]] = {}
    else:
        out[prefix[:-1]] = d
    return out


#: Settings that may change between invocations on the same directory (results do not depend on them).
VOLATILE_KEYS: tuple[str, ...] = ("sweep.max_runs_per_batch",)


def _manifest_container(cfg: DictConfig) -> dict[str, Any]:
    c = OmegaConf.to_container(OmegaConf.create(OmegaConf.to_yaml(cfg)), resolve=True)
    assert isinstance(c, dict)
    flat = _flat(c)
    for k in VOLATILE_KEYS:
        flat.pop(k, None)
    return flat


def config_differences(old: DictConfig, new: DictConfig) -> list[str]:
    """``key: old -> new`` for every setting that differs (ignoring :data:`VOLATILE_KEYS`)."""
    a, b = _manifest_container(old), _manifest_container(new)
    diffs = []
    for k in sorted(set(a) | set(b)):
        if a.get(k, "<unset>") != b.get(k, "<unset>"):
            diffs.append(f"{k}: {format_value(a.get(k, '<unset>'))} -> {format_value(b.get(k, '<unset>'))}")
    return diffs


@contextlib.contextmanager
def _locked(out: Path) -> Iterator[None]:
    """An exclusive lock on the sweep directory for the duration of the block."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX
        yield
        return
    fh = open(out / LOCK, "a+")
    try:
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            raise RunDirError(f"{out}: another protoreg sweep is writing to this directory") from None
        yield
    finally:
        fh.close()


def open_sweep_dir(out: Path, plan: Plan) -> None:
    """Check ``out`` (new, empty, or a sweep started by the same config); create it if needed.

    Raises :class:`RunDirError` for a directory that is not a sweep or was started by a
    different config (the message lists the differing keys).
    """
    if out.exists() and not out.is_dir():
        raise RunDirError(f"{out}: exists and is not a directory")
    ensure_parent(out)
    manifest = out / MANIFEST
    if out.is_dir() and any(p.name != LOCK for p in out.iterdir()):
        if not manifest.is_file():
            raise RunDirError(f"{out}: not a sweep directory (no {MANIFEST}) and not empty; choose another --out")
        try:
            old = OmegaConf.load(manifest)
        except Exception as exc:  # noqa: BLE001 - any yaml problem
            raise RunDirError(f"{manifest}: unreadable ({type(exc).__name__}); choose another --out") from None
        diffs = config_differences(old, plan.base)  # type: ignore[arg-type]
        if diffs:
            shown = "; ".join(diffs[:5]) + (f"; and {len(diffs) - 5} more" if len(diffs) > 5 else "")
            raise RunDirError(
                f"{out}: this sweep directory was started with a different config ({shown}); "
                f"re-run the original command to resume, or choose another --out"
            )
        results = out / RESULTS
        if results.is_file():
            header = _read_header(results)
            if header != plan.columns():
                raise RunDirError(f"{results}: columns do not match this sweep's ({', '.join(header[:6])} ...); choose another --out")
    out.mkdir(parents=True, exist_ok=True)


def _init_files(out: Path, plan: Plan) -> None:
    if not (out / MANIFEST).is_file():
        atomic_write_text(out / MANIFEST, OmegaConf.to_yaml(plan.base))
    if not (out / RESULTS).is_file():
        atomic_write_text(out / RESULTS, _csv_text([plan.columns()]))


def _csv_text(rows: Iterable[Sequence[Any]]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    for row in rows:
        w.writerow(row)
    return buf.getvalue()


def _read_header(path: Path) -> list[str]:
    with path.open(newline="", encoding="utf-8") as fh:
        return next(csv.reader(fh), [])


def read_results(out: Path | str) -> list[dict[str, str]]:
    """The rows of ``results.csv`` (strings, as written); [] when there is none."""
    path = Path(out) / RESULTS
    if not path.is_file():
        return []
    with path.open(newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def _append_rows(path: Path, header: Sequence[str], rows: Sequence[Sequence[Any]], keep: set[str] | None = None) -> None:
    """Rewrite ``path`` atomically with ``rows`` appended (rows whose first cell is not in
    ``keep`` are dropped, when given): readers see the old file or the new one, never a torn row."""
    old: list[list[str]] = []
    if path.is_file():
        with path.open(newline="", encoding="utf-8") as fh:
            reader = csv.reader(fh)
            next(reader, None)
            old = [r for r in reader if len(r) == len(header) and (keep is None or r[0] in keep)]
    atomic_write_text(path, _csv_text([list(header), *old, *rows]))


# ======================================================================= training
@dataclass
class BatchResult:
    rows: list[dict[str, Any]]
    prototypes: list[list[Any]]
    seconds: float
    interrupted: bool = False
    failed: int = 0


def plan_batches(runs: Sequence[SweepRun], plan: Plan, reg: Registry) -> list[list[SweepRun]]:
    """Group runs that can train together; split groups to ``sweep.max_runs_per_batch``.

    Groups keep the order of their first run; a group of G runs becomes ceil(G / cap) batches
    of nearly equal size.
    """
    cap = int(plan.base.sweep.max_runs_per_batch)
    groups: dict[tuple[Any, ...], list[SweepRun]] = {}
    for run in runs:
        x, y = plan.data[run.name]
        groups.setdefault(batch_key(run.cfg, x.shape[0], x.shape[1], y.shape[1], reg), []).append(run)
    batches: list[list[SweepRun]] = []
    for members in groups.values():
        k = math.ceil(len(members) / cap)
        size = math.ceil(len(members) / k)
        batches.extend(members[i : i + size] for i in range(0, len(members), size))
    return batches


def _failure_reason(f: Any) -> str:
    if f.term == "?":
        return f"{f.reason} at step {f.step}"
    return f"{f.reason} in {f.term!r} ({f.source}) at step {f.step}"


def _num(v: Any) -> Any:
    if isinstance(v, float):
        return repr(v)
    return v


def hparams_of(run: SweepRun, settings: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """The HParams of a run: mask, N, seed, swept keys, and every loss weight and parameter."""
    hp: dict[str, Any] = {"mask": run.mask, "seed": run.seed}
    for k, v in run.values.items():
        hp[k] = v if isinstance(v, (int, float, str, bool)) else format_value(v)
    for name, s in settings.items():
        for p, v in s.items():
            key = f"losses.{name}.{p}"
            if key not in hp:
                hp[key] = v if isinstance(v, (int, float, str, bool)) else format_value(v)
    hp["train.steps"] = int(run.cfg.train.steps)
    hp["train.lr"] = float(run.cfg.train.lr)
    return hp


def add_hparams(writer: Any, run: SweepRun, settings: Mapping[str, Mapping[str, Any]], row: Mapping[str, Any]) -> None:
    """One HParams session for ``run`` in ``<writer's log dir>/<run name>/``."""
    metric_dict = {f"hparam/{k}": _float(row[k]) for k in METRIC_NAMES}
    metric_dict["hparam/failed"] = float(row["status"] == "failed")
    writer.add_hparams(hparams_of(run, settings), metric_dict, run_name=run.name, global_step=int(row["steps"]))


def train_batch(runs: Sequence[SweepRun], plan: Plan, reg: Registry, out: Path, index: int) -> BatchResult:
    """Train ``runs`` as one R-run module; return their ``results.csv`` and ``prototypes.csv`` rows.

    TensorBoard: ``tb/batch_<index>/`` gets the batch's ``loss/*`` and ``geometry/*`` scalars
    (means over live runs) and, per run, an HParams session in ``tb/batch_<index>/<run>/``.
    """
    cfgs = [r.cfg for r in runs]
    batch = build_batch(cfgs, reg, [plan.data[r.name] for r in runs])
    module = batch.module
    module.fail_fast = False
    union: list[str] = []
    for act in batch.active:
        union.extend(a for a in act if a not in union)
    geo_cfg = cfgs[0].copy()
    geo_cfg.geometry.on_expulsion = "ignore"  # expulsion is data in a sweep: it is summarised, not warned per batch
    cb = _geometry_callback(geo_cfg, union, reg, figures=False)
    tb_name = f"{TB}/batch_{index:03d}"
    trainer = make_trainer(cfgs[0], out, [cb], tb_name=tb_name)
    t0 = time.perf_counter()
    with stop_on_signals(module):
        train(batch, trainer)
    seconds = time.perf_counter() - t0
    if module.stopped_reason == "interrupted":
        if trainer.logger is not None:
            trainer.logger.finalize("interrupted")
        return BatchResult([], [], seconds, interrupted=True)
    ev = cb.final_report(module)
    per_run = seconds / len(runs)
    rows: list[dict[str, Any]] = []
    protos: list[list[Any]] = []
    writer = getattr(trainer.logger, "experiment", None) if trainer.logger is not None else None
    expelled = cb.expelled_at.tolist() if cb.expelled_at is not None else None
    dim = len(plan.prototype_columns()) - 2 - len(PROTOTYPE_COLUMNS_TAIL)
    failed = 0
    for r, run in enumerate(runs):
        metrics = run_metrics(ev, r)
        x = plan.data[run.name][0]
        f = module.failures.get(r)
        status, reason = ("failed", _failure_reason(f)) if f is not None else ("completed", "")
        failed += f is not None
        steps = int(f.step) if f is not None else int(module.step_count)
        row: dict[str, Any] = {"run": run.name, "mask": run.mask, "n": int(x.shape[0]), "seed": run.seed}
        row.update({k: format_value(run.values[k]) for k in plan.keys})
        row.update({k: _num(metrics[k]) for k in METRIC_NAMES})
        row.update(steps=steps, seconds=f"{per_run:.4f}", status=status, reason=reason, batch=index)
        rows.append(row)
        pos = ev["positions"][r].numpy()
        for j in range(pos.shape[0]):
            e = expelled[r][j] if expelled is not None else -1
            coords = [repr(float(v)) for v in pos[j]] + [""] * (dim - pos.shape[1])
            protos.append(
                [run.name, j, *coords, int(bool(ev["outside"][r, j])), repr(float(ev["hull_distance"][r, j])), "" if e < 0 else e, int(ev["wins"][r, j])]
            )
        if writer is not None and hasattr(writer, "add_hparams"):
            add_hparams(writer, run, batch.settings[r], row)
    if trainer.logger is not None:
        trainer.logger.finalize("success")
    return BatchResult(rows, protos, seconds, failed=failed)


def _next_batch_index(out: Path, rows: Sequence[Mapping[str, str]]) -> int:
    used = [int(r["batch"]) for r in rows if str(r.get("batch", "")).isdigit()]
    tb = out / TB
    if tb.is_dir():
        used += [int(p.name.split("_")[1]) for p in tb.iterdir() if re.fullmatch(r"batch_\d+", p.name)]
    return max(used) + 1 if used else 0


@dataclass
class SweepResult:
    out: Path
    runs: int  #: runs in the sweep
    trained: int  #: runs trained by this invocation
    skipped: int  #: runs found finished in results.csv
    failed: int  #: runs with status "failed" in results.csv
    seconds: float  #: wall-clock time of this invocation
    interrupted: bool = False

    @property
    def exit_code(self) -> int:
        return 130 if self.interrupted else 1 if self.failed else 0


def _expulsion_line(plan: Plan, rows: Sequence[Mapping[str, str]]) -> None:
    """One warning for all runs that ended with prototypes outside the hull (``geometry.on_expulsion=warn``)."""
    from .callbacks import ExpulsionWarning

    g = plan.base.geometry
    if str(g.on_expulsion) != "warn":
        return
    over = [r for r in rows if r.get("status") == "completed" and _float(r["outside_hull_frac"]) > float(g.max_outside_frac)]
    if not over:
        return
    counts: dict[str, int] = {}
    for r in over:
        counts[r["mask"]] = counts.get(r["mask"], 0) + 1
    masks = ", ".join(f"{m} ({k})" for m, k in sorted(counts.items(), key=lambda kv: -kv[1]))
    warnings.warn(
        f"{len(over)} of {len(rows)} runs ended with prototypes outside the convex hull of their data, by mask: {masks} "
        f"(outside_hull_frac in {RESULTS})",
        ExpulsionWarning,
        stacklevel=3,
    )


def _copy_row(row: Mapping[str, Any], dup: SweepRun, plan: Plan) -> dict[str, Any]:
    """The result row of ``dup``, a run with the same effective settings as the run of ``row``."""
    out = dict(row)
    out.update(run=dup.name, mask=dup.mask, seed=dup.seed, seconds="0.0000")
    out.update({k: format_value(dup.values[k]) for k in plan.keys})
    return out


def _rows_text(header: Sequence[str], rows: Iterable[Mapping[str, Any]]) -> list[list[Any]]:
    return [[row.get(c, "") for c in header] for row in rows]


def sweep(base: DictConfig, out: Path | str | None = None, *, reg: Registry | None = None, echo: Echo | None = None, plots: bool = True) -> SweepResult:
    """Validate every run of ``base``, then train the unfinished ones batch by batch into ``out``.

    Runs whose effective settings are identical (e.g. the baseline at every value of an inactive
    loss's temperature) are trained once and share the result (their ``seconds`` are 0).
    """
    say: Echo = echo or (lambda s: log.info("%s", s))
    t_start = time.perf_counter()
    reg = reg or Registry.load()
    plan = plan_sweep(base, reg)  # nothing is written before every run is valid
    line = pairing_line(plan)
    if line:
        warnings.warn(line, PairingWarning, stacklevel=2)
    out = Path(out) if out is not None else default_out()
    open_sweep_dir(out, plan)
    header, pheader = plan.columns(), plan.prototype_columns()
    with _locked(out):
        open_sweep_dir(out, plan)  # re-check under the lock
        _init_files(out, plan)
        existing = read_results(out)
        by_name = {r["run"]: r for r in existing if r.get("status") in ("completed", "failed")}
        pending = [r for r in plan.runs if r.name not in by_name]
        skipped = len(plan.runs) - len(pending)
        to_train = [r for r in pending if r.name not in plan.twins]
        copies: dict[str, list[SweepRun]] = {}
        for r in pending:
            if r.name in plan.twins:
                copies.setdefault(plan.twins[r.name], []).append(r)
        ready = [rep for rep in copies if rep in by_name]  # twins of runs finished earlier
        if ready:
            protos = read_prototype_rows(out)
            new_rows = [_copy_row(by_name[rep], d, plan) for rep in ready for d in copies[rep]]
            new_protos = [[d.name, *p[1:]] for rep in ready for d in copies[rep] for p in protos.get(rep, [])]
            _append_rows(out / PROTOTYPES, pheader, new_protos, keep=set(by_name))
            _append_rows(out / RESULTS, header, _rows_text(header, new_rows))
            by_name.update({r["run"]: r for r in new_rows})
        batches = plan_batches(to_train, plan, reg)
        shared = sum(len(v) for v in copies.values())
        say(
            f"protoreg sweep: {len(plan.runs)} runs ({skipped} finished, {len(to_train)} to train"
            + (f", {shared} sharing the result of an identical run" if shared else "")
            + f") in {len(batches)} batch(es) -> {out}"
        )
        index = _next_batch_index(out, existing)
        trained = 0
        interrupted = False
        done_names = set(by_name)
        for i, runs in enumerate(batches):
            res = train_batch(runs, plan, reg, out, index)
            if res.interrupted:
                interrupted = True
                say(f"  batch {i + 1}/{len(batches)} interrupted; its {len(runs)} runs were not recorded")
                break
            rows, protos_rows = list(res.rows), list(res.prototypes)
            rep_protos: dict[str, list[list[Any]]] = {}
            for p in protos_rows:
                rep_protos.setdefault(p[0], []).append(p)
            for row in res.rows:
                for d in copies.get(row["run"], []):
                    rows.append(_copy_row(row, d, plan))
                    protos_rows += [[d.name, *p[1:]] for p in rep_protos.get(row["run"], [])]
            names = {r["run"] for r in rows}
            # prototypes first: results.csv is the record of what is finished
            _append_rows(out / PROTOTYPES, pheader, protos_rows, keep=done_names)
            _append_rows(out / RESULTS, header, _rows_text(header, rows))
            done_names |= names
            trained += len(runs)
            x = plan.data[runs[0].name][0]
            say(
                f"  batch {i + 1}/{len(batches)} (tb/batch_{index:03d}): {len(runs)} runs, n={x.shape[0]}, "
                f"{res.seconds:.1f}s" + (f", {res.failed} failed" if res.failed else "")
            )
            index += 1
        rows_all = read_results(out)
        failed = sum(1 for r in rows_all if r.get("status") == "failed")
        _expulsion_line(plan, rows_all)
        write_report(out, plan=plan, reg=reg, plots=plots and not interrupted)
    return SweepResult(out, len(plan.runs), trained, skipped, failed, time.perf_counter() - t_start, interrupted)


def run_sweep(config_path: str | Path, out: str | Path | None, overrides: Sequence[str]) -> int:
    """``protoreg sweep --config FILE [--out DIR] [KEY=VALUE ...]``; returns the exit code."""
    reg = Registry.load()
    base = C.load_config(config_path, overrides)
    result = sweep(base, out, reg=reg, echo=print)
    rows = read_results(result.out)
    done = sum(1 for r in rows if r.get("status") in ("completed", "failed"))
    print(
        f"protoreg sweep: {done}/{result.runs} runs finished ({result.trained} trained now, {result.skipped} skipped, "
        f"{result.failed} failed) in {result.seconds:.1f}s -> {result.out}"
    )
    if result.failed:
        print(f"protoreg: error: {result.failed} run(s) failed (non-finite loss); see the status and reason columns of {result.out / RESULTS}", file=sys.stderr)
    if result.interrupted:
        print(f"protoreg: error: interrupted; re-run the same command to resume ({done}/{result.runs} runs finished)", file=sys.stderr)
    return result.exit_code


# ======================================================================= the report
#: Thresholds of the claims' checks (stated in summary.md next to each verdict).
C3_FIT_TOL = 0.1  #: "fit about as well": mean fit MSE within 10% of the target variance (R^2 within 0.1)
C4_RHO_MIN = 0.8  #: "grows with tau": Spearman rank correlation of tau and mean outside-hull fraction
C4_NEAR_FRAC = 0.25  #: "near the baseline": excess over the baseline at the nominal tau <= 25% of the excess at the largest tau


def _float(s: Any) -> float:
    try:
        return float(s)
    except (TypeError, ValueError):
        return math.nan


@dataclass
class Stats:
    count: int
    mean: float
    std: float
    median: float
    nonfinite: int

    @classmethod
    def of(cls, values: Sequence[float]) -> "Stats":
        a = np.asarray(values, dtype=float)
        if a.size == 0:
            return cls(0, math.nan, math.nan, math.nan, 0)
        nonfinite = int((~np.isfinite(a)).sum())
        with np.errstate(invalid="ignore"):
            mean = float(np.mean(a))
            std = float(np.std(a, ddof=1)) if a.size > 1 and nonfinite == 0 else (0.0 if a.size == 1 else math.nan)
            median = float(np.median(a))
        return cls(int(a.size), mean, std, median, nonfinite)


def fmt(v: float, digits: int = 4) -> str:
    """A number for the summary: ``inf``, ``nan`` or ``digits`` significant digits."""
    if isinstance(v, (int, np.integer)):
        return str(int(v))
    if math.isnan(v):
        return "nan"
    if math.isinf(v):
        return "inf" if v > 0 else "-inf"
    return f"{v:.{digits}g}"


def _pm(s: Stats) -> str:
    return f"{fmt(s.mean)} ± {fmt(s.std, 2)}" if s.count > 1 else fmt(s.mean)


class Table:
    """The completed rows of ``results.csv`` with numbers parsed, grouped by cell."""

    def __init__(self, rows: Sequence[Mapping[str, str]], keys: Sequence[str], masks_order: Sequence[str]) -> None:
        self.keys = [k for k in keys if k != "data.n"]  #: swept keys other than N
        self.all_rows = list(rows)
        self.rows = [r for r in rows if r.get("status") == "completed"]
        seen = [r["mask"] for r in rows]
        order = [m for m in masks_order if m in seen]
        self.masks = order + [m for m in dict.fromkeys(seen) if m not in order]
        self.ns = sorted({int(r["n"]) for r in rows})

    def other(self, row: Mapping[str, str]) -> tuple[str, ...]:
        return tuple(row[k] for k in self.keys)

    def others(self) -> list[tuple[str, ...]]:
        vals = list(dict.fromkeys(self.other(r) for r in self.all_rows))
        return sorted(vals, key=lambda t: tuple((_float(v), v) for v in t))

    def values(self, metric: str, *, mask: str, n: int | None = None, other: tuple[str, ...] | None = None) -> list[float]:
        return [
            _float(r[metric])
            for r in self.rows
            if r["mask"] == mask and (n is None or int(r["n"]) == n) and (other is None or self.other(r) == other)
        ]

    def stats(self, metric: str, **where: Any) -> Stats:
        return Stats.of(self.values(metric, **where))

    def failed_count(self, *, mask: str, n: int, other: tuple[str, ...]) -> int:
        return sum(1 for r in self.all_rows if r["mask"] == mask and int(r["n"]) == n and self.other(r) == other and r.get("status") == "failed")


@dataclass
class Claim:
    key: str
    statement: str
    verdict: str  #: "pass" | "partial" | "fail" | "not evaluated"
    summary: str  #: one line: where the claim holds
    details: list[str]


#: Differences below this are ties (the ratios are multiples of 1/N averaged over seeds).
EPS = 1e-9


def _verdict(held: int, total: int) -> str:
    if total == 0:
        return "not evaluated"
    return "pass" if held == total else "partial" if held else "fail"


def _label(t: Table, other: tuple[str, ...]) -> str:
    return ", ".join(f"{k}={v}" for k, v in zip(t.keys, other))


def _cells(t: Table) -> list[tuple[int, tuple[str, ...]]]:
    return [(n, o) for o in t.others() for n in t.ns]


def _where(t: Table, held: int, total: int) -> str:
    return f"holds at {held} of {total} " + ("N" if not t.keys else f"(N, {', '.join(t.keys)}) cells")


def _cell_name(t: Table, n: int, o: tuple[str, ...]) -> str:
    lab = _label(t, o)
    return f"N={n}" + (f" ({lab})" if lab else "")


def _paired(t: Table, metric: str, a: str, b: str, n: int, o: tuple[str, ...]) -> str:
    """Mean ± standard error of the per-seed difference a - b (same data and initial prototypes)."""
    va = {r["seed"]: _float(r[metric]) for r in t.rows if r["mask"] == a and int(r["n"]) == n and t.other(r) == o}
    vb = {r["seed"]: _float(r[metric]) for r in t.rows if r["mask"] == b and int(r["n"]) == n and t.other(r) == o}
    d = np.array([va[s] - vb[s] for s in va if s in vb], dtype=float)
    d = d[np.isfinite(d)]
    if d.size < 2:
        return ""
    se = float(d.std(ddof=1) / math.sqrt(d.size))
    return f"paired by seed: {fmt(float(d.mean()), 3)} ± {fmt(se, 2)} (s.e., {d.size} seeds)"


def claim_c1(t: Table) -> Claim:
    st = "coverage-only has the lowest mean reconstruction error at every N"
    if "coverage" not in t.masks or len(t.masks) < 2:
        return Claim("C1", st, "not evaluated", "", ["needs the coverage-only mask and at least one other mask (sweep.masks)"])
    details, held, total = [], 0, 0
    for n, o in _cells(t):
        means = {m: t.stats("recon_error", mask=m, n=n, other=o).mean for m in t.masks}
        means = {m: v for m, v in means.items() if not math.isnan(v)}
        best_other = min((m for m in means if m != "coverage"), key=lambda m: means[m], default=None)
        if "coverage" not in means or best_other is None:
            continue
        good = means["coverage"] < means[best_other] - EPS
        held += good
        total += 1
        details.append(
            f"{_cell_name(t, n, o)}: coverage {fmt(means['coverage'])} vs lowest other ({best_other}) {fmt(means[best_other])} "
            f"{'✓' if good else '✗'}; coverage - {best_other} {_paired(t, 'recon_error', 'coverage', best_other, n, o)}"
        )
    return Claim("C1", st, _verdict(held, total), _where(t, held, total), details)


def claim_c2(t: Table) -> Claim:
    st = "coverage-only raises the specialization ratio over the baseline"
    if "coverage" not in t.masks or "none" not in t.masks:
        return Claim("C2", st, "not evaluated", "", ["needs the coverage-only and baseline (none) masks"])
    details, held, total = [], 0, 0
    for n, o in _cells(t):
        cov = t.stats("specialization_ratio", mask="coverage", n=n, other=o).mean
        base = t.stats("specialization_ratio", mask="none", n=n, other=o).mean
        if math.isnan(cov) or math.isnan(base):
            continue
        diff = cov - base
        pair = _paired(t, "specialization_ratio", "coverage", "none", n, o)
        if base >= 1.0 - EPS:
            details.append(f"{_cell_name(t, n, o)}: baseline already at the maximum 1 (not counted)")
            continue
        good = diff > EPS
        held += good
        total += 1
        details.append(
            f"{_cell_name(t, n, o)}: coverage {fmt(cov)} vs baseline {fmt(base)} "
            f"({'+' if diff >= 0 else ''}{fmt(0.0 if abs(diff) <= EPS else diff, 3)}) {'✓' if good else '✗ (equal)' if abs(diff) <= EPS else '✗'}"
            + (f"; {pair}" if pair else "")
        )
    return Claim("C2", st, _verdict(held, total), _where(t, held, total), details)


def _family(t: Table, metric: str, masks: Sequence[str], n: int, o: tuple[str, ...]) -> Stats:
    vals: list[float] = []
    for m in masks:
        vals += t.values(metric, mask=m, n=n, other=o)
    return Stats.of(vals)


def claim_c3(t: Table, target_var: Mapping[int, float]) -> Claim:
    st = (
        "overlap-active masks fit about as well as overlap-free ones (fit MSE) but reconstruct worse "
        "and have a higher outside-hull fraction"
    )
    on = [m for m in t.masks if "overlap" in m.split("+")]
    off = [m for m in t.masks if "overlap" not in m.split("+")]
    if not on or not off:
        return Claim("C3", st, "not evaluated", "", ["needs masks with and without the overlap loss"])
    details = [f"overlap-active: {', '.join(on)}; overlap-free: {', '.join(off)} (runs pooled per N)"]
    held = {"fit about as well": 0, "reconstruct worse": 0, "higher outside-hull fraction": 0}
    total = 0
    for n, o in _cells(t):
        f_on, f_off = _family(t, "fit_mse", on, n, o), _family(t, "fit_mse", off, n, o)
        r_on, r_off = _family(t, "recon_error", on, n, o), _family(t, "recon_error", off, n, o)
        h_on, h_off = _family(t, "outside_hull_frac", on, n, o), _family(t, "outside_hull_frac", off, n, o)
        if f_on.count == 0 or f_off.count == 0:
            continue
        total += 1
        var = target_var.get(n, math.nan)
        fit_ok = abs(f_on.mean - f_off.mean) <= C3_FIT_TOL * var if math.isfinite(var) else False
        robust = not (math.isfinite(r_on.mean) and math.isfinite(r_off.mean))
        rec_ok = (r_on.median > r_off.median + EPS) if robust else (r_on.mean > r_off.mean + EPS)
        out_ok = h_on.mean > h_off.mean + EPS
        for k, v in zip(held, (fit_ok, rec_ok, out_ok)):
            held[k] += v
        rec = (
            f"recon median {fmt(r_on.median)} vs {fmt(r_off.median)} (means non-finite)"
            if robust
            else f"recon {fmt(r_on.mean)} vs {fmt(r_off.mean)}"
        )
        details.append(
            f"{_cell_name(t, n, o)}: fit MSE {fmt(f_on.mean)} vs {fmt(f_off.mean)} (|Δ| = {fmt(abs(f_on.mean - f_off.mean), 3)}, "
            f"tolerance {fmt(C3_FIT_TOL * var, 3)}) {'✓' if fit_ok else '✗'}; {rec} {'✓' if rec_ok else '✗'}; "
            f"outside-hull {fmt(h_on.mean)} vs {fmt(h_off.mean)} {'✓' if out_ok else '✗'}"
        )
    if total == 0:
        return Claim("C3", st, "not evaluated", "", details)
    verdict = "pass" if all(v == total for v in held.values()) else "fail" if any(v == 0 for v in held.values()) else "partial"
    summary = "; ".join(f"{k}: {_where(t, v, total)}" for k, v in held.items())
    return Claim("C3", st, verdict, summary, details)


def _spearman(a: Sequence[float], b: Sequence[float]) -> float:
    from scipy.stats import spearmanr

    if len(a) < 3 or len(set(b)) < 2:
        return math.nan
    return float(spearmanr(a, b).statistic)


def claim_c4(t: Table, nominal_tau: float | None, tau_key: str = "losses.separation.tau") -> Claim:
    st = "separation-only expulsion (outside-hull fraction) grows with τ and is near the baseline's at the nominal τ"
    if tau_key not in t.keys or "separation" not in t.masks:
        return Claim("C4", st, "not evaluated", "", [f"needs the separation-only mask and a grid over {tau_key} (configs/tau_sweep.yaml)"])
    ki = t.keys.index(tau_key)
    rest = [k for k in t.keys if k != tau_key]
    details: list[str] = []
    held, total = 0, 0
    groups: dict[tuple[int, tuple[str, ...]], list[tuple[float, tuple[str, ...]]]] = {}
    for n, o in _cells(t):
        groups.setdefault((n, tuple(v for i, v in enumerate(o) if i != ki)), []).append((_float(o[ki]), o))
    for (n, rest_vals), taus in groups.items():
        taus.sort()
        curve = [(tau, t.stats("outside_hull_frac", mask="separation", n=n, other=o).mean) for tau, o in taus]
        curve = [(a, b) for a, b in curve if not math.isnan(b)]
        if len(curve) < 3:
            continue
        rho = _spearman([a for a, _ in curve], [b for _, b in curve])
        grows = curve[-1][1] > curve[0][1] + EPS and rho >= C4_RHO_MIN
        base = Stats.of([v for _, o in taus for v in t.values("outside_hull_frac", mask="none", n=n, other=o)]) if "none" in t.masks else None
        lab = ", ".join(f"{k}={v}" for k, v in zip(rest, rest_vals))
        head = f"N={n}" + (f" ({lab})" if lab else "")
        details.append(
            f"{head}: separation-only outside-hull fraction by τ: " + ", ".join(f"{fmt(a, 3)}: {fmt(b, 3)}" for a, b in curve)
            + f"; Spearman ρ = {fmt(rho, 3)} (needs ≥ {C4_RHO_MIN}) {'✓' if grows else '✗'}"
        )
        nom = [(a, o) for (a, o) in taus if nominal_tau is not None and math.isclose(a, nominal_tau, rel_tol=1e-9)]
        near = False
        if base is None or base.count == 0 or not nom:
            details.append(f"{head}: nominal τ = {nominal_tau} is not in the grid, or no baseline (mask none) runs ✗")
        else:
            o_nom, o_max = nom[0][1], taus[-1][1]
            d_nom = t.stats("outside_hull_frac", mask="separation", n=n, other=o_nom).mean - base.mean
            d_max = t.stats("outside_hull_frac", mask="separation", n=n, other=o_max).mean - base.mean
            near = abs(d_nom) <= C4_NEAR_FRAC * abs(d_max) + EPS
            pair = _paired(t, "outside_hull_frac", "separation", "none", n, o_nom)
            details.append(
                f"{head}: at the nominal τ = {fmt(nominal_tau or math.nan, 3)}: separation-only {fmt(d_nom + base.mean, 3)} vs baseline "
                f"{fmt(base.mean, 3)}: excess {fmt(d_nom, 3)}" + (f" ({pair})" if pair else "")
                + f", vs {fmt(d_max, 3)} at τ = {fmt(taus[-1][0], 3)} (needs ≤ {C4_NEAR_FRAC:g} of it) {'✓' if near else '✗'}"
            )
        total += 2
        held += grows + near
    if total == 0:
        return Claim("C4", st, "not evaluated", "", ["needs at least 3 τ values"])
    return Claim("C4", st, _verdict(held, total), f"{held} of {total} checks hold", details)


def evaluate_claims(t: Table, *, target_var: Mapping[int, float], nominal_tau: float | None) -> list[Claim]:
    """C1-C4 of the study on a sweep's completed runs (claims a sweep cannot test: not evaluated)."""
    return [claim_c1(t), claim_c2(t), claim_c3(t, target_var), claim_c4(t, nominal_tau)]


def _target_var(plan: Plan) -> dict[int, float]:
    """Mean target variance per N over the sweep's runs (the scale of "fits about as well")."""
    acc: dict[int, list[float]] = {}
    for x, y in plan.data.values():
        acc.setdefault(int(x.shape[0]), []).append(float(np.var(y)))
    return {n: float(np.mean(v)) for n, v in acc.items()}


def _nominal_tau(plan: Plan) -> float | None:
    sep = plan.base.losses.get("separation") if "separation" in plan.base.losses else None
    return float(sep.tau) if sep is not None and "tau" in sep else None


def summary_markdown(plan: Plan, rows: Sequence[Mapping[str, str]], claims: Sequence[Claim], plots: Sequence[str]) -> str:
    t = Table(rows, plan.keys, list(dict.fromkeys(r.mask for r in plan.runs)))
    done = [r for r in rows if r.get("status") in ("completed", "failed")]
    failed = [r for r in rows if r.get("status") == "failed"]
    secs = sum(_float(r["seconds"]) for r in done)
    batches = len({r["batch"] for r in done})
    b = plan.base
    lines = [
        "# Sweep summary",
        "",
        f"{len(done)} of {len(plan.runs)} runs finished ({len(failed)} failed) in {batches} batch(es); "
        f"training time {secs:.1f} s (the `seconds` column is each batch's wall-clock time shared by its runs).",
        "",
        f"Grid: masks over {', '.join(plan.masks) or '(none)'} ({len(mask_subsets(plan.masks))} masks)"
        + "".join(f"; `{k}` = {', '.join(format_value(v) for v in OmegaConf.to_container(b.sweep.grid)[k])}" for k in plan.keys)  # type: ignore[index]
        + f"; seeds {', '.join(str(s) for s in sweep_seeds(b.sweep.seeds))}. "
        f"Training: {b.train.steps} steps, Adam lr {b.train.lr}, precision {b.trainer.get('precision', '32-true')}. "
        "Loss settings: "
        + "; ".join(f"{name} " + ", ".join(f"{k}={format_value(v)}" for k, v in s.items()) for name, s in OmegaConf.to_container(b.losses).items())  # type: ignore[union-attr]
        + " (an 'on' loss of a mask has this weight, an 'off' one weight 0).",
    ]
    if plan.twins:
        lines += [
            "",
            f"{len(plan.twins)} runs have the same effective settings as another run (an inactive loss's parameters do not "
            "matter); each was trained once and the result is listed under every name.",
        ]
    if len(done) < len(plan.runs):
        lines += ["", f"**Partial**: {len(plan.runs) - len(done)} runs are not finished; re-run the same command to resume."]
    lines += ["", "## Claims", ""]
    for c in claims:
        lines.append(f"- **{c.key} — {c.verdict.upper()}**: {c.statement}" + (f" — {c.summary}." if c.summary else "."))
        lines += [f"  - {d}" for d in c.details]
    lines += [
        "",
        "Verdicts: PASS where a claim holds at every N, PARTIAL at some, FAIL at none (C3: a part holds nowhere). "
        "Runs of different masks with the same seed share their data and initial prototypes, so differences are also "
        "given paired by seed (mean ± standard error). "
        f"Checks: C1 compares means per N; C2 requires a higher mean ratio wherever the baseline is below its maximum 1; "
        f"C3 pools the overlap-active and overlap-free masks per N, \"fit about as well\" = mean fit MSE within "
        f"{C3_FIT_TOL:g} x the target variance, reconstruction compared by mean (by median when a mean is non-finite); "
        f"C4 needs Spearman ρ ≥ {C4_RHO_MIN} between τ and the mean outside-hull fraction, the largest τ above the smallest, "
        f"and an excess of separation-only over the baseline at the nominal τ (`losses.separation.tau` of the config) of at most "
        f"{C4_NEAR_FRAC:g} x its excess at the largest τ.",
        "",
        "## Results per N × mask",
        "",
        "Mean ± standard deviation over seeds (completed runs); `recon_error` also as the median, which "
        "non-finite prototypes cannot dominate.",
        "",
    ]
    extra = [k for k in t.keys]
    head = ["N", "mask", *[f"`{k}`" for k in extra], "runs", "fit_mse", "recon_error", "recon_error median", "specialization_ratio", "outside_hull_frac", "failed"]
    lines.append("| " + " | ".join(head) + " |")
    lines.append("|" + "|".join(["---"] * len(head)) + "|")
    for o in t.others():
        for n in t.ns:
            for m in t.masks:
                if not any(r["mask"] == m and int(r["n"]) == n and t.other(r) == o for r in rows):
                    continue
                rec = t.stats("recon_error", mask=m, n=n, other=o)
                cells = [
                    str(n),
                    m,
                    *o,
                    str(rec.count),
                    _pm(t.stats("fit_mse", mask=m, n=n, other=o)),
                    _pm(rec) + (f" ({rec.nonfinite} non-finite)" if rec.nonfinite else ""),
                    fmt(rec.median),
                    _pm(t.stats("specialization_ratio", mask=m, n=n, other=o)),
                    _pm(t.stats("outside_hull_frac", mask=m, n=n, other=o)),
                    str(t.failed_count(mask=m, n=n, other=o)),
                ]
                lines.append("| " + " | ".join(cells) + " |")
    if failed:
        lines += ["", "## Failed runs", ""] + [f"- `{r['run']}`: {r['reason']}" for r in failed[:50]]
        if len(failed) > 50:
            lines.append(f"- ... and {len(failed) - 50} more (results.csv)")
    if plan.unpaired:
        lines += ["", "## Pairing", "", pairing_line(plan) or ""]
    if plots:
        lines += ["", "## Plots", ""] + [f"![{p}]({p})" for p in plots]
    lines += ["", "Files: `results.csv` (one row per run), `prototypes.csv` (every run's prototypes), `sweep.yaml` (the config), `tb/` (TensorBoard: one folder per batch, HParams per run).", ""]
    return "\n".join(lines)


def write_report(out: Path | str, *, plan: Plan, reg: Registry | None = None, plots: bool = True) -> list[Claim]:
    """``summary.md`` and the plots of a sweep directory, from its ``results.csv`` and ``prototypes.csv``."""
    out = Path(out)
    rows = read_results(out)
    t = Table(rows, plan.keys, list(dict.fromkeys(r.mask for r in plan.runs)))
    claims = evaluate_claims(t, target_var=_target_var(plan), nominal_tau=_nominal_tau(plan))
    made: list[str] = []
    if plots and t.rows:
        made = write_plots(out, plan, t)
    atomic_write_text(out / SUMMARY, summary_markdown(plan, rows, claims, made))
    return claims


# ------------------------------------------------------------------ plots
def _save(fig: Any, path: Path) -> None:
    import matplotlib.pyplot as plt

    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    os.replace(tmp, path)


def _mask_colors(masks: Sequence[str]) -> dict[str, Any]:
    import matplotlib.pyplot as plt

    cmap = plt.get_cmap("tab10")
    return {m: cmap(i % 10) for i, m in enumerate(masks)}


def write_plots(out: Path, plan: Plan, t: Table) -> list[str]:
    """Metric-vs-N plots per mask, τ-sweep curves, and prototype positions at the largest N."""
    from . import plots as _plots  # noqa: F401 - selects the Agg backend
    import matplotlib.pyplot as plt

    made: list[str] = []
    colors = _mask_colors(t.masks)
    if len(t.ns) > 1:
        specs = [
            ("recon_error", "reconstruction error (mean ± s.e.)", True),
            ("specialization_ratio", "specialization ratio (mean ± s.e.)", False),
            ("outside_hull_frac", "outside-hull fraction (mean ± s.e.)", False),
        ]
        for metric, ylabel, logy in specs:
            for o in t.others():
                fig, ax = plt.subplots(figsize=(7, 4.5))
                for mi, m in enumerate(t.masks):
                    dodge = 1.0 + 0.025 * (mi - (len(t.masks) - 1) / 2)  # side by side on the log axis
                    xs, ys, es, hollow = [], [], [], []
                    for n in t.ns:
                        s = t.stats(metric, mask=m, n=n, other=o)
                        if s.count == 0:
                            continue
                        se = s.std / math.sqrt(s.count) if math.isfinite(s.std) else 0.0
                        if math.isfinite(s.mean):
                            xs.append(n * dodge), ys.append(s.mean), es.append(se), hollow.append(False)
                        else:  # non-finite prototypes: show the median instead
                            xs.append(n * dodge), ys.append(s.median), es.append(0.0), hollow.append(True)
                    if not xs:
                        continue
                    ax.errorbar(xs, ys, yerr=es, marker="o", ms=4, capsize=3, lw=1.3, color=colors[m], label=m)
                    hx = [a for a, h in zip(xs, hollow) if h]
                    if hx:
                        ax.scatter(hx, [b for b, h in zip(ys, hollow) if h], s=70, facecolors="none", edgecolors="k", zorder=5)
                ax.set_xscale("log")
                ax.set_xticks(t.ns)
                ax.set_xticklabels([str(n) for n in t.ns])
                if logy:
                    ax.set_yscale("log")
                ax.set_xlabel("dataset size N")
                ax.set_ylabel(ylabel)
                lab = _label(t, o)
                ax.set_title(f"{metric} vs N" + (f" ({lab})" if lab else ""))
                ax.legend(fontsize=7, ncol=2)
                ax.grid(alpha=0.3)
                fig.tight_layout()
                name = PLOT_FILES[metric] if len(t.others()) == 1 else PLOT_FILES[metric].replace(".png", "_" + re.sub(r"[^A-Za-z0-9.=-]+", "_", lab) + ".png")
                _save(fig, out / name)
                made.append(name)
    tau_keys = [k for k in t.keys if k.endswith(".tau")]
    for tk in tau_keys:
        made.append(_tau_plot(out, t, tk, colors, PLOT_FILES["tau"] if len(tau_keys) == 1 else f"tau_sweep_{tk.split('.')[1]}.png"))
    made += _prototype_plot(out, plan, t, colors)
    return made


def _tau_plot(out: Path, t: Table, tau_key: str, colors: Mapping[str, Any], name: str) -> str:
    import matplotlib.pyplot as plt

    ki = t.keys.index(tau_key)
    fig, axes = plt.subplots(1, 3, figsize=(14, 4.2))
    metrics = [("outside_hull_frac", "outside-hull fraction (mean ± s.e.)"), ("recon_error", "reconstruction error (median)"), ("specialization_ratio", "specialization ratio (mean ± s.e.)")]
    for m in t.masks:
        for n in t.ns:
            by_tau: dict[float, list[tuple[str, ...]]] = {}
            for o in t.others():
                by_tau.setdefault(_float(o[ki]), []).append(o)
            taus = sorted(by_tau)
            for ax, (metric, ylabel) in zip(axes, metrics):
                ys, es = [], []
                for tau in taus:
                    vals = [v for o in by_tau[tau] for v in t.values(metric, mask=m, n=n, other=o)]
                    s = Stats.of(vals)
                    if metric == "recon_error":
                        ys.append(s.median)
                        es.append(0.0)
                    else:
                        ys.append(s.mean)
                        es.append(s.std / math.sqrt(s.count) if s.count and math.isfinite(s.std) else 0.0)
                lab = m + (f", N={n}" if len(t.ns) > 1 else "")
                ax.errorbar(taus, ys, yerr=es, marker="o", ms=4, capsize=3, color=colors[m], label=lab, alpha=0.9)
                ax.set_xscale("log")
                ax.set_xlabel(f"{tau_key} (units of squared sample spacing)")
                ax.set_ylabel(ylabel)
                ax.grid(alpha=0.3)
    axes[1].set_yscale("log")
    axes[0].legend(fontsize=7)
    fig.suptitle(f"τ sweep ({tau_key})" + (f", N={t.ns[0]}" if len(t.ns) == 1 else ""))
    fig.tight_layout()
    _save(fig, out / name)
    return name


def read_prototype_rows(out: Path | str) -> dict[str, list[list[str]]]:
    """Run -> its rows of ``prototypes.csv`` (as written)."""
    path = Path(out) / PROTOTYPES
    res: dict[str, list[list[str]]] = {}
    if path.is_file():
        with path.open(newline="", encoding="utf-8") as fh:
            reader = csv.reader(fh)
            next(reader, None)
            for row in reader:
                if row:
                    res.setdefault(row[0], []).append(row)
    return res


def read_prototypes(out: Path | str) -> dict[str, np.ndarray]:
    """Run -> (M, d) prototype positions from ``prototypes.csv``."""
    path = Path(out) / PROTOTYPES
    res: dict[str, list[list[float]]] = {}
    if not path.is_file():
        return {}
    with path.open(newline="", encoding="utf-8") as fh:
        reader = csv.reader(fh)
        header = next(reader, [])
        pcols = [i for i, h in enumerate(header) if re.fullmatch(r"p\d+", h)]
        for row in reader:
            if len(row) != len(header):
                continue
            res.setdefault(row[0], []).append([_float(row[i]) for i in pcols])
    return {k: np.asarray(v, dtype=float) for k, v in res.items()}


def _prototype_plot(out: Path, plan: Plan, t: Table, colors: Mapping[str, Any]) -> list[str]:
    """Prototype positions of the first seed's run at the largest N, one panel per mask (and setting)."""
    import matplotlib.pyplot as plt

    protos = read_prototypes(out)
    n = max(t.ns)
    first_seed = {}
    for r in t.rows:
        if int(r["n"]) != n or r["run"] not in protos or r["run"] not in plan.data or r["run"] in plan.twins:
            continue  # (a twin repeats the panel of the run it shares its result with)
        key = (r["mask"], t.other(r))
        if key not in first_seed or int(r["seed"]) < int(first_seed[key]["seed"]):
            first_seed[key] = r
    if not first_seed:
        return []
    order = {m: i for i, m in enumerate(t.masks)}
    others = t.others()
    panels = sorted(first_seed.items(), key=lambda kv: (others.index(kv[0][1]), order.get(kv[0][0], 99)))[:36]
    dim = plan.data[panels[0][1]["run"]][0].shape[1]
    cols = min(4, len(panels))
    rows_n = math.ceil(len(panels) / cols)
    fig, axes = plt.subplots(rows_n, cols, figsize=(3.6 * cols, 2.9 * rows_n), squeeze=False)
    for ax in axes.flat[len(panels):]:
        ax.axis("off")
    for ax, ((mask, o), r) in zip(axes.flat, panels):
        x, y = plan.data[r["run"]]
        p = protos[r["run"]]
        if dim == 1:
            lo, hi = float(x.min()), float(x.max())
            span = hi - lo or 1.0
            a, b = lo - 0.3 * span, hi + 0.3 * span
            pos = p[:, 0]
            shown = np.clip(np.nan_to_num(pos, nan=b, posinf=b, neginf=a), a, b)
            outside = (pos < lo) | (pos > hi) | ~np.isfinite(pos)
            beyond = shown != pos
            ax.axvspan(lo, hi, color="0.93")
            ax.scatter(x[:, 0], y[:, 0], s=6, color="0.3", zorder=3)
            yb = float(y.min()) - 0.15 * (float(np.ptp(y)) or 1.0)
            ax.scatter(shown[~outside], np.full((~outside).sum(), yb), marker="^", s=14, color="tab:blue", zorder=4)
            ax.scatter(shown[outside & ~beyond], np.full((outside & ~beyond).sum(), yb), marker="^", s=14, color="tab:red", zorder=4)
            ax.scatter(shown[beyond], np.full(beyond.sum(), yb), marker="x", s=22, color="k", zorder=5)
            ax.set_xlim(a - 0.02 * span, b + 0.02 * span)
        else:
            ax.scatter(x[:, 0], x[:, 1], s=6, color="0.3")
            fin = np.isfinite(p).all(1)
            ax.scatter(p[fin, 0], p[fin, 1], marker="^", s=14, color=colors.get(mask, "tab:blue"))
        lab = _label(t, o)
        n_out = int(round(_float(r["outside_hull_frac"]) * len(p)))
        ax.set_title(f"{mask}" + (f"\n{lab}" if lab else "") + f"\n{n_out} of {len(p)} outside, recon error {fmt(_float(r['recon_error']), 3)}", fontsize=8)
        ax.tick_params(labelsize=7)
    fig.suptitle(f"prototypes at N = {n} (seed {min(int(r['seed']) for r in first_seed.values())}; ▲ blue inside, red outside the hull, × beyond the view)", fontsize=9)
    fig.tight_layout()
    name = f"prototypes_n{n}.png"
    _save(fig, out / name)
    return [name]
