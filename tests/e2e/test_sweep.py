"""``protoreg sweep`` end to end: batched == alone, resume, crash safety, refusal of a different
config, failed runs, and the CLI (configs/paper_quick.yaml). Workflow tests: marked ``slow``."""

from __future__ import annotations

import csv
import math
import signal
import warnings
from pathlib import Path

import pytest
import torch

from protoreg.sweeps import grid as G
from protoreg.sweeps import plan as P
from protoreg.sweeps import store
from protoreg.training import train_group
from protoreg.frontend.cli import main
from protoreg.errors import RunDirError
from protoreg.evaluation.evaluate import METRIC_NAMES
from helpers import FAST_SWEEP as FAST
from helpers import QUICK, TrainCounter, quick, run_quiet
from protoreg.plugins.registry import Registry

pytestmark = pytest.mark.slow


@pytest.fixture(autouse=True)
def _no_plugins(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PROTOREG_DISABLE_PLUGIN_AUTOLOAD", "1")


def read_csv(path: Path) -> tuple[list[str], list[list[str]]]:
    with path.open(newline="", encoding="utf-8") as fh:
        rows = list(csv.reader(fh))
    return rows[0], rows[1:]


# ----------------------------------------------------------- batched == alone
def test_batched_run_matches_the_same_run_trained_alone(reg: Registry, tmp_path: Path) -> None:
    from omegaconf import OmegaConf

    from protoreg import fit

    over = ("trainer.precision=64-true", "trainer.accelerator=cpu", "sweep.grid={data.n: [5]}", "train.steps=60")
    res = run_quiet(quick(*over), tmp_path / "sw", reg)
    assert res.trained == 16
    _, rows = read_csv(tmp_path / "sw" / store.RESULTS)
    header = P.result_columns(["data.n"])
    got = {r[0]: dict(zip(header, r)) for r in rows}
    runs = {r.name: r for r in G.expand(quick(*over), reg)}
    for name in ("coverage+separation__data.n=5__seed=1", "separation+overlap__data.n=5__seed=0"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the pairing and expulsion warnings of fit
            OmegaConf.save(runs[name].cfg, tmp_path / f"{name}.yaml")
            alone = fit(config=tmp_path / f"{name}.yaml", out=tmp_path / name, reg=reg)
        assert alone.metrics["steps"] == 60
        for key in ("fit_mse", "recon_error", "specialization_ratio", "outside_hull_frac"):
            a, b = float(got[name][key]), float(alone.metrics[key])
            assert math.isclose(a, b, rel_tol=1e-6, abs_tol=1e-6), (name, key, a, b)


# ------------------------------------------------------------ resume & safety
def test_resume_skips_finished_runs(reg: Registry, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    counter = TrainCounter()
    out = tmp_path / "sw"
    first = run_quiet(quick(), out, reg, engine=counter)
    assert counter.runs == 32 and first.trained == 32 and first.exit_code == 0
    before = (out / store.RESULTS).read_text()
    again = run_quiet(quick(), out, reg, engine=counter)
    assert counter.runs == 32  # nothing trained the second time
    assert again.skipped == 32 and again.trained == 0
    assert (out / store.RESULTS).read_text() == before
    # a different max_runs_per_batch (or study) is not a different sweep
    run_quiet(quick("sweep.max_runs_per_batch=4", "sweep.study=null"), out, reg, engine=counter)
    assert counter.runs == 32


def test_a_different_config_is_refused(reg: Registry, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "sw"
    run_quiet(quick("sweep.grid={data.n: [3]}"), out, reg)
    counter = TrainCounter()
    before = (out / store.RESULTS).read_text()
    with pytest.raises(RunDirError, match=r"different config.*train\.steps: 30 -> 31"):
        run_quiet(quick("sweep.grid={data.n: [3]}", "train.steps=31"), out, reg, engine=counter)
    code = main(["sweep", "--config", str(QUICK), "--out", str(out), *FAST, "sweep.grid={data.n: [3]}", "sweep.seeds=3"])
    assert code == 2
    assert counter.runs == 0 and (out / store.RESULTS).read_text() == before
    # a directory that is not a sweep
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    with pytest.raises(RunDirError, match="not a sweep directory"):
        run_quiet(quick(), other, reg)


def test_a_crash_leaves_whole_rows_and_the_rerun_completes(reg: Registry, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "sw"
    counter = TrainCounter(fail_on_batch=2)
    with pytest.raises(RuntimeError, match="simulated crash"):
        run_quiet(quick(), out, reg, engine=counter)
    header, rows = read_csv(out / store.RESULTS)
    assert header == P.result_columns(["data.n"])
    assert len(rows) == 16 and all(len(r) == len(header) for r in rows)
    assert {r[header.index("n")] for r in rows} == {"3"} and {r[header.index("status")] for r in rows} == {"completed"}
    _, protos = read_csv(out / store.PROTOTYPES)
    assert {p[0] for p in protos} == {r[0] for r in rows}
    # a crash while results.csv is being replaced leaves the previous file
    import protoreg.rundirs.io as pio

    def broken_replace(src: str, dst: str) -> None:
        raise OSError("disk full")

    counter2 = TrainCounter()
    monkeypatch.setattr(pio.os, "replace", broken_replace)
    with pytest.raises(OSError, match="disk full"):
        run_quiet(quick(), out, reg, engine=counter2)
    monkeypatch.undo()
    monkeypatch.setenv("PROTOREG_DISABLE_PLUGIN_AUTOLOAD", "1")
    assert read_csv(out / store.RESULTS)[1] == rows
    # the rerun trains only what is missing
    counter3 = TrainCounter()
    res = run_quiet(quick(), out, reg, engine=counter3)
    assert counter3.runs == 16 and res.skipped == 16
    _, rows = read_csv(out / store.RESULTS)
    assert len(rows) == 32 and len({r[0] for r in rows}) == 32


def test_an_interrupted_batch_is_not_recorded(reg: Registry, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def interrupted(group, geometry, **kw):  # type: ignore[no-untyped-def]
        group.module.request_stop(signal.SIGINT)  # as SIGINT does: stop after the current step
        return train_group(group, geometry, **kw)

    out = tmp_path / "sw"
    res = run_quiet(quick(), out, reg, engine=interrupted)
    assert res.interrupted and res.exit_code == 130
    _, rows = read_csv(out / store.RESULTS)
    assert rows == []
    assert run_quiet(quick(), out, reg).trained == 32


def test_a_diverging_run_is_marked_failed_and_the_others_finish(reg: Registry, tmp_path: Path) -> None:
    import protoreg
    from protoreg.plugins.registry import LossEntry

    class Bomb(protoreg.StructuralLoss):
        name = "bomb"
        role = "neutral"
        defaults = {"armed": 0.0}
        vectorized = True

        def __call__(self, ctx, *, armed):  # type: ignore[no-untyped-def]
            val = ctx.prototypes.sum(dim=(1, 2)) * 0.0
            return torch.where(ctx.per_run(armed) > 0.5, val + float("nan"), val)

    reg2 = Registry(dict(reg.losses), dict(reg.datasets), dict(reg.studies))
    reg2.losses["bomb"] = LossEntry(Bomb(), "tests")
    cfg = quick("sweep.masks=[coverage]", "losses.bomb.weight=1.0", "sweep.grid={losses.bomb.armed: [0.0, 1.0]}")
    res = run_quiet(cfg, tmp_path / "sw", reg2)
    assert res.runs == 16 and res.failed == 8 and res.exit_code == 1  # masks x armed x data.n x seeds
    header, rows = read_csv(tmp_path / "sw" / store.RESULTS)
    col = {h: i for i, h in enumerate(header)}
    for r in rows:
        armed = r[col["losses.bomb.armed"]] == "1.0"
        assert r[col["status"]] == ("failed" if armed else "completed")
        if armed:
            assert "bomb" in r[col["reason"]] and r[col["steps"]] == "0"
        else:
            assert r[col["reason"]] == "" and r[col["steps"]] == "30" and math.isfinite(float(r[col["fit_mse"]]))

    # Runs never interact: the healthy runs equal those of a sweep without the diverging ones.
    clean = quick("sweep.masks=[coverage]", "losses.bomb.weight=1.0", "sweep.grid={losses.bomb.armed: [0.0]}", "trainer.precision=64-true")
    mixed = quick("sweep.masks=[coverage]", "losses.bomb.weight=1.0", "sweep.grid={losses.bomb.armed: [0.0, 1.0]}", "trainer.precision=64-true")
    assert run_quiet(mixed, tmp_path / "mixed", reg2).failed == 8
    assert run_quiet(clean, tmp_path / "clean", reg2).failed == 0

    def healthy(out: Path) -> dict[tuple[str, str, str], list[float]]:
        header, rows = read_csv(out / store.RESULTS)
        c = {h: i for i, h in enumerate(header)}
        return {
            (r[c["mask"]], r[c["n"]], r[c["seed"]]): [float(r[c[m]]) for m in METRIC_NAMES]
            for r in rows
            if r[c["status"]] == "completed"
        }

    a, b = healthy(tmp_path / "mixed"), healthy(tmp_path / "clean")
    assert a.keys() == b.keys() and len(a) == 8
    for key in a:
        assert a[key] == pytest.approx(b[key], rel=1e-6, abs=1e-9), key


def test_a_loss_that_is_off_in_a_run_cannot_fail_it(reg: Registry, tmp_path: Path) -> None:
    """A loss is evaluated only on the runs where its weight is > 0: a loss that is NaN everywhere
    fails exactly the runs whose mask turns it on."""
    import protoreg
    from protoreg.plugins.registry import LossEntry

    class AlwaysNaN(protoreg.StructuralLoss):
        name = "alwaysnan"
        role = "neutral"
        defaults: dict[str, float] = {}

        def __call__(self, ctx):  # type: ignore[no-untyped-def]
            return ctx.prototypes.sum(dim=(1, 2)) * float("nan")

    reg2 = Registry(dict(reg.losses), dict(reg.datasets), dict(reg.studies))
    reg2.losses["alwaysnan"] = LossEntry(AlwaysNaN(), "tests")
    cfg = quick("sweep.masks=[coverage, alwaysnan]", "losses.alwaysnan.weight=1.0", "sweep.grid={data.n: [5]}")
    res = run_quiet(cfg, tmp_path / "sw", reg2)
    header, rows = read_csv(tmp_path / "sw" / store.RESULTS)
    col = {h: i for i, h in enumerate(header)}
    assert len({r[col["batch"]] for r in rows}) == 1  # both masks trained in one batch
    for r in rows:
        on = "alwaysnan" in r[col["mask"]].split("+")
        assert r[col["status"]] == ("failed" if on else "completed"), r[col["mask"]]
    assert res.failed == sum("alwaysnan" in r[col["mask"]] for r in rows) > 0


# ------------------------------------------------------------------- the CLI
def test_cli_end_to_end(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "sw"
    code = main(["sweep", "--config", str(QUICK), "--out", str(out), *FAST])
    assert code == 0, capsys.readouterr().err
    header, rows = read_csv(out / store.RESULTS)
    assert header[:5] == ["run", "mask", "n", "seed", "data.n"]
    assert header[5:9] == ["fit_mse", "recon_error", "specialization_ratio", "outside_hull_frac"]
    assert header[5 : 5 + len(METRIC_NAMES)] == list(METRIC_NAMES)
    assert header[-6:] == ["steps", "seconds", "check_seconds", "status", "reason", "batch"]
    col = {h: i for i, h in enumerate(header)}
    # each run's share of its batch's time, and of the geometry checks within it
    assert all(0 < float(r[col["check_seconds"]]) < float(r[col["seconds"]]) for r in rows)
    assert len(rows) == 32 and {r[1] for r in rows} >= {"none", "coverage", "coverage+separation+overlap"}
    summary = (out / store.SUMMARY).read_text()
    for claim in ("C1", "C2", "C3", "C4"):
        assert f"**{claim} — " in summary
    assert "| 5 | coverage | 2 |" in summary  # the N x mask table
    for png in ("recon_error_vs_n.png", "specialization_vs_n.png", "outside_hull_vs_n.png", "prototypes_n5.png"):
        assert (out / png).stat().st_size > 1000 and f"]({png})" in summary
    tb = out / "tb"
    assert sorted(p.name for p in tb.iterdir()) == ["batch_000", "batch_001"]
    assert list((tb / "batch_000").glob("events.out.tfevents.*"))
    hp = tb / "batch_001" / "coverage__data.n=5__seed=1"
    assert list(hp.glob("events.out.tfevents.*"))  # an HParams session per run
    printed = capsys.readouterr().out
    assert "32/32 runs finished" in printed


def test_tau_grid_gives_the_c4_check_and_the_tau_plot(tmp_path: Path) -> None:
    out = tmp_path / "tau"
    code = main(
        ["sweep", "--config", str(QUICK), "--out", str(out), *FAST, "sweep.masks=[separation]", "losses.coverage.weight=0", "losses.overlap.weight=0",
         "sweep.grid={data.n: [5], losses.separation.tau: [0.1, 1.0, 10.0]}"]
    )
    assert code == 0
    summary = (out / store.SUMMARY).read_text()
    assert "**C4 — NOT EVALUATED" not in summary and "at the nominal τ = 0.1" in summary
    assert (out / "tau_sweep.png").is_file()
    header, rows = read_csv(out / store.RESULTS)
    assert len(rows) == 2 * 3 * 2
    # the baseline does not depend on tau: trained once per seed, listed at each tau
    metrics = [header.index(m) for m in METRIC_NAMES]
    base = [r for r in rows if r[1] == "none"]
    assert len(base) == 6 and len({tuple(r[i] for i in metrics) for r in base}) == 2
    sep = [r for r in rows if r[1] == "separation"]
    assert len({tuple(r[i] for i in metrics) for r in sep}) == 6
    with open(out / store.RESULTS, newline="") as fh:
        assert sum(1 for r in csv.DictReader(fh) if r["seconds"] == "0.0000") == 4




def test_batch_lines_say_when_the_geometry_checks_take_a_large_share(reg: Registry, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import time

    import protoreg.training.callbacks as cb

    quiet: list[str] = []
    run_quiet(quick("sweep.masks=[coverage]", "sweep.grid={data.n: [5]}", "sweep.seeds=2"), tmp_path / "quick", reg, echo=quiet.append)
    assert not any("geometry checks" in line for line in quiet)  # a second-long batch: nothing to say
    real = cb.GeometryCallback._check
    monkeypatch.setattr(cb.GeometryCallback, "_check", lambda self, *a, **k: (time.sleep(1.5), real(self, *a, **k))[1])
    lines: list[str] = []
    run_quiet(quick("sweep.masks=[coverage]", "sweep.grid={data.n: [5]}", "sweep.seeds=2"), tmp_path / "slow", reg, echo=lines.append)
    (line,) = [ln for ln in lines if ln.startswith("  batch 1/1 ")]
    seconds, checks = (float(w.rstrip("s),")) for w in line.split() if w[0].isdigit() and w.rstrip(",)").endswith("s"))
    assert "(geometry checks " in line and 4 * 1.5 <= checks <= seconds  # checks at steps 0, 10, 20, 30
