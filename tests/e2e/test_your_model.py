"""docs/your_model.md runs as written, and HullCallback works with lightning and with the
standalone pytorch_lightning: logging through either TensorBoardLogger, stopping on expulsion,
surviving a checkpoint save and resume."""

from __future__ import annotations

import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

DOC = Path(__file__).resolve().parents[2] / "docs" / "your_model.md"
GEOMETRY_TAGS = {"geometry/outside_hull_frac", "geometry/mean_hull_distance", "geometry/max_hull_distance", "geometry/min_prototype_gap", "geometry/duplicate_prototypes"}


def examples() -> list[str]:
    return re.findall(r"```python\n(.*?)```", DOC.read_text(), re.S)


def run_example(code: str, cwd: Path) -> str:
    proc = subprocess.run([sys.executable, "-W", "ignore", "-c", code], cwd=cwd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout


def scalars(logdir: Path) -> dict[str, list[tuple[int, float]]]:
    (events,) = list(logdir.rglob("events.out.tfevents.*"))
    acc = EventAccumulator(str(events.parent))
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def test_the_plain_loop_example_keeps_its_centres_inside(tmp_path: Path) -> None:
    out = run_example(examples()[0], tmp_path).strip().splitlines()
    assert [line.split(":")[0] for line in out[:4]] == ["step 0", "step 100", "step 200", "step 300"]
    assert out[3].endswith("outside 0.00") and re.fullmatch(r"recon_error 0\.0\d+ over 20 pairs", out[4])


@pytest.mark.parametrize("namespace", ["lightning.pytorch", "pytorch_lightning"])
def test_the_lightning_example_logs_the_geometry_in_either_namespace(tmp_path: Path, namespace: str) -> None:
    code = examples()[1]
    if namespace == "pytorch_lightning":
        pytest.importorskip("pytorch_lightning")
        code = code.replace("import lightning.pytorch as L ", "import pytorch_lightning as L ", 1)
        code += "\nimport sys\nassert 'lightning' not in sys.modules, 'the standalone package alone'\n"
    out = run_example(code, tmp_path)
    assert re.fullmatch(r"5 checks, outside 0\.\d\d, recon_error 0\.\d+\n", out)
    tags = scalars(tmp_path / "tb_logs")
    assert GEOMETRY_TAGS | {"metric/recon_error", "loss/train"} <= set(tags)
    assert [s for s, _ in tags["geometry/outside_hull_frac"]] == [0, 50, 100, 150, 200]


def test_the_lvq_example_shows_expulsion_without_an_attractor(tmp_path: Path) -> None:
    out = run_example(examples()[2], tmp_path).strip().splitlines()
    assert out[0].startswith("PairingWarning - repulsor 'separation' (your model) is active with no compatible attractor")
    alone, paired = (float(re.search(r": (\d\.\d\d) of", line).group(1)) for line in out[1:3])  # type: ignore[union-attr]
    assert alone > 0.3 and paired == 0.0


CALLBACK_RUN = textwrap.dedent(
    """
    import sys, torch
    import {ns} as L
    from torch.utils.data import DataLoader, TensorDataset
    from protoreg.callbacks import HullCallback

    class Net(L.LightningModule):
        def __init__(self):
            super().__init__()
            self.centers = torch.nn.Parameter(torch.full((4, 2), 0.5))
        def training_step(self, batch, i):
            # pushes every centre to the right, out of the unit square
            return -self.centers[:, 0].sum() + 0.0 * batch[0].sum()
        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.05)

    torch.manual_seed(0)
    x = torch.rand(50, 2)
    data = DataLoader(TensorDataset(x, torch.zeros(50, 1)), batch_size=50)
    mode, steps, ckpt = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    hull = HullCallback(x, lambda m: m.centers, every_n_steps=5, on_expulsion=mode)
    kw = dict(accelerator="cpu", logger=L.loggers.TensorBoardLogger("logs", name="net"), callbacks=[hull],
              enable_progress_bar=False, enable_model_summary=False, enable_checkpointing=False)
    trainer = L.Trainer(max_steps=steps, **kw)
    trainer.fit(Net(), data, ckpt_path=ckpt if ckpt != "-" else None)
    trainer.save_checkpoint("last.ckpt")
    print(trainer.global_step, hull.checks_run, hull.expulsion_events, hull.stopped_at, hull.last_step)
    """
)


@pytest.mark.parametrize("ns", ["lightning.pytorch", "pytorch_lightning"])
def test_the_callback_stops_on_expulsion_and_resumes_from_a_checkpoint(tmp_path: Path, ns: str) -> None:
    if ns == "pytorch_lightning":
        pytest.importorskip("pytorch_lightning")
    script = tmp_path / "run.py"
    script.write_text(CALLBACK_RUN.format(ns=ns))

    def run(*args: str) -> list[str]:
        proc = subprocess.run([sys.executable, "-W", "ignore", str(script), *args], cwd=tmp_path, capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr[-2000:]
        return proc.stdout.split()

    # stop: the centres move right by 0.05 a step, past the inputs' largest x (< 1) by step 10
    step, checks, events, stopped, last = run("stop", "100", "-")
    assert (step, stopped, last) == ("10", "10", "10") and int(events) == 1 and int(checks) == 3  # 0, 5, 10
    # resume: the callback's state comes back with the checkpoint and counting goes on
    (tmp_path / "first.ckpt").write_bytes((tmp_path / "last.ckpt").read_bytes())
    step, checks, events, _, last = run("ignore", "25", "first.ckpt")
    assert step == "25" and last == "25" and int(checks) == 3 + 3 and int(events) == 1 + 3  # 15, 20 and 25 are checked
    tags = {}
    for events_file in (tmp_path / "logs").rglob("events.out.tfevents.*"):
        acc = EventAccumulator(str(events_file))
        acc.Reload()
        for e in acc.Scalars("geometry/outside_hull_frac") if "geometry/outside_hull_frac" in acc.Tags()["scalars"] else []:
            tags[e.step] = e.value
    assert tags[0] == 0.0 and tags[25] == 1.0 and set(tags) >= {0, 5, 10, 15, 20, 25}


def test_a_callback_instance_is_a_callback_of_the_loaded_namespaces() -> None:
    import lightning.pytorch as L

    from protoreg.callbacks import HullCallback

    cb = HullCallback(torch.rand(10, 2), lambda m: m.centers)
    assert isinstance(cb, L.Callback) and isinstance(cb, HullCallback) and cb.state_key == "HullCallback"
    if "pytorch_lightning" in sys.modules:
        import pytorch_lightning

        assert isinstance(cb, pytorch_lightning.Callback)
    with pytest.raises(ValueError, match="on_expulsion must be one of warn, stop, ignore"):
        HullCallback(torch.rand(10, 2), lambda m: m.centers, on_expulsion="loud")
    with pytest.raises(TypeError, match="prototypes must be a callable"):
        HullCallback(torch.rand(10, 2), torch.rand(3, 2))  # type: ignore[arg-type]


@pytest.mark.filterwarnings("ignore::protoreg.ExpulsionWarning", "ignore::protoreg.PairingWarning")
def test_the_monitor_and_the_readout_give_fits_values_on_fits_prototypes(tmp_path: Path) -> None:
    import numpy as np

    import protoreg

    run = protoreg.fit("data.name=digits", "data.n=60", "model.width=30", "train.steps=60", "losses.separation.weight=1",
                       "losses.coverage.weight=0", "trainer.accelerator=cpu", out=tmp_path / "r", progress=False)
    x = np.load(run.dir / "data.npz")["x"]
    report = protoreg.HullMonitor(torch.from_numpy(x)).check(torch.from_numpy(run.prototypes))
    assert report.outside_frac == pytest.approx(run.metrics["outside_hull_frac"], abs=1e-12) and report.outside_frac > 0
    assert report.metrics()["geometry/mean_hull_distance"] == pytest.approx(run.metrics["mean_hull_distance"], abs=float(report.tol))
    r = protoreg.reconstruct(run.prototypes, x, image_shape=(8, 8))
    for key in ("recon_error", "recon_ssim", "recon_ncc", "nn_ncc"):
        assert r.metrics[key] == pytest.approx(run.metrics[key], rel=1e-9), key
