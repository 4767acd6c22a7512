"""Reading checkpoints safely (protoreg.rundirs.checkpoint): a crafted pickle is refused without
running its code, foreign files are refused, and the trained step count is read."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import pytest
import torch

from protoreg.errors import CheckpointError, RunDirError
from protoreg.rundirs.checkpoint import load_checkpoint, trained_steps


class _Exploit:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (os.mkdir, (str(self.marker),))


def test_a_crafted_pickle_is_refused_and_runs_no_code(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    path = tmp_path / "last.ckpt"
    torch.save({"state_dict": {}, "x": _Exploit(marker)}, path)
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(path)
    assert str(info.value).startswith(f"{path}: refused to load checkpoint safely (")
    assert "\n" not in str(info.value)
    assert not marker.exists()
    pickle.loads(pickle.dumps(_Exploit(marker)))  # the same payload does run when unpickled plainly
    assert marker.is_dir()


def test_missing_corrupt_and_foreign_files(tmp_path: Path) -> None:
    with pytest.raises(RunDirError) as info:
        load_checkpoint(tmp_path / "none.ckpt")
    assert str(info.value) == f"{tmp_path / 'none.ckpt'}: checkpoint not found"
    bad = tmp_path / "bad.ckpt"
    bad.write_bytes(b"not a checkpoint at all")
    with pytest.raises(CheckpointError, match=r": refused to load checkpoint safely \("):
        load_checkpoint(bad)
    for obj in ({"weights": torch.zeros(2)}, [1, 2]):
        path = tmp_path / "foreign.ckpt"
        torch.save(obj, path)
        with pytest.raises(CheckpointError) as info:
            load_checkpoint(path)
        assert str(info.value) == f"{path}: not a protoreg checkpoint (no state_dict)"


def test_a_plain_checkpoint_loads_on_cpu(tmp_path: Path) -> None:
    path = tmp_path / "last.ckpt"
    torch.save({"state_dict": {"w": torch.arange(3.0)}, "protoreg": {"step_count": 12}}, path)
    ckpt = load_checkpoint(path)
    assert torch.equal(ckpt["state_dict"]["w"], torch.arange(3.0)) and ckpt["state_dict"]["w"].device.type == "cpu"
    assert trained_steps(ckpt) == 12


@pytest.mark.parametrize(("ckpt", "steps"), [({}, 0), ({"protoreg": {}}, 0), ({"protoreg": {"step_count": "7"}}, 7), ({"protoreg": {"step_count": 3.0}}, 3)])
def test_trained_steps(ckpt: dict, steps: int) -> None:
    assert trained_steps(ckpt) == steps


@pytest.mark.parametrize("ckpt", [{"protoreg": {"step_count": "x"}}, {"protoreg": {"step_count": None}}, {"protoreg": 5}, {"protoreg": {"step_count": [1]}}])
def test_an_unreadable_step_count_is_refused(ckpt: dict) -> None:
    with pytest.raises(CheckpointError) as info:
        trained_steps(ckpt)
    assert str(info.value) == "not a protoreg checkpoint (unreadable step count)"
