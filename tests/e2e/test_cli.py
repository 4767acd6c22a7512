from __future__ import annotations

import csv
import time
import json
from pathlib import Path

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from protoreg.frontend.cli import main
from helpers import expected_check

pytestmark = pytest.mark.slow  # end-to-end workflow tests


def run_cli(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def read_tb(run_dir: Path) -> EventAccumulator:
    acc = EventAccumulator(str(run_dir / "tb"), size_guidance={"scalars": 0, "histograms": 0, "images": 0})
    acc.Reload()
    return acc


def test_fit_writes_every_artifact(tmp_path, capsys, no_autoload, fast):
    out = tmp_path / "run"
    code, stdout, err = run_cli(capsys, "fit", "--out", out, *fast, "losses.separation.weight=0.05")
    assert code == 0, err
    assert "protoreg fit: completed" in stdout and "recon_error=" in stdout
    names = {p.name for p in out.iterdir()}
    assert {"config.yaml", "metrics.json", "prototypes.csv", "prototypes.png", "checkpoints", "tb"} <= names
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")], "staging directory left behind"
    m = json.loads((out / "metrics.json").read_text())
    for key in ("fit_mse", "recon_error", "specialization_ratio", "outside_hull_frac", "n", "width", "seed", "losses"):
        assert key in m
    assert m["n"] == 8 and m["width"] == 8 and m["steps"] == 40 and m["status"] == "completed"
    # the run's time is visible without the Python API: training, and the checks within it
    assert 0 < m["check_seconds"] < m["train_seconds"]
    assert set(m["losses"]) == {"coverage", "separation"} and m["losses"]["separation"]["tau"] == 0.1
    rows = list(csv.DictReader((out / "prototypes.csv").open()))
    assert len(rows) == 8 and {"unit", "p0", "outside_hull"} <= set(rows[0])
    assert list((out / "checkpoints").glob("*.ckpt"))
    assert (out / "prototypes.png").stat().st_size > 1000
    cfg = (out / "config.yaml").read_text()
    assert "tau: 0.1" in cfg and "'n': 8" in cfg

    acc = read_tb(out)
    tags = set(acc.Tags()["scalars"])
    expected = {"loss/fit", "loss/coverage", "loss/separation", "loss/total", "metric/recon_error",
                "metric/specialization_ratio", "geometry/outside_hull_frac"}
    assert expected <= tags, expected - tags
    fit_steps = [e.step for e in acc.Scalars("loss/fit")]
    assert fit_steps == [10, 20, 30, 40]
    assert [e.step for e in acc.Scalars("geometry/outside_hull_frac")] == [0, 20, 40]
    assert acc.Scalars("metric/recon_error")[-1].value == pytest.approx(m["recon_error"], rel=1e-5)
    assert "geometry/prototype_positions" in acc.Tags()["histograms"]
    assert "geometry/prototypes" in acc.Tags()["images"]


def test_same_seed_gives_identical_metrics(tmp_path, capsys, no_autoload, fast):
    for name in ("a", "b"):
        assert run_cli(capsys, "fit", "--out", tmp_path / name, *fast, "losses.overlap.weight=0.1")[0] == 0
    def metrics(name: str) -> dict:  # everything but the wall-clock times
        m = json.loads((tmp_path / name / "metrics.json").read_text())
        return {k: v for k, v in m.items() if k not in ("train_seconds", "check_seconds")}

    a, b = metrics("a"), metrics("b")
    assert a == b
    assert run_cli(capsys, "fit", "--out", tmp_path / "c", *fast, "losses.overlap.weight=0.1", "train.seed=1")[0] == 0
    assert metrics("c") != a


@pytest.mark.parametrize(
    "args,needle",
    [
        (["data.n=1"], "data.n"),
        (["train.lr=0"], "train.lr"),
        (["losses.nosuch.weight=1"], "nosuch"),
        (["losses.separation.tau=-1"], "losses.separation.tau"),
        (["--config", "missing.yaml"], "missing.yaml"),
        (["data.path=nowhere.csv"], "nowhere.csv"),
        (["pairing.strict=true", "losses.coverage.weight=0", "losses.overlap.weight=1"], "no compatible attractor"),
        (["trainer.accelerator=tpu"], "trainer"),
    ],
)
def test_bad_input_exits_2_with_one_line_and_writes_nothing(tmp_path, capsys, no_autoload, fast, args, needle, monkeypatch):
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "run"
    code, stdout, err = run_cli(capsys, "fit", "--out", out, *fast, *args)
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("protoreg: error: ") and needle in lines[0], err
    assert "Traceback" not in err
    assert not out.exists()
    assert list(tmp_path.iterdir()) == [], "nothing half-written"


def test_bad_data_file_is_named(tmp_path, capsys, no_autoload, fast):
    f = tmp_path / "d.csv"
    f.write_text("x,y\n1,2\n3,oops\n")
    code, _, err = run_cli(capsys, "fit", "--out", tmp_path / "run", *fast, f"data.path={f}")
    assert code == 2 and "d.csv" in err and "oops" in err
    assert not (tmp_path / "run").exists()


def test_existing_output_is_not_overwritten(tmp_path, capsys, no_autoload, fast):
    out = tmp_path / "run"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    code, _, err = run_cli(capsys, "fit", "--out", out, *fast)
    assert code == 2 and "not empty" in err
    assert (out / "keep.txt").read_text() == "mine"
    empty = tmp_path / "empty"
    empty.mkdir()
    assert run_cli(capsys, "fit", "--out", empty, *fast)[0] == 0
    assert (empty / "metrics.json").is_file()


def test_default_out_is_runs_timestamp(tmp_path, capsys, no_autoload, fast, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert run_cli(capsys, "fit", *fast)[0] == 0
    (run,) = list((tmp_path / "runs").iterdir())
    assert (run / "metrics.json").is_file()


def test_file_data_and_config_file(tmp_path, capsys, no_autoload):
    f = tmp_path / "d.csv"
    f.write_text("a,b,t\n" + "".join(f"{i/10},{(i*7%10)/10},{i%3}\n" for i in range(12)))
    c = tmp_path / "c.yaml"
    c.write_text(f"data:\n  path: {f}\ntrain:\n  steps: 30\n  log_every_n_steps: 10\ntrainer:\n  accelerator: cpu\n")
    code, _, err = run_cli(capsys, "fit", "--config", c, "--out", tmp_path / "run")
    assert code == 0, err
    m = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert m["n"] == 12 and m["dim"] == 2 and m["parameterization"] == "radial"
    rows = list(csv.DictReader((tmp_path / "run" / "prototypes.csv").open()))
    assert {"p0", "p1"} <= set(rows[0])


def test_pairing_warning_is_printed(tmp_path, capsys, no_autoload, fast):
    code, _, err = run_cli(capsys, "fit", "--out", tmp_path / "r", *fast, "losses.coverage.weight=0", "losses.separation.weight=0.1")
    assert code == 0
    assert "no compatible attractor" in err and "'separation'" in err


def test_plugins_command_lists_builtins(capsys, no_autoload):
    code, out, _ = run_cli(capsys, "plugins")
    assert code == 0
    for needle in ("coverage", "attractor", "separation", "repulsor", "overlap", "uniform", "built-in"):
        assert needle in out


def test_usage_errors_exit_2(capsys):
    code, _, err = run_cli(capsys, "frobnicate")
    assert code == 2 and err.startswith("protoreg: error:")


@pytest.mark.gpu
def test_fit_on_gpu_logs_the_same_tags(tmp_path, capsys, no_autoload):
    out = tmp_path / "run"
    code, _, err = run_cli(capsys, "fit", "--out", out, "data.n=50", "data.dim=2", "train.steps=200", "trainer.accelerator=gpu",
                           "losses.separation.weight=0.1")
    assert code == 0, err
    m = json.loads((out / "metrics.json").read_text())
    assert m["status"] == "completed" and 0 <= m["outside_hull_frac"] <= 1
    tags = set(read_tb(out).Tags()["scalars"])
    assert {"loss/fit", "loss/coverage", "loss/separation", "geometry/outside_hull_frac", "metric/recon_error"} <= tags
    code, text, _ = run_cli(capsys, "check", out)
    assert (code, text.strip().splitlines()[-1].split()[0]) == expected_check(out)


def test_fit_says_when_the_geometry_checks_take_a_large_share(tmp_path, capsys, no_autoload, fast, monkeypatch):
    import protoreg
    import protoreg.frontend.cli as cli_mod
    import protoreg.training.callbacks as cb

    from protoreg.frontend.cli import _checks_notable

    assert _checks_notable(10.0, 2.0) and not _checks_notable(10.0, 1.9) and not _checks_notable(4.9, 4.0)
    assert not _checks_notable(None, 1.0) and not _checks_notable(10.0, None)
    code, stdout, _ = run_cli(capsys, "fit", "--out", tmp_path / "quick", *fast)
    assert code == 0 and "geometry checks took" not in stdout  # a second-long fit: nothing to say
    # the checks are timed: make each one take 0.3 s, and the 3 checks of this fit dominate it
    real = cb.GeometryCallback._check
    monkeypatch.setattr(cb.GeometryCallback, "_check", lambda self, *a, **k: (time.sleep(0.3), real(self, *a, **k))[1])
    run = protoreg.fit(*fast, out=tmp_path / "api")
    assert run.seconds is not None and run.check_seconds is not None
    assert 0.9 <= run.check_seconds <= run.seconds
    monkeypatch.setattr(cli_mod, "_checks_notable", lambda s, c: True)
    code, stdout, _ = run_cli(capsys, "fit", "--out", tmp_path / "slow", *fast)
    (line,) = [ln for ln in stdout.splitlines() if "geometry checks took" in ln]
    assert line.endswith("(geometry.every_n_steps=20 sets how often they run)")
    took, total = (float(w.rstrip("s")) for w in line.split() if w[0].isdigit() and w.endswith("s"))
    assert 0.9 <= took <= total
