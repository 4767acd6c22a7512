"""Real data end to end: a digits run keeps its training data (data.npz), reports the image
metrics and draws the reconstructions; output.save_data=false keeps no data; image metrics in a
sweep; bad input about images. Workflow tests: marked ``slow``."""

from __future__ import annotations

import csv
import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

import protoreg
from protoreg.frontend.cli import main
from protoreg.errors import ConfigError, DataError
from helpers import expected_check
from protoreg.evaluation.evaluate import IMAGE_METRIC_NAMES
from protoreg.evaluation.images import image_metrics
from protoreg.geometry import outside_hull
from protoreg.training.callbacks import ExpulsionWarning

pytestmark = pytest.mark.slow

DIGITS = ["data.name=digits", "data.n=30", "train.steps=40", "train.log_every_n_steps=10", "geometry.every_n_steps=20", "trainer.accelerator=cpu"]


def quiet_fit(*overrides: str, **kw: object) -> protoreg.Run:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return protoreg.fit(*overrides, **kw)  # type: ignore[arg-type]


def test_a_digits_run_keeps_its_data_and_reports_image_metrics(tmp_path: Path, no_autoload: None) -> None:
    run = quiet_fit(*DIGITS, out=tmp_path / "d")
    m = run.metrics
    assert run.status == "completed" and m["n"] == 30 and m["dim"] == 64 and m["image_shape"] == [8, 8]
    data = np.load(run.dir / "data.npz")
    x, y = protoreg.load_data(*DIGITS)
    np.testing.assert_array_equal(data["x"], x)  # exactly what was trained on
    np.testing.assert_array_equal(data["y"], y)
    assert list(data["image_shape"]) == [8, 8] and y.shape == (30, 10)
    # the image metrics are those of the stored prototypes against the stored images
    import torch

    ref = image_metrics(torch.tensor(run.prototypes)[None], torch.tensor(data["x"])[None], (8, 8))
    for key in IMAGE_METRIC_NAMES:
        assert m[key] == pytest.approx(float(ref[key][0]), abs=1e-6), key
    assert 0.0 <= m["recon_ssim_frac"] <= 1.0 and -1.0 <= m["recon_ssim"] <= 1.0
    assert (run.dir / "reconstructions.png").stat().st_size > 1000
    ea = EventAccumulator(str(run.dir / "tb"), size_guidance={"images": 0})
    ea.Reload()
    assert "images/reconstructions" in ea.Tags()["images"]
    # the stored data trains again through data.path, as an image data set
    again = quiet_fit("data.path=" + str(run.dir / "data.npz"), "data.targets=null", *DIGITS[2:], out=tmp_path / "again")
    assert again.metrics["image_shape"] == [8, 8] and again.metrics["n"] == 30


def test_non_image_runs_have_null_image_metrics(tmp_path: Path, no_autoload: None, fast: list[str]) -> None:
    run = quiet_fit(*fast, "data.name=moons", "data.n=12", out=tmp_path / "m")
    assert all(run.metrics[k] is None for k in IMAGE_METRIC_NAMES) and "image_shape" not in run.metrics
    assert run.prototypes.shape == (12, 2) and not (run.dir / "reconstructions.png").exists()
    assert np.load(run.dir / "data.npz")["x"].shape == (12, 2)


def test_save_data_false_keeps_no_data_and_check_says_what_it_cannot_compute(
    tmp_path: Path, no_autoload: None, capsys: pytest.CaptureFixture[str]
) -> None:
    run = quiet_fit(*DIGITS, "output.save_data=false", out=tmp_path / "p")
    assert not (run.dir / "data.npz").exists()
    import torch

    state = torch.load(run.dir / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    assert "x" not in state and "y" not in state  # not in the checkpoint either
    code = main(["check", str(run.dir)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "output.save_data=false" in err[0] and "cannot be computed" in err[0]
    # a run with its data is checked, image metrics included
    full = quiet_fit(*DIGITS, out=tmp_path / "full")
    code = main(["check", str(full.dir), "--json"])
    report = json.loads(capsys.readouterr().out)
    assert (code, report["verdict"].split()[0]) == expected_check(full.dir)
    assert report["metrics"]["recon_ssim"] == pytest.approx(full.metrics["recon_ssim"], abs=1e-9)


def test_a_digits_sweep_records_image_metrics_and_c1_by_ssim(tmp_path: Path, no_autoload: None) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sw = protoreg.sweep("data.n=20", "train.steps=30", "sweep.seeds=1", "sweep.masks=[coverage, overlap]", "losses.separation.weight=0",
                            config=Path(__file__).resolve().parents[2] / "configs" / "digits.yaml", out=tmp_path / "sw", plots=False)
    assert len(sw.rows) == 4 and all(isinstance(r["recon_ssim"], float) for r in sw.rows)
    assert [c.id for c in sw.claims] == ["C1", "C1-SSIM", "C2", "C3", "C4"]
    assert "recon_ssim" in (sw.dir / "summary.md").read_text()
    with (sw.dir / "results.csv").open() as fh:
        header = next(csv.reader(fh))
    assert header[header.index("dead_units") + 1 : header.index("steps")] == list(IMAGE_METRIC_NAMES)


@pytest.mark.parametrize(
    "overrides,error,needle",
    [
        (["data.name=digits", "data.classes=[3, 12]"], ConfigError, "data.classes"),
        (["data.name=digits", "data.n=5000"], ConfigError, "data.n"),
        (["data.name=moons", "data.classes=[1]"], ConfigError, "data.classes"),
        (["data.name=digits", "model.parameterization=affine"], ConfigError, "model.parameterization"),
    ],
)
def test_bad_real_data_input_names_the_key_and_writes_nothing(tmp_path: Path, no_autoload: None, overrides, error, needle) -> None:
    with pytest.raises(error, match=needle.replace(".", r"\.")):
        protoreg.fit(*overrides, out=tmp_path / "x")
    assert list(tmp_path.iterdir()) == []


def test_an_npz_whose_image_shape_does_not_match_is_refused(tmp_path: Path, no_autoload: None, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "bad.npz"
    np.savez(path, x=np.random.default_rng(0).random((10, 64)), y=np.zeros((10, 1)), image_shape=np.array([7, 7]))
    with pytest.raises(DataError, match="image_shape"):
        protoreg.fit(f"data.path={path}", out=tmp_path / "x")
    assert main(["fit", "--out", str(tmp_path / "y"), f"data.path={path}"]) == 2
    assert "image_shape" in capsys.readouterr().err and not (tmp_path / "y").exists()


def test_large_runs_compute_the_matching_only_at_the_final_check(tmp_path: Path, no_autoload: None) -> None:
    """Above recon_every_check_max (N x M), checks during training skip the exact matching: no
    intermediate metric/recon_error in TensorBoard, but the final one and metrics.json have it."""
    from protoreg import resolve_config
    from protoreg.plugins.registry import Registry, get_plugin_manager
    from protoreg.training import GeometryCallback, build_group, run_spec, train_group

    reg = Registry.load(get_plugin_manager(autoload=False))
    cfg = resolve_config("data.n=12", "train.steps=40", "train.log_every_n_steps=10", "trainer.accelerator=cpu", reg=reg)
    outcomes = {}
    for limit in (1, 10**9):
        group = build_group([run_spec(cfg, reg)], reg)
        cb = GeometryCallback(every_n_steps=10, on_expulsion="ignore", figures=False, recon_every_check_max=limit)
        outcomes[limit] = train_group(group, cb, log_dir=tmp_path / str(limit))
        ea = EventAccumulator(str(tmp_path / str(limit) / "tb"))
        ea.Reload()
        steps = [e.step for e in ea.Scalars("metric/recon_error")]
        assert steps == ([40] if limit == 1 else [0, 10, 20, 30, 40]), (limit, steps)
    assert outcomes[1].runs[0].metrics == outcomes[10**9].runs[0].metrics  # same numbers either way


def test_a_28x28_image_run_on_its_images_is_not_called_expelled(tmp_path: Path, no_autoload: None, capsys: pytest.CaptureFixture[str]) -> None:
    """784-D image data where coverage holds every prototype on a training image: the exact test
    would call them outside (every image is a vertex of the hull), the margin does not; fit,
    prototypes.csv, check and reconstructions.png agree, and the run records its time."""
    rng = np.random.default_rng(0)
    x = (rng.random((40, 784)) < 0.2).astype(np.float32)  # 40 sparse binary 28x28 images
    np.savez(tmp_path / "imgs.npz", x=x, y=np.eye(4, dtype=np.float32)[rng.integers(0, 4, 40)], image_shape=np.array([28, 28]))
    out = tmp_path / "run"
    with warnings.catch_warnings():
        warnings.simplefilter("error", ExpulsionWarning)  # no expulsion reported
        run = protoreg.fit(f"data.path={tmp_path / 'imgs.npz'}", "train.steps=20", "train.lr=0.001", "train.log_every_n_steps=10",
                           "geometry.every_n_steps=10", "trainer.accelerator=cpu", out=out)
    m = run.metrics
    exact = outside_hull(torch.as_tensor(run.prototypes)[None].double(), torch.as_tensor(x)[None].double())
    assert exact.double().mean() > 0.5  # the exact test calls most of them outside
    assert m["outside_hull_frac"] == 0.0 and m["recon_ssim"] is not None
    assert m["train_seconds"] > m["check_seconds"] > 0
    rows = list(csv.DictReader((out / "prototypes.csv").open()))
    assert {r["outside_hull"] for r in rows} == {"0"} and max(float(r["hull_distance"]) for r in rows) < 0.5
    assert (out / "reconstructions.png").stat().st_size > 1000
    capsys.readouterr()
    assert main(["check", str(out)]) == 0  # exit 1 would mean expulsion
    assert "expulsion" not in capsys.readouterr().out
