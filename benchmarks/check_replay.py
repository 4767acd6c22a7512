"""Record a fit's geometry checks, then replay them: where a check's time goes, and the hull
solver compared with itself on the very same checks.

    python benchmarks/check_replay.py record FILE [fit overrides ...]
    python benchmarks/check_replay.py replay FILE [--only I ...]

``record`` runs ``protoreg fit`` (in this process, on the CPU, into a temporary run directory)
with the given overrides, for example the MNIST 5,000 case of ``check_cost.py`` stopped early::

    python benchmarks/check_replay.py record /tmp/mnist5k.pt data.name=mnist data.n=null \\
        train.batch_size=512 train.steps=300

and saves every hull check of the run (``hull_check``'s call of the certified bounds: the
prototypes, the tolerance and margin, the warm-start cache it was given, its bounds, its
seconds) with the inputs to FILE. Per check it prints the seconds, the searches over all inputs
(products of one query with all N inputs, the dominant cost: the screening's, the previous
combinations' and the solver's vertex searches) per prototype, how far the prototypes moved
since the previous check (median, in tolerances) and the share of prototypes whose previous
bounds, widened by their move (a distance to a convex set is 1-Lipschitz), would still settle
them.

``replay`` runs each recorded check again with the current code, from the cache it had, and
prints its seconds next to the recorded ones, the searches per prototype, whether the bounds are
bit for bit the recorded ones, and how many outside flags differ: the way to measure a change of
the solver on real checks, and to see that it changes nothing it should not. Run it alone on
the machine.
"""

from __future__ import annotations

import argparse
import copy
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import torch


def _counting(counter: Counter[str]) -> None:
    """Count, per call site, the rows that the hull code scores against all inputs."""
    import protoreg.geometry.hull as hull
    import protoreg.geometry.solver as solver

    for mod in (hull, solver):
        orig = mod._run_scores

        def scores(z: torch.Tensor, run: torch.Tensor, xt: torch.Tensor, _orig: Any = orig) -> torch.Tensor:
            counter["rows"] += z.shape[0]
            return _orig(z, run, xt)

        setattr(mod, "_run_scores", scores)


def record(path: Path, overrides: list[str]) -> int:
    import protoreg.geometry.margin as margin
    from protoreg.frontend.cli import main as cli

    counter: Counter[str] = Counter()
    _counting(counter)
    calls: list[dict[str, Any]] = []
    inputs: list[torch.Tensor] = []
    orig = margin._hull_bounds

    def bounds(prototypes: torch.Tensor, x: torch.Tensor, **kw: Any) -> Any:
        warm = kw.get("warm")
        before = copy.deepcopy(warm.state_dict()) if warm is not None else None
        counter["rows"] = 0
        t0 = time.perf_counter()
        out = orig(prototypes, x, **kw)
        seconds = time.perf_counter() - t0
        if not inputs:
            inputs.append(x.detach().cpu().clone())
        elif not torch.equal(inputs[0], x.detach().cpu()):
            raise SystemExit("check_replay: the checks of one fit use one data set")
        kw = {k: v for k, v in kw.items() if k != "warm"}
        calls.append({"P": prototypes.detach().cpu().clone(), "kw": kw, "warm": before, "out": [o.cpu() for o in out],
                      "seconds": seconds, "rows": counter["rows"]})
        return out

    setattr(margin, "_hull_bounds", bounds)
    with tempfile.TemporaryDirectory(prefix="protoreg-replay-") as tmp:
        code = cli(["fit", "--out", str(Path(tmp) / "run"), *overrides, "trainer.accelerator=cpu"])
    if code != 0:
        return int(code)
    torch.save({"x": inputs[0], "calls": calls}, path)
    print(f"{len(calls)} checks -> {path}")
    print(f"{'check':>5} {'seconds':>8} {'searches/proto':>15} {'move/tol':>9} {'settled by moves':>17}")
    prev = None
    for i, c in enumerate(calls):
        ub, lb, ext = c["out"]
        m = c["P"].shape[0] * c["P"].shape[1]
        tol = torch.as_tensor(c["kw"]["tol"], dtype=torch.float64)[:, None] * ext[:, None]
        thr = torch.as_tensor(c["kw"]["threshold"], dtype=torch.float64)[:, None] * ext[:, None]
        move = reuse = float("nan")
        if prev is not None and prev["P"].shape == c["P"].shape:
            d = (c["P"].double() - prev["P"].double()).norm(dim=2)
            pu, pl, _ = prev["out"]
            u, lo = pu + d, (pl - d).clamp(min=0.0)
            ok = ((u - lo) <= tol) & ((u <= thr) | (lo > thr))
            move, reuse = float((d / tol).median()), float(ok.double().mean())
        print(f"{i + 1:5d} {c['seconds']:8.2f} {c['rows'] / m:15.1f} {move:9.2f} {reuse:17.1%}")
        prev = c
    return 0


def replay(path: Path, only: list[int] | None) -> int:
    import protoreg.geometry.hull as hull

    saved = torch.load(path, weights_only=False)
    x, calls = saved["x"], saved["calls"]
    counter: Counter[str] = Counter()
    _counting(counter)
    print(f"{'check':>5} {'recorded s':>10} {'now s':>8} {'searches/proto':>15} {'identical':>9} {'flags differ':>12}")
    total = [0.0, 0.0]
    for i, c in enumerate(calls):
        if only and i + 1 not in only:
            continue
        warm = None
        if c["warm"] is not None:
            warm = hull.HullWarmStart()
            warm.load_state_dict(c["warm"])
        counter["rows"] = 0
        t0 = time.perf_counter()
        ub, lb, ext = hull._hull_bounds(c["P"], x, warm=warm, **c["kw"])
        seconds = time.perf_counter() - t0
        ub0, lb0, _ = c["out"]
        thr = torch.as_tensor(c["kw"]["threshold"], dtype=torch.float64)[:, None] * ext[:, None]
        same = torch.equal(ub, ub0) and torch.equal(lb, lb0)
        differ = int(((ub > thr) != (ub0 > thr)).sum())
        m = c["P"].shape[0] * c["P"].shape[1]
        print(f"{i + 1:5d} {c['seconds']:10.2f} {seconds:8.2f} {counter['rows'] / m:15.1f} {str(same):>9} {differ:12d}")
        total[0] += c["seconds"]
        total[1] += seconds
    print(f"total {total[0]:10.2f} {total[1]:8.2f}")
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    rec = sub.add_parser("record", help="run a fit and save its hull checks")
    rec.add_argument("file", type=Path)
    rec.add_argument("overrides", nargs="*", help="fit overrides (key=value)")
    rep = sub.add_parser("replay", help="run the saved checks again with the current code")
    rep.add_argument("file", type=Path)
    rep.add_argument("--only", type=int, action="append", help="replay only check I (1-based; repeatable)")
    args = ap.parse_args(argv)
    if args.cmd == "record":
        return record(args.file, args.overrides)
    return replay(args.file, args.only)


if __name__ == "__main__":
    sys.exit(main())
