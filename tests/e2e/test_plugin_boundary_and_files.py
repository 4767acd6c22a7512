"""Reliability under hostile use: plugins that misbehave at the call boundary, sizes no run can
train, and files as people actually have them (no header, BOM, CRLF, cut rows, edited checkpoints)."""

from __future__ import annotations

import json
import os
import re
import select
import signal
import subprocess
import sys
import textwrap
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

import protoreg
from helpers import TrainCounter, cli, error_lines, expected_check, fake_entry_points, make_plugin_module, quick, run_quiet
from protoreg.config import MAX_SEED
from protoreg.datasets.files import File
from protoreg.errors import DataWarning

file_dataset = File().load
from protoreg.errors import ConfigError, DataError, PluginError, RunDirError
from protoreg.plugins.registry import PluginLoadWarning, Registry, get_plugin_manager
from protoreg.sweeps import grid as G
from protoreg.sweeps.store import RESULTS, ResultsWarning, read_results
from protoreg.training.trainer import FORCE_EXIT_SECONDS

FAST = ["data.n=8", "train.steps=40", "train.log_every_n_steps=10", "geometry.every_n_steps=20", "trainer.accelerator=cpu"]





class Late(protoreg.StructuralLoss):
    """A well-behaved attractor until call ``at``, then ``misbehave(ctx)``."""

    role = "attractor"
    defaults = {"at": 5}

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, ctx, *, at):  # type: ignore[no-untyped-def]
        self.calls += 1
        if self.calls > at:
            return self.misbehave(ctx)
        return ctx.prototypes.pow(2).mean(dim=(1, 2))

    def misbehave(self, ctx):  # type: ignore[no-untyped-def]
        raise NotImplementedError


def late(name: str, misbehave) -> Late:  # type: ignore[no-untyped-def]
    return type(name.title(), (Late,), {"name": name, "misbehave": lambda self, ctx: misbehave(ctx)})()


def _exit(ctx):  # type: ignore[no-untyped-def]
    sys.exit(3)


def _nan_gradient(ctx):  # type: ignore[no-untyped-def]
    # sqrt(0) is finite, its derivative is not: the value stays 0, the gradient is NaN
    return torch.sqrt(ctx.prototypes.pow(2).sum(dim=(1, 2)) * 0.0)


def _own_leaf(ctx):  # type: ignore[no-untyped-def]
    return torch.zeros(ctx.runs, dtype=ctx.x.dtype, requires_grad=True)


def _changes_y(ctx):  # type: ignore[no-untyped-def]
    ctx.y.mul_(0.0)
    return ctx.prototypes.pow(2).mean(dim=(1, 2))


def _changes_x(ctx):  # type: ignore[no-untyped-def]
    ctx.x[:, 0] = 100.0
    return ctx.prototypes.pow(2).mean(dim=(1, 2))


def _changes_model(ctx):  # type: ignore[no-untyped-def]
    with torch.no_grad():
        next(ctx.model.parameters()).add_(1.0)
    return ctx.prototypes.pow(2).mean(dim=(1, 2))


# ------------------------------------------------------------------ 4. the plugin boundary
@pytest.mark.parametrize(
    ("name", "misbehave", "needle"),
    [
        ("exits", _exit, "called sys.exit(3)"),
        ("nangrad", _nan_gradient, "non-finite gradient in 'nangrad' (hostile-dist 1.0)"),
        ("changesy", _changes_y, "modified ctx.y in place"),
    ],
)
def test_misbehaving_loss_mid_training_fails_the_run_by_name(tmp_path, capsys, install_plugin, name, misbehave, needle):
    install_plugin(late(name, misbehave), dist="hostile-dist")
    out = tmp_path / "run"
    code, _, err = cli(capsys, "fit", "--out", out, *FAST, f"losses.{name}.weight=0.1", f"losses.{name}.at=15")
    assert code == 1, err
    (line,) = error_lines(err)
    assert needle in line and f"'{name}'" in line and "hostile-dist 1.0" in line, line
    assert "'fit'" not in line
    m = json.loads((out / "metrics.json").read_text())
    assert m["status"] == "failed" and needle in m["reason"] and m["steps"] == 14  # call 1 is the dry run


@pytest.mark.parametrize(
    ("misbehave", "needle"),
    [
        (_exit, "called sys.exit(3)"),
        (_own_leaf, "no gradient path to the model's parameters"),
        (_changes_y, "modified ctx.y in place"),
        (_changes_x, "modified ctx.x in place"),
        (_changes_model, "modified ctx.model."),
    ],
)
def test_misbehaving_loss_is_named_at_its_first_call(tmp_path, capsys, install_plugin, misbehave, needle):
    install_plugin(late("hostile", misbehave), dist="hostile-dist")
    out = tmp_path / "run"
    code, _, err = cli(capsys, "fit", "--out", out, *FAST, "losses.hostile.weight=0.1", "losses.hostile.at=0")
    assert code == 2
    (line,) = error_lines(err)
    assert line.startswith("protoreg: error: loss 'hostile' (hostile-dist 1.0)") and needle in line, line
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("batch", [None, 3])
def test_a_loss_cannot_change_the_training_data(tmp_path, no_autoload, batch):
    """Whatever a loss does to the tensors it receives, the data trained on and saved are the
    run's own (full batch and minibatches)."""
    data = [*FAST, f"train.batch_size={'null' if batch is None else batch}"]
    plugin = make_plugin_module("changes_y", late("changesy", _changes_y))
    run = protoreg.fit(*data, "losses.changesy.weight=0.1", "losses.changesy.at=15", out=tmp_path / "run", plugins=[plugin])
    assert run.status == "failed" and "modified ctx.y in place" in run.reason
    state = torch.load(run.dir / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    x, y = protoreg.load_data(*data)
    assert np.array_equal(state["x"][0].numpy(), x.astype(np.float32))
    assert np.array_equal(state["y"][0].numpy(), y.astype(np.float32))


def _plugin_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, modname: str, body: str) -> None:
    (tmp_path / f"{modname}.py").write_text(textwrap.dedent(body))
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, modname, raising=False)


GOOD_PLUGIN = """
    import protoreg

    class Good(protoreg.StructuralLoss):
        name = "good"
        role = "attractor"

        def __call__(self, ctx):
            return ctx.prototypes.pow(2).mean(dim=(1, 2))

    @protoreg.hookimpl
    def protoreg_register_losses(register):
        register(Good())
"""


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        ("import sys\nsys.exit(4)\n", "called sys.exit(4)"),
        ("class Odd(BaseException):\n    pass\nraise Odd('odd')\n", "Odd: odd"),
        ("raise ImportError('missing thing')\n", "ImportError: missing thing"),
    ],
)
def test_plugin_ending_the_import_is_skipped(tmp_path, monkeypatch, body, needle):
    _plugin_file(tmp_path, monkeypatch, "hostile_import", body)
    _plugin_file(tmp_path, monkeypatch, "good_import", GOOD_PLUGIN)
    fake_entry_points(monkeypatch, [("hostile", "hostile_import", "import-dist"), ("good", "good_import", "good-dist")])
    with pytest.warns(PluginLoadWarning) as rec:
        reg = Registry.load()
    (w,) = [w for w in rec if issubclass(w.category, PluginLoadWarning)]
    assert "'hostile'" in str(w.message) and "import-dist 1.0" in str(w.message) and needle in str(w.message)
    assert "good" in reg.losses and reg.losses["good"].source == "good-dist 1.0"


def test_ctrl_c_during_a_plugin_import_still_interrupts(tmp_path, monkeypatch):
    _plugin_file(tmp_path, monkeypatch, "ctrl_c_import", "raise KeyboardInterrupt\n")
    fake_entry_points(monkeypatch, [("ctrlc", "ctrl_c_import", "ctrlc-dist")])
    with pytest.raises(KeyboardInterrupt):
        get_plugin_manager()


def test_hook_calling_sys_exit_is_a_plugin_error(no_autoload):
    mod = make_plugin_module("exit_hook")

    @protoreg.hookimpl
    def protoreg_register_losses(register):  # type: ignore[no-untyped-def]
        sys.exit(5)

    mod.protoreg_register_losses = protoreg_register_losses  # type: ignore[attr-defined]
    with pytest.raises(PluginError, match=r"exit_hook \(inline\) called sys.exit\(5\)"):
        Registry.load(plugins=[mod])


SIGNAL_SCRIPT = """
    import importlib.metadata, sys, time, types
    import protoreg
    from protoreg.frontend.cli import main

    class Hang(protoreg.StructuralLoss):
        name = "hang"
        role = "attractor"
        defaults = {"at": 5}

        def __init__(self):
            self.calls = 0

        def __call__(self, ctx, *, at):
            self.calls += 1
            if self.calls > at:
                print("hanging", flush=True)
                while True:
                    if MODE == "busy":
                        sum(range(1000))  # pure Python, never returns
                        continue
                    try:  # swallows every stop, one raised between two sleeps too
                        _sleep_forever()
                    except BaseException:
                        pass
            return ctx.prototypes.pow(2).mean(dim=(1, 2))

    def _sleep_forever():
        while True:
            time.sleep(0.01)

    class Dist:
        name, version = "hang-dist", "1.0"

    mod = types.ModuleType("hang_plugin")

    @protoreg.hookimpl
    def protoreg_register_losses(register):
        register(Hang())

    mod.protoreg_register_losses = protoreg_register_losses
    sys.modules["hang_plugin"] = mod
    ep = importlib.metadata.EntryPoint("hang", "hang_plugin", "protoreg")._for(Dist())
    importlib.metadata.entry_points = lambda **kw: importlib.metadata.EntryPoints([ep] if kw.get("group") == "protoreg" else [])
    sys.exit(main(sys.argv[1:]))
"""


def _hanging_fit(tmp_path: Path, mode: str) -> tuple[subprocess.Popen[str], Path]:
    """``protoreg fit`` in a subprocess whose loss stops returning at call 13 (step 11)."""
    tmp_path.mkdir()
    script = tmp_path / "hang.py"
    script.write_text(f"MODE = {mode!r}\n" + textwrap.dedent(SIGNAL_SCRIPT))
    out = tmp_path / "run"
    env = {k: v for k, v in os.environ.items() if k != "PROTOREG_DISABLE_PLUGIN_AUTOLOAD"}
    proc = subprocess.Popen(
        [sys.executable, str(script), "fit", "--out", str(out), *FAST, "losses.hang.weight=0.1", "losses.hang.at=12"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    return proc, out


def _wait_until_hanging(proc: subprocess.Popen[str]) -> None:
    ready, _, _ = select.select([proc.stdout], [], [], 120)
    assert ready and proc.stdout is not None and proc.stdout.readline().strip() == "hanging"


def test_second_signal_always_ends_protoreg(tmp_path):
    """Two subprocesses at once (to save time), each with a loss that never returns.

    ``busy`` loops in pure Python: Ctrl-C (SIGINT) then SIGTERM (either signal counts) stops it,
    the run fails naming the loss, and its run directory is written. ``swallow`` catches every
    exception, the stop included: the process still ends FORCE_EXIT_SECONDS later (exit 130)."""
    busy, busy_out = _hanging_fit(tmp_path / "busy", "busy")
    swallow, swallow_out = _hanging_fit(tmp_path / "swallow", "swallow")
    try:
        for proc in (busy, swallow):
            _wait_until_hanging(proc)
            proc.send_signal(signal.SIGINT)
        time.sleep(1.0)
        assert busy.poll() is None and swallow.poll() is None  # the first signal waits for the step, which never ends
        t0 = time.monotonic()
        busy.send_signal(signal.SIGTERM)
        swallow.send_signal(signal.SIGINT)
        _, busy_err = busy.communicate(timeout=60)
        busy_seconds = time.monotonic() - t0
        _, swallow_err = swallow.communicate(timeout=60)
        swallow_seconds = time.monotonic() - t0
    finally:
        busy.kill()
        swallow.kill()
    assert busy.returncode == 1, busy_err
    (line,) = error_lines(busy_err)
    assert "did not return (stopped by a second SIGTERM)" in line and "'hang' (hang-dist 1.0)" in line and "step 11" in line, line
    assert "Traceback" not in busy_err and busy_seconds < 30
    m = json.loads((busy_out / "metrics.json").read_text())
    assert m["status"] == "failed" and m["steps"] == 11 and "did not return" in m["reason"]
    assert swallow.returncode == 130 and "still running" in swallow_err and "Traceback" not in swallow_err, swallow_err
    assert FORCE_EXIT_SECONDS - 0.5 <= swallow_seconds < FORCE_EXIT_SECONDS + 10
    assert not (swallow_out / "metrics.json").exists()


# ----------------------------------------------------------------------------- 5. sizes
@pytest.mark.parametrize(
    ("override", "needle"),
    [
        ("model.width=100000000", "model.width: must be <= 1000000, got 100000000"),
        (f"train.seed={2**70}", f"train.seed: must be <= 2**63 - 1, got {2**70}"),
        (f"data.seed={2**63}", "data.seed: must be <= 2**63 - 1"),
        ("data.n=10000000000", "data.n: must be <= 1000000000"),
        ("data.dim=100000000000", "data.dim: must be <= 1000000"),
        ("train.steps=10000000000", "train.steps: must be <= 1000000000"),
        ("train.batch_size=10000000000", "train.batch_size: must be <= 1000000000"),
        ("train.log_every_n_steps=10000000000", "train.log_every_n_steps: must be <= 1000000000"),
        ("geometry.every_n_steps=10000000000", "geometry.every_n_steps: must be <= 1000000000"),
    ],
)
def test_integer_keys_out_of_range_are_refused_before_anything_is_built(tmp_path, capsys, no_autoload, override, needle):
    out = tmp_path / "run"
    t0 = time.monotonic()
    code, _, err = cli(capsys, "fit", "--out", out, "trainer.accelerator=cpu", override)
    assert code == 2 and time.monotonic() - t0 < 10
    (line,) = error_lines(err)
    assert needle in line and len(err.strip().splitlines()) == 1, err
    assert not out.exists()


def test_largest_seed_is_accepted(tmp_path, no_autoload):
    run = protoreg.fit(*FAST, f"train.seed={MAX_SEED}", f"data.seed={MAX_SEED}", out=tmp_path / "run")
    assert run.status == "completed"


@pytest.mark.parametrize(
    "overrides",
    [
        ["sweep.seeds=10000000"],
        ["sweep.grid={data.n: [3, 4, 5, 6, 7, 8, 9, 10, 11, 12], train.lr: [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0], "
         "model.width: [1, 2, 3, 4, 5, 6, 7, 8, 9, 10], data.low: [-1, -2, -3, -4, -5, -6, -7, -8, -9, -10]}"],
        ["sweep.masks=[coverage, separation, overlap]", "sweep.seeds=10000", "sweep.max_runs=20000"],
    ],
)
def test_a_sweep_above_max_runs_is_refused_within_seconds(reg, overrides):
    t0 = time.monotonic()
    with pytest.raises(ConfigError) as info:
        G.expand(quick(*overrides), reg)
    assert time.monotonic() - t0 < 5
    msg = str(info.value)
    assert msg.startswith("sweep.max_runs: this sweep has") and "set sweep.max_runs=" in msg and "\n" not in msg


def test_max_runs_is_the_exact_limit(reg):
    assert len(G.expand(quick("sweep.max_runs=32"), reg)) == 32  # paper_quick: 8 masks x 2 n x 2 seeds
    with pytest.raises(ConfigError, match=r"32 runs .* more than sweep.max_runs=31"):
        G.expand(quick("sweep.max_runs=31"), reg)
    with pytest.raises(ConfigError, match=r"split it into sweeps"):  # beyond any max_runs
        G.expand(quick("sweep.seeds=1000000000000"), reg)


@pytest.mark.parametrize(
    ("override", "needle"),
    [
        (f"sweep.seeds=[1, {2**63}]", "sweep.seeds: seeds must be integers in [0, 2**63 - 1]"),
        ("sweep.max_runs=0", "sweep.max_runs: must be >= 1, got 0"),
        ("sweep.max_runs=10000000000", "sweep.max_runs: must be <= 1000000000"),
    ],
)
def test_sweep_size_keys_are_checked(reg, override, needle):
    with pytest.raises(ConfigError) as info:
        G.expand(quick(override), reg)
    assert needle in str(info.value)


# ----------------------------------------------------------------------------- 6. files
def _cfg(**kw):  # type: ignore[no-untyped-def]
    return {"path": None, "targets": None, **kw}


def test_csv_without_header_keeps_its_first_row(tmp_path):
    f = tmp_path / "d.csv"
    f.write_text("0,1,2\n3,4,5\n6,7,8\n")
    with pytest.warns(DataWarning, match="no header row"):
        x, y = file_dataset(_cfg(path=str(f)), 0)
    np.testing.assert_array_equal(x, [[0, 1], [3, 4], [6, 7]])
    np.testing.assert_array_equal(y, [[2], [5], [8]])
    with pytest.warns(DataWarning):
        x, y = file_dataset(_cfg(path=str(f), targets=[0]), 0)
    np.testing.assert_array_equal(y, [[0], [3], [6]])


def test_csv_with_header_gives_no_warning(tmp_path):
    f = tmp_path / "d.csv"
    f.write_text("a,b\n1,2\n3,4\n")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        x, _ = file_dataset(_cfg(path=str(f)), 0)
    assert x.shape == (2, 1)


@pytest.mark.parametrize(
    ("content", "needle"),
    [
        ("a,b\n1,2\n1_000,4\n", "line 3, column 'a': non-numeric cell '1_000' (digit group separators are not accepted)"),
        ("a,b\n1,2\n3,\uff14\n", "line 3, column 'b': non-numeric cell '\uff14'"),  # a full-width digit
        ("a,b\n1,2\n\n3,x\n", "line 4, column 'b'"),  # blank lines keep the line numbers right
    ],
)
def test_csv_cells_are_plain_numbers(tmp_path, content, needle):
    f = tmp_path / "d.csv"
    f.write_text(content, encoding="utf-8")
    with pytest.raises(DataError) as info:
        file_dataset(_cfg(path=str(f)), 0)
    assert needle in str(info.value) and "d.csv" in str(info.value)


def test_csv_with_byte_order_mark_and_crlf(tmp_path):
    f = tmp_path / "d.csv"
    f.write_bytes(b"\xef\xbb\xbfa,b,t\r\n0,1,2\r\n3,4,5\r\n")
    x, y = file_dataset(_cfg(path=str(f), targets=["a"]), 0)
    np.testing.assert_array_equal(y, [[0], [3]])
    np.testing.assert_array_equal(x, [[1, 2], [4, 5]])


def _small_sweep(*extra: str):  # type: ignore[no-untyped-def]
    return quick("sweep.masks=[coverage]", "sweep.seeds=1", "sweep.study=null", *extra)


def test_results_resaved_by_a_spreadsheet_still_resume(tmp_path, reg):
    out = tmp_path / "sw"
    run_quiet(_small_sweep(), out, reg)
    results = out / RESULTS
    rows = results.read_text(encoding="utf-8").splitlines()
    results.write_bytes(b"\xef\xbb\xbf" + "\r\n".join(rows).encode() + b"\r\n")
    counter = TrainCounter()
    res = run_quiet(_small_sweep(), out, reg, engine=counter)
    assert counter.runs == 0 and res.skipped == 4 and res.finished == 4
    assert [r["run"] for r in read_results(out)] == [r.split(",")[0] for r in rows[1:]]


def test_results_row_cut_after_its_status_is_trained_again(tmp_path, reg):
    out = tmp_path / "sw"
    run_quiet(_small_sweep(), out, reg)
    results = out / RESULTS
    lines = results.read_text(encoding="utf-8").splitlines()
    header = lines[0].split(",")
    cut = lines[2].split(",")[: header.index("status") + 1]
    results.write_text("\n".join([*lines[:2], ",".join(cut), *lines[3:]]) + "\n", encoding="utf-8")
    with pytest.warns(ResultsWarning, match=re.escape(f"line 3 (run '{cut[0]}') has {len(cut)} cells, expected {len(header)}")):
        assert cut[0] not in {r["run"] for r in read_results(out)}
    counter = TrainCounter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = run_quiet(_small_sweep(), out, reg, engine=counter)
    assert counter.runs == 1 and res.finished == 4
    rows = read_results(out)
    assert sorted(r["run"] for r in rows) == sorted(ln.split(",")[0] for ln in lines[1:])
    assert all(r["status"] == "completed" and r["batch"] for r in rows)


def test_unreadable_results_is_one_line(tmp_path, reg):
    out = tmp_path / "sw"
    run_quiet(_small_sweep(), out, reg)
    (out / RESULTS).write_bytes(b"run,status\n\xff\xfe,completed\n")
    with pytest.raises(RunDirError, match="results.csv: not a readable UTF-8 CSV file"):
        read_results(out)


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory) -> Path:  # type: ignore[no-untyped-def]
    os.environ["PROTOREG_DISABLE_PLUGIN_AUTOLOAD"] = "1"
    try:
        run = protoreg.fit(*FAST, out=tmp_path_factory.mktemp("check") / "run")
    finally:
        del os.environ["PROTOREG_DISABLE_PLUGIN_AUTOLOAD"]
    return run.dir


def _edited(src: Path, dst: Path, edit) -> Path:  # type: ignore[no-untyped-def]
    import shutil

    shutil.copytree(src, dst)
    ckpt = dst / "checkpoints" / "last.ckpt"
    state = torch.load(ckpt, weights_only=True)
    edit(state)
    torch.save(state, ckpt)
    return dst


def _set(key, value):  # type: ignore[no-untyped-def]
    def edit(state):  # type: ignore[no-untyped-def]
        state["state_dict"][key] = value(state["state_dict"][key]) if callable(value) else value

    return edit


def _nan_at(t: torch.Tensor) -> torch.Tensor:
    t = t.clone()
    t[0, 3, 0] = float("nan")
    return t


@pytest.mark.parametrize(
    ("edit", "needle"),
    [
        (_set("x", _nan_at), "the stored training inputs hold NaN/inf (first at run 0, sample 3, column 0)"),
        (_set("y", lambda t: t * float("inf")), "the stored training targets hold NaN/inf"),
        (_set("x", lambda t: t[0]), "the stored training inputs have shape (8, 1)"),
        (_set("x", "not a tensor"), "the stored training inputs are not a floating-point tensor"),
        (_set("model.v", lambda t: t[0]), "does not hold a protoreg model"),
        (_set("model.w", lambda t: t[:, :3]), "does not hold a protoreg model"),
        (lambda s: s.__setitem__("state_dict", [1, 2]), "its state_dict is not a mapping"),
        (lambda s: s["callbacks"][next(iter(s["callbacks"]))].__setitem__("expelled_at", [[1]]), "expelled_at does not list one step per unit"),
    ],
)
def test_check_reports_bad_stored_data_and_edited_checkpoints(tmp_path, capsys, finished_run, edit, needle):
    run = _edited(finished_run, tmp_path / "run", edit)
    code, out, err = cli(capsys, "check", run)
    assert code == 2, out + err
    assert err.strip().splitlines() == [ln for ln in error_lines(err)] and len(error_lines(err)) == 1, err
    assert needle in err and "last.ckpt" in err, err


def test_check_names_a_bad_image_shape_in_metrics(tmp_path, capsys, finished_run):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(finished_run, run)
    m = json.loads((run / "metrics.json").read_text())
    m["image_shape"] = [3, 3]
    (run / "metrics.json").write_text(json.dumps(m))
    code, _, err = cli(capsys, "check", run)
    assert code == 2 and "metrics.json: image_shape (3, 3) has 9 pixels" in err


def test_check_of_an_intact_run_is_ok(capsys, finished_run):
    code, out, _ = cli(capsys, "check", finished_run)
    assert (code, out.strip().splitlines()[-1].split()[0]) == expected_check(finished_run)
