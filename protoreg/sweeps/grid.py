"""The grid of a sweep: masks x grid values x seeds, each an ordinary ``fit`` config."""

from __future__ import annotations

import itertools
import math
from collections import Counter
from dataclasses import dataclass
from typing import Any, Mapping, Sequence, cast

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from protoreg import config as C
from protoreg.errors import ConfigError
from protoreg.plugins.registry import Registry

#: Keys that a sweep sets itself (and the setting that controls them).
RESERVED_GRID_KEYS: dict[str, str] = {"train.seed": "sweep.seeds"}


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


def _seed_spec(value: Any) -> int | list[int]:
    """``sweep.seeds`` checked: a count n >= 1, or a list of distinct seeds in [0, 2**63 - 1]."""
    if OmegaConf.is_config(value):
        value = OmegaConf.to_container(value)
    if isinstance(value, bool):
        raise ConfigError(f"sweep.seeds: expected a count >= 1 or a list of seeds, got {value!r}")
    if isinstance(value, int):
        if value < 1:
            raise ConfigError(f"sweep.seeds: a count must be >= 1, got {value}")
        return value
    if isinstance(value, str) and value.strip().isdigit():
        return _seed_spec(int(value))
    if isinstance(value, (list, tuple)):
        if not value:
            raise ConfigError("sweep.seeds: the list of seeds is empty")
        bad = [v for v in value if isinstance(v, bool) or not isinstance(v, int) or not 0 <= v <= C.MAX_SEED]
        if bad:
            raise ConfigError(f"sweep.seeds: seeds must be integers in [0, 2**63 - 1], got {bad[0]!r}")
        if len(set(value)) != len(value):
            raise ConfigError(f"sweep.seeds: a seed is listed twice in {list(value)}")
        return [int(v) for v in value]
    raise ConfigError(f"sweep.seeds: expected a count >= 1 or a list of seeds, got {value!r}")


def sweep_seeds(value: Any) -> list[int]:
    """``sweep.seeds``: a count n (seeds 0..n-1) or a list of distinct seeds >= 0."""
    spec = _seed_spec(value)
    return list(range(spec)) if isinstance(spec, int) else spec


def check_size(base: DictConfig, grid: Mapping[str, Sequence[Any]], masks: Sequence[str]) -> None:
    """Count the runs of a sweep without expanding it (mask subsets x grid values x seeds); a
    :class:`ConfigError` naming ``sweep.max_runs`` when there are more than that limit."""
    sw = base.sweep
    limit = sw.max_runs
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
        raise ConfigError(f"sweep.max_runs: must be an integer >= 1, got {limit!r}")
    problem = C.int_maximum_problem("sweep.max_runs", limit)
    if problem:
        raise ConfigError(problem)
    spec = _seed_spec(sw.seeds)
    seeds = spec if isinstance(spec, int) else len(spec)
    cells = math.prod(len(v) for v in grid.values())
    total = 2 ** len(masks) * cells * seeds
    if total > limit:
        top = C.INT_MAXIMA["sweep.max_runs"]
        fix = f"set sweep.max_runs={total} to run it, or make the grid smaller" if total <= top else f"split it into sweeps of at most {top} runs"
        raise ConfigError(
            f"sweep.max_runs: this sweep has {total} runs ({2 ** len(masks)} mask subsets x {cells} grid "
            f"combinations x {seeds} seeds), more than sweep.max_runs={limit}; {fix}"
        )


def grid_values(base: DictConfig) -> dict[str, list[Any]]:
    problems: list[str] = []
    grid: dict[str, list[Any]] = {}
    for key, values in cast(dict[str, Any], OmegaConf.to_container(base.sweep.grid)).items():  # a section is a dict
        where = f"sweep.grid.{key}"
        if key.split(".")[0] == "sweep":
            problems.append(f"{where}: the sweep section itself cannot be swept")
        elif key in RESERVED_GRID_KEYS:
            problems.append(f"{where}: set by the sweep; use {RESERVED_GRID_KEYS[key]} instead")
        elif not isinstance(values, list) or not values:
            problems.append(f"{where}: expected a non-empty list of values, got {values!r}")
        else:
            counts = Counter(format_value(v) for v in values)
            dup = sorted(s for s, c in counts.items() if c > 1)
            if dup:
                problems.append(f"{where}: value {dup[0]} is listed twice")
            else:
                grid[str(key)] = values
    if problems:
        raise ConfigError("; ".join(problems))
    return grid


def expand(base: DictConfig, reg: Registry) -> list[SweepRun]:
    """The runs of a sweep config: masks x grid x seeds, in that nesting order.

    Checks the sweep section's structure (keys, masks, seeds) and its size (at most
    ``sweep.max_runs`` runs, counted before expanding) and applies the values; the runs' values
    themselves are checked by :func:`plan_sweep`. Raises :class:`ConfigError`.
    """
    sw = base.sweep
    grid = grid_values(base)
    masks = [str(m) for m in sw.masks]
    problems: list[str] = C.sweep_problems(base)  # executor and Ray settings: as fit checks them
    for m in masks:
        if m not in reg.losses:
            problems.append(f"sweep.masks: unknown loss {m!r}; registered: {', '.join(reg.losses) or 'none'}")
    if len(set(masks)) != len(masks):
        problems.append(f"sweep.masks: a loss is listed twice in {masks}")
    if not isinstance(sw.max_runs_per_batch, int) or sw.max_runs_per_batch < 1:
        problems.append(f"sweep.max_runs_per_batch: must be >= 1, got {sw.max_runs_per_batch}")
    if problems:
        raise ConfigError("; ".join(problems))
    check_size(base, grid, masks)  # before anything is expanded: a huge grid is refused at once
    seeds = sweep_seeds(sw.seeds)

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
                        problems.append(f"sweep.grid.{key}: value {format_value(value)}: {C.one_line(exc)}")
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


