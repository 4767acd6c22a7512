"""The whole paper grid through ``protoreg sweep`` against a minimal hand-written batched loop.

Usage::

    python benchmarks/grid_vs_loop.py [--config configs/paper.yaml] [--steps 2000] [--compile] [--skip-loop]

Both sides train the same runs (``configs/paper.yaml``: 8 on/off masks of coverage, separation
and overlap x 6 values of N x 10 seeds = 480 runs, 2,000 full-batch Adam steps, float32) in one
process, one after the other:

* ``protoreg``: :func:`protoreg.sweep` into a temporary directory: validation, planning, the
  Lightning engine, geometry checks, TensorBoard, ``results.csv``, ``prototypes.csv``, the
  study's claims, ``summary.md`` and the plots; everything a user gets.
* ``loop``: the obvious plain-PyTorch program a researcher would write: per N one batched
  Gaussian MLP of all 80 runs (the parameters of :class:`protoreg.model.mlp.GaussianMLP`: same data,
  same initialisation), its forward pass and the three losses written out inline with plain
  torch ops and per-run weights, ``Adam``, 2,000 steps. No logging, no checks,
  no evaluation, no files. ``--compile`` also times the loop with ``torch.compile`` of its step.

Both run with subnormal floats flushed to zero, as protoreg does while training. The script
prints both wall-clock times and the ratio protoreg / loop (below 1.0: protoreg is faster than the
hand-written loop), and the mean final training MSE of both as a check that they trained the same
problem.
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Callable

os.environ.setdefault("PROTOREG_DISABLE_PLUGIN_AUTOLOAD", "1")
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import numpy as np  # noqa: E402
import torch  # noqa: E402

import protoreg  # noqa: E402
from protoreg import config as C  # noqa: E402
from protoreg.model.mlp import GaussianMLP, pairwise_sq_dists, sample_spacing  # noqa: E402
from protoreg.plugins.registry import Registry  # noqa: E402
from protoreg.sweeps.plan import plan_groups, plan_sweep  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def loop_group(specs: list, steps: int, lr: float, *, compile_step: bool) -> float:
    """Train one group of runs with a plain batched loop; the mean final fit MSE."""
    x = torch.tensor(np.stack([s.x for s in specs]), dtype=torch.float32)
    y = torch.tensor(np.stack([s.y for s in specs]), dtype=torch.float32)
    r, n, d = x.shape
    seeds = [int(s.cfg.train.seed) for s in specs]
    model = GaussianMLP(r, n, d, y.shape[2], "affine" if d == 1 else "radial")
    model.initialize(x, y, seeds)

    def per_run(name: str, key: str) -> torch.Tensor:
        return torch.tensor([float(s.settings[name][key]) for s in specs]).view(r, 1, 1)

    w_cov, w_sep, w_ov = (per_run(k, "weight").view(r) for k in ("coverage", "separation", "overlap"))
    s2 = sample_spacing(x.double()).float().view(r, 1, 1).pow(2)
    t_cov, t_sep = per_run("coverage", "tau") * s2, per_run("separation", "tau") * s2
    eye = torch.eye(n, dtype=torch.bool)
    opt = torch.optim.Adam(model.parameters(), lr=lr)

    def forward() -> tuple[torch.Tensor, torch.Tensor]:  # the model written out with plain torch ops
        if d == 1:
            h = torch.exp(-(x * model.w.unsqueeze(1) + model.b.unsqueeze(1)).square())
        else:
            h = torch.exp(-pairwise_sq_dists(x, model.centers) * (0.5 * torch.exp(-2.0 * model.log_s).unsqueeze(1)))
        return h, torch.baddbmm(model.c.unsqueeze(1), h, model.v)

    def step() -> torch.Tensor:
        opt.zero_grad(set_to_none=True)
        h, pred = forward()
        fit = (pred - y).pow(2).mean(dim=(1, 2))
        p = model.prototypes()
        d2 = pairwise_sq_dists(x, p)
        cov = (-t_cov * (torch.logsumexp(-d2 / t_cov, dim=-1, keepdim=True) - math.log(n)) / s2).mean(dim=(1, 2))
        k = torch.exp(-pairwise_sq_dists(p, p) / t_sep).masked_fill(eye, 0.0)
        sep = k.sum(dim=(1, 2)) / (n * (n - 1))
        ov = (h.sum(-1).pow(2) - h.pow(2).sum(-1)).mean(-1)
        (fit + w_cov * cov + w_sep * sep + w_ov * ov).sum().backward()
        opt.step()
        return fit.detach()

    run: Callable[[], torch.Tensor] = torch.compile(step) if compile_step else step  # type: ignore[assignment]
    fit = torch.zeros(r)
    for _ in range(steps):
        fit = run()
    return float(fit.mean())


def time_loop(groups: list[list], steps: int, lr: float, *, compile_step: bool) -> tuple[float, float]:
    t0 = time.perf_counter()
    fits = [loop_group(g, steps, lr, compile_step=compile_step) for g in groups]
    return time.perf_counter() - t0, float(np.mean(fits))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", type=Path, default=ROOT / "configs" / "paper.yaml")
    ap.add_argument("--steps", type=int, default=None, help="override train.steps (default: the config's)")
    ap.add_argument("--compile", action="store_true", help="also time the loop with torch.compile of its step")
    ap.add_argument("--skip-loop", action="store_true", help="time protoreg only")
    ap.add_argument("overrides", nargs="*", help="extra KEY=VALUE overrides for both sides")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    warnings.simplefilter("ignore")

    overrides = ["trainer.accelerator=cpu", *args.overrides] + ([f"train.steps={args.steps}"] if args.steps else [])
    base = C.load_config(args.config, overrides)
    reg = Registry.load()
    plan = plan_sweep(base, reg)
    groups = [[plan.specs[r.name] for r in g] for g in plan_groups([r for r in plan.runs if r.name not in plan.twins], plan)]
    steps, lr = int(base.train.steps), float(base.train.lr)
    print(
        f"{len(plan.runs)} runs in {len(groups)} groups, {steps} steps; torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads"
    )

    torch.set_flush_denormal(True)
    loop_s = loop_fit = compiled_s = None
    if not args.skip_loop:
        loop_s, loop_fit = time_loop(groups, steps, lr, compile_step=False)
        print(f"hand-written loop:           {loop_s:7.1f} s  (mean final fit_mse {loop_fit:.4g})")
        if args.compile:
            compiled_s, _ = time_loop(groups, steps, lr, compile_step=True)
            print(f"hand-written loop, compiled: {compiled_s:7.1f} s  (compilation included)")

    with tempfile.TemporaryDirectory(prefix="grid_vs_loop-") as tmp:
        t0 = time.perf_counter()
        result = protoreg.sweep(*overrides, config=args.config, out=Path(tmp) / "sweep", reg=reg)
        proto_s = time.perf_counter() - t0
    fits = [float(r["fit_mse"]) for r in result.rows if r["fit_mse"] not in ("", None)]
    train_s = sum(float(r["seconds"]) for r in result.rows)
    print(
        f"protoreg sweep:              {proto_s:7.1f} s  (training {train_s:.1f} s; mean final fit_mse {np.mean(fits):.4g}; "
        f"every file, check and plot included)"
    )
    if loop_s is not None:
        print(f"ratio protoreg / loop:       {proto_s / loop_s:7.2f}")
        if compiled_s is not None:
            print(f"ratio protoreg / compiled:   {proto_s / compiled_s:7.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
