"""The exact matching of a large high-dimensional problem, phase by phase, on trained prototypes.

    python benchmarks/matching_large.py [--n N] [--dim D] [--steps S] [--first K] [--float64] [--lapjv] [--no-lapx]

Trains ``benchmarks/scale.py``'s uniform case (width M = N, minibatch 1,024, coverage, float32,
CPU; default 64-D, N = 20,000, 50 steps) through the module API, without geometry checks (a fit
would check the hull at its end), then on its prototypes and inputs (the first K of each with
``--first``) prints:

* ``optimal_matching``: protoreg's matching end to end (cost matrix, solver, certificate where it
  applies, the matched distances), its method and summed distance;
* ``cost``: the float64 cost matrix alone (``_cost_matrix``);
* ``auction`` (square problems): the epsilon-scaling auction protoreg runs there
  (``protoreg.evaluation.auction``) with its bids per row, then ``dual bound``: the gap its
  prices prove (``lapcert.dual_bound``);
* ``lapjvs32``/``lapjvh32`` (unless ``--no-lapx``): ``lapx``'s float32 kernel on it (``lapjvs`` when square, ``lapjvh``
  with ``precision='float32'`` otherwise), then ``certificate``: protoreg's dual certificate of
  that assignment on the float64 matrix (``assignment_gap``: the proved gap to the optimum);
* ``lapjv32``: with ``--lapjv`` (square problems), the ``lapjv`` package's float32 AVX2
  Jonker-Volgenant kernel on it and its ``certificate``, for comparison (``pip install lapjv``;
  measured and not kept: docs/performance.md);
* ``partner rank``: how many inputs are closer to each prototype than its matched one (median,
  90th and 99th percentile): how far the optimum is from nearest-neighbour pairs;
* ``lapjvh``: with ``--float64``, ``lapx``'s float64 kernel on the same matrix (minutes at
  N = 20,000).

Each line has the seconds and the process's peak resident memory during that phase
(``/proc/self/status``'s ``VmHWM``, reset before the phase; Linux) with its growth over the
resident memory at the phase's start, and ``matching_bytes`` is
printed for the memory estimate's view. Run it alone on the machine.
"""

from __future__ import annotations

import argparse
import contextlib
import time
from collections.abc import Callable, Iterator

import numpy as np


def _peak_reset() -> None:
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")


def _status_gb(field: str) -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024 / 1e9
    return float("nan")


def _peak_gb() -> float:
    return _status_gb("VmHWM")


def trained(n: int, dim: int, steps: int) -> tuple[np.ndarray, np.ndarray]:
    """Prototypes (M, d) and inputs (N, d), float64, of ``scale.py``'s case after ``steps`` steps."""
    from protoreg import config as C
    from protoreg.plugins.registry import Registry
    from protoreg.training import build_group, run_spec
    from protoreg.training.trainer import flush_denormal, tune_allocator

    reg = Registry.load()
    cfg = C.load_config(None, [f"data.n={n}", f"data.dim={dim}", "train.batch_size=1024", f"train.steps={steps}", "trainer.accelerator=cpu"])
    C.validate(cfg, reg.losses, reg.datasets)
    module = build_group([run_spec(C.resolved(cfg, reg.losses), reg)], reg).module
    opt = module.configure_optimizers()
    tune_allocator()
    with flush_denormal():
        for _ in range(steps):
            module.optimisation_step(opt)
    p = module.model.prototype_positions()[0].double().numpy()
    return np.ascontiguousarray(p), np.ascontiguousarray(module.x[0].double().numpy())


def partner_ranks(c: np.ndarray, rows: np.ndarray, cols: np.ndarray, block: int = 1024) -> np.ndarray:
    """Per matched row of ``c``: how many columns are strictly closer than its matched one."""
    partner = np.empty(c.shape[0], dtype=np.int64)
    partner[rows] = cols
    out = np.zeros(c.shape[0], dtype=np.int64)
    for i in range(0, c.shape[0], block):
        blk = c[i : i + block]
        out[i : i + block] = (blk < blk[np.arange(len(blk)), partner[i : i + block]][:, None]).sum(1)
    return out[rows]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=20_000)
    ap.add_argument("--dim", type=int, default=64)
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--first", type=int, default=None, help="match only the first K prototypes and inputs")
    ap.add_argument("--float64", action="store_true", help="also time lapx's float64 lapjvh on the same matrix")
    ap.add_argument("--no-lapx", action="store_true", help="skip lapx's float32 kernel (700 s at N = 20,000 on 2 cores)")
    ap.add_argument("--lapjv", action="store_true", help="also time the lapjv package's float32 AVX2 kernel (square; pip install lapjv)")
    ap.add_argument("--save", default=None, help="write the trained prototypes and inputs to this .npz (p, x) and stop")
    args = ap.parse_args()
    import lap

    from protoreg.evaluation.auction import auction_assignment
    from protoreg.evaluation.lapcert import assignment_gap, dual_bound
    from protoreg.evaluation.matching import MATCHING_REL_TOL, _cost_matrix, matching_bytes, optimal_matching

    t0 = time.perf_counter()
    p, x = trained(args.n, args.dim, args.steps)
    if args.save:
        np.savez(args.save, p=p, x=x)
        print(f"{args.save}: p {p.shape}, x {x.shape}")
        return
    if args.first:
        p, x = p[: args.first], x[: args.first]
    m, n, d = p.shape[0], x.shape[0], x.shape[1]
    print(f"{m} x {n} x {d}: trained in {time.perf_counter() - t0:.1f} s; matching_bytes {matching_bytes(m, n, d) / 1e9:.2f} GB", flush=True)

    @contextlib.contextmanager
    def phase(name: str, note: list[str]) -> Iterator[None]:
        """Time the block; print its seconds, peak and growth over the resident memory at its start."""
        _peak_reset()
        base = _status_gb("VmRSS")
        t0 = time.perf_counter()
        yield
        secs, peak = time.perf_counter() - t0, _peak_gb()
        print(f"{name:<17} {secs:>9.2f} s   peak {peak:>6.2f} GB (+{peak - base:.2f} over {base:.2f})   {' '.join(note)}", flush=True)

    note: list[str] = []
    with phase("optimal_matching", note):
        mt = optimal_matching(p, x)
        note[:] = [f"method {mt.method}, sum {float(mt.distances.sum())!r}"]
    del mt
    with phase("cost", note):
        cost, recomputed = _cost_matrix(p, x)
        note[:] = [f"{recomputed} near pairs recomputed"]
    c = np.ascontiguousarray(cost if m <= n else cost.T)  # the certificate wants rows <= columns
    kernels: list[tuple[str, Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]]] = []
    if args.lapjv:
        import lapjv  # pip install lapjv: not one of protoreg's dependencies (compared, not kept)

        if m != n:
            ap.error("--lapjv: the lapjv package solves square problems only")
        kernels.append(("lapjv32", lambda c: (np.arange(m), np.asarray(lapjv.lapjv(c.astype(np.float32))[0], dtype=np.int64))))
    if m == n:
        with phase("auction", note):
            found = auction_assignment(c, MATCHING_REL_TOL)
            assert found is not None, "the auction gave up"
            r, k = np.arange(m), found.cols
            note[:] = [f"sum {float(c[r, k].sum())!r}, {found.bids_per_row:.1f} bids per row"]
        with phase("dual bound", note):
            total = float(np.sum(c[r, k]))
            gap = total - dual_bound(c, found.potentials)
            note[:] = [f"proved gap {gap:.3g} = {gap / total:.2g} of the total (the auction's prices)"]
    if args.no_lapx:
        pass
    elif m == n:
        kernels.append(("lapjvs32", lambda c: lap.lapjvs(c, return_cost=False, prefer_float32=True)))
    else:
        kernels.append(("lapjvh32", lambda c: lap.lapjvh(c, extend_cost=True, return_cost=False, precision="float32")))
    for name, solve in kernels:  # each float32 kernel, then protoreg's certificate of its answer
        with phase(name, note):
            r, k = solve(c)
            note[:] = [f"sum {float(c[r, k].sum())!r}"]
        with phase("certificate", note):
            total, gap = assignment_gap(c, r, k)
            note[:] = [f"proved gap {gap:.3g} = {gap / total:.2g} of the total"]
    q = np.percentile(partner_ranks(c, r, k), [50, 90, 99])
    print(f"partner rank      the matched input is each prototype's nearest but {q[0]:.0f} (median), {q[1]:.0f} (90 %), {q[2]:.0f} (99 %)")
    if args.float64:
        with phase("lapjvh", note):
            r, k = lap.lapjvh(cost, extend_cost=True, return_cost=False)
            note[:] = [f"sum {float(cost[r, k].sum())!r}"]


if __name__ == "__main__":
    main()
