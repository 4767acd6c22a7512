"""Where the auction starts to beat the float64 Jonker-Volgenant solve of square matchings.

    python benchmarks/auction_crossover.py FILE [--check I] [--first K ...]

FILE is either an ``.npz`` with trained prototypes ``p`` and inputs ``x`` (``python
benchmarks/matching_large.py --save FILE.npz`` writes its 64-D case) or a recording of
``check_replay.py record`` (then ``--check I``, 1-based, picks the prototypes of that check).
For the first K prototypes and inputs it builds protoreg's cost matrix once, then times the
certified auction (``protoreg.evaluation.matching._certified_auction``) and ``lap.lapjvh``
alone on it, best of 3, and says whether they found the same pairs. ``AUCTION_MIN_PAIRS`` in
``protoreg.evaluation.matching`` is set from these numbers (docs/performance.md).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import lap
import numpy as np


def _load(path: Path, check: int | None) -> tuple[np.ndarray, np.ndarray]:
    if path.suffix == ".npz":
        z = np.load(path)
        return np.asarray(z["p"], dtype=np.float64), np.asarray(z["x"], dtype=np.float64)
    import torch

    saved = torch.load(path, weights_only=False)
    if check is None:
        raise SystemExit("auction_crossover: a check_replay recording needs --check I")
    p = saved["calls"][check - 1]["P"][0]
    return p.double().numpy(), saved["x"][0].double().numpy()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("file", type=Path)
    ap.add_argument("--check", type=int, default=None)
    ap.add_argument("--first", type=int, action="append", default=None, help="K (repeatable; default 300, 1000, 2000, 4096)")
    args = ap.parse_args()
    from protoreg.evaluation.matching import _certified_auction, _cost_matrix

    p, x = _load(args.file, args.check)
    print(f"{'K':>6} {'auction s':>10} {'lapjvh s':>9} {'same pairs':>10}")
    for k in args.first or [300, 1000, 2000, 4096]:
        cost, _ = _cost_matrix(p[:k], x[:k])
        best = [float("inf"), float("inf")]
        for _ in range(3):
            t0 = time.perf_counter()
            cols = _certified_auction(cost)
            best[0] = min(best[0], time.perf_counter() - t0)
            t0 = time.perf_counter()
            rows, jv = lap.lapjvh(cost, extend_cost=True, return_cost=False)
            best[1] = min(best[1], time.perf_counter() - t0)
        same = cols is not None and np.array_equal(cols, np.asarray(jv)[np.argsort(rows)])
        print(f"{k:6d} {best[0]:10.3f} {best[1]:9.3f} {str(same):>10}", flush=True)


if __name__ == "__main__":
    main()
