"""``protoreg sweep``: grid expansion, validation before training, batched == alone, resume,
crash safety, refusal of a different config, and the CLI end to end (configs/paper_quick.yaml)."""

from __future__ import annotations

import csv
import math
import signal
import warnings
from pathlib import Path

import pytest
import torch

from protoreg.studies import alba2026
from protoreg.sweeps import grid as G
from protoreg.sweeps import plan as P
from protoreg.sweeps import runner, store
from protoreg.sweeps.table import Table
from protoreg.training import train_group
from protoreg import config as C
from protoreg.cli import main
from protoreg.errors import ConfigError, ProtoregError, RunDirError
from protoreg.evaluate import METRIC_NAMES
from protoreg.pairing import PairingWarning
from protoreg.plugins import Registry

ROOT = Path(__file__).resolve().parents[1]
QUICK = ROOT / "configs" / "paper_quick.yaml"
FAST = ["train.steps=30", "train.log_every_n_steps=10", "geometry.every_n_steps=10"]


@pytest.fixture(autouse=True)
def _no_plugins(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PROTOREG_DISABLE_PLUGIN_AUTOLOAD", "1")


@pytest.fixture(scope="module")
def reg() -> Registry:
    import os

    old = os.environ.get("PROTOREG_DISABLE_PLUGIN_AUTOLOAD")
    os.environ["PROTOREG_DISABLE_PLUGIN_AUTOLOAD"] = "1"
    try:
        return Registry.load()
    finally:
        if old is None:
            del os.environ["PROTOREG_DISABLE_PLUGIN_AUTOLOAD"]
        else:
            os.environ["PROTOREG_DISABLE_PLUGIN_AUTOLOAD"] = old


def quick(*overrides: str) -> C.DictConfig:
    return C.load_config(QUICK, [*FAST, *overrides])


def run_quiet(cfg: C.DictConfig, out: Path, reg: Registry, **kw: object) -> runner.SweepOutcome:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return runner.run_sweep(cfg, out, reg=reg, plots=False, **kw)  # type: ignore[arg-type]


def read_csv(path: Path) -> tuple[list[str], list[list[str]]]:
    with path.open(newline="", encoding="utf-8") as fh:
        rows = list(csv.reader(fh))
    return rows[0], rows[1:]


class TrainCounter:
    """An engine (``run_sweep(engine=...)``) that counts runs trained and can crash on the k-th group."""

    def __init__(self, fail_on_batch: int | None = None) -> None:
        self.runs = 0
        self.batches = 0
        self.fail_on_batch = fail_on_batch

    def __call__(self, group, geometry, **kw):  # type: ignore[no-untyped-def]
        self.batches += 1
        if self.fail_on_batch is not None and self.batches == self.fail_on_batch:
            raise RuntimeError("simulated crash")
        self.runs += group.module.model.runs
        return train_group(group, geometry, **kw)


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
    import protoreg.io as pio

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
    from protoreg.plugins import LossEntry

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
    from protoreg.plugins import LossEntry

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
    assert header[-5:] == ["steps", "seconds", "status", "reason", "batch"]
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


# ---------------------------------------------------------------- the claims
def _rows(spec: dict[tuple[str, int, str], dict[str, float]], seeds: int = 3) -> list[dict[str, str]]:
    """Synthetic completed rows: (mask, n, tau) -> metric values (seed adds a tiny jitter)."""
    rows = []
    for (mask, n, tau), metrics in spec.items():
        for s in range(seeds):
            row = {"run": f"{mask}-{n}-{tau}-{s}", "mask": mask, "n": str(n), "seed": str(s), "status": "completed", "losses.separation.tau": tau}
            row.update({k: repr(v + 1e-4 * s) for k, v in metrics.items()})
            rows.append(row)
    return rows


def test_claim_checks_on_synthetic_results() -> None:
    base = {"fit_mse": 0.01, "recon_error": 0.10, "specialization_ratio": 0.5, "outside_hull_frac": 0.0}
    spec = {}
    for n in (5, 20):
        spec[("none", n, "0.1")] = dict(base)
        spec[("coverage", n, "0.1")] = dict(base, recon_error=0.05, specialization_ratio=0.7)
        spec[("overlap", n, "0.1")] = dict(base, recon_error=0.2, outside_hull_frac=0.3)
        spec[("coverage+overlap", n, "0.1")] = dict(base, recon_error=0.08, outside_hull_frac=0.1)
    t = Table(_rows(spec), ["data.n"], ["none", "coverage", "overlap", "coverage+overlap"])
    var = {5: 1 / 12, 20: 1 / 12}
    c1, c2, c3, c4 = alba2026.evaluate_claims(t, target_var=var, nominal_tau=0.1)
    assert (c1.verdict, c2.verdict, c3.verdict, c4.verdict) == ("PASS", "PASS", "PASS", "NOT EVALUATED")
    # coverage+overlap reconstructs best at N=20 only: C1 partial; equal specialization: C2 fails there
    spec[("coverage+overlap", 20, "0.1")]["recon_error"] = 0.01
    spec[("coverage", 5, "0.1")]["specialization_ratio"] = 0.5
    spec[("coverage", 20, "0.1")]["specialization_ratio"] = 0.5
    t = Table(_rows(spec), ["data.n"], ["none", "coverage", "overlap", "coverage+overlap"])
    c1, c2, c3, _ = alba2026.evaluate_claims(t, target_var=var, nominal_tau=0.1)
    assert c1.verdict == "PARTIAL" and "holds at 1 of 2 N" in c1.summary
    assert c2.verdict == "FAIL" and "✗ (equal)" in c2.details[0]
    # a much worse fit of the overlap-active masks breaks "fit about as well"
    spec[("overlap", 5, "0.1")]["fit_mse"] = 0.5
    t = Table(_rows(spec), ["data.n"], ["none", "coverage", "overlap", "coverage+overlap"])
    assert alba2026.claim_c3(t, var).verdict == "PARTIAL"
    # C4: separation-only expulsion over a tau grid
    taus = ["0.01", "0.1", "1.0", "10.0"]
    spec = {("none", 100, tau): dict(base, outside_hull_frac=0.01) for tau in taus}
    spec.update({("separation", 100, tau): dict(base, outside_hull_frac=f) for tau, f in zip(taus, (0.0, 0.02, 0.2, 0.5))})
    t = Table(_rows(spec), ["losses.separation.tau"], ["none", "separation"])
    assert alba2026.claim_c4(t, 0.1).verdict == "PASS"
    assert alba2026.claim_c4(t, 1.0).verdict == "PARTIAL"  # 0.2 is not near the baseline's 0.01
    spec.update({("separation", 100, tau): dict(base, outside_hull_frac=f) for tau, f in zip(taus, (0.5, 0.2, 0.02, 0.0))})
    t = Table(_rows(spec), ["losses.separation.tau"], ["none", "separation"])
    assert alba2026.claim_c4(t, 0.1).verdict == "FAIL"  # decreasing, and far from the baseline at tau=0.1
