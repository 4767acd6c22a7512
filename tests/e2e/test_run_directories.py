"""Hostile use of run directories, statuses and resume: the user's files survive, a status says
what happened, and a resumed run is the run it continues."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

import protoreg.config as C
import protoreg.rundirs.io as pio
import protoreg.api as wf
from helpers import cli, error_lines
from protoreg.rundirs.layout import LOCK, STAGE_PREFIX

pytestmark = pytest.mark.usefixtures("no_autoload")





def metrics(run: Path) -> dict[str, Any]:
    return json.loads((run / "metrics.json").read_text())


def protoreg_leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.rglob("*") if p.name == LOCK or p.name.startswith(STAGE_PREFIX) or ".partial-" in p.name)


def refused(capsys: pytest.CaptureFixture[str], needle: str, *argv: Any) -> str:
    """Run a command that must be refused: exit 2, one error line containing ``needle``."""
    code, _, err = cli(capsys, *argv)
    lines = error_lines(err)
    assert code == 2 and len(lines) == 1 and needle in lines[0], err
    return lines[0]


# ------------------------------------------------- run directories belong to the user
def test_resume_keeps_every_file_protoreg_did_not_write(tmp_path: Path, capsys: pytest.CaptureFixture[str], fast: list[str]) -> None:
    rd = tmp_path / "rd"
    assert cli(capsys, "fit", "--out", rd, *fast)[0] == 0
    (rd / "notes.md").write_text("notes")
    (rd / "analysis").mkdir()
    (rd / "analysis" / "plot.txt").write_text("mine")
    (rd / "tb" / "README").write_text("my tb notes")
    events_before = {p.name for p in (rd / "tb").iterdir()}
    code, _, err = cli(capsys, "fit", "--resume", rd, "train.steps=60")
    assert code == 0, err
    assert (rd / "notes.md").read_text() == "notes" and (rd / "analysis" / "plot.txt").read_text() == "mine"
    assert (rd / "tb" / "README").read_text() == "my tb notes"
    assert events_before < {p.name for p in (rd / "tb").iterdir()}, "TensorBoard history kept, new events added"
    assert metrics(rd)["steps"] == 60 and protoreg_leftovers(tmp_path) == []


def test_out_through_a_symlink_or_dot_is_written_in_place(tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, fast: list[str]) -> None:
    (tmp_path / "empty").mkdir()
    (tmp_path / "link").symlink_to("empty")
    code, _, err = cli(capsys, "fit", "--out", tmp_path / "link", *fast)
    assert code == 0, err
    assert (tmp_path / "link").is_symlink() and metrics(tmp_path / "empty")["status"] == "completed"
    here = tmp_path / "here"
    here.mkdir()
    monkeypatch.chdir(here)
    code, out, err = cli(capsys, "fit", "--out", ".", *fast)
    assert code == 0, err
    assert Path.cwd().samefile(here) and metrics(here)["status"] == "completed"
    assert protoreg_leftovers(tmp_path) == [] and sorted(p.name for p in tmp_path.iterdir()) == ["empty", "here", "link"]


def test_unicode_and_space_names_work(tmp_path: Path, capsys: pytest.CaptureFixture[str], fast: list[str]) -> None:
    rd = tmp_path / "mes résultats" / "run ✓ 1"
    code, out, err = cli(capsys, "fit", "--out", rd, *fast)
    assert code == 0 and str(rd) in out, err
    assert cli(capsys, "fit", "--resume", rd, "train.steps=50")[0] == 0 and metrics(rd)["steps"] == 50


@pytest.mark.parametrize(
    "make,needle",
    [
        (lambda p: p.write_text("x"), "exists and is not a directory"),
        (lambda p: p.symlink_to(p.parent / "missing"), "which does not exist"),
        (lambda p: (p.mkdir(), (p / "thesis.tex").write_text("x")), "not empty (thesis.tex)"),
        (lambda p: (p.mkdir(), (p / "sweep.yaml").write_text("a: 1")), "a sweep directory"),
    ],
    ids=["file", "dangling-symlink", "foreign-dir", "sweep-dir"],
)
def test_unusable_out_is_refused_before_training(tmp_path: Path, capsys: pytest.CaptureFixture[str], fast: list[str], make: Any, needle: str) -> None:
    out = tmp_path / "out"
    make(out)
    before = sorted(str(p) for p in tmp_path.rglob("*"))
    refused(capsys, needle, "fit", "--out", out, *fast)
    assert sorted(str(p) for p in tmp_path.rglob("*")) == before


def test_a_finished_run_is_never_overwritten(tmp_path: Path, capsys: pytest.CaptureFixture[str], fast: list[str]) -> None:
    rd = tmp_path / "rd"
    assert cli(capsys, "fit", "--out", rd, *fast)[0] == 0
    before = (rd / "metrics.json").read_bytes()
    refused(capsys, "--resume", "fit", "--out", rd, *fast)
    refused(capsys, "a sweep directory", "fit", "--resume", _sweep_dir(tmp_path))
    assert (rd / "metrics.json").read_bytes() == before


def _sweep_dir(tmp_path: Path) -> Path:
    sd = tmp_path / "sweep"
    sd.mkdir()
    (sd / "sweep.yaml").write_text("a: 1\n")
    return sd


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes anywhere")
def test_read_only_places_are_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str], fast: list[str]) -> None:
    parent = tmp_path / "ro"
    parent.mkdir()
    (parent / "rd").mkdir()
    parent.chmod(0o555)
    try:
        refused(capsys, "cannot create the output directory", "fit", "--out", parent / "new", *fast)
        assert cli(capsys, "fit", "--out", parent / "rd", *fast)[0] == 0, "an existing writable folder needs no writable parent"
        (parent / "rd").chmod(0o555)
        refused(capsys, "cannot write", "fit", "--resume", parent / "rd", "train.steps=50")
    finally:
        (parent / "rd").chmod(0o755)
        parent.chmod(0o755)


def test_a_second_writer_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str], fast: list[str]) -> None:
    rd = tmp_path / "rd"
    assert cli(capsys, "fit", "--out", rd, *fast)[0] == 0
    before = (rd / "metrics.json").read_bytes()
    with pio.exclusive_lock(rd / LOCK, "protoreg fit"):  # another process holds the run directory
        refused(capsys, "another protoreg fit is writing", "fit", "--resume", rd, "train.steps=60")
    assert (rd / "metrics.json").read_bytes() == before and not (rd / LOCK).exists()
    new = tmp_path / "new"
    new.mkdir()
    with pio.exclusive_lock(new / LOCK, "protoreg fit"):
        refused(capsys, "another protoreg fit is writing", "fit", "--out", new, *fast)
    assert list(new.iterdir()) == []


def test_killed_writer_second_writer_and_leftovers(tmp_path: Path, capsys: pytest.CaptureFixture[str], fast: list[str]) -> None:
    """A real second process: while it trains, another fit into its directory is refused; once it
    is killed (SIGKILL: no cleanup), the next fit there reports and removes its staging folder."""
    rd = tmp_path / "rd"
    env = {**os.environ, "PROTOREG_DISABLE_PLUGIN_AUTOLOAD": "1"}
    argv = [sys.executable, "-m", "protoreg", "fit", "--out", str(rd), "data.n=8", "train.steps=10000000", "trainer.accelerator=cpu", "geometry.every_n_steps=1000000"]
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while not (rd.is_dir() and any(p.name.startswith(STAGE_PREFIX) for p in rd.iterdir())):
            assert proc.poll() is None and time.monotonic() < deadline, "the first writer did not start"
            time.sleep(0.1)
        refused(capsys, "another protoreg fit is writing", "fit", "--out", rd, *fast)
    finally:
        proc.kill()
        proc.wait()
    (tmp_path / ".rd.partial-x1y2").mkdir()  # the sibling kind of leftover, of older versions
    code, _, err = cli(capsys, "fit", "--out", rd, *fast)
    assert code == 0, err
    assert err.count("removed the staging folder") == 2, err
    assert protoreg_leftovers(tmp_path) == [] and metrics(rd)["status"] == "completed"


# ------------------------------------------------------------------ a status never lies
@pytest.mark.parametrize(
    "setting,needle",
    [
        ("trainer.fast_dev_run=true", "trainer.fast_dev_run"),
        ("trainer.limit_train_batches=0.1", "trainer.limit_train_batches"),
        ("trainer.overfit_batches=1", "trainer.overfit_batches"),
        ("trainer.accumulate_grad_batches=2", "trainer.accumulate_grad_batches"),
        ("trainer.devices=2", "trainer.devices"),
        ("trainer.strategy=ddp", "trainer.strategy"),
    ],
)
def test_settings_that_would_lie_are_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str], fast: list[str], setting: str, needle: str) -> None:
    line = refused(capsys, needle, "fit", "--out", tmp_path / "rd", *fast, setting)
    assert "train.steps" in line or "one device" in line or "optimiser" in line
    assert list(tmp_path.iterdir()) == []


def test_max_time_is_recorded_as_stopped_and_resumable(tmp_path: Path, capsys: pytest.CaptureFixture[str], fast: list[str]) -> None:
    rd = tmp_path / "rd"
    code, out, err = cli(capsys, "fit", "--out", rd, *fast, "trainer.max_time=00:00:00:00")
    assert code == 0, err
    m = metrics(rd)
    assert m["status"] == "stopped" and m["steps"] < 40 and "trainer.max_time" in m["reason"] and f"{m['steps']} of 40 steps" in m["reason"]
    assert "stopped in" in out and m["reason"] in out
    code, _, err = cli(capsys, "fit", "--resume", rd, "trainer.max_time=null")
    assert code == 0, err
    assert metrics(rd)["status"] == "completed" and metrics(rd)["steps"] == 40


def test_an_early_end_without_a_known_cause_is_a_failure(tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, fast: list[str]) -> None:
    """Should a Lightning setting ever end training early unrefused, the run is not 'completed'."""
    monkeypatch.delitem(C.UNSUPPORTED_TRAINER_KEYS, "limit_train_batches")
    code, _, err = cli(capsys, "fit", "--out", tmp_path / "rd", *fast, "trainer.limit_train_batches=0.5")
    m = metrics(tmp_path / "rd")
    assert code == 1 and m["status"] == "failed" and m["steps"] == 20 and "after 20 of 40 steps" in m["reason"], err


@pytest.mark.parametrize("where", ["evaluation", "writing"])
def test_ctrl_c_after_training_still_writes_a_complete_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, fast: list[str], where: str
) -> None:
    from protoreg.training.callbacks import GeometryCallback

    def ctrl_c(real: Any) -> Any:
        def wrapped(*args: Any, **kwargs: Any) -> Any:
            os.kill(os.getpid(), signal.SIGINT)
            return real(*args, **kwargs)

        return wrapped

    if where == "evaluation":
        monkeypatch.setattr(GeometryCallback, "final_report", ctrl_c(GeometryCallback.final_report))
    else:
        monkeypatch.setattr(wf, "write_run", ctrl_c(wf.write_run))
    rd = tmp_path / "rd"
    code, _, err = cli(capsys, "fit", "--out", rd, *fast)
    assert code == 0 and "SIGINT arrived after training had finished" in err, err
    assert metrics(rd)["status"] == "completed" and (rd / "checkpoints" / "last.ckpt").is_file() and (rd / "prototypes.csv").is_file()
    assert protoreg_leftovers(tmp_path) == []
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler, "the previous handler is back"


# ------------------------------------------------------------------- resume is faithful
def test_resume_refuses_to_change_what_defines_the_run(tmp_path: Path, capsys: pytest.CaptureFixture[str], fast: list[str]) -> None:
    rd = tmp_path / "rs"
    assert cli(capsys, "fit", "--out", rd, *fast, "train.steps=20")[0] == 0
    snapshot = {p.relative_to(rd): p.read_bytes() for p in rd.rglob("*") if p.is_file()}
    line = refused(capsys, "data.seed", "fit", "--resume", rd, "data.seed=7")
    assert "null -> 7" in line and "train.steps" in line
    line = refused(capsys, "cannot change", "fit", "--resume", rd, "model.width=3", "train.lr=0.5", "losses.coverage.weight=1", "train.steps=40")
    assert line.startswith("protoreg: error: losses.coverage.weight, model.width, train.lr: cannot change when resuming")
    refused(capsys, "trainer.precision", "fit", "--resume", rd, "trainer.precision=64-true", "train.steps=40")
    refused(capsys, "already trained 20 steps", "fit", "--resume", rd)
    refused(capsys, "already trained 20 steps", "fit", "--resume", rd, "train.steps=10")
    assert {p.relative_to(rd): p.read_bytes() for p in rd.rglob("*") if p.is_file()} == snapshot, "nothing changed on disk"


def test_resume_longer_equals_training_longer(tmp_path: Path, capsys: pytest.CaptureFixture[str], fast: list[str]) -> None:
    args = [*fast, "trainer.precision=64-true"]
    assert cli(capsys, "fit", "--out", tmp_path / "full", *args)[0] == 0
    assert cli(capsys, "fit", "--out", tmp_path / "part", *args, "train.steps=20")[0] == 0
    code, _, err = cli(capsys, "fit", "--resume", tmp_path / "part", "train.steps=40", "geometry.on_expulsion=ignore", "trainer.accelerator=cpu")
    assert code == 0, err
    assert (tmp_path / "part" / "prototypes.csv").read_text() == (tmp_path / "full" / "prototypes.csv").read_text()
    assert metrics(tmp_path / "part")["steps"] == 40 and "on_expulsion: ignore" in (tmp_path / "part" / "config.yaml").read_text()


@pytest.mark.parametrize("dim,kept", [(1, True), (2, False)])
def test_checkpoint_keeps_the_trajectory_only_where_the_figure_draws_it(tmp_path: Path, capsys: pytest.CaptureFixture[str], fast: list[str], dim: int, kept: bool) -> None:
    # the trajectory is drawn only for 1-D models; in d > 1 it would grow the checkpoint (and
    # the resident memory) by R x M x d floats per check
    from protoreg.rundirs.checkpoint import load_checkpoint

    assert cli(capsys, "fit", "--out", tmp_path / "r", *fast, f"data.dim={dim}")[0] == 0
    ckpt = load_checkpoint(tmp_path / "r" / "checkpoints" / "last.ckpt")
    (state,) = [s for k, s in ckpt["callbacks"].items() if "GeometryCallback" in k]
    assert len(state["steps"]) >= 2
    assert len(state["trajectory"]) == (len(state["steps"]) if kept else 0)
    if kept:
        assert len(state["trajectory"][0][0][0]) == 1  # (R, M, 1) per check
