"""How training and evaluation grow with N (width M = N): seconds per step, evaluation, peak memory.

Usage: ``python benchmarks/scale.py [--quick] [--steps S] [--case D:N ...] [--plot PNG]``. Each case runs in its own
subprocess, so its peak resident memory (``resource.getrusage`` max RSS) is its own. Cases:
1-D uniform data with N = 10^3, 10^4, 10^5, 64-D uniform data with N = 10^3, 10^4 and 784-D
uniform data (the size of MNIST images) with N = 1,000 and 5,000 (minibatch
1,024, coverage loss, float32, CPU, subnormals flushed as in ``fit``); ``--quick`` keeps
N <= 10^4 and 20 steps; ``--case D:N`` (repeatable) runs only the named cases.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

CHILD = r"""
import json, resource, sys, time
import torch
from protoreg import config as C
from protoreg.evaluation.evaluate import evaluate
from protoreg.evaluation.matching import optimal_matching
from protoreg.plugins.registry import Registry
from protoreg.training import build_group, run_spec
from protoreg.training.trainer import flush_denormal, tune_allocator

n, dim, steps = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
reg = Registry.load()
cfg = C.load_config(None, [f"data.n={n}", f"data.dim={dim}", "train.batch_size=1024", f"train.steps={steps}", "trainer.accelerator=cpu"])
C.validate(cfg, reg.losses, reg.datasets)
t0 = time.perf_counter()
group = build_group([run_spec(C.resolved(cfg, reg.losses), reg)], reg)
build = time.perf_counter() - t0
module = group.module
opt = module.configure_optimizers()
tune_allocator()  # as fit trains
path = module.model.path(module.minibatch()[0])
with flush_denormal():  # as fit trains
    t0 = time.perf_counter()
    for _ in range(steps):
        module.optimisation_step(opt)
    train = time.perf_counter() - t0
    t0 = time.perf_counter()
    ev = evaluate(module.model, module.x, module.y)
    evaluation = time.perf_counter() - t0
x = module.x[0].double().numpy()
method = optimal_matching(ev.positions[0].numpy(), x).method
print(json.dumps({"n": n, "dim": dim, "steps": steps, "build_s": build, "path": path, "step_s": train / steps, "eval_s": evaluation,
                  "method": method, "recon_error": ev.metrics(0)["recon_error"],
                  "peak_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6}))
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="N <= 10^4 and 20 steps")
    ap.add_argument("--steps", type=int, default=None, help="optimisation steps per case (default 200; 20 with --quick)")
    ap.add_argument("--case", action="append", default=None, metavar="D:N", help="run only these cases, e.g. --case 1:100000")
    ap.add_argument("--plot", default=None, metavar="PNG", help="also draw the growth curves into this file")
    args = ap.parse_args()
    steps = args.steps or (20 if args.quick else 200)
    cases = [(1_000, 1), (10_000, 1), (100_000, 1), (1_000, 64), (10_000, 64), (1_000, 784), (5_000, 784)]
    if args.quick:
        cases = [c for c in cases if c[0] <= 10_000]
    if args.case:
        cases = [(int(c.split(":")[1]), int(c.split(":")[0])) for c in args.case]
    print(f"{'d':>3} {'N = M':>8} {'s/step':>8} {'eval s':>8} {'peak GB':>8}  {'step':<7} matching  recon_error")
    rows = []
    for n, dim in cases:
        res = subprocess.run([sys.executable, "-c", CHILD, str(n), str(dim), str(steps)], capture_output=True, text=True)
        if res.returncode != 0:
            print(f"{dim:>3} {n:>8}  failed: {res.stderr.strip().splitlines()[-1] if res.stderr.strip() else res.returncode}")
            continue
        r = json.loads(res.stdout.strip().splitlines()[-1])
        rows.append(r)
        print(f"{dim:>3} {n:>8} {r['step_s']:>8.3f} {r['eval_s']:>8.2f} {r['peak_gb']:>8.2f}  {r['path']:<7} {r['method']:<8}  {r['recon_error']:.6g}", flush=True)
    if args.plot and rows:
        plot(rows, args.plot, steps)


def plot(rows: list[dict], path: str, steps: int) -> None:
    """Seconds per step, evaluation seconds and peak memory against N (log-log), one line per d."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(12, 3.6), constrained_layout=True)
    for dim in sorted({r["dim"] for r in rows}):
        sel = sorted((r for r in rows if r["dim"] == dim), key=lambda r: r["n"])
        n = [r["n"] for r in sel]
        for ax, key in zip(axes, ("step_s", "eval_s", "peak_gb")):
            ax.plot(n, [r[key] for r in sel], marker="o", label=f"d = {dim}")
    titles = (f"training: seconds per step (batch 1,024, {steps} steps)", "final evaluation: seconds", "peak resident memory: GB")
    for ax, title in zip(axes, titles):
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("N = width M")
        ax.set_title(title, fontsize=9)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    fig.savefig(path, dpi=110)
    print(f"plot -> {path}")


if __name__ == "__main__":
    main()
