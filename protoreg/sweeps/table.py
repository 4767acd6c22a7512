"""Rows of ``results.csv`` as numbers, grouped by cell (N x mask x other swept values), and
their summary statistics. Shared by the sweep report, the plots and the studies."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np

def to_float(s: Any) -> float:
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


def pm(s: Stats) -> str:
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
        return sorted(vals, key=lambda t: tuple((to_float(v), v) for v in t))

    def values(self, metric: str, *, mask: str, n: int | None = None, other: tuple[str, ...] | None = None) -> list[float]:
        return [
            to_float(r[metric])
            for r in self.rows
            if r["mask"] == mask and (n is None or int(r["n"]) == n) and (other is None or self.other(r) == other)
        ]

    def stats(self, metric: str, **where: Any) -> Stats:
        return Stats.of(self.values(metric, **where))

    def failed_count(self, *, mask: str, n: int, other: tuple[str, ...]) -> int:
        return sum(1 for r in self.all_rows if r["mask"] == mask and int(r["n"]) == n and self.other(r) == other and r.get("status") == "failed")



def label(t: Table, other: tuple[str, ...]) -> str:
    return ", ".join(f"{k}={v}" for k, v in zip(t.keys, other))

