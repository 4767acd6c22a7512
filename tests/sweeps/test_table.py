"""Rows of results.csv as numbers (protoreg.sweeps.table): parsing, summary statistics against
numpy, number formatting and grouping by cell."""

from __future__ import annotations

import math

import numpy as np
import pytest

from protoreg.sweeps.table import Stats, Table, fmt, label, pm, to_float


@pytest.mark.parametrize(("s", "v"), [("1.5", 1.5), ("3", 3.0), ("inf", math.inf), ("-1e-3", -0.001), (2, 2.0)])
def test_to_float(s: object, v: float) -> None:
    assert to_float(s) == v


@pytest.mark.parametrize("s", ["", "abc", None, "1,5"])
def test_to_float_of_a_non_number_is_nan(s: object) -> None:
    assert math.isnan(to_float(s))


def test_stats_against_numpy() -> None:
    a = [0.5, 2.0, 3.25, -1.0]
    s = Stats.of(a)
    assert (s.count, s.nonfinite) == (4, 0)
    assert s.mean == float(np.mean(a)) and s.std == float(np.std(a, ddof=1)) and s.median == float(np.median(a))


def test_stats_of_one_and_of_none() -> None:
    one = Stats.of([7.0])
    assert (one.count, one.mean, one.std, one.median, one.nonfinite) == (1, 7.0, 0.0, 7.0, 0)
    empty = Stats.of([])
    assert empty.count == 0 and empty.nonfinite == 0 and all(math.isnan(v) for v in (empty.mean, empty.std, empty.median))


def test_stats_with_non_finite_values_count_them_and_have_no_std() -> None:
    s = Stats.of([1.0, math.inf, math.nan, 2.0])
    assert s.count == 4 and s.nonfinite == 2 and math.isnan(s.std) and math.isnan(s.mean)
    t = Stats.of([1.0, math.inf])
    assert t.nonfinite == 1 and t.mean == math.inf and math.isnan(t.std)


@pytest.mark.parametrize(
    ("v", "text"),
    [(math.nan, "nan"), (math.inf, "inf"), (-math.inf, "-inf"), (3, "3"), (np.int64(12), "12"), (0.123456, "0.1235"), (12345.6, "1.235e+04"), (2.0, "2")],
)
def test_fmt(v: float, text: str) -> None:
    assert fmt(v) == text


def test_fmt_digits_and_pm() -> None:
    assert fmt(0.123456, 2) == "0.12"
    assert pm(Stats(3, 0.5, 0.0123, 0.5, 0)) == "0.5 ± 0.012"
    assert pm(Stats(1, 0.5, 0.0, 0.5, 0)) == "0.5"


ROWS = [
    {"run": "a", "mask": "coverage", "n": "5", "tau": "1.0", "status": "completed", "gap": "0.5"},
    {"run": "b", "mask": "none", "n": "3", "tau": "1.0", "status": "completed", "gap": "0.25"},
    {"run": "c", "mask": "coverage", "n": "5", "tau": "0.5", "status": "failed", "gap": ""},
    {"run": "d", "mask": "coverage", "n": "3", "tau": "10", "status": "completed", "gap": "nan"},
    {"run": "e", "mask": "extra", "n": "5", "tau": "1.0", "status": "completed", "gap": "1.5"},
    {"run": "f", "mask": "coverage", "n": "5", "tau": "1.0", "status": "completed", "gap": "0.75"},
]


def test_table_groups_rows_by_cell() -> None:
    t = Table(ROWS, ["data.n", "tau"], ["none", "coverage", "unused"])
    assert t.keys == ["tau"]  # N is its own axis
    assert [r["run"] for r in t.rows] == ["a", "b", "d", "e", "f"]  # completed only
    assert t.masks == ["none", "coverage", "extra"]  # the given order, then the rest as seen
    assert t.ns == [3, 5]
    assert t.others() == [("0.5",), ("1.0",), ("10",)]  # numerically, not as strings
    assert t.values("gap", mask="coverage", n=5, other=("1.0",)) == [0.5, 0.75]
    assert t.values("gap", mask="coverage", n=5, other=("0.5",)) == []  # the failed row is no value
    assert t.failed_count(mask="coverage", n=5, other=("0.5",)) == 1
    assert t.failed_count(mask="coverage", n=5, other=("1.0",)) == 0
    s = t.stats("gap", mask="coverage")
    assert s.count == 3 and s.nonfinite == 1
    assert label(t, ("1.0",)) == "tau=1.0"
