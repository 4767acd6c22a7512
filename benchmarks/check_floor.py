"""The least a geometry check can cost: a check of prototypes that have not moved since the
previous one, next to what 15 % of the training time allows per check.

    python benchmarks/check_floor.py [--case mnist5k|mnist1k|digits] [--steps S] [--repeats R]

Trains the case (the settings of ``check_cost.py``, stopped after ``S`` steps, default 1,000)
in this process with its geometry checks at the default interval, then repeats the check of
the final prototypes ``R`` times (default 3), each from a copy of the warm-start cache the last
check left: every prototype starts at the very combination that settled it, so the hull solver
has next to nothing to do, and what remains is the work every check does whatever the
prototypes did: the network's responses over all inputs, the collapse checks, and the hull
check's products with all inputs and its screening. Printed (best of ``R``): that whole check
and its parts (as the geometry report calls them), the run's mean check, and the budget per
check of 15 % on top of training: 15 % of the training seconds (without the checks) of the
``geometry.every_n_steps`` steps between two checks. The budget minus the floor is what the
solver's work on moving prototypes may take; a floor at or above the budget means that no
speed-up of the solver alone can meet the target on this machine. Run it alone.
"""

from __future__ import annotations

import argparse
import copy
import os
import sys
import time
import warnings
from pathlib import Path
from typing import Any, Callable

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from check_cost import CASES  # noqa: E402  (the same cases as the check-overhead benchmark)


def _best(fn: Callable[[Any], Any], repeats: int, setup: Callable[[], Any] = lambda: None) -> float:
    """Best seconds of ``fn(setup())`` over ``repeats`` calls, ``setup`` not timed."""
    times = []
    for _ in range(repeats):
        arg = setup()
        t0 = time.perf_counter()
        fn(arg)
        times.append(time.perf_counter() - t0)
    return min(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--case", choices=sorted(c for c in CASES if "-" not in c), default="mnist5k")
    ap.add_argument("--steps", type=int, default=1000)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    os.environ["PROTOREG_DISABLE_PLUGIN_AUTOLOAD"] = "1"
    warnings.filterwarnings("ignore")

    from omegaconf import OmegaConf

    from protoreg import geometry, resolve_config
    from protoreg.evaluation.evaluate import evaluate, stream_responses
    from protoreg.geometry.collapse import gap_and_duplicates
    from protoreg.geometry.report import DUPLICATE_REL_TOL
    from protoreg.plugins.registry import Registry
    from protoreg.training import build_group, run_spec
    from protoreg.training.callbacks import geometry_callback
    from protoreg.training.trainer import fit_chunks, make_trainer

    reg = Registry.load()
    cfg = resolve_config(*CASES[args.case], f"train.steps={args.steps}", "trainer.accelerator=cpu", reg=reg)
    spec = run_spec(cfg, reg)
    module = build_group([spec], reg).module
    cb = geometry_callback(cfg, spec.active, reg.losses, figures=False)
    trainer = make_trainer(OmegaConf.to_container(cfg.trainer), None, [cb])  # type: ignore[arg-type]
    t0 = time.perf_counter()
    fit_chunks(module, trainer)
    train = time.perf_counter() - t0 - cb.check_seconds
    checks = cb.checks_run
    budget = 0.15 * train * cb.every / args.steps  # 15 % of the training between two checks

    model, x, y = module.model, module.x, module.y
    warm = cb._warm  # the cache the last check left (what the next check would start from)
    kw = dict(margin=cb.margin, rel_tol=cb.rel_tol)
    with torch.no_grad():
        positions = model.prototype_positions()
        extent = geometry.hull_extent(x)
        fresh = lambda: copy.deepcopy(warm)  # noqa: E731
        whole = _best(lambda w: evaluate(model, x, y, warm=w, recon=False, **kw), args.repeats, fresh)
        responses = _best(lambda _: stream_responses(model, x, y), args.repeats)
        collapse = _best(lambda _: gap_and_duplicates(positions, rel_tol=DUPLICATE_REL_TOL, extent=extent), args.repeats)
        hull = _best(lambda w: geometry.hull_check(positions, x, warm=w, **kw), args.repeats, fresh)

    n, d = x.shape[1], x.shape[2]
    print(f"{args.case}: N = {n}, d = {d}, width {model.width}, {args.steps} steps, torch {torch.__version__}, {torch.get_num_threads()} threads")
    print(f"training without the checks: {train:.1f} s; {checks} checks, {cb.check_seconds:.1f} s, mean {cb.check_seconds / checks:.2f} s")
    print(f"budget per check (15 % on top of training): {budget:.2f} s")
    print(f"check of unmoved prototypes (best of {args.repeats}): {whole:.2f} s = {whole / budget:.0%} of the budget")
    print(f"  responses over all inputs {responses:.2f} s, collapse checks {collapse:.2f} s, hull check {hull:.2f} s")


if __name__ == "__main__":
    main()
