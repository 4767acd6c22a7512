"""Validating a sweep before anything is trained or written, and grouping its runs.

Every run is validated like a ``fit`` run (config values, data, pairing, trainer); problems are
collected over all runs and reported together. Runs whose effective settings are identical are
*twins*: trained once, the result shared.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Sequence, cast

from omegaconf import DictConfig, OmegaConf

from protoreg import config as C
from protoreg.errors import ConfigError, ProtoregError
from protoreg.evaluation.evaluate import IMAGE_METRIC_NAMES, METRIC_NAMES
from protoreg.plugins.pairing import Unpaired, unpaired_repulsors
from protoreg.plugins.registry import Registry
from protoreg.training import RunSpec, group_key, run_spec
from protoreg.training.group import check_group_memory
from protoreg.training.trainer import make_trainer
from protoreg.sweeps.grid import SweepRun, expand, grid_values

#: Leading and trailing columns of ``results.csv``; swept keys and metrics go in between.
HEAD_COLUMNS: tuple[str, ...] = ("run", "mask", "n", "seed")
TAIL_COLUMNS: tuple[str, ...] = ("steps", "seconds", "check_seconds", "status", "reason", "batch")


@dataclass
class Plan:
    """A validated sweep: runs, their specs (data and loss settings), and what the summary needs."""

    base: DictConfig  #: the resolved sweep config (what ``sweep.yaml`` holds)
    runs: list[SweepRun]
    keys: list[str]  #: swept keys, in order
    masks: list[str]
    specs: dict[str, RunSpec] = field(default_factory=dict)  #: run name -> its validated spec
    unpaired: dict[str, list[Unpaired]] = field(default_factory=dict)  #: mask -> pairing problems
    #: run -> the earlier run with identical effective settings (trained once, result shared)
    twins: dict[str, str] = field(default_factory=dict)

    @property
    def study(self) -> str | None:
        return self.base.sweep.study

    def columns(self) -> list[str]:
        return result_columns(self.keys)

    def dim(self) -> int:
        """The largest input dimension over the runs (columns ``p0..`` of ``prototypes.csv``)."""
        return max((s.x.shape[1] for s in self.specs.values()), default=1)

    def mask_order(self) -> list[str]:
        return list(dict.fromkeys(r.mask for r in self.runs))


def result_columns(keys: Sequence[str]) -> list[str]:
    """``run, mask, n, seed, <swept keys>, <metrics>, <image metrics>, steps, seconds,
    check_seconds, status, reason, batch`` (image metrics are empty where the inputs are not images)."""
    return [*HEAD_COLUMNS, *keys, *METRIC_NAMES, *IMAGE_METRIC_NAMES, *TAIL_COLUMNS]


def effective_settings(cfg: DictConfig, settings: dict[str, dict[str, Any]]) -> str:
    """A run's config with inactive losses' parameters dropped: runs with equal keys train identically."""
    c = OmegaConf.to_container(cfg, resolve=True)
    assert isinstance(c, dict)
    c["losses"] = {name: s for name, s in settings.items() if float(s.get("weight", 0.0)) > 0}
    c.pop("sweep", None)
    return repr(sorted(C.flatten(c).items()))


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
        problems.append("geometry.on_expulsion: 'stop' would stop every run of a group; a sweep takes warn or ignore")
    return problems


def _check_study(base: DictConfig, reg: Registry) -> None:
    study = base.sweep.study
    if study is not None and study not in reg.studies:
        raise ConfigError(f"sweep.study: unknown study {study!r}; registered: {', '.join(sorted(reg.studies)) or 'none'}")


def plan_sweep(base: DictConfig, reg: Registry) -> Plan:
    """Expand and validate every run (config values, data, pairing, trainer, the memory of each
    group: :func:`~protoreg.training.group.check_group_memory`) before training.

    Problems are collected over all runs and reported together in one :class:`ConfigError` (or
    the first :class:`ProtoregError` of a data loader), each with the dotted key and an example run.
    """
    _check_study(base, reg)
    runs = expand(base, reg)
    masks = [str(m) for m in base.sweep.masks]
    plan = Plan(C.resolved(base, reg.losses), runs, list(grid_values(base)), masks)
    by_problem: dict[str, list[str]] = {}
    trainers: dict[str, DictConfig] = {}
    for run in runs:
        problems = _run_problems(run, reg, masks)
        settings: dict[str, dict[str, Any]] = {}
        if not problems:
            settings = C.loss_settings(run.cfg, reg.losses)
            unpaired = unpaired_repulsors(C.active_losses(settings), reg.losses)
            if unpaired and bool(run.cfg.pairing.strict):
                problems = ["pairing.strict: " + "; ".join(u.message() for u in unpaired)]
            elif unpaired:
                plan.unpaired.setdefault(run.mask, unpaired)
        if not problems:
            try:
                plan.specs[run.name] = run_spec(run.cfg, reg, settings)
            except ProtoregError as exc:
                problems = [str(exc)]
            trainers.setdefault(OmegaConf.to_yaml(run.cfg.trainer), run.cfg)
        for p in problems:
            by_problem.setdefault(p, []).append(run.name)
    if by_problem:
        parts = []
        for p, names in list(by_problem.items())[:8]:
            more = f" and {len(names) - 1} more" if len(names) > 1 else ""
            parts.append(f"{p} (run {names[0]}{more})")
        if len(by_problem) > 8:
            parts.append(f"... {len(by_problem) - 8} more problems")
        raise ConfigError("; ".join(parts))
    first: dict[str, str] = {}
    for run in runs:
        rep = first.setdefault(effective_settings(run.cfg, plan.specs[run.name].settings), run.name)
        if rep != run.name:
            plan.twins[run.name] = rep
    for cfg in trainers.values():  # Lightning's own checks of trainer.* (accelerator, precision)
        make_trainer(cast(dict[str, Any], OmegaConf.to_container(cfg.trainer, resolve=True)), None, [])  # a section is a dict
    for group in plan_groups([r for r in runs if r.name not in plan.twins], plan):  # memory of the largest groups
        check_group_memory([plan.specs[r.name] for r in group])
    return plan


def pairing_line(plan: Plan) -> str | None:
    """One line for every mask with an unpaired active repulsor (instead of a warning per run)."""
    if not plan.unpaired:
        return None
    counts = {m: sum(1 for r in plan.runs if r.mask == m) for m in plan.unpaired}
    masks = ", ".join(f"{m} ({counts[m]} runs)" for m in plan.unpaired)
    reps = sorted({u.repulsor for ps in plan.unpaired.values() for u in ps})
    return (
        f"{len(plan.unpaired)} mask(s) run a repulsor ({', '.join(reps)}) with no compatible attractor and may expel "
        f"prototypes from the data's convex hull: {masks}; pairing.strict=true refuses them"
    )


def plan_groups(runs: Sequence[SweepRun], plan: Plan) -> list[list[SweepRun]]:
    """Group runs that can train together; split groups to ``sweep.max_runs_per_batch``.

    Groups keep the order of their first run; a set of G compatible runs becomes
    ceil(G / cap) groups of nearly equal size.
    """
    cap = int(plan.base.sweep.max_runs_per_batch)
    compatible: dict[tuple[Any, ...], list[SweepRun]] = {}
    for run in runs:
        compatible.setdefault(group_key(plan.specs[run.name]), []).append(run)
    groups: list[list[SweepRun]] = []
    for members in compatible.values():
        k = math.ceil(len(members) / cap)
        size = math.ceil(len(members) / k)
        groups.extend(members[i : i + size] for i in range(0, len(members), size))
    return groups
