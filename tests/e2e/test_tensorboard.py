"""TensorBoard you can read: the projector's metadata has named columns (kind, unit, hull,
distances, the matched sample and, for labelled data, its label), training samples sit next to
the prototypes, and image data get their images as a sprite; the figures are images drawn
without pyplot."""

from __future__ import annotations

import csv
import warnings
from pathlib import Path

import numpy as np
import pytest

import protoreg
from protoreg.training.callbacks import PROJECTOR_COLUMNS, labels_of

FAST = ["train.steps=20", "train.log_every_n_steps=10", "geometry.every_n_steps=10", "trainer.accelerator=cpu"]


def _projector(run_dir: Path) -> tuple[list[str], list[list[str]], Path]:
    (meta,) = list((run_dir / "tb").rglob("metadata.tsv"))
    with meta.open(newline="") as fh:
        rows = list(csv.reader(fh, delimiter="\t"))
    return rows[0], rows[1:], meta.parent


def test_image_data_get_named_columns_labels_and_a_sprite(tmp_path: Path, no_autoload: None) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        run = protoreg.fit(*FAST, "data.name=digits", "data.n=30", "data.classes=[0,1,7]", out=tmp_path / "r")
    header, rows, folder = _projector(run.dir)
    assert header == [*PROJECTOR_COLUMNS, "label"]
    protos = [r for r in rows if r[0] == "prototype"]
    samples = [r for r in rows if r[0] == "sample"]
    assert len(protos) == 30 and len(samples) == 30
    assert {r[2] for r in protos} <= {"inside", "outside"} and all(r[1].isdigit() for r in protos)
    _, y = protoreg.load_data(*FAST, "data.name=digits", "data.n=30", "data.classes=[0,1,7]")
    labels = y.argmax(1)
    for r in protos:  # a prototype's label is its matched sample's
        assert r[6] == str(labels[int(r[4])])
    assert [r[6] for r in samples] == [str(v) for v in labels]
    assert {r[6] for r in samples} == {"0", "1", "7"}  # the digits kept
    sprite = folder / "sprite.png"
    assert sprite.is_file() and sprite.stat().st_size > 0
    tensors = np.loadtxt(folder / "tensors.tsv", delimiter="\t")
    assert tensors.shape == (60, 64)
    assert (run.dir / "tb" / "projector_config.pbtxt").read_text().count("sprite") >= 1


def test_regression_targets_have_no_label_column(tmp_path: Path, no_autoload: None) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        run = protoreg.fit(*FAST, "data.n=12", "data.dim=3", out=tmp_path / "r")
    header, rows, folder = _projector(run.dir)
    assert header == list(PROJECTOR_COLUMNS)
    assert sum(r[0] == "prototype" for r in rows) == 12 and sum(r[0] == "sample" for r in rows) == 12
    assert not (folder / "sprite.png").exists()


@pytest.mark.parametrize(
    ("y", "expected"),
    [
        ([[0.0], [2.0], [1.0]], [0, 2, 1]),
        ([[0.0, 1.0], [1.0, 0.0]], [1, 0]),
        ([[0.3], [0.7]], None),
        ([[0.5, 0.5], [1.0, 0.0]], None),
    ],
)
def test_labels_are_recognised_only_for_labels_and_one_hot(y: list[list[float]], expected: list[int] | None) -> None:
    import torch

    got = labels_of(torch.tensor(y))
    assert (got is None) if expected is None else (got is not None and got.tolist() == expected)
