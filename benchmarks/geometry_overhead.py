"""Cost of the geometry callback at its default interval: train the same N = 100 run with and
without :class:`protoreg.training.GeometryCallback` and print both times and the overhead.

    python benchmarks/geometry_overhead.py [--n 100] [--steps 2000] [--repeats 5]

Target: overhead < 10 % of training time at the default ``geometry.every_n_steps``.
"""

from __future__ import annotations

import argparse
import os
import time
import warnings

from omegaconf import OmegaConf

from protoreg import resolve_config
from protoreg.plugins.registry import Registry
from protoreg.training import build_group, geometry_callback, run_spec
from protoreg.training.trainer import fit_chunks, make_trainer


def timed(n: int, steps: int, dim: int, with_callback: bool, reg: Registry) -> float:
    cfg = resolve_config(f"data.n={n}", f"data.dim={dim}", f"train.steps={steps}", "trainer.accelerator=cpu", reg=reg)
    spec = run_spec(cfg, reg)
    group = build_group([spec], reg)
    callbacks = [geometry_callback(cfg, spec.active, reg.losses, figures=False)] if with_callback else []
    trainer = make_trainer(OmegaConf.to_container(cfg.trainer), None, callbacks)  # type: ignore[arg-type]
    t0 = time.perf_counter()
    fit_chunks(group.module, trainer)
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--n", type=int, default=100)
    ap.add_argument("--steps", type=int, default=2000)
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    warnings.filterwarnings("ignore")
    os.environ["PROTOREG_DISABLE_PLUGIN_AUTOLOAD"] = "1"
    reg = Registry.load()
    for dim in (1, 8):
        base_t, geo_t = [], []
        for _ in range(args.repeats):  # interleaved, so slow phases of a shared machine hit both
            base_t.append(timed(args.n, args.steps, dim, False, reg))
            geo_t.append(timed(args.n, args.steps, dim, True, reg))
        base, geo = min(base_t), min(geo_t)
        print(f"N={args.n} d={dim}: without callback {base:.2f} s, with callback {geo:.2f} s, "
              f"overhead {100 * (geo - base) / base:.1f} %")


if __name__ == "__main__":
    main()
