"""protoreg.rundirs.layout: the prototype rows round-trip, output folders are checked and never
collide, and a run directory whose files disagree is refused naming the file."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from protoreg.errors import RunDirError
from protoreg.rundirs.layout import (
    CONFIG,
    PROTOTYPES,
    SWEEP_MANIFEST,
    check_consistent,
    check_out,
    csv_text,
    default_out,
    prototype_header,
    prototype_rows,
    read_prototype_positions,
)
from protoreg.training.engine import Units


def units(m: int = 4, d: int = 3) -> Units:
    rng = np.random.default_rng(0)
    pos = rng.random((m, d))
    pos[1, 0] = 1 / 3  # a float whose repr must round-trip exactly
    return Units(positions=pos, outside=np.arange(m) % 2 == 0, hull_distance=rng.random(m), expelled_at=np.array([-1, 5, -1, 0][:m]), wins=np.arange(m))


def test_prototype_rows_round_trip_exactly(tmp_path: Path) -> None:
    u = units()
    path = tmp_path / PROTOTYPES
    path.write_text(csv_text([prototype_header(3), *prototype_rows(u)]))
    assert path.read_text().splitlines()[0] == "unit,p0,p1,p2,outside_hull,hull_distance,expelled_at_step,wins"
    assert np.array_equal(read_prototype_positions(path), u.positions)  # repr of every float: bit for bit
    row = path.read_text().splitlines()[2].split(",")
    assert row[0] == "1" and row[-4:-1] == ["0", repr(float(u.hull_distance[1])), "5"] and row[-1] == "1"
    # a sweep's file pads lower-dimensional runs to the widest and selects a run by its name
    padded = prototype_rows(units(2, 1), dim=3)
    assert padded[0][2:4] == ["", ""]


def test_default_out_never_gives_the_same_folder_twice(tmp_path: Path) -> None:
    outs = {default_out(tmp_path / "runs") for _ in range(5)}
    assert len(outs) == 5 and all(p.is_dir() and not any(p.iterdir()) for p in outs)


@pytest.mark.parametrize(
    "make, needle",
    [
        (lambda p: p.write_text("x"), "exists and is not a directory"),
        (lambda p: (p.mkdir(), (p / "notes.txt").write_text("mine")), "output directory exists and is not empty (notes.txt)"),
        (lambda p: (p.mkdir(), (p / SWEEP_MANIFEST).write_text("{}")), "a sweep directory, not a run directory"),
        (lambda p: (p.mkdir(), (p / CONFIG).write_text("{}")), "already holds a run"),
    ],
)
def test_an_out_a_new_run_may_not_use_is_refused_with_the_reason(tmp_path: Path, make, needle: str) -> None:  # type: ignore[no-untyped-def]
    out = tmp_path / "out"
    make(out)
    with pytest.raises(RunDirError, match=r"^" + str(out).replace("/", r"\/") + ": " + needle.replace("(", r"\(").replace(")", r"\)")):
        check_out(out)


def test_new_and_empty_outs_are_accepted(tmp_path: Path) -> None:
    check_out(tmp_path / "a" / "b")  # missing parents are created
    assert (tmp_path / "a").is_dir() and not (tmp_path / "a" / "b").exists()
    (tmp_path / "empty").mkdir()
    check_out(tmp_path / "empty")


def test_files_that_disagree_are_refused_naming_the_file(tmp_path: Path) -> None:
    metrics = {"width": 4, "dim": 3, "n": 10}
    check_consistent(tmp_path, metrics, np.zeros((4, 3)))
    with pytest.raises(RunDirError, match=r"prototypes.csv: 3 unit row\(s\), but metrics.json says width 4"):
        check_consistent(tmp_path, metrics, np.zeros((3, 3)))
    with pytest.raises(RunDirError, match=r"prototypes.csv: 2 coordinate column\(s\), but metrics.json says dim 3"):
        check_consistent(tmp_path, metrics, np.zeros((4, 2)))
    np.savez(tmp_path / "data.npz", x=np.zeros((9, 3)), y=np.zeros((9, 1)))
    with pytest.raises(RunDirError, match=r"data.npz: inputs of shape \(9, 3\), but metrics.json says n=10, dim=3"):
        check_consistent(tmp_path, metrics, np.zeros((4, 3)))
