"""Sweep planning, no training: grid expansion, validation of every run before anything is
trained or written, the pairing line (configs/paper_quick.yaml)."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest

from helpers import QUICK, ROOT, TrainCounter, quick, run_quiet
from protoreg import config as C
from protoreg.frontend.cli import main
from protoreg.errors import ConfigError, ProtoregError
from protoreg.plugins.pairing import PairingWarning
from protoreg.plugins.registry import Registry
from protoreg.sweeps import grid as G
from protoreg.sweeps import plan as P


@pytest.fixture(autouse=True)
def _no_plugins(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PROTOREG_DISABLE_PLUGIN_AUTOLOAD", "1")


# ----------------------------------------------------------------- expansion
def test_mask_subsets_enumerate_every_on_off_mask() -> None:
    subsets = G.mask_subsets(["coverage", "separation", "overlap"])
    assert len(subsets) == 8 and len(set(subsets)) == 8
    assert subsets[0] == () and subsets[-1] == ("coverage", "separation", "overlap")
    assert [G.mask_name(s) for s in subsets[:2]] == ["none", "coverage"]


def test_grid_expansion_counts_names_and_settings(reg: Registry) -> None:
    runs = G.expand(quick(), reg)
    assert len(runs) == 8 * 2 * 2  # masks x data.n x seeds
    names = [r.name for r in runs]
    assert len(set(names)) == len(names)
    assert names[0] == "none__data.n=3__seed=0"
    assert "coverage+separation+overlap__data.n=5__seed=1" in names
    by = {r.name: r for r in runs}
    r = by["coverage+overlap__data.n=5__seed=1"]
    assert r.mask == "coverage+overlap" and r.seed == 1 and r.values == {"data.n": 5}
    assert r.cfg.data.n == 5 and r.cfg.train.seed == 1
    assert r.cfg.losses.coverage.weight == 0.1 and r.cfg.losses.overlap.weight == 0.1
    assert r.cfg.losses.separation.weight == 0.0  # off in this mask
    assert r.cfg.sweep.grid == {} and r.cfg.sweep.masks == []  # an ordinary fit config
    # seeds as an explicit list
    runs = G.expand(quick("sweep.seeds=[4, 7]"), reg)
    assert sorted({r.seed for r in runs}) == [4, 7] and len(runs) == 32
    # the shipped configs
    assert len(G.expand(C.load_config(ROOT / "configs" / "paper.yaml"), reg)) == 480
    tau = G.expand(C.load_config(ROOT / "configs" / "tau_sweep.yaml"), reg)
    assert len(tau) == 2 * 9 * 10 and {r.mask for r in tau} == {"none", "separation"}


@pytest.mark.parametrize(
    "override, key",
    [
        ("sweep.seeds=0", "sweep.seeds"),
        ("sweep.masks=[coverage, nosuchloss]", "sweep.masks"),
        ("sweep.grid={train.seed: [1, 2]}", "sweep.grid.train.seed"),
        ("sweep.grid={data.nn: [1, 2]}", "sweep.grid.data.nn"),
        ("sweep.grid={data.n: [3, 3]}", "sweep.grid.data.n"),
        ("sweep.max_runs_per_batch=0", "sweep.max_runs_per_batch"),
    ],
)
def test_bad_sweep_section_names_the_key(reg: Registry, override: str, key: str) -> None:
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        P.plan_sweep(quick(override), reg)


# ----------------------------------------------------------------- validation
@pytest.mark.slow  # a real fit or sweep
def test_every_run_is_validated_before_anything_is_trained_or_written(reg: Registry, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    counter = TrainCounter()
    out = tmp_path / "sw"
    # n=1 is invalid only in its own grid cell; the valid cells come first and are not trained
    with pytest.raises(ProtoregError, match=r"data\.n: must be >= 2, got 1") as info:
        run_quiet(quick("sweep.grid={data.n: [3, 1]}"), out, reg, engine=counter)
    assert "data.n=1" in str(info.value)  # names an example run
    assert counter.runs == 0 and not out.exists()
    # an 'on' mask loss without weight
    with pytest.raises(ProtoregError, match=r"losses\.separation\.weight"):
        run_quiet(quick("losses.separation.weight=0"), out, reg, engine=counter)
    assert counter.runs == 0 and not out.exists()
    # the CLI: exit 2, one line, nothing written
    code = main(["sweep", "--config", str(QUICK), "--out", str(out), "sweep.grid={data.n: [3, 1]}"])
    assert code == 2 and not out.exists()


def test_pairing_is_one_line_and_strict_refuses(reg: Registry, tmp_path: Path) -> None:
    with warnings.catch_warnings(record=True) as got:
        warnings.simplefilter("always")
        plan = P.plan_sweep(quick(), reg)
        line = P.pairing_line(plan)
    assert not [w for w in got if issubclass(w.category, PairingWarning)]  # none per run
    assert line is not None and line.count("runs)") == 3  # separation, overlap, separation+overlap
    assert set(plan.unpaired) == {"separation", "overlap", "separation+overlap"}
    with pytest.raises(ConfigError, match=r"pairing\.strict"):
        P.plan_sweep(quick("pairing.strict=true"), reg)
    # coverage always on, separation on/off: every repulsor is paired, strict is fine
    P.plan_sweep(quick("pairing.strict=true", "sweep.masks=[separation]", "losses.overlap.weight=0"), reg)


