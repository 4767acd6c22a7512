"""Faults in losses, plugins and training lose nothing; hostile files execute nothing."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import pytest
import torch

import protoreg
from protoreg.frontend.cli import main
from protoreg.evaluation.evaluate import METRIC_NAMES
from protoreg.rundirs.checkpoint import load_checkpoint

pytestmark = pytest.mark.slow  # end-to-end workflow tests

FAST = ["data.n=8", "train.steps=60", "train.log_every_n_steps=10", "geometry.every_n_steps=20", "trainer.accelerator=cpu"]


class Counting(protoreg.StructuralLoss):
    """Base for test losses that misbehave at a given call."""

    role = "attractor"
    defaults = {"at": 5}

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, ctx, *, at):
        self.calls += 1
        return self.value(ctx, self.calls > at)

    def value(self, ctx, late):
        return ctx.prototypes.pow(2).sum(dim=(1, 2)) * 0.0


class GoesNaN(Counting):
    name = "goesnan"

    def value(self, ctx, late):
        base = ctx.prototypes.pow(2).mean(dim=(1, 2))
        return base * float("nan") if late else base


class Raises(Counting):
    name = "raises"

    def value(self, ctx, late):
        if late:
            raise RuntimeError("boom")
        return ctx.prototypes.pow(2).mean(dim=(1, 2))


class Interrupts(Counting):
    """Sends SIGINT to this process at call ``at + 1``, once per process (a zero-valued loss)."""

    name = "interrupts"
    fired = False

    def value(self, ctx, late):
        if late and not Interrupts.fired:
            Interrupts.fired = True
            os.kill(os.getpid(), getattr(signal, os.environ.get("PROTOREG_TEST_SIGNAL", "SIGINT")))
        return ctx.prototypes.sum(dim=(1, 2)) * 0.0


def bad(name, fn):
    cls = type(name.title(), (protoreg.StructuralLoss,), {"name": name, "role": "attractor", "__call__": lambda self, ctx: fn(ctx)})
    return cls()


def cli(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_non_finite_loss_stops_with_complete_run_dir(tmp_path, capsys, install_plugin):
    install_plugin(GoesNaN(), dist="nan-dist")
    out = tmp_path / "run"
    code, _, err = cli(capsys, "fit", "--out", out, *FAST, "losses.goesnan.weight=0.1", "losses.goesnan.at=25")
    assert code == 1
    line = [ln for ln in err.splitlines() if ln.startswith("protoreg: error:")]
    assert len(line) == 1
    assert "'goesnan'" in line[0] and "nan-dist" in line[0] and "step 24" in line[0]
    m = json.loads((out / "metrics.json").read_text())
    assert m["status"] == "failed" and "goesnan" in m["reason"] and m["steps"] == 24
    assert all(v == v for v in (m["fit_mse"], m["specialization_ratio"]))  # the last finite state
    ckpt = load_checkpoint(out / "checkpoints" / "last.ckpt")
    assert all(torch.isfinite(t).all() for k, t in ckpt["state_dict"].items() if k.startswith("model."))
    assert (out / "prototypes.csv").is_file() and (out / "prototypes.png").is_file()


@pytest.mark.parametrize(
    "fn,needle",
    [
        (lambda ctx: ctx.prototypes.sum(), "shape ()"),
        (lambda ctx: ctx.prototypes.sum(dim=2), "shape (1, 8)"),
        (lambda ctx: 1.0, "returned float"),
        (lambda ctx: ctx.prototypes.sum(dim=(1, 2)).double(), "dtype torch.float64"),
        (lambda ctx: ctx.prototypes.sum(dim=(1, 2)).detach(), "no gradient path"),
        (lambda ctx: 1 / 0, "ZeroDivisionError"),
    ],
)
def test_faulty_loss_is_named_at_first_call(tmp_path, capsys, install_plugin, fn, needle):
    install_plugin(bad("faulty", fn), dist="faulty-dist")
    out = tmp_path / "run"
    code, _, err = cli(capsys, "fit", "--out", out, *FAST, "losses.faulty.weight=1")
    assert code == 2
    lines = err.strip().splitlines()
    assert lines[-1].startswith("protoreg: error: loss 'faulty' (faulty-dist 1.0)") and needle in lines[-1], err
    assert not out.exists() and list(tmp_path.iterdir()) == []


def test_loss_raising_mid_training_keeps_finished_work(tmp_path, capsys, install_plugin):
    install_plugin(Raises(), dist="raise-dist")
    out = tmp_path / "run"
    code, _, err = cli(capsys, "fit", "--out", out, *FAST, "losses.raises.weight=0.1", "losses.raises.at=30")
    assert code == 1 and "boom" in err and "raise-dist" in err
    m = json.loads((out / "metrics.json").read_text())
    assert m["status"] == "failed" and m["steps"] == 29


@pytest.mark.parametrize(("sig", "dim"), [("SIGINT", 1), ("SIGTERM", 1), ("SIGINT", 3)])
def test_interrupt_then_resume_equals_uninterrupted(tmp_path, capsys, install_plugin, monkeypatch, sig, dim):
    monkeypatch.setenv("PROTOREG_TEST_SIGNAL", sig)
    install_plugin(Interrupts(), dist="int-dist")
    args = [*FAST, "losses.interrupts.weight=0.1", "trainer.precision=64-true", f"data.dim={dim}", "geometry.every_n_steps=10"]
    Interrupts.fired = True  # the reference run is not interrupted
    assert cli(capsys, "fit", "--out", tmp_path / "full", *args, "losses.interrupts.at=23")[0] == 0
    install_plugin(Interrupts(), dist="int-dist")  # fresh call counter
    Interrupts.fired = False
    code, _, err = cli(capsys, "fit", "--out", tmp_path / "part", *args, "losses.interrupts.at=23")
    assert code == 130, err
    assert Interrupts.fired
    part = json.loads((tmp_path / "part" / "metrics.json").read_text())
    assert part["status"] == "interrupted" and part["steps"] == 23 and sig in part["reason"]
    assert (tmp_path / "part" / "checkpoints" / "last.ckpt").is_file()
    code, _, err = cli(capsys, "fit", "--resume", tmp_path / "part")
    assert code == 0, err
    done = json.loads((tmp_path / "part" / "metrics.json").read_text())
    full = json.loads((tmp_path / "full" / "metrics.json").read_text())
    assert done["status"] == "completed" and done["steps"] == 60
    for key in METRIC_NAMES:  # the hull checks continue from the checkpointed solver state too
        assert done[key] == pytest.approx(full[key], rel=1e-9, abs=1e-15), key
    assert (tmp_path / "part" / "prototypes.csv").read_text() == (tmp_path / "full" / "prototypes.csv").read_text()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


class Exploit:
    def __reduce__(self):
        return (Path.touch, (Path(os.environ["PROTOREG_EXPLOIT_MARKER"]),))


def test_crafted_checkpoint_runs_no_code(tmp_path, capsys, monkeypatch, no_autoload):
    run = tmp_path / "run"
    assert cli(capsys, "fit", "--out", run, *FAST)[0] == 0
    marker = tmp_path / "pwned"
    monkeypatch.setenv("PROTOREG_EXPLOIT_MARKER", str(marker))
    ckpt = run / "checkpoints" / "last.ckpt"
    state = torch.load(ckpt, weights_only=True)
    state["evil"] = Exploit()
    torch.save(state, ckpt)
    for argv in (["check", run], ["fit", "--resume", run]):
        code, _, err = cli(capsys, *argv)
        assert code == 2 and "refused to load checkpoint safely" in err, err
        assert not marker.exists()
    # the payload is real: unrestricted unpickling does run it
    torch.load(ckpt, weights_only=False)
    assert marker.exists()


def test_config_files_cannot_run_code(tmp_path, capsys, no_autoload):
    c = tmp_path / "c.yaml"
    c.write_text("train:\n  steps: ${eval:'__import__(\"os\").system(\"touch pwned\")'}\n")
    code, _, err = cli(capsys, "fit", "--config", c, "--out", tmp_path / "r")
    assert code == 2 and "eval" in err
    assert not (tmp_path / "pwned").exists() and not Path("pwned").exists()


def test_resume_needs_a_run_dir(tmp_path, capsys, no_autoload):
    code, _, err = cli(capsys, "fit", "--resume", tmp_path / "nothing")
    assert code == 2 and "nothing" in err
