"""The process belongs to the user: from the Python API a second Ctrl-C raises
``KeyboardInterrupt`` into the caller once the run directory is consistent (the interpreter, a
notebook's kernel, lives on); default output folders never collide; the API's errors speak the
API's words (``out=``, ``resume=``, ``config=``) and the CLI's its flags, with the same class;
``load_run`` says when a run is still being written."""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

import protoreg
from helpers import cli, error_lines
from protoreg.rundirs.layout import LOCK, STAGE_PREFIX
from protoreg.training.trainer import FORCE_EXIT_SECONDS

FAST = ["data.n=8", "train.steps=40", "train.log_every_n_steps=10", "geometry.every_n_steps=20", "trainer.accelerator=cpu"]

API_SCRIPT = """
    import json, os, sys, time
    import protoreg

    class Stubborn(protoreg.StructuralLoss):
        '''From call ``at`` on, ignores every stop for ``hold`` seconds (swallowing them), then
        returns (``hold`` < 0: never returns, but lets the stop through).'''
        name = "stubborn"
        role = "attractor"
        defaults = {"at": 5, "hold": 0.0}

        def __init__(self):
            self.calls = 0

        def __call__(self, ctx, *, at, hold):
            self.calls += 1
            if self.calls == at:
                print("hanging", flush=True)
                deadline = time.monotonic() + hold
                while True:
                    try:  # the whole wait inside the try: a stop raised between two sleeps is swallowed too
                        _wait(hold, deadline)
                        break
                    except BaseException:
                        if hold < 0:
                            raise
            return ctx.prototypes.pow(2).mean(dim=(1, 2))

    def _wait(hold, deadline):
        while hold < 0 or time.monotonic() < deadline:
            time.sleep(0.01)

    class Plugin:
        @protoreg.hookimpl
        def protoreg_register_losses(self, register):
            register(Stubborn())

    out, hold = sys.argv[1], float(sys.argv[2])
    t0 = time.monotonic()
    try:
        protoreg.fit(*FAST, "losses.stubborn.weight=0.1", "losses.stubborn.at=12", f"losses.stubborn.hold={hold}", out=out, plugins=[Plugin()])
        print("RETURNED")
    except KeyboardInterrupt as exc:
        print("KEYBOARDINTERRUPT", exc)
    print("ALIVE", round(time.monotonic() - t0, 1), flush=True)
"""


def _api_fit(tmp_path: Path, name: str, hold: float) -> tuple[subprocess.Popen[str], Path]:
    script = tmp_path / "api_hang.py"
    script.write_text(f"FAST = {FAST!r}\n" + textwrap.dedent(API_SCRIPT))
    out = tmp_path / name
    env = {**os.environ, "PROTOREG_DISABLE_PLUGIN_AUTOLOAD": "1"}
    proc = subprocess.Popen([sys.executable, str(script), str(out), str(hold)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    return proc, out


def _wait_for(proc: subprocess.Popen[str], word: str) -> None:
    ready, _, _ = select.select([proc.stdout], [], [], 180)
    assert ready and proc.stdout is not None and proc.stdout.readline().strip() == word


def test_a_second_ctrl_c_in_the_api_raises_keyboardinterrupt_and_never_ends_the_interpreter(tmp_path: Path) -> None:
    """``swallow``: a loss that swallows the stops for longer than the command line's
    FORCE_EXIT_SECONDS; ``busy``: a loss that never returns but lets the stop through. Both
    interpreters live on and get KeyboardInterrupt with a consistent run directory."""
    hold = FORCE_EXIT_SECONDS + 3
    swallow, swallow_out = _api_fit(tmp_path, "swallow", hold)
    busy, busy_out = _api_fit(tmp_path, "busy", -1.0)
    try:
        for proc in (swallow, busy):  # both signals well inside the swallowing loss's hold
            _wait_for(proc, "hanging")
            proc.send_signal(signal.SIGINT)
            time.sleep(0.5)
            proc.send_signal(signal.SIGINT)
        outs = {name: p.communicate(timeout=120) for name, p in (("swallow", swallow), ("busy", busy))}
    finally:
        swallow.kill()
        busy.kill()
    for name, proc, out in (("swallow", swallow, swallow_out), ("busy", busy, busy_out)):
        stdout, stderr = outs[name]
        assert proc.returncode == 0, (name, stderr[-2000:])
        assert "still running" not in stderr and "Traceback" not in stderr, stderr
        assert "KEYBOARDINTERRUPT stopped by a second SIGINT" in stdout and "ALIVE" in stdout, (name, stdout)
        names = {p.name for p in out.iterdir()}
        assert "metrics.json" in names and LOCK not in names and not any(n.startswith(STAGE_PREFIX) for n in names), names
    assert json.loads((swallow_out / "metrics.json").read_text())["status"] == "interrupted"
    busy_m = json.loads((busy_out / "metrics.json").read_text())
    assert busy_m["status"] == "failed" and "did not return (stopped by a second SIGINT)" in busy_m["reason"]
    # the swallowing loss held on past the point where the command line would have ended the process
    alive = float(outs["swallow"][0].split("ALIVE")[1].split()[0])
    assert alive > FORCE_EXIT_SECONDS


def test_fits_in_the_same_second_get_their_own_default_folders(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, no_autoload: None) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(time, "strftime", lambda fmt, *a: "20261203-061832")  # every call in the same second
    runs = [protoreg.fit(*FAST, "train.steps=10") for _ in range(3)]
    assert [r.dir.name for r in runs] == ["20261203-061832", "20261203-061832-2", "20261203-061832-3"]
    assert all(r.status == "completed" for r in runs)
    with pytest.raises(protoreg.ConfigError):  # a refused fit leaves no folder behind
        protoreg.fit(*FAST, "train.stepz=1")
    with pytest.raises(protoreg.LossError):  # nor does one that fails before writing its run
        class Bad(protoreg.StructuralLoss):
            name = "bad"

            def __call__(self, ctx):  # type: ignore[no-untyped-def]
                return ctx.prototypes.sum()  # wrong shape

        class P:
            @protoreg.hookimpl
            def protoreg_register_losses(self, register):  # type: ignore[no-untyped-def]
                register(Bad())

        protoreg.fit(*FAST, "losses.bad.weight=1", plugins=[P()])
    assert sorted(p.name for p in (tmp_path / "runs").iterdir()) == ["20261203-061832", "20261203-061832-2", "20261203-061832-3"]


def test_sweeps_in_the_same_second_get_their_own_default_folders(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, no_autoload: None) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(time, "strftime", lambda fmt, *a: "20261203-061832")
    over = ["train.steps=10", "train.log_every_n_steps=10", "sweep.seeds=1", "sweep.grid={data.n: [3]}", "trainer.accelerator=cpu"]
    with pytest.raises(protoreg.ConfigError):
        protoreg.sweep(*over, "sweep.executor=rays", plots=False)
    assert not (tmp_path / "sweeps").exists() or not list((tmp_path / "sweeps").iterdir())
    a = protoreg.sweep(*over, plots=False)
    b = protoreg.sweep(*over, plots=False)
    assert (a.dir.name, b.dir.name) == ("20261203-061832", "20261203-061832-2") and b.trained == a.trained > 0


# ------------------------------------------------------------------- words
def _user_folder(tmp_path: Path) -> Path:
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("my notes")
    return mine


def test_api_errors_name_the_api_arguments_and_the_cli_its_flags(tmp_path: Path, no_autoload: None, capsys: pytest.CaptureFixture[str]) -> None:
    mine = _user_folder(tmp_path)
    done = protoreg.fit(*FAST, "train.steps=10", out=tmp_path / "done").dir
    cases = [  # (API call, CLI argv, error class, API words, CLI words)
        (lambda: protoreg.fit(*FAST, out=mine), ["fit", *FAST, "--out", mine], protoreg.RunDirError, "choose another out=", "choose another --out"),
        (lambda: protoreg.fit(*FAST, out=done), ["fit", *FAST, "--out", done], protoreg.RunDirError,
         f"protoreg.fit(resume={str(done)!r})", f"protoreg fit --resume {done}"),
        (lambda: protoreg.fit(resume=done, out=tmp_path / "x"), ["fit", "--resume", done, "--config", tmp_path / "c.yaml"],
         protoreg.UsageError, "resume= takes", "--resume takes"),
    ]
    (tmp_path / "c.yaml").write_text("train:\n  steps: 5\n")
    for api, argv, cls, api_words, cli_words in cases:
        with pytest.raises(cls) as info:
            api()
        assert type(info.value) is cls and api_words in str(info.value) and "--" not in str(info.value), str(info.value)
        code, _, err = cli(capsys, *argv)
        (line,) = error_lines(err)
        assert code == 2 and cli_words in line, line
    assert (mine / "notes.txt").read_text() == "my notes" and sorted(p.name for p in mine.iterdir()) == ["notes.txt"]
    assert not (tmp_path / "x").exists()


def test_a_cli_usage_error_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    from protoreg.frontend.cli import main

    with pytest.raises(protoreg.UsageError):
        from protoreg.frontend.cli import build_parser

        build_parser().parse_args(["fit", "--nosuchflag"])
    assert main(["fit", "--nosuchflag"]) == 2
    assert "unrecognized arguments: --nosuchflag" in capsys.readouterr().err


def test_load_run_on_a_run_being_written_says_so(tmp_path: Path, no_autoload: None) -> None:
    class Slow(protoreg.StructuralLoss):
        name = "slow"
        role = "attractor"

        def __call__(self, ctx):  # type: ignore[no-untyped-def]
            time.sleep(0.05)
            return ctx.prototypes.pow(2).mean(dim=(1, 2))

    class P:
        @protoreg.hookimpl
        def protoreg_register_losses(self, register):  # type: ignore[no-untyped-def]
            register(Slow())

    out = tmp_path / "run"
    result: dict[str, object] = {}
    t = threading.Thread(target=lambda: result.update(run=protoreg.fit(*FAST, "train.steps=60", "losses.slow.weight=0.1", "geometry.on_expulsion=ignore", out=out, plugins=[P()])))
    t.start()
    try:
        deadline = time.monotonic() + 120
        while not (out / LOCK).exists() and time.monotonic() < deadline:
            time.sleep(0.02)
        with pytest.raises(protoreg.RunDirError, match="still being written"):
            protoreg.load_run(out)
    finally:
        t.join(300)
    assert protoreg.load_run(out).status == "completed"
    # a killed fit's leftovers: only its staging folder, no lock holder
    dead = tmp_path / "dead"
    (dead / f"{STAGE_PREFIX}abc").mkdir(parents=True)
    with pytest.raises(protoreg.RunDirError, match="staging folder of a fit that did not finish"):
        protoreg.load_run(dead)
