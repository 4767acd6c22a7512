"""Running a sweep: validate every run, open (or resume) the sweep directory, train the unfinished
runs group by group with an executor (:mod:`.executors`: this process, or Ray tasks), record each
finished group atomically as it arrives, put the records in the plan's order, report.

This process (the *driver*) is the only writer of the sweep directory."""

from __future__ import annotations

import csv
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from omegaconf import DictConfig

from protoreg.plugin_api import Claim
from protoreg.evaluation.evaluate import IMAGE_METRIC_NAMES, METRIC_NAMES
from protoreg.rundirs.io import atomic_write_text
from protoreg.frontend.caller import warn
from protoreg.errors import PairingWarning
from protoreg.plugins.registry import Registry
from protoreg.rundirs.layout import csv_text, prototype_rows
from protoreg.rundirs.status import checks_notable, exit_code, finished
from protoreg.training import RunOutcome, train_group
from protoreg.sweeps.eta import BatchSize, EtaModel
from protoreg.sweeps.executors import Echo, Engine, Executor, GroupJob, GroupResult, LocalExecutor, make_executor
from protoreg.sweeps.grid import SweepRun, format_value
from protoreg.sweeps.plan import Plan, pairing_line, plan_groups, plan_sweep
from protoreg.sweeps.report import expulsion_warning, write_report
from protoreg.rundirs.layout import remove_if_empty
from protoreg.sweeps.store import (
    PROTOTYPES,
    RESULTS,
    TB,
    append_rows,
    default_out,
    init_files,
    locked,
    next_group_index,
    open_sweep_dir,
    read_prototype_rows,
    read_results,
)


@dataclass
class SweepOutcome:
    """What one invocation of a sweep did."""

    out: Path
    runs: int  #: runs in the sweep
    trained: int  #: runs trained by this invocation
    skipped: int  #: runs found finished in results.csv
    failed: int  #: runs with status "failed" in results.csv
    finished: int  #: runs recorded in results.csv (completed or failed)
    seconds: float  #: wall-clock time of this invocation
    interrupted: bool = False
    claims: list[Claim] = field(default_factory=list)

    @property
    def exit_code(self) -> int:
        return exit_code((["interrupted"] if self.interrupted else []) + (["failed"] if self.failed else []))


def hparams_of(run: SweepRun, settings: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """The HParams of a run: mask, seed, swept keys, and every loss weight and parameter."""
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


def _num(v: Any) -> Any:
    return repr(v) if isinstance(v, float) else "" if v is None else v


def result_row(run: SweepRun, res: RunOutcome, plan: Plan, *, seconds: float, index: int, check_seconds: float = 0.0) -> dict[str, Any]:
    """The ``results.csv`` row of a trained run (``seconds``, ``check_seconds``: its share of
    its batch's training and geometry-check time)."""
    row: dict[str, Any] = {"run": run.name, "mask": run.mask, "n": int(plan.specs[run.name].x.shape[0]), "seed": run.seed}
    row.update({k: format_value(run.values[k]) for k in plan.keys})
    row.update({k: _num(res.metrics[k]) for k in (*METRIC_NAMES, *IMAGE_METRIC_NAMES)})
    row.update(steps=res.steps, seconds=f"{seconds:.4f}", check_seconds=f"{check_seconds:.4f}", status=res.status, reason=res.reason, batch=index)
    return row


def _copy_row(row: Mapping[str, Any], dup: SweepRun, plan: Plan) -> dict[str, Any]:
    """The result row of ``dup``, a run with the same effective settings as the run of ``row``."""
    out = dict(row)
    out.update(run=dup.name, mask=dup.mask, seed=dup.seed, seconds="0.0000", check_seconds="0.0000")
    out.update({k: format_value(dup.values[k]) for k in plan.keys})
    return out


def _rows_text(header: Sequence[str], rows: Iterable[Mapping[str, Any]]) -> list[list[Any]]:
    return [[row.get(c, "") for c in header] for row in rows]


class _Recorder:
    """Appends finished runs (and their twins) to ``results.csv`` and ``prototypes.csv``."""

    def __init__(self, out: Path, plan: Plan, finished: dict[str, dict[str, str]], copies: dict[str, list[SweepRun]]) -> None:
        self.out, self.plan, self.copies = out, plan, copies
        self.header = plan.columns()
        self.pheader = ["run", "unit", *[f"p{j}" for j in range(plan.dim())], "outside_hull", "hull_distance", "expelled_at_step", "wins"]
        self.done = set(finished)

    def record(self, rows: Sequence[Mapping[str, Any]], protos: Sequence[Sequence[Any]], *, copies_only: bool = False) -> None:
        """Append ``rows`` (and their prototype rows) and the rows of their twins; with
        ``copies_only`` the given runs are already recorded and only their twins are added."""
        by_run: dict[str, list[Sequence[Any]]] = {}
        for p in protos:
            by_run.setdefault(str(p[0]), []).append(p)
        out_rows = [] if copies_only else [dict(r) for r in rows]
        out_protos = [] if copies_only else [list(p) for p in protos]
        for row in rows:
            for d in self.copies.get(row["run"], []):
                out_rows.append(_copy_row(row, d, self.plan))
                out_protos += [[d.name, *p[1:]] for p in by_run.get(row["run"], [])]
        rows, protos = out_rows, out_protos
        # prototypes first: results.csv is the record of what is finished
        append_rows(self.out / PROTOTYPES, self.pheader, protos, keep=self.done)
        append_rows(self.out / RESULTS, self.header, _rows_text(self.header, rows))
        self.done |= {r["run"] for r in rows}


def failed_row(run: SweepRun, plan: Plan, *, reason: str, index: int) -> dict[str, Any]:
    """The ``results.csv`` row of a run whose whole group failed (no metrics: empty cells)."""
    row: dict[str, Any] = {"run": run.name, "mask": run.mask, "n": int(plan.specs[run.name].x.shape[0]), "seed": run.seed}
    row.update({k: format_value(run.values[k]) for k in plan.keys})
    row.update(steps=0, seconds="0.0000", check_seconds="0.0000", status="failed", reason=reason, batch=index)
    return row


def record_order(plan: Plan) -> list[str]:
    """Run names in the order an uninterrupted sweep records them: group by group (the plan's
    groups), each group's runs followed by the runs sharing their result."""
    copies: dict[str, list[str]] = {}
    for r in plan.runs:
        if r.name in plan.twins:
            copies.setdefault(plan.twins[r.name], []).append(r.name)
    order: list[str] = []
    for runs in plan_groups([r for r in plan.runs if r.name not in plan.twins], plan):
        order += [r.name for r in runs]
        order += [d for r in runs for d in copies.get(r.name, [])]
    return order


def _read_table(path: Path) -> list[list[str]]:
    with path.open(newline="", encoding="utf-8") as fh:
        return [r for r in csv.reader(fh) if r]


def write_in_order(out: Path, plan: Plan) -> None:
    """Rewrite ``prototypes.csv`` and ``results.csv`` (atomically, each only if its order
    changes) in :func:`record_order`, whatever order the groups finished in; prototypes of runs
    missing from ``results.csv`` are dropped."""
    position = {name: i for i, name in enumerate(record_order(plan))}
    results = _read_table(out / RESULTS)
    done = {r[0] for r in results[1:]}
    for path in (out / PROTOTYPES, out / RESULTS):  # prototypes first, as when recording
        if not path.is_file():
            continue
        table = results if path.name == RESULTS else _read_table(path)
        body = [r for r in table[1:] if r[0] in done]
        ordered = sorted(body, key=lambda r: position.get(r[0], len(position)))  # stable: units keep their order
        if ordered != table[1:]:
            atomic_write_text(path, csv_text([table[0], *ordered]))


def _duration(seconds: float) -> str:
    s = int(round(seconds))
    return f"{s}s" if s < 120 else f"{s // 60}m{s % 60:02d}s"


def batch_size_of(job: GroupJob) -> BatchSize:
    """The size of a batch for the ETA (:class:`~protoreg.sweeps.eta.BatchSize`)."""
    spec = job.specs[0]
    cfg = spec.cfg
    n, d = int(spec.x.shape[0]), int(spec.x.shape[1])
    radial = str(cfg.model.parameterization) == "radial" or (str(cfg.model.parameterization) == "auto" and d > 1)
    return BatchSize.of(len(job.runs), n, int(cfg.model.width or n), d, int(cfg.train.steps), cfg.train.batch_size, radial)


class _Progress:
    """``batch k/K`` lines with an ETA: each remaining batch estimated from its size, calibrated
    on the batches finished so far (:class:`~protoreg.sweeps.eta.EtaModel`; any order)."""

    def __init__(self, say: Echo, jobs: Sequence[GroupJob]) -> None:
        self.say, self.total = say, len(jobs)
        self.left = {j.index: batch_size_of(j) for j in jobs}
        self.model = EtaModel()
        self.done = 0
        self.t0 = time.perf_counter()

    def finished(self, res: GroupResult, plan: Plan) -> None:
        job = res.job
        self.done += 1
        size = self.left.pop(job.index, None)
        n = plan.specs[job.runs[0].name].x.shape[0]
        if res.error:
            what = f"failed: {res.error}"
        else:
            if size is not None and res.seconds > 0:
                self.model.add(size, res.seconds)
            failed_now = sum(o.status == "failed" for o in res.outcomes)
            what = f"{res.seconds:.1f}s" + (f", {failed_now} failed" if failed_now else "")
            if checks_notable(res.seconds, res.check_seconds):
                what += f" (geometry checks {res.check_seconds:.1f}s)"
        eta = ""
        if self.left:
            seconds = self.model.eta(list(self.left.values()), time.perf_counter() - self.t0) if self.model.done else None
            eta = f"; ETA {_duration(seconds)}" if seconds is not None else ""
        self.say(f"  batch {self.done}/{self.total} (tb/batch_{job.index:03d}): {len(job.runs)} runs, n={n}, {what}{eta}")


def _write_tb(out: Path, index: int, files: Mapping[str, bytes]) -> None:
    """A worker's TensorBoard files under ``tb/batch_<index>/``."""
    root = out / TB / f"batch_{index:03d}"
    for rel, data in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)


def run_sweep(
    base: DictConfig, out: Path | None, *, reg: Registry, echo: Echo | None = None, plots: bool = True, engine: Engine = train_group
) -> SweepOutcome:
    """Validate every run of ``base``, then train the unfinished ones group by group into ``out``
    with the executor of ``sweep.executor`` (each group through ``engine``, the training engine),
    record each finished group atomically, and leave ``results.csv`` and ``prototypes.csv`` in
    :func:`record_order`.

    ``out`` None: a new ``sweeps/<timestamp>`` (:func:`~protoreg.sweeps.store.default_out`),
    reserved once every run is valid and the executor is ready. Nothing is written before then.

    Runs whose effective settings are identical (e.g. the baseline at every value of an inactive
    loss's temperature) are trained once and share the result (their ``seconds`` are 0).
    """
    say: Echo = echo or (lambda s: None)
    t_start = time.perf_counter()
    plan = plan_sweep(base, reg)  # nothing is written before every run is valid
    executor = make_executor(plan, reg, out, engine=engine, echo=say)
    line = pairing_line(plan)
    if line:
        warn(line, PairingWarning)
    if out is not None:
        open_sweep_dir(out, plan.base, plan.columns(), create=False)  # refuse a wrong directory before Ray starts
    with executor.session():  # Ray: connected, and proven to run a task (or refused: nothing written)
        reserved = out is None
        target = default_out() if out is None else out
        if isinstance(executor, LocalExecutor):
            executor.out = target
        try:
            return _run_in(target, plan, reg, executor, say, plots, t_start)
        except BaseException:
            if reserved:
                remove_if_empty(target)
            raise


def _run_in(out: Path, plan: Plan, reg: Registry, executor: Executor, say: Echo, plots: bool, t_start: float) -> SweepOutcome:
    """The body of :func:`run_sweep` once the executor is ready: open, train, record, report."""
    open_sweep_dir(out, plan.base, plan.columns())
    with locked(out):
        open_sweep_dir(out, plan.base, plan.columns())  # re-check under the lock
        init_files(out, plan.base, plan.columns())
        existing = read_results(out)
        kept = {r["run"]: r for r in existing if finished(r.get("status"))}
        pending = [r for r in plan.runs if r.name not in kept]
        to_train = [r for r in pending if r.name not in plan.twins]
        copies: dict[str, list[SweepRun]] = {}
        for r in pending:
            if r.name in plan.twins:
                copies.setdefault(plan.twins[r.name], []).append(r)
        rec = _Recorder(out, plan, kept, copies)
        ready = [rep for rep in copies if rep in kept]  # twins of runs finished earlier
        if ready:
            protos = read_prototype_rows(out)
            rec.record([kept[rep] for rep in ready], [p for rep in ready for p in protos.get(rep, [])], copies_only=True)
        groups = plan_groups(to_train, plan)
        shared = sum(len(v) for v in copies.values())
        say(
            f"protoreg sweep: {len(plan.runs)} runs ({len(plan.runs) - len(pending)} finished, {len(to_train)} to train"
            + (f", {shared} sharing the result of an identical run" if shared else "")
            + f") in {len(groups)} batch(es) -> {out}"
        )
        index = next_group_index(out, existing)
        jobs = [
            GroupJob(index + i, runs, [plan.specs[r.name] for r in runs], [(r.name, hparams_of(r, plan.specs[r.name].settings)) for r in runs])
            for i, runs in enumerate(groups)
        ]
        progress = _Progress(say, jobs)
        trained, cut, cut_reasons = 0, [], set()
        for res in executor.run(jobs):
            if res.interrupted:
                cut.append(res.job)
                cut_reasons |= {o.reason for o in (res.outcomes or []) if o.status == "failed"}  # e.g. a loss that hung
                continue
            runs, idx = res.job.runs, res.job.index
            _write_tb(out, idx, res.tb_files)
            if res.error:
                rec.record([failed_row(r, plan, reason=res.error, index=idx) for r in runs], [])
            else:
                per_run = res.seconds / len(runs)
                per_check = res.check_seconds / len(runs)
                rows = [result_row(r, o, plan, seconds=per_run, index=idx, check_seconds=per_check) for r, o in zip(runs, res.outcomes)]
                rec.record(rows, [[r.name, *p] for r, o in zip(runs, res.outcomes) for p in prototype_rows(o.units, plan.dim())])
            trained += len(runs)
            progress.finished(res, plan)
        if cut:
            say(f"  {len(cut)} batch(es) interrupted; their {sum(len(j.runs) for j in cut)} runs were not recorded")
            if cut_reasons:
                say("  " + "; ".join(sorted(cut_reasons)))
        write_in_order(out, plan)
        rows_all = read_results(out)
        expulsion_warning(plan, rows_all)
        claims = write_report(out, plan=plan, reg=reg, plots=plots and not cut)
    done = sum(1 for r in rows_all if finished(r.get("status")))
    failed = sum(1 for r in rows_all if r.get("status") == "failed")
    return SweepOutcome(out, len(plan.runs), trained, len(plan.runs) - len(pending), failed, done, time.perf_counter() - t_start, bool(cut), claims)
