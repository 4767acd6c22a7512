"""Atomic outputs: a failed write leaves the previous good state, and an I/O failure during
``fit`` is one clean line with nothing half-written."""

from __future__ import annotations

import errno
import subprocess
import sys
from pathlib import Path

import pytest

import protoreg.rundirs.io as pio
import protoreg.rundirs.layout as rundir
from protoreg.frontend.cli import main


def disk_full(*args: object, **kwargs: object) -> None:
    raise OSError(errno.ENOSPC, "No space left on device", "metrics.json")


def test_failed_atomic_write_keeps_the_previous_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "metrics.json"
    pio.atomic_write_json(target, {"fit_mse": 1.0})
    good = target.read_text()
    monkeypatch.setattr(pio.os, "fsync", disk_full)
    with pytest.raises(OSError, match="No space"):
        pio.atomic_write_json(target, {"fit_mse": 2.0})
    assert target.read_text() == good
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.json"], "temporary file left behind"


def test_run_dir_writes_are_all_or_nothing(tmp_path: Path) -> None:
    out = tmp_path / "run"
    with pytest.raises(RuntimeError):
        with rundir.writing_run(out, resume=False) as stage:
            (stage / "half.txt").write_text("x")
            raise RuntimeError("crash while writing")
    assert list(tmp_path.iterdir()) == []

    out.mkdir()
    (out / "config.yaml").write_text("old")
    (out / "notes.md").write_text("mine")
    with pytest.raises(RuntimeError):
        with rundir.writing_run(out, resume=True) as stage:
            (stage / "config.yaml").write_text("new")
            raise RuntimeError("crash")
    assert sorted(p.name for p in out.iterdir()) == ["config.yaml", "notes.md"] and (out / "config.yaml").read_text() == "old"
    with rundir.writing_run(out, resume=True) as stage:
        (stage / "config.yaml").write_text("new")
        (stage / "metrics.json").write_text("{}")
    assert sorted(p.name for p in out.iterdir()) == ["config.yaml", "metrics.json", "notes.md"]
    assert (out / "config.yaml").read_text() == "new"


@pytest.mark.slow
def test_uncreatable_out_is_refused_before_training(tmp_path: Path, capsys: pytest.CaptureFixture[str], no_autoload: None, fast: list[str]) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    code = main(["fit", "--out", str(blocker / "run"), *fast])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1
    assert err[0].startswith("protoreg: error:") and "cannot create the output directory" in err[0] and str(blocker) in err[0]


@pytest.mark.slow
@pytest.mark.parametrize("command", ["fit", "sweep"])
def test_disk_full_while_writing_is_one_line_and_keeps_nothing_half_written(
    command: str, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, no_autoload: None, fast: list[str]
) -> None:
    out = tmp_path / "out"
    if command == "fit":
        monkeypatch.setattr(rundir, "atomic_write_json", disk_full)
        argv = ["fit", "--out", str(out), *fast]
    else:
        import protoreg.sweeps.store as S

        calls = {"n": 0}
        real = S.atomic_write_text

        def full_on_results(path: object, text: str) -> None:  # results.csv rows of the 2nd batch
            if Path(str(path)).name == S.RESULTS:
                calls["n"] += 1
                if calls["n"] == 3:  # header, batch 1, batch 2
                    disk_full()
            real(path, text)

        monkeypatch.setattr(S, "atomic_write_text", full_on_results)
        config = Path(__file__).resolve().parents[2] / "configs" / "paper_quick.yaml"
        argv = ["sweep", "--config", str(config), "--out", str(out), "train.steps=20", "train.log_every_n_steps=10", "geometry.every_n_steps=10", "sweep.seeds=1"]
    code = main(argv)
    err = capsys.readouterr().err.strip().splitlines()
    errors = [line for line in err if line.startswith("protoreg: error:")]
    assert code == 1 and len(errors) == 1 and "No space left on device" in errors[0], err
    if command == "fit":
        assert not out.exists() and list(tmp_path.iterdir()) == [], "half-written run directory left behind"
    else:
        rows = (out / S.RESULTS).read_text().splitlines()
        assert len(rows) == 1 + 8, "the first batch (8 runs at N=3) stays recorded, the second is not"
        assert not [p for p in out.iterdir() if p.name.endswith(".tmp")]


@pytest.mark.slow  # a real fit or sweep
def test_a_write_past_the_file_size_limit_names_the_file(tmp_path):
    """``ulimit -f``: the write fails with ``File too large`` and no file name of its own; the
    error names the file protoreg was writing, and no temporary file is left."""
    code = (
        "import resource, sys\n"
        "resource.setrlimit(resource.RLIMIT_FSIZE, (4096, 4096))\n"
        "from protoreg.rundirs.io import atomic_write_text\n"
        "try:\n"
        "    atomic_write_text(sys.argv[1], 'x' * 100000)\n"
        "except OSError as exc:\n"
        "    print(exc.errno, exc.filename)\n"
    )
    target = tmp_path / "metrics.json"
    out = subprocess.run([sys.executable, "-c", code, str(target)], capture_output=True, text=True, check=True).stdout.split()
    assert out == [str(errno.EFBIG), str(target)]
    assert list(tmp_path.iterdir()) == []



@pytest.mark.slow  # a real fit or sweep
def test_fit_past_the_file_size_limit_names_the_file_and_leaves_nothing(tmp_path):
    """``protoreg fit`` under ``ulimit -f``: one line naming the file, exit 1, no run directory."""
    code = (
        "import resource, sys\n"
        "resource.setrlimit(resource.RLIMIT_FSIZE, (20000, 20000))\n"
        "from protoreg.frontend.cli import main\n"
        "sys.exit(main(sys.argv[1:]))\n"
    )
    out = tmp_path / "run"
    proc = subprocess.run([sys.executable, "-c", code, "fit", "--out", str(out), "train.steps=20", "data.n=5"], capture_output=True, text=True, cwd=tmp_path)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    assert lines[-1].startswith(f"protoreg: error: {tmp_path}") and lines[-1].endswith("File too large"), lines[-1]
    assert not out.exists() or not any(p.name == "metrics.json" for p in out.iterdir())
