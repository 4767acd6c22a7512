"""A library in someone else's process: importing or calling protoreg leaves the host as it was
(matplotlib backend, warning filters, logging handlers, signal handlers), and its warnings point
at the caller's line, one per kind of event per run."""

from __future__ import annotations

import inspect
import json
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

import protoreg
import protoreg.errors as E

ROOT = Path(__file__).resolve().parents[2]

HOST_SCRIPT = r"""
import logging, signal, sys, warnings
import matplotlib
matplotlib.use("svg")          # the host's own choice (a notebook's is the inline backend)
import matplotlib.pyplot as plt
import protoreg

def state():
    return (matplotlib.get_backend(), list(warnings.filters), warnings.showwarning,
            list(logging.getLogger().handlers), logging.getLogger().level,
            {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)})

before = state()
run = protoreg.fit("data.n=8", "train.steps=20", "train.log_every_n_steps=10", "trainer.accelerator=cpu", out=sys.argv[1])
after = state()
names = ["backend", "warning filters", "showwarning", "root handlers", "root level", "signal handlers"]
changed = [n for n, a, b in zip(names, before, after) if a != b]
fig, ax = plt.subplots()          # the user's own figure after a fit
ax.plot([0, 1], [1, 0])
print("CHANGED", changed)
print("CANVAS", type(fig.canvas).__module__)
"""


def test_a_fit_leaves_the_host_process_as_it_found_it(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-c", HOST_SCRIPT, str(tmp_path / "run")], capture_output=True, text=True, cwd=tmp_path, timeout=300,
        env={**__import__("os").environ, "PROTOREG_DISABLE_PLUGIN_AUTOLOAD": "1"},
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "CHANGED []" in proc.stdout, proc.stdout
    assert "backend_svg" in proc.stdout  # pyplot still draws with the host's backend
    assert (tmp_path / "run" / "prototypes.png").stat().st_size > 0


def test_protoreg_never_selects_a_backend_or_uses_pyplot() -> None:
    for path in (ROOT / "protoreg").rglob("*.py"):
        text = path.read_text(encoding="utf-8")
        assert "matplotlib.use(" not in text, path
        assert "import matplotlib.pyplot" not in text and "pyplot as plt" not in text, path
        assert ".add_figure(" not in text, f"{path}: TensorBoard's add_figure imports pyplot; use plots.figure_image"


EXPEL = ["data.n=12", "train.steps=200", "losses.coverage.weight=0", "losses.separation.weight=5", "losses.separation.tau=4",
         "geometry.every_n_steps=10", "train.log_every_n_steps=10", "trainer.accelerator=cpu"]


def test_warnings_point_at_the_callers_line_once_per_kind_per_run(tmp_path: Path, no_autoload: None) -> None:
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        line = inspect.currentframe().f_lineno + 1  # type: ignore[union-attr]
        run = protoreg.fit(*EXPEL, out=tmp_path / "r")
    kinds = [w.category for w in rec if issubclass(w.category, protoreg.ProtoregWarning)]
    assert kinds.count(protoreg.ExpulsionWarning) == 1 and kinds.count(protoreg.PairingWarning) == 1, [str(w.message) for w in rec]
    for w in rec:
        if issubclass(w.category, protoreg.ProtoregWarning):
            assert (w.filename, w.lineno) == (__file__, line), (w.category.__name__, w.filename, w.lineno)
    # every later expulsion of the run is counted, not warned
    assert run.metrics["expulsion_events"] >= 2
    assert json.loads((run.dir / "metrics.json").read_text())["expulsion_events"] == run.metrics["expulsion_events"]
    assert "counted in metrics.json's expulsion_events" in str(next(w.message for w in rec if w.category is protoreg.ExpulsionWarning))


def test_the_cli_prints_the_expulsion_count(tmp_path: Path, no_autoload: None, capsys: pytest.CaptureFixture[str]) -> None:
    from protoreg.frontend.cli import main

    code = main(["fit", *EXPEL, "--out", str(tmp_path / "r")])
    out, err = capsys.readouterr()
    assert code == 0
    assert err.count("ExpulsionWarning") + err.count("protoreg: warning: ") >= 1
    assert sum("unit(s) outside the convex hull" in line for line in err.splitlines()) == 1
    assert "expulsion: " in out and "event(s) in this run" in out


def _classes(base: type) -> list[type]:
    return [c for _, c in inspect.getmembers(E, inspect.isclass) if issubclass(c, base) and c.__module__ == E.__name__]


def test_every_error_and_warning_class_is_exported_and_documented() -> None:
    api = (ROOT / "docs" / "api.md").read_text(encoding="utf-8")
    for cls in _classes(E.ProtoregError) + _classes(E.ProtoregWarning):
        assert getattr(protoreg, cls.__name__) is cls, f"protoreg.{cls.__name__} is not exported"
        assert cls.__name__ in protoreg.__all__
        assert f"`{cls.__name__}`" in api, f"docs/api.md does not document {cls.__name__}"
    # the old homes still work (plugins and tests import them from there)
    from protoreg.errors import DataWarning
    from protoreg.plugins.pairing import PairingWarning
    from protoreg.plugins.registry import PluginLoadWarning
    from protoreg.sweeps.store import ResultsWarning
    from protoreg.training import ExpulsionWarning
    from protoreg.training.module import CompileWarning

    assert {DataWarning, PairingWarning, PluginLoadWarning, ResultsWarning, ExpulsionWarning, CompileWarning} <= set(_classes(E.ProtoregWarning))


QUICK_COMMANDS = r"""
import contextlib, io, sys
from protoreg.frontend.cli import main
codes = []
for argv in (["--version"], ["--help"], ["fit", "--print-config"], ["plugins"], ["check", sys.argv[1]]):
    with contextlib.redirect_stdout(io.StringIO()), contextlib.suppress(SystemExit):
        codes.append(main(argv))
print("CODES", codes)
print("LIGHTNING", sorted(m for m in sys.modules if m.split(".")[0] in ("lightning", "pytorch_lightning")))
"""


def test_quick_commands_never_import_lightning(tmp_path: Path, no_autoload: None) -> None:
    run = protoreg.fit("data.n=8", "train.steps=10", "train.log_every_n_steps=10", "trainer.accelerator=cpu", out=tmp_path / "r")
    proc = subprocess.run([sys.executable, "-c", QUICK_COMMANDS, str(run.dir)], capture_output=True, text=True, timeout=300,
                          env={**__import__("os").environ, "PROTOREG_DISABLE_PLUGIN_AUTOLOAD": "1"})
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "CODES [0, 0, 0]" in proc.stdout and "LIGHTNING []" in proc.stdout, proc.stdout + proc.stderr[-1000:]


def test_the_trainer_arguments_read_from_source_are_lightnings() -> None:
    from lightning.pytorch import Trainer

    from protoreg.config import _trainer_params_from_source

    import sys as _sys

    saved = _sys.modules.pop("lightning.pytorch")  # as in a process that has not imported it
    try:
        found = _trainer_params_from_source()
    finally:
        _sys.modules["lightning.pytorch"] = saved
    assert found == set(inspect.signature(Trainer.__init__).parameters) - {"self"}
