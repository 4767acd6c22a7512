"""Running a sweep: validate every run, open (or resume) the sweep directory, train the unfinished
runs group by group through the training engine, record each finished group atomically, report."""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

from omegaconf import DictConfig

from ..api import Claim
from ..evaluate import IMAGE_METRIC_NAMES, METRIC_NAMES
from ..pairing import PairingWarning
from ..plugins import Registry
from ..rundir import prototype_rows
from ..status import exit_code
from ..training import GroupOutcome, RunOutcome, build_group, geometry_callback, train_group
from .grid import SweepRun, format_value
from .plan import Plan, pairing_line, plan_groups, plan_sweep
from .report import expulsion_warning, write_report
from .store import PROTOTYPES, RESULTS, TB, append_rows, init_files, locked, next_group_index, open_sweep_dir, read_prototype_rows, read_results

Echo = Callable[[str], None]
#: The training engine's signature (:func:`protoreg.training.train_group`); injectable for tests.
Engine = Callable[..., GroupOutcome]


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


def result_row(run: SweepRun, res: RunOutcome, plan: Plan, *, seconds: float, index: int) -> dict[str, Any]:
    """The ``results.csv`` row of a trained run."""
    row: dict[str, Any] = {"run": run.name, "mask": run.mask, "n": int(plan.specs[run.name].x.shape[0]), "seed": run.seed}
    row.update({k: format_value(run.values[k]) for k in plan.keys})
    row.update({k: _num(res.metrics[k]) for k in (*METRIC_NAMES, *IMAGE_METRIC_NAMES)})
    row.update(steps=res.steps, seconds=f"{seconds:.4f}", status=res.status, reason=res.reason, batch=index)
    return row


def train_runs(runs: Sequence[SweepRun], plan: Plan, reg: Registry, out: Path, index: int, engine: Engine = train_group) -> GroupOutcome:
    """Train ``runs`` as one group with ``engine``; TensorBoard in ``tb/batch_<index>/``
    (``loss/*`` and ``geometry/*`` over the group's runs, and an HParams session per run)."""
    specs = [plan.specs[r.name] for r in runs]
    group = build_group(specs, reg, fail_fast=False)
    union: list[str] = []
    for spec in specs:
        union.extend(a for a in spec.active if a not in union)
    # expulsion is data in a sweep: it is summarised once at the end, not warned per group
    geometry = geometry_callback(specs[0].cfg, union, reg.losses, on_expulsion="ignore", figures=False)
    hparams = [(r.name, hparams_of(r, s.settings)) for r, s in zip(runs, specs)]
    return engine(group, geometry, log_dir=out, tb_name=f"{TB}/batch_{index:03d}", hparams=hparams)


def _copy_row(row: Mapping[str, Any], dup: SweepRun, plan: Plan) -> dict[str, Any]:
    """The result row of ``dup``, a run with the same effective settings as the run of ``row``."""
    out = dict(row)
    out.update(run=dup.name, mask=dup.mask, seed=dup.seed, seconds="0.0000")
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


def run_sweep(
    base: DictConfig, out: Path, *, reg: Registry, echo: Echo | None = None, plots: bool = True, engine: Engine = train_group
) -> SweepOutcome:
    """Validate every run of ``base``, then train the unfinished ones group by group into ``out``
    (each group through ``engine``, the training engine).

    Runs whose effective settings are identical (e.g. the baseline at every value of an inactive
    loss's temperature) are trained once and share the result (their ``seconds`` are 0).
    """
    say: Echo = echo or (lambda s: None)
    t_start = time.perf_counter()
    plan = plan_sweep(base, reg)  # nothing is written before every run is valid
    line = pairing_line(plan)
    if line:
        warnings.warn(line, PairingWarning, stacklevel=2)
    open_sweep_dir(out, plan.base, plan.columns())
    with locked(out):
        open_sweep_dir(out, plan.base, plan.columns())  # re-check under the lock
        init_files(out, plan.base, plan.columns())
        existing = read_results(out)
        finished = {r["run"]: r for r in existing if r.get("status") in ("completed", "failed")}
        pending = [r for r in plan.runs if r.name not in finished]
        to_train = [r for r in pending if r.name not in plan.twins]
        copies: dict[str, list[SweepRun]] = {}
        for r in pending:
            if r.name in plan.twins:
                copies.setdefault(plan.twins[r.name], []).append(r)
        rec = _Recorder(out, plan, finished, copies)
        ready = [rep for rep in copies if rep in finished]  # twins of runs finished earlier
        if ready:
            protos = read_prototype_rows(out)
            rec.record([finished[rep] for rep in ready], [p for rep in ready for p in protos.get(rep, [])], copies_only=True)
        groups = plan_groups(to_train, plan)
        shared = sum(len(v) for v in copies.values())
        say(
            f"protoreg sweep: {len(plan.runs)} runs ({len(plan.runs) - len(pending)} finished, {len(to_train)} to train"
            + (f", {shared} sharing the result of an identical run" if shared else "")
            + f") in {len(groups)} batch(es) -> {out}"
        )
        index = next_group_index(out, existing)
        trained, interrupted = 0, False
        for i, runs in enumerate(groups):
            outcome = train_runs(runs, plan, reg, out, index, engine)
            if outcome.interrupted:
                interrupted = True
                say(f"  batch {i + 1}/{len(groups)} interrupted; its {len(runs)} runs were not recorded")
                break
            per_run = outcome.seconds / len(runs)
            rows = [result_row(r, res, plan, seconds=per_run, index=index) for r, res in zip(runs, outcome.runs)]
            protos = [[r.name, *p] for r, res in zip(runs, outcome.runs) for p in prototype_rows(res.units, plan.dim())]
            rec.record(rows, protos)
            trained += len(runs)
            failed_now = sum(res.status == "failed" for res in outcome.runs)
            n = plan.specs[runs[0].name].x.shape[0]
            say(
                f"  batch {i + 1}/{len(groups)} (tb/batch_{index:03d}): {len(runs)} runs, n={n}, "
                f"{outcome.seconds:.1f}s" + (f", {failed_now} failed" if failed_now else "")
            )
            index += 1
        rows_all = read_results(out)
        expulsion_warning(plan, rows_all)
        claims = write_report(out, plan=plan, reg=reg, plots=plots and not interrupted)
    done = sum(1 for r in rows_all if r.get("status") in ("completed", "failed"))
    failed = sum(1 for r in rows_all if r.get("status") == "failed")
    return SweepOutcome(out, len(plan.runs), trained, len(plan.runs) - len(pending), failed, done, time.perf_counter() - t_start, interrupted, claims)
