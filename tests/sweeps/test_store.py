"""The sweep directory's files (protoreg.sweeps.store), no training: results.csv as written and
as a spreadsheet re-saves it, cut rows, atomic appends, prototypes.csv, and the refusal of a
directory that is not this sweep's."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
from omegaconf import OmegaConf

from helpers import quick
from protoreg import config as C
from protoreg.errors import ResultsWarning, RunDirError
from protoreg.frontend.voice import command_line
from protoreg.sweeps import store as S

HEADER = ["run", "mask", "n", "status", "batch"]


@pytest.fixture(autouse=True)
def _no_plugins(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PROTOREG_DISABLE_PLUGIN_AUTOLOAD", "1")


def write(path: Path, text: str, **kw: str) -> Path:
    path.write_bytes(text.encode(kw.get("encoding", "utf-8")))
    return path


def test_no_results_file_is_no_rows(tmp_path: Path) -> None:
    assert S.read_results(tmp_path) == []
    write(tmp_path / S.RESULTS, "")
    assert S.read_results(tmp_path) == []


def test_results_round_trip_through_append_rows(tmp_path: Path) -> None:
    path = tmp_path / S.RESULTS
    S.append_rows(path, HEADER, [["a", "none", 3, "completed", 0]])
    S.append_rows(path, HEADER, [["b", "coverage", 5, "failed", 1], ["c,d", "x", 1, 'say "hi"', 1]])
    assert S.read_header(path) == HEADER
    assert S.read_results(tmp_path) == [
        dict(zip(HEADER, ["a", "none", "3", "completed", "0"])),
        dict(zip(HEADER, ["b", "coverage", "5", "failed", "1"])),
        dict(zip(HEADER, ["c,d", "x", "1", 'say "hi"', "1"])),  # quoted cells come back as written
    ]
    assert path.read_text().startswith("run,mask,n,status,batch\n")


def test_append_rows_keeps_only_the_runs_in_keep_and_drops_cut_rows(tmp_path: Path) -> None:
    path = write(tmp_path / S.RESULTS, "run,mask,n,status,batch\na,none,3,completed,0\nb,none,3\nc,none,5,completed,0\n")
    S.append_rows(path, HEADER, [["d", "none", 5, "completed", 1]], keep={"c", "d"})
    assert [r[0] for r in (line.split(",") for line in path.read_text().splitlines()[1:])] == ["c", "d"]


def test_spreadsheet_saved_results_read_the_same(tmp_path: Path) -> None:
    plain = tmp_path / "plain"
    plain.mkdir()
    write(plain / S.RESULTS, "run,mask,n,status,batch\na,none,3,completed,0\n")
    saved = tmp_path / "saved"
    saved.mkdir()
    write(saved / S.RESULTS, "\ufeffrun,mask,n,status,batch\r\na,none,3,completed,0\r\n\r\n")
    assert S.read_results(saved) == S.read_results(plain) == [dict(zip(HEADER, ["a", "none", "3", "completed", "0"]))]
    assert S.read_header(saved / S.RESULTS) == HEADER


def test_a_cut_row_is_left_out_with_one_warning_naming_its_line(tmp_path: Path) -> None:
    write(tmp_path / S.RESULTS, "run,mask,n,status,batch\na,none,3,completed,0\nb,none,3,completed\n\nc,none,5,completed,0,extra\n")
    with pytest.warns(ResultsWarning) as rec:
        rows = S.read_results(tmp_path)
    assert [r["run"] for r in rows] == ["a"]
    (w,) = rec
    assert str(w.message) == (
        f"{tmp_path / S.RESULTS}: line 3 (run 'b') has 4 cells, expected 5; line 5 (run 'c') has 6 cells, expected 5: "
        "not a complete record, so the run is not counted as finished (re-running the sweep trains it again)"
    )
    assert w.filename == __file__  # attributed to the caller, not to protoreg


def test_many_cut_rows_are_summarised(tmp_path: Path) -> None:
    body = "".join(f"r{i},none\n" for i in range(7))
    write(tmp_path / S.RESULTS, "run,mask,n,status,batch\n" + body)
    with pytest.warns(ResultsWarning, match=r"line 6 \(run 'r4'\) has 2 cells, expected 5; and 2 more: not a complete record"):
        assert S.read_results(tmp_path) == []


def test_a_file_that_is_not_utf8_is_one_line(tmp_path: Path) -> None:
    path = write(tmp_path / S.RESULTS, "run,mask\n\xe9t\xe9,none\n", encoding="latin-1")
    with pytest.raises(RunDirError, match=r"results\.csv: not a readable UTF-8 CSV file \(UnicodeDecodeError: "):
        S.read_results(tmp_path)
    assert "\n" not in str(pytest.raises(RunDirError, S.read_header, path).value)


def test_next_group_index(tmp_path: Path) -> None:
    assert S.next_group_index(tmp_path, []) == 0
    rows = [{"batch": "0"}, {"batch": "3"}, {"batch": ""}, {"batch": "x"}]
    assert S.next_group_index(tmp_path, rows) == 4
    (tmp_path / S.TB / "batch_7").mkdir(parents=True)
    (tmp_path / S.TB / "batch_x").mkdir()
    (tmp_path / S.TB / "batch_9.txt").touch()
    assert S.next_group_index(tmp_path, rows) == 8


def test_read_prototypes(tmp_path: Path) -> None:
    write(
        tmp_path / S.PROTOTYPES,
        "run,unit,p0,p1\na,0,0.5,1.0\na,1,-1,inf\nb,0,2,3\nb,1,cut\n",
    )
    got = S.read_prototypes(tmp_path)
    assert list(got) == ["a", "b"]
    np.testing.assert_array_equal(got["a"], np.array([[0.5, 1.0], [-1.0, np.inf]]))
    np.testing.assert_array_equal(got["b"], np.array([[2.0, 3.0]]))
    assert S.read_prototype_rows(tmp_path) == {"a": [["a", "0", "0.5", "1.0"], ["a", "1", "-1", "inf"]], "b": [["b", "0", "2", "3"]]}
    assert S.read_prototypes(tmp_path / "none") == {} and S.read_prototype_rows(tmp_path / "none") == {}


# ----------------------------------------------------------------- the sweep directory
def test_open_sweep_dir_refuses_a_foreign_directory_in_the_callers_words(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(RunDirError) as info:
        S.open_sweep_dir(tmp_path, quick(), HEADER)
    assert str(info.value) == f"{tmp_path}: not a sweep directory (no sweep.yaml) and not empty; choose another out="
    with command_line(), pytest.raises(RunDirError) as info:
        S.open_sweep_dir(tmp_path, quick(), HEADER)
    assert str(info.value).endswith("choose another --out")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]


def test_open_sweep_dir_refuses_a_file(tmp_path: Path) -> None:
    f = tmp_path / "f"
    f.write_text("")
    with pytest.raises(RunDirError, match=r": exists and is not a directory$"):
        S.open_sweep_dir(f, quick(), HEADER)


def test_open_sweep_dir_creates_and_then_accepts_its_own(tmp_path: Path) -> None:
    out = tmp_path / "a" / "sweep"
    S.open_sweep_dir(out, quick(), HEADER, create=False)
    assert not out.exists()
    S.open_sweep_dir(out, quick(), HEADER)
    assert out.is_dir()
    S.init_files(out, quick(), HEADER)
    assert S.read_header(out / S.RESULTS) == HEADER and (out / S.MANIFEST).is_file()
    S.open_sweep_dir(out, quick("sweep.max_runs_per_batch=3", "sweep.executor=local"), HEADER)  # volatile keys may change


def test_open_sweep_dir_lists_the_differing_keys(tmp_path: Path) -> None:
    S.init_files(tmp_path, quick(), HEADER)
    with pytest.raises(RunDirError) as info:
        S.open_sweep_dir(tmp_path, quick("train.steps=31", "train.lr=0.5"), HEADER)
    old = quick()
    assert str(info.value) == (
        f"{tmp_path}: this sweep directory was started with a different config "
        f"(train.lr: {old.train.lr!r} -> 0.5; train.steps: 30 -> 31); "
        "re-run the original call to resume, or choose another out="
    )


def test_open_sweep_dir_refuses_other_columns(tmp_path: Path) -> None:
    S.init_files(tmp_path, quick(), HEADER)
    with pytest.raises(RunDirError) as info:
        S.open_sweep_dir(tmp_path, quick(), [*HEADER, "extra"])
    assert str(info.value) == f"{tmp_path / S.RESULTS}: columns do not match this sweep's (run, mask, n, status, batch ...); choose another out="


def test_config_differences_ignore_volatile_keys_and_defaults_of_missing_keys() -> None:
    a = quick()
    assert S.config_differences(a, quick("sweep.max_runs=5", "sweep.max_runs_per_batch=2")) == []
    old = OmegaConf.create(OmegaConf.to_container(a))
    del old.train["lr"]  # a manifest written before the key existed: its default (0.01) matches
    assert C.default_config().train.lr == a.train.lr == 0.01
    assert S.config_differences(old, a) == []
    assert S.config_differences(old, quick("train.lr=0.5")) == ["train.lr: <unset> -> 0.5"]
    assert S.config_differences(a, quick("train.steps=7")) == ["train.steps: 30 -> 7"]


def test_a_second_writer_is_refused(tmp_path: Path) -> None:
    with S.locked(tmp_path):
        with pytest.raises(RunDirError), warnings.catch_warnings():
            with S.locked(tmp_path):
                pass
