"""Speed of ``protoreg fit``: wall time of the default command, and ms per optimisation step of
the fit path next to a plain PyTorch loop doing the same step (same model, loss and optimiser).

    python benchmarks/fit_speed.py [--steps 2000] [--repeats 3]

Prints the numbers and the ratio fit-path / plain-torch (target: <= 1.5).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import torch

from omegaconf import OmegaConf

from protoreg import resolve_config
from protoreg.losses.coverage import Coverage
from protoreg.evaluation.evaluate import fit_mse
from protoreg.plugins.registry import Registry
from protoreg.training import build_group, run_spec
from protoreg.training.trainer import fit_chunks, make_trainer


def default_fit_wall() -> float:
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-m", "protoreg", "fit", "--out", str(Path(tmp) / "run")], check=True,
                       capture_output=True, env={**os.environ, "PROTOREG_DISABLE_PLUGIN_AUTOLOAD": "1"})
        return time.perf_counter() - t0


def import_wall() -> float:
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-c", "import protoreg.training"], check=True)
    return time.perf_counter() - t0


def fit_path_ms(n: int, steps: int, reg: Registry) -> float:
    cfg = resolve_config(f"data.n={n}", f"train.steps={steps}", "trainer.accelerator=cpu", reg=reg)
    group = build_group([run_spec(cfg, reg)], reg)
    trainer = make_trainer(OmegaConf.to_container(cfg.trainer), None, [])  # type: ignore[arg-type]
    t0 = time.perf_counter()
    fit_chunks(group.module, trainer)
    return (time.perf_counter() - t0) / steps * 1e3


def plain_torch_ms(n: int, steps: int, reg: Registry) -> float:
    cfg = resolve_config(f"data.n={n}", f"train.steps={steps}", reg=reg)
    module = build_group([run_spec(cfg, reg)], reg).module
    model, x, y, spacing = module.model, module.x, module.y, module.spacing
    cov = Coverage()
    from protoreg.plugin_api import LossContext

    opt = torch.optim.Adam(model.parameters(), lr=float(cfg.train.lr))
    t0 = time.perf_counter()
    for _ in range(steps):
        opt.zero_grad(set_to_none=True)
        h, pred = model(x)
        ctx = LossContext(x=x, y=y, hidden=h, pred=pred, prototypes=model.prototypes(), spacing=spacing, model=model)
        loss = fit_mse(pred, y) + 0.1 * cov(ctx, tau=1.0)
        loss.sum().backward()
        opt.step()
    return (time.perf_counter() - t0) / steps * 1e3


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--steps", type=int, default=2000)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    warnings.filterwarnings("ignore")
    os.environ["PROTOREG_DISABLE_PLUGIN_AUTOLOAD"] = "1"
    reg = Registry.load()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    walls = [default_fit_wall() for _ in range(args.repeats)]
    imports = min(import_wall() for _ in range(args.repeats))
    print(f"default `protoreg fit` wall time: best {min(walls):.2f} s of {args.repeats}, "
          f"of which importing torch + Lightning + protoreg {imports:.2f} s")
    for n in (20, 100):
        fp = min(fit_path_ms(n, args.steps, reg) for _ in range(args.repeats))
        pt = min(plain_torch_ms(n, args.steps, reg) for _ in range(args.repeats))
        print(f"N={n:4d}: fit path {fp:.3f} ms/step, plain torch {pt:.3f} ms/step, ratio {fp / pt:.2f}x")


if __name__ == "__main__":
    main()
