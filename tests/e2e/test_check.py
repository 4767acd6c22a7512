"""The geometry callback during training and ``protoreg check`` after it."""

from __future__ import annotations

import csv
import json

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from helpers import cli, expected_check

pytestmark = pytest.mark.slow  # end-to-end workflow tests

EXPEL = ["data.n=10", "train.steps=200", "losses.coverage.weight=0", "losses.separation.weight=1",
         "losses.separation.tau=10", "trainer.accelerator=cpu"]
SAFE = ["data.n=10", "train.steps=100", "trainer.accelerator=cpu"]




def test_warn_mode_names_units_once_per_check_and_records_expulsion(tmp_path, capsys, no_autoload):
    out = tmp_path / "run"
    code, _, err = cli(capsys, "fit", "--out", out, *EXPEL, "geometry.every_n_steps=50")
    assert code == 0
    warns = [ln for ln in err.splitlines() if "outside the convex hull" in ln]
    assert 1 <= len(warns) <= 200 // 50, "at most one warning per check"
    assert "active repulsors: separation" in warns[0] and "attractor" in warns[0]
    rows = list(csv.DictReader((out / "prototypes.csv").open()))
    expelled = {int(r["unit"]): int(r["expelled_at_step"]) for r in rows if r["expelled_at_step"]}
    outside = {int(r["unit"]) for r in rows if r["outside_hull"] == "1"}
    assert outside and outside <= set(expelled)
    assert all(step % 50 == 0 and 0 < step <= 200 for step in expelled.values())
    assert all(float(r["hull_distance"]) > 0 for r in rows if r["outside_hull"] == "1")
    m = json.loads((out / "metrics.json").read_text())
    assert m["outside_hull_frac"] == pytest.approx(len(outside) / 10)
    assert m["max_hull_distance"] == pytest.approx(max(float(r["hull_distance"]) for r in rows))
    for key in ("mean_hull_distance", "min_prototype_gap", "duplicate_prototypes", "dead_units"):
        assert key in m
    acc = EventAccumulator(str(out / "tb"))
    acc.Reload()
    tags = set(acc.Tags()["scalars"])
    for key in ("outside_hull_frac", "mean_hull_distance", "max_hull_distance", "min_prototype_gap", "duplicate_prototypes", "dead_units"):
        assert f"geometry/{key}" in tags
    assert acc.Scalars("geometry/outside_hull_frac")[-1].value == pytest.approx(m["outside_hull_frac"])

    # protoreg check agrees, exits 1, and --json is machine-readable
    code, text, _ = cli(capsys, "check", out)
    assert code == 1 and "expulsion:" in text.splitlines()[-1]
    code, text, _ = cli(capsys, "check", out, "--json")
    report = json.loads(text)
    assert code == 1 and report["outside"] == len(outside)
    assert {u["unit"] for u in report["units"] if u["outside"]} == outside
    assert {u["unit"]: u["expelled_at_step"] for u in report["units"] if u["expelled_at_step"] is not None} == expelled


def test_stop_mode_stops_cleanly(tmp_path, capsys, no_autoload):
    out = tmp_path / "run"
    code, text, _ = cli(capsys, "fit", "--out", out, *EXPEL, "geometry.on_expulsion=stop", "geometry.every_n_steps=50")
    assert code == 0 and "stopped at step" in text
    m = json.loads((out / "metrics.json").read_text())
    assert m["stopped"] == "expulsion" and m["status"] == "stopped"
    assert m["stopped_at_step"] == m["steps"] and m["steps"] < 200 and m["outside_hull_frac"] > 0
    assert {"config.yaml", "prototypes.csv", "prototypes.png", "checkpoints", "tb"} <= {p.name for p in out.iterdir()}


def test_ignore_mode_is_silent_and_threshold_respected(tmp_path, capsys, no_autoload):
    code, _, err = cli(capsys, "fit", "--out", tmp_path / "a", *EXPEL, "geometry.on_expulsion=ignore")
    assert code == 0 and "outside the convex hull" not in err
    code, _, err = cli(capsys, "fit", "--out", tmp_path / "b", *EXPEL, "geometry.max_outside_frac=0.9")
    assert code == 0 and "outside the convex hull" not in err


def test_check_passes_inside_and_rejects_incomplete(tmp_path, capsys, no_autoload):
    out = tmp_path / "run"
    assert cli(capsys, "fit", "--out", out, *SAFE)[0] == 0
    code, text, _ = cli(capsys, "check", out)
    assert code == 0 and text.splitlines()[-1].startswith("ok:")
    (out / "metrics.json").unlink()
    code, _, err = cli(capsys, "check", out)
    assert code == 2 and "incomplete" in err and err.startswith("protoreg: error:")
    code, _, err = cli(capsys, "check", tmp_path / "missing")
    assert code == 2 and "not found" in err


@pytest.mark.parametrize("dim", [2, 5])
def test_higher_dimensions_figures_and_embedding(tmp_path, capsys, no_autoload, dim):
    out = tmp_path / "run"
    code, _, err = cli(capsys, "fit", "--out", out, f"data.dim={dim}", "data.n=12", "model.width=6", "train.steps=60",
                       "losses.separation.weight=0.5", "losses.separation.tau=5", "trainer.accelerator=cpu")
    assert code == 0, err
    assert (out / "prototypes.png").stat().st_size > 1000
    m = json.loads((out / "metrics.json").read_text())
    assert m["dim"] == dim and m["parameterization"] == "radial"
    if dim > 2:
        assert (out / "tb" / "projector_config.pbtxt").is_file()
    code, text, _ = cli(capsys, "check", out, "--json")
    report = json.loads(text)
    assert (code, report["verdict"].split()[0]) == expected_check(out) and len(report["units"]) == 6


def test_check_does_not_import_lightning() -> None:
    """``protoreg check`` reads a checkpoint and recomputes geometry: no training stack needed
    (importing Lightning costs seconds)."""
    import subprocess
    import sys

    code = "import sys, protoreg.rundirs.check; sys.exit(any(m.split('.')[0] in ('lightning', 'pytorch_lightning') for m in sys.modules))"
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0
