"""Speed of the batched convex-hull test against per-prototype linear programs.

Usage::

    python benchmarks/hull_speed.py [--m 1000 --n 1000 --d 64 --lp 50 --seed 0]

Inputs are standard Gaussian.  Half of the prototypes are convex combinations
of inputs (inside the hull), half are pushed outside (an input or a
combination moved away from the centroid).  The script times

* ``hull_distance`` followed by ``outside_hull(distances=...)`` (full
  distances, certified to ``tol * extent``),
* ``outside_hull`` alone (decision mode),
* ``scipy.optimize.linprog(method="highs")`` feasibility problems
  ``lambda >= 0, sum(lambda) = 1, X^T lambda = p`` for a subset of the
  prototypes, extrapolated per prototype to all ``M``,

checks that the flags agree on the subset and prints the timings and ratios.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time

import numpy as np
import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from protoreg.geometry import hull_distance, hull_extent, outside_hull  # noqa: E402

logger = logging.getLogger("hull_speed")


def make_data(m: int, n: int, d: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Gaussian inputs and half-inside / half-outside prototypes.

    Returns
    -------
    prototypes : Tensor, shape (1, m, d)
    x : Tensor, shape (1, n, d)
    """
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g, dtype=torch.float64)
    centroid = x.mean(0)
    m_in = m // 2
    m_out = m - m_in
    protos = []
    # inside: dense Dirichlet combinations and sparse combinations of k inputs
    for i in range(m_in):
        if i % 2 == 0:
            w = -torch.log1p(-torch.rand(n, generator=g, dtype=torch.float64))  # Exp(1)
            w = w / w.sum()
            protos.append(w @ x)
        else:
            k = 2 + i % 7
            idx = torch.randperm(n, generator=g)[:k]
            w = torch.rand(k, generator=g, dtype=torch.float64)
            protos.append((w / w.sum()) @ x[idx])
    # outside: inputs or sparse combinations pushed away from the centroid
    for i in range(m_out):
        k = 1 + i % 4
        idx = torch.randperm(n, generator=g)[:k]
        w = torch.rand(k, generator=g, dtype=torch.float64)
        c = (w / w.sum()) @ x[idx]
        scale = 1.05 + 0.5 * torch.rand((), generator=g, dtype=torch.float64)
        protos.append(centroid + scale * (c - centroid))
    p = torch.stack(protos)[torch.randperm(m, generator=g)]
    return p[None], x[None]


def linprog_inside(p: np.ndarray, x: np.ndarray) -> bool:
    """Membership ``p in conv(x)`` by an LP feasibility problem (HiGHS)."""
    from scipy.optimize import linprog

    n = x.shape[0]
    a_eq = np.vstack([x.T, np.ones((1, n))])
    b_eq = np.append(p, 1.0)
    # HiGHS occasionally ends with an "unknown" model status; retry with its
    # dual simplex and interior-point solvers (the time counts)
    for method in ("highs", "highs-ds", "highs-ipm"):
        res = linprog(np.zeros(n), A_eq=a_eq, b_eq=b_eq, bounds=(0, None), method=method)
        if res.status in (0, 2):
            return res.status == 0
    raise RuntimeError(f"linprog failed: {res.message}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--m", type=int, default=1000, help="number of prototypes")
    ap.add_argument("--n", type=int, default=1000, help="number of inputs")
    ap.add_argument("--d", type=int, default=64, help="input dimension")
    ap.add_argument("--lp", type=int, default=50, help="prototypes checked with linprog")
    ap.add_argument("--rel-tol", type=float, default=1e-6)
    ap.add_argument("--repeat", type=int, default=3, help="timing repetitions (best is kept)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    device = torch.device(args.device)
    p, x = make_data(args.m, args.n, args.d, args.seed)
    p, x = p.to(device), x.to(device)
    logger.info(
        "M=%d N=%d d=%d device=%s torch threads=%d",
        args.m, args.n, args.d, device, torch.get_num_threads(),
    )

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize()

    # warm-up (allocator, kernels)
    outside_hull(p[:, :8], x, rel_tol=args.rel_tol)

    t_full = float("inf")
    for _ in range(args.repeat):
        sync()
        t0 = time.perf_counter()
        dist = hull_distance(p, x, tol=args.rel_tol)
        flags = outside_hull(p, x, rel_tol=args.rel_tol, distances=dist)
        sync()
        t_full = min(t_full, time.perf_counter() - t0)

    t_dec = float("inf")
    for _ in range(args.repeat):
        sync()
        t0 = time.perf_counter()
        flags_dec = outside_hull(p, x, rel_tol=args.rel_tol)
        sync()
        t_dec = min(t_dec, time.perf_counter() - t0)

    if not torch.equal(flags, flags_dec):
        logger.error("decision-mode flags differ from distance flags on %d prototypes",
                     int((flags != flags_dec).sum()))
        return 1

    k = min(args.lp, args.m)
    rng = np.random.default_rng(args.seed)
    sub = np.sort(rng.choice(args.m, size=k, replace=False))
    pn = p[0].cpu().numpy()
    xn = x[0].cpu().numpy()
    t0 = time.perf_counter()
    lp_outside = np.array([not linprog_inside(pn[i], xn) for i in sub])
    t_lp = time.perf_counter() - t0
    t_lp_all = t_lp / k * args.m

    ours = flags[0].cpu().numpy()[sub]
    agree = int((ours == lp_outside).sum())
    ext = float(hull_extent(x)[0])
    d_sub = dist[0].cpu().numpy()[sub]
    logger.info("extent %.4g; distances on subset: inside max %.3g, outside min %.3g",
                ext, d_sub[~lp_outside].max(initial=0.0), d_sub[lp_outside].min(initial=np.inf))
    logger.info("outside fraction (ours, all M): %.3f", float(flags.double().mean()))
    logger.info("flags agree with linprog on %d/%d prototypes", agree, k)
    logger.info("hull_distance + flags : %8.3f s", t_full)
    logger.info("outside_hull (decide) : %8.3f s", t_dec)
    logger.info("linprog, %d protos    : %8.3f s  (%.1f ms each)", k, t_lp, 1e3 * t_lp / k)
    logger.info("linprog, all %d (est.): %8.3f s", args.m, t_lp_all)
    logger.info("speed-up distances    : %8.1fx", t_lp_all / t_full)
    logger.info("speed-up decision     : %8.1fx", t_lp_all / t_dec)
    return 0 if agree == k else 1


if __name__ == "__main__":
    raise SystemExit(main())
