"""The grid of a sweep (protoreg.sweeps.grid), no training: value formatting, mask subsets,
seeds, the size check before expansion, the grid section's refusals and run names."""

from __future__ import annotations

import itertools
import math

import pytest
from omegaconf import OmegaConf

from helpers import quick
from protoreg import config as C
from protoreg.errors import ConfigError
from protoreg.plugins.registry import Registry
from protoreg.sweeps import grid as G


@pytest.fixture(autouse=True)
def _no_plugins(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PROTOREG_DISABLE_PLUGIN_AUTOLOAD", "1")


# ----------------------------------------------------------------- format_value
@pytest.mark.parametrize(
    ("value", "text"),
    [
        (True, "true"),
        (False, "false"),
        (None, "null"),
        (0.1, "0.1"),
        (1e-07, "1e-07"),
        (2.0, "2.0"),
        (3, "3"),
        ("abc", "abc"),
        ([1, 2.5], "[1,2.5]"),
        ((1, "a"), "(1,'a')"),
        ({"a": 1}, "{'a':1}"),
        (OmegaConf.create([1, 2]), "[1,2]"),
        (OmegaConf.create({"k": [1, 2]}), "{'k':[1,2]}"),
    ],
)
def test_format_value(value: object, text: str) -> None:
    assert G.format_value(value) == text


def test_format_value_keeps_distinct_floats_distinct() -> None:
    assert G.format_value(0.1 + 0.2) == "0.30000000000000004" != G.format_value(0.3)
    assert G.format_value(1) != G.format_value(1.0)  # an int and a float are different grid values


# ----------------------------------------------------------------- masks
@pytest.mark.parametrize("k", [0, 1, 2, 4])
def test_mask_subsets_against_brute_force(k: int) -> None:
    masks = [f"m{i}" for i in range(k)]
    subsets = G.mask_subsets(masks)
    assert len(subsets) == 2**k
    # every on/off assignment, each once
    brute = {tuple(m for m, on in zip(masks, bits) if on) for bits in itertools.product([0, 1], repeat=k)}
    assert set(subsets) == brute and len(set(subsets)) == len(subsets)
    # by size, and within a size in ``masks`` order (lexicographic in positions)
    assert [len(s) for s in subsets] == sorted(len(s) for s in subsets)
    for size in range(k + 1):
        same = [tuple(masks.index(m) for m in s) for s in subsets if len(s) == size]
        assert same == sorted(same)


def test_mask_name() -> None:
    assert G.mask_name([]) == "none"
    assert G.mask_name(("coverage",)) == "coverage"
    assert G.mask_name(["coverage", "overlap"]) == "coverage+overlap"


# ----------------------------------------------------------------- seeds
@pytest.mark.parametrize(
    ("value", "seeds"),
    [
        (1, [0]),
        (3, [0, 1, 2]),
        ("2", [0, 1]),
        (" 4 ", [0, 1, 2, 3]),
        ([7, 3], [7, 3]),  # a list keeps its order
        ([0, C.MAX_SEED], [0, 2**63 - 1]),
        (OmegaConf.create([5, 6]), [5, 6]),
    ],
)
def test_sweep_seeds(value: object, seeds: list[int]) -> None:
    assert G.sweep_seeds(value) == seeds


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (0, "sweep.seeds: a count must be >= 1, got 0"),
        (-2, "sweep.seeds: a count must be >= 1, got -2"),
        (True, "sweep.seeds: expected a count >= 1 or a list of seeds, got True"),
        (2.0, "sweep.seeds: expected a count >= 1 or a list of seeds, got 2.0"),
        ("two", "sweep.seeds: expected a count >= 1 or a list of seeds, got 'two'"),
        ([], "sweep.seeds: the list of seeds is empty"),
        ([1, -1], "sweep.seeds: seeds must be integers in [0, 2**63 - 1], got -1"),
        ([1, 2**63], "sweep.seeds: seeds must be integers in [0, 2**63 - 1], got 9223372036854775808"),
        ([1, 2.0], "sweep.seeds: seeds must be integers in [0, 2**63 - 1], got 2.0"),
        ([False], "sweep.seeds: seeds must be integers in [0, 2**63 - 1], got False"),
        ([3, 1, 3], "sweep.seeds: a seed is listed twice in [3, 1, 3]"),
    ],
)
def test_bad_seeds_are_refused_with_the_value(value: object, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        G.sweep_seeds(value)
    assert str(info.value) == message


# ----------------------------------------------------------------- check_size
def _base(max_runs: object, seeds: object = 2) -> object:
    return OmegaConf.create({"sweep": {"max_runs": max_runs, "seeds": seeds}})


def test_check_size_accepts_exactly_the_limit() -> None:
    grid = {"a": [1, 2, 3], "b": [0.1, 0.2]}
    G.check_size(_base(2**2 * 6 * 2), grid, ["m1", "m2"])  # 4 subsets x 6 cells x 2 seeds = 48
    with pytest.raises(ConfigError) as info:
        G.check_size(_base(47), grid, ["m1", "m2"])
    assert str(info.value) == (
        "sweep.max_runs: this sweep has 48 runs (4 mask subsets x 6 grid combinations x 2 seeds), "
        "more than sweep.max_runs=47; set sweep.max_runs=48 to run it, or make the grid smaller"
    )


def test_check_size_counts_a_seed_list_and_an_empty_grid() -> None:
    G.check_size(_base(3, [4, 9, 11]), {}, [])  # 1 x 1 x 3
    with pytest.raises(ConfigError, match=r"this sweep has 3 runs \(1 mask subsets x 1 grid combinations x 3 seeds\)"):
        G.check_size(_base(2, [4, 9, 11]), {}, [])


def test_check_size_beyond_the_largest_limit_says_to_split() -> None:
    top = C.INT_MAXIMA["sweep.max_runs"]
    grid = {"a": list(range(1000)), "b": list(range(1000))}
    with pytest.raises(ConfigError) as info:
        G.check_size(_base(top), grid, [f"m{i}" for i in range(10)])  # 1024 * 10**6 > 10**9
    total = 1024 * 10**6 * 2  # x 2 seeds
    assert total > top
    assert str(info.value).endswith(f"more than sweep.max_runs={top}; split it into sweeps of at most {top} runs")
    assert f"this sweep has {total} runs" in str(info.value)


@pytest.mark.parametrize(
    ("limit", "message"),
    [
        (0, "sweep.max_runs: must be an integer >= 1, got 0"),
        (True, "sweep.max_runs: must be an integer >= 1, got True"),
        (1.5, "sweep.max_runs: must be an integer >= 1, got 1.5"),
        (10**9 + 1, "sweep.max_runs: must be <= 1000000000, got 1000000001"),
    ],
)
def test_check_size_refuses_a_bad_limit(limit: object, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        G.check_size(_base(limit), {}, [])
    assert str(info.value) == message


# ----------------------------------------------------------------- grid_values
def test_grid_values_keeps_the_lists_in_order() -> None:
    base = OmegaConf.create({"sweep": {"grid": {"data.n": [5, 3], "losses.coverage.tau": [0.5, 1, 2.0]}}})
    assert G.grid_values(base) == {"data.n": [5, 3], "losses.coverage.tau": [0.5, 1, 2.0]}


def test_grid_values_reports_every_problem_at_once() -> None:
    base = OmegaConf.create(
        {
            "sweep": {
                "grid": {
                    "sweep.seeds": [1, 2],
                    "train.seed": [1, 2],
                    "data.n": [],
                    "data.dim": 3,
                    "train.lr": [0.1, 0.2, 0.1],
                    "train.steps": [10, 20],
                }
            }
        }
    )
    with pytest.raises(ConfigError) as info:
        G.grid_values(base)
    assert str(info.value) == "; ".join(
        [
            "sweep.grid.sweep.seeds: the sweep section itself cannot be swept",
            "sweep.grid.train.seed: set by the sweep; use sweep.seeds instead",
            "sweep.grid.data.n: expected a non-empty list of values, got []",
            "sweep.grid.data.dim: expected a non-empty list of values, got 3",
            "sweep.grid.train.lr: value 0.1 is listed twice",
        ]
    )


def test_grid_values_duplicates_are_by_written_value() -> None:
    # 1 and 1.0 are written differently ("1", "1.0"): not a duplicate; two 1.0 are
    assert G.grid_values(OmegaConf.create({"sweep": {"grid": {"a": [1, 1.0]}}})) == {"a": [1, 1.0]}
    with pytest.raises(ConfigError, match=r"^sweep\.grid\.a: value 1\.0 is listed twice$"):
        G.grid_values(OmegaConf.create({"sweep": {"grid": {"a": [1.0, 2, 1.0]}}}))


# ----------------------------------------------------------------- expand
def test_expand_nests_masks_then_grid_then_seeds(reg: Registry) -> None:
    runs = G.expand(quick("sweep.masks=[coverage, overlap]", "sweep.seeds=[9, 4]"), reg)
    # a run's mask names every active loss in the config's order: separation is on in all of them
    masks = ["separation", "coverage+separation", "separation+overlap", "coverage+separation+overlap"]
    expected = [f"{m}__data.n={n}__seed={s}" for m in masks for n in (3, 5) for s in (9, 4)]
    assert [r.name for r in runs] == expected
    assert [r.index for r in runs] == list(range(len(expected)))
    assert [r.mask for r in runs] == [m for m in masks for _ in range(4)]
    for r in runs:
        assert r.cfg.train.seed == r.seed and r.values == {"data.n": r.cfg.data.n}
        on = set(r.mask.split("+")) - {"separation"}
        assert {k for k in ("coverage", "overlap") if r.cfg.losses[k].weight > 0} == on
        assert r.cfg.losses.separation.weight > 0


def test_expand_without_a_grid_names_only_mask_and_seed(reg: Registry) -> None:
    cfg = quick("sweep.masks=[]", "sweep.seeds=3")
    cfg.sweep.grid = {}
    runs = G.expand(cfg, reg)
    assert [r.name for r in runs] == [f"coverage+separation+overlap__seed={i}" for i in range(3)]
    assert all(r.values == {} for r in runs)


def test_expand_with_no_active_loss_is_the_none_mask(reg: Registry) -> None:
    cfg = quick("sweep.masks=[]", "sweep.seeds=1", "losses.coverage.weight=0", "losses.separation.weight=0", "losses.overlap.weight=0")
    cfg.sweep.grid = {}
    (run,) = G.expand(cfg, reg)
    assert (run.name, run.mask, run.seed) == ("none__seed=0", "none", 0)


def test_expand_refuses_unknown_and_repeated_masks_together(reg: Registry) -> None:
    with pytest.raises(ConfigError) as info:
        G.expand(quick("sweep.masks=[coverage, nosuch, coverage]"), reg)
    msg = str(info.value)
    assert "sweep.masks: unknown loss 'nosuch'; registered: " in msg
    assert "sweep.masks: a loss is listed twice in ['coverage', 'nosuch', 'coverage']" in msg


def test_expand_checks_the_size_before_expanding(reg: Registry) -> None:
    with pytest.raises(ConfigError, match=r"^sweep\.max_runs: this sweep has 32 runs \(8 mask subsets x 2 grid combinations x 2 seeds\), more than sweep\.max_runs=31;"):
        G.expand(quick("sweep.max_runs=31"), reg)
    assert len(G.expand(quick("sweep.max_runs=32"), reg)) == 32


def test_expand_run_names_are_unique_and_parse_back(reg: Registry) -> None:
    runs = G.expand(quick("sweep.grid={data.n: [3, 5], losses.coverage.tau: [0.5, 1.0]}", "sweep.masks=[coverage]"), reg)
    assert len(runs) == 2 * 2 * 2 * 2 and len({r.name for r in runs}) == len(runs)
    for r in runs:
        parts = r.name.split("__")
        assert parts[0] == r.mask and parts[-1] == f"seed={r.seed}"
        assert parts[1:-1] == [f"{k}={G.format_value(v)}" for k, v in r.values.items()]
        assert math.isclose(r.cfg.losses.coverage.tau, r.values["losses.coverage.tau"])
