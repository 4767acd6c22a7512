"""The public convex-hull API: extents, distances, outside flags, and the warm-start cache.

Prototypes and inputs are normalised (centred on the bounding box, divided by
the extent), trivial cases (``d <= 1``, non-finite values, prototypes absurdly
far away) are answered directly, and the remaining queries go to the batched
solver (:mod:`protoreg.geometry.solver`) in chunks that bound its working
memory.
"""

from __future__ import annotations

import logging
import math
from functools import partial

import torch
from torch import Tensor

from ._common import _F64, _check_pair, _check_points
from .linalg import _corral_upper_bound
from .solver import _EXACT_GAP, _wolfe_bounds

logger = logging.getLogger(__name__)

# Normalised coordinates beyond which a prototype is treated as far away.
_FAR = 1e150
# Default working-memory budget of one batched solver call (queries are chunked).
_CHUNK_BYTES = 1 << 28


@torch.no_grad()
def hull_extent(x: Tensor) -> Tensor:
    """Largest side of the axis-aligned bounding box of each run's inputs.

    Parameters
    ----------
    x : Tensor, shape (R, N, d)
        Inputs of each run.

    Returns
    -------
    Tensor, shape (R,), float64
        ``ext[r] = max_k (max_i x[r, i, k] - min_i x[r, i, k])``.  Runs whose
        extent is zero (a single distinct point), undefined (``N == 0`` or
        ``d == 0``) or non-finite get ``1.0``, so the value can always be used
        as a length scale.
    """
    _check_points("x", x)
    R, N, d = x.shape
    if N == 0 or d == 0:
        return torch.ones(R, dtype=_F64, device=x.device)
    xd = x.detach().to(_F64)
    ext = (xd.amax(dim=1) - xd.amin(dim=1)).amax(dim=1)
    good = torch.isfinite(ext) & (ext > 0)
    return torch.where(good, ext, torch.ones_like(ext))


class HullWarmStart:
    """A cache that makes repeated hull checks of slowly moving prototypes cheap.

    Pass the same instance to successive :func:`hull_distance` calls (as the geometry callback
    does between checks): each call remembers every prototype's final corral (the inputs whose
    convex combination is nearest to it) and whether it was within the tolerance of the hull.
    The next call first tries the old corral of every prototype that was inside: one still
    inside the hull of its old corral (within the tolerance) is answered by one small
    least-squares solve instead of the active-set iteration. All others (prototypes that were
    outside cannot be held by a corral) start the iteration from their old corral. Results are
    certified exactly as without the cache (the bound comes from an actual convex combination of
    inputs); only the last bits of distances at or below the tolerance can differ. The cache
    resets itself when the shapes change.
    """

    def __init__(self) -> None:
        self._key: tuple[int, int, int, int] | None = None
        self._corral: Tensor | None = None
        self._inside: Tensor | None = None

    def hint(self, R: int, M: int, N: int, kcap: int, device: torch.device) -> Tensor | None:
        """The stored corrals, (R, M, kcap) on ``device``, or ``None`` when the shapes differ."""
        if self._key != (R, M, N, kcap) or self._corral is None:
            return None
        return self._corral.to(device)

    def inside(self, R: int, M: int, device: torch.device) -> Tensor | None:
        """Which prototypes were within the tolerance at the last call, (R, M) bool on
        ``device``; ``None`` when unknown (then every hinted prototype is tried)."""
        if self._inside is None or self._corral is None or tuple(self._inside.shape) != (R, M):
            return None
        return self._inside.to(device)

    def store(
        self, R: int, M: int, N: int, kcap: int, flat: Tensor, corral: Tensor, inside: Tensor | None = None
    ) -> None:
        """Remember ``corral[i]`` (input indices, ``-1`` unused) for flat query ``flat[i]``,
        and ``inside[i]`` (within the tolerance) when given."""
        full = torch.full((R * M, kcap), -1, dtype=torch.long, device=corral.device)
        # used slots first (the hint check takes slot 0 as its origin)
        order = (corral < 0).to(torch.int8).argsort(dim=1, stable=True)
        full[flat] = corral.gather(1, order)
        self._key, self._corral = (R, M, N, kcap), full.view(R, M, kcap)
        if inside is None:
            self._inside = None
        else:
            ins = torch.zeros(R * M, dtype=torch.bool, device=corral.device)
            ins[flat] = inside
            self._inside = ins.view(R, M)

    def clear(self) -> None:
        """Forget everything (the next call starts cold)."""
        self._key, self._corral, self._inside = None, None, None

    def state_dict(self) -> dict[str, object]:
        """Plain, checkpoint-safe state (a list and tensors)."""
        if self._key is None or self._corral is None:
            return {}
        state: dict[str, object] = {"key": list(self._key), "corral": self._corral.detach().cpu()}
        if self._inside is not None:
            state["inside"] = self._inside.detach().cpu()
        return state

    def load_state_dict(self, state: dict[str, object]) -> None:
        """Restore :meth:`state_dict` output; anything malformed clears the cache."""
        key, corral, inside = state.get("key"), state.get("corral"), state.get("inside")
        if isinstance(key, (list, tuple)) and len(key) == 4 and isinstance(corral, Tensor):
            self._key = (int(key[0]), int(key[1]), int(key[2]), int(key[3]))
            self._corral = corral.to(torch.long)
            ok = isinstance(inside, Tensor) and tuple(inside.shape) == tuple(corral.shape[:2])
            self._inside = inside.to(torch.bool) if ok else None  # type: ignore[union-attr]
        else:
            self.clear()


def _hull_bounds(
    prototypes: Tensor,
    x: Tensor,
    *,
    tol: float,
    max_iter: int,
    threshold: float | None,
    warm: HullWarmStart | None = None,
    chunk_bytes: int = _CHUNK_BYTES,
) -> tuple[Tensor, Tensor, Tensor]:
    """Bounds on hull distances in original units.

    With ``warm``, queries whose previous corral still holds them (within the
    tolerance) are answered without the solver, and ``warm`` is updated.
    ``chunk_bytes`` bounds the solver's working memory (see :func:`hull_distance`).

    Returns
    -------
    ub, lb : Tensor, shape (R, M), float64
        ``lb <= dist <= ub``; ``+inf`` for non-finite prototypes (and for
        runs with ``N == 0``), ``nan`` for runs with non-finite inputs.
    ext : Tensor, shape (R,), float64
        :func:`hull_extent` of ``x``.
    """
    _check_pair(prototypes, x)
    if not (tol >= 0 and math.isfinite(tol)):
        raise ValueError(f"tol must be a finite non-negative number, got {tol}")
    if max_iter < 1:
        raise ValueError(f"max_iter must be >= 1, got {max_iter}")
    if chunk_bytes < 1:
        raise ValueError(f"chunk_bytes must be >= 1, got {chunk_bytes}")
    R, M, d = prototypes.shape
    N = x.shape[1]
    device = prototypes.device
    P = prototypes.detach().to(device=device, dtype=_F64)
    X = x.detach().to(device=device, dtype=_F64)
    ext = hull_extent(X)

    ub = torch.full((R, M), math.inf, dtype=_F64, device=device)
    lb = torch.full((R, M), math.inf, dtype=_F64, device=device)
    if R == 0 or M == 0 or N == 0:
        return ub, lb, ext
    finite_p = torch.isfinite(P).all(dim=2) if d > 0 else torch.ones(R, M, dtype=torch.bool, device=device)
    run_ok = torch.isfinite(X).flatten(1).all(dim=1)
    if not bool(run_ok.all()):
        logger.warning(
            "hull distance: %d run(s) have non-finite inputs; their distances are nan",
            int((~run_ok).sum()),
        )
    if d == 0:
        zero = torch.zeros(R, M, dtype=_F64, device=device)
        ub = torch.where(run_ok[:, None], zero, math.nan)
        return ub, ub.clone(), ext

    lo = X.amin(dim=1)  # (R, d)
    hi = X.amax(dim=1)
    if d == 1:
        p1 = P[..., 0]
        dist = torch.maximum(torch.maximum(lo[:, None, 0] - p1, p1 - hi[:, None, 0]), torch.zeros_like(p1))
        dist = torch.where(finite_p, dist, math.inf)
        dist = torch.where(run_ok[:, None], dist, math.nan)
        return dist, dist.clone(), ext

    center = torch.where(run_ok[:, None], 0.5 * (lo + hi), 0.0)
    scale = ext[:, None, None]
    xn = torch.where(run_ok[:, None, None], (X - center[:, None, :]) / scale, 0.0)
    pn = torch.where(finite_p[..., None], (P - center[:, None, :]) / scale, 0.0)
    # prototypes absurdly far away (squares would overflow): the distance to
    # the box centre, relative error below 1e-149
    far = finite_p & run_ok[:, None] & ~(pn.abs().amax(dim=2) <= _FAR)
    if bool(far.any()):
        far_d = _far_distances(P, center, far)
        ub = torch.where(far, far_d, ub)
        lb = torch.where(far, far_d, lb)
    query = finite_p & run_ok[:, None] & ~far
    flat = query.flatten().nonzero().squeeze(1)
    run = torch.div(flat, M, rounding_mode="floor")
    pq = pn.reshape(R * M, d)[flat]
    u, l = _solve_queries(
        pq, xn, run, flat, M, tol=tol, threshold=threshold, max_iter=max_iter, warm=warm, chunk_bytes=chunk_bytes
    )
    ub_flat = ub.flatten()
    lb_flat = lb.flatten()
    rs = ext[run]
    ub_flat[flat] = u * rs
    lb_flat[flat] = l * rs
    ub = ub_flat.view(R, M)
    lb = lb_flat.view(R, M)
    ub = torch.where(run_ok[:, None], ub, math.nan)
    lb = torch.where(run_ok[:, None], lb, math.nan)
    return ub, lb, ext


def _far_distances(P: Tensor, center: Tensor, far: Tensor) -> Tensor:
    """Distance of prototypes ``P`` (R, M, d) to the box centres ``center`` (R, d) where ``far``.

    Computed after rescaling by the largest coordinate (no overflow of the
    squares); where ``P - center`` itself overflows, both are scaled by
    ``2^-600`` before subtracting. ``inf`` outside ``far``.
    """
    pf = P - center[:, None, :]
    big = pf.abs().amax(dim=2, keepdim=True).clamp(min=1e-300)
    far_d = torch.where(far, big[..., 0] * torch.linalg.vector_norm(pf / big, dim=2), math.inf)
    fin_c = torch.isfinite(pf).all(dim=2)
    # P - centre itself overflowed: rescale before subtracting
    p2 = P / 2.0**600
    c2 = center[:, None, :] / 2.0**600
    far_d2 = torch.linalg.vector_norm(p2 - c2, dim=2) * 2.0**600
    return torch.where(fin_c, far_d, far_d2)


def _solve_queries(
    pq: Tensor,
    xn: Tensor,
    run: Tensor,
    flat: Tensor,
    M: int,
    *,
    tol: float,
    threshold: float | None,
    max_iter: int,
    warm: HullWarmStart | None,
    chunk_bytes: int,
) -> tuple[Tensor, Tensor]:
    """Solver bounds ``(ub, lb)`` (normalised units) for the queries ``pq`` (Q, d).

    ``xn`` (R, N, d) are the normalised inputs, ``run`` (Q,) the run of each
    query and ``flat`` (Q,) its index in the flattened ``(R, M)`` grid (the key
    of the warm-start cache). With ``warm``, hinted queries still held by their
    old corral skip the solver, the others start from it (and are redone cold
    if that stalls); ``warm`` is then updated. Logs a warning when queries stop
    before meeting the tolerance.
    """
    device = pq.device
    R, N, d = xn.shape
    # bound the solver's working memory: per query roughly two (K, K)
    # matrices, the (K, d) corral and a few length-N score rows
    k1 = min(N, d + 1) + 1
    per_query = 8 * (2 * k1 * k1 + k1 * d + 3 * N + 4 * d)
    chunk = max(1, chunk_bytes // per_query)
    # Gram matrix for O(1) look-ups of <x_k, x_new> when it fits the budget
    gram = torch.bmm(xn, xn.transpose(1, 2)) if R * N * N * 8 <= chunk_bytes else None
    u = torch.empty(flat.numel(), dtype=_F64, device=device)
    l = torch.empty_like(u)
    kcap = min(N, d + 1)
    corral = torch.full((flat.numel(), kcap), -1, dtype=torch.long, device=device) if warm is not None else None
    todo = torch.arange(flat.numel(), device=device)
    hint = warm.hint(R, M, N, kcap, device) if warm is not None else None
    h = None
    stop = tol if threshold is None else max(tol, threshold)
    if hint is not None and corral is not None:
        h = hint.reshape(R * M, kcap)[flat]
        # only a prototype that was inside can still be held by its corral
        was_in = warm.inside(R, M, device) if warm is not None else None
        tried = (h[:, 0] >= 0) if was_in is None else (h[:, 0] >= 0) & was_in.flatten()[flat]
        tried = tried.nonzero().squeeze(1)
        held = torch.zeros(flat.numel(), dtype=torch.bool, device=device)
        if tried.numel():
            ub_h = _corral_upper_bound(pq[tried], xn, run[tried], h[tried])
            ok = ub_h <= stop
            held[tried[ok]] = True
            u[tried[ok]], l[tried[ok]] = ub_h[ok], 0.0
        corral[held] = h[held]
        todo = (~held).nonzero().squeeze(1)
    solve = partial(
        _solve_chunks, pq=pq, xn=xn, run=run, gram=gram, u=u, l=l, corral=corral, chunk=chunk,
        tol=tol, threshold=threshold, max_iter=max_iter,
    )
    iters, unresolved = solve(todo, h)
    if h is not None and unresolved:
        # a warm start that stalled (a poor hint) is redone from scratch: hints never cost accuracy
        gap = u[todo] - l[todo]
        done = (gap <= tol) | (gap <= _EXACT_GAP) | (u[todo] == 0)
        if threshold is not None:
            done |= (u[todo] <= threshold) | (l[todo] > threshold)
        iters_cold, unresolved = solve(todo[~done], None)
        iters = max(iters, iters_cold)
    if warm is not None and corral is not None:
        warm.store(R, M, N, kcap, flat, corral, inside=u <= stop)
    logger.debug(
        "hull distance: %d queries, N=%d, d=%d, %d iterations, %d unresolved",
        flat.numel(), N, d, iters, unresolved,
    )
    if unresolved:
        logger.warning(
            "hull distance: %d of %d queries stopped before meeting the tolerance "
            "(max_iter=%d or floating-point resolution reached)",
            unresolved, flat.numel(), max_iter,
        )
    return u, l


def _solve_chunks(
    todo: Tensor,
    init: Tensor | None,
    *,
    pq: Tensor,
    xn: Tensor,
    run: Tensor,
    gram: Tensor | None,
    u: Tensor,
    l: Tensor,
    corral: Tensor | None,
    chunk: int,
    tol: float,
    threshold: float | None,
    max_iter: int,
) -> tuple[int, int]:
    """Solve the queries ``todo`` in chunks of ``chunk``, writing ``u``, ``l`` (and ``corral``).

    ``init`` (one hint row per query, or ``None``) warm-starts the solver.
    Returns the largest iteration count of a chunk and the number of
    unresolved queries.
    """
    iters = missed = 0
    kcap = min(xn.shape[1], xn.shape[2] + 1)
    for c0 in range(0, todo.numel(), chunk):
        idx = todo[c0 : c0 + chunk]
        part = None if corral is None else torch.full((idx.numel(), kcap), -1, dtype=torch.long, device=u.device)
        u[idx], l[idx], it_c, un_c = _wolfe_bounds(
            pq[idx], xn, run[idx], gram, tol=tol, threshold=threshold, max_iter=max_iter, corral_out=part,
            init=init[idx] if init is not None else None,
        )
        if corral is not None and part is not None:
            corral[idx] = part
        iters = max(iters, it_c)
        missed += un_c
    return iters, missed


# --------------------------------------------------------------------------
# public API
# --------------------------------------------------------------------------
@torch.no_grad()
def hull_distance(
    prototypes: Tensor,
    x: Tensor,
    *,
    tol: float = 1e-6,
    max_iter: int = 2000,
    warm: HullWarmStart | None = None,
    chunk_bytes: int = _CHUNK_BYTES,
) -> Tensor:
    """Euclidean distance of every prototype to the convex hull of its run's inputs.

    Parameters
    ----------
    prototypes : Tensor, shape (R, M, d)
        Query points (one set per run).
    x : Tensor, shape (R, N, d)
        Inputs spanning the hull ``conv(x[r])`` of each run.  Must be finite
        (runs with non-finite inputs yield ``nan`` and a logged warning).
    tol : float, default 1e-6
        Certified accuracy relative to the extent: for ``d >= 2`` a query stops
        once ``ub - lb <= tol * extent[r]`` where ``lb <= dist <= ub`` are the
        separating-hyperplane and feasible-point bounds (module docstring).
        The returned ``ub`` therefore satisfies
        ``dist <= ub <= dist + tol * extent[r]``; in particular a point of the
        hull (``dist == 0``) gets a value ``<= tol * extent[r]``.
    max_iter : int, default 2000
        Maximum number of solver iterations.  Queries still open then, or
        stopped earlier by floating-point resolution (possible for extremely
        thin hulls or ``tol`` near machine precision), are returned with their
        current upper bound and a warning is logged.
    warm : HullWarmStart, optional
        Cache carried between successive calls on the same runs: prototypes
        still inside their previous corral skip the iteration (same
        guarantees; see :class:`HullWarmStart`).
    chunk_bytes : int, default 256 MiB
        Working-memory budget of one batched solver call: queries are solved
        in chunks of about this size, and the Gram matrices of the inputs are
        precomputed only when they fit it. Results do not depend on it beyond
        floating-point rounding.

    Returns
    -------
    Tensor, shape (R, M), float64
        ``dist[r, m] = min_{lambda in simplex} ||x[r]^T lambda - prototypes[r, m]||``.
        Always float64 on the prototypes' device (not cast back to the input
        dtype).  ``+inf`` where a prototype has a non-finite coordinate or
        ``N == 0``.  Exact for ``d == 1`` (``max(lo - p, p - hi, 0)``).
        Prototypes farther than ``1e150 * extent`` get their distance to the
        bounding-box centre (relative error below ``1e-149``).

    Notes
    -----
    Works for any ``N >= 1`` and ``d``, including ``N <= d + 1``, collinear /
    degenerate and duplicated inputs, where Delaunay- or facet-based methods
    fail.  Cost per iteration is ``O(N d)`` per open query for the
    Frank-Wolfe vertex search plus ``O(min(N, d + 1)^2)`` for the corral
    update; everything is batched over ``R * M`` queries (in chunks bounding
    the working memory to a few hundred MB) and runs on any torch device.
    """
    ub, _, _ = _hull_bounds(
        prototypes, x, tol=tol, max_iter=max_iter, threshold=None, warm=warm, chunk_bytes=chunk_bytes
    )
    return ub


@torch.no_grad()
def outside_hull(
    prototypes: Tensor,
    x: Tensor,
    *,
    rel_tol: float = 1e-6,
    distances: Tensor | None = None,
    max_iter: int = 2000,
    chunk_bytes: int = _CHUNK_BYTES,
) -> Tensor:
    """Flag prototypes lying outside the convex hull of the inputs.

    Parameters
    ----------
    prototypes : Tensor, shape (R, M, d)
    x : Tensor, shape (R, N, d)
    rel_tol : float, default 1e-6
        A prototype is outside when ``dist > rel_tol * extent[r]`` with
        ``extent`` from :func:`hull_extent` (``1.0`` for zero extent).
    distances : Tensor, shape (R, M), optional
        Precomputed :func:`hull_distance` values, compared as
        ``distances > rel_tol * extent``.  Since a returned distance ``ub``
        satisfies ``dist <= ub <= dist + tol * extent``, points of the hull are
        classified inside and points farther than ``rel_tol * extent`` outside
        whenever ``tol <= rel_tol`` (the default ``tol``); only
        ``0 < dist <= rel_tol * extent`` can then be flagged either way.
        When omitted, the solver runs in decision mode: a query stops as soon
        as ``ub <= rel_tol * extent`` (inside) or ``lb > rel_tol * extent``
        (outside) is certified -- exact apart from floating-point resolution,
        and cheaper than full distances for points clearly outside.
    max_iter : int, default 2000
        Solver iteration cap (decision mode only).  A query still undecided
        then is flagged by its upper bound (i.e. outside).
    chunk_bytes : int, default 256 MiB
        Solver working-memory budget (decision mode only), as in :func:`hull_distance`.

    Returns
    -------
    BoolTensor, shape (R, M)
        ``True`` where the prototype is outside.  Non-finite prototypes are
        always outside; runs with non-finite inputs give ``False`` for finite
        prototypes (their distances are undefined).
    """
    _check_pair(prototypes, x)
    if not (rel_tol >= 0 and math.isfinite(rel_tol)):
        raise ValueError(f"rel_tol must be a finite non-negative number, got {rel_tol}")
    R, M, d = prototypes.shape
    if distances is None:
        dist, _, ext = _hull_bounds(
            prototypes, x, tol=0.0, max_iter=max_iter, threshold=rel_tol, chunk_bytes=chunk_bytes
        )
    else:
        if distances.shape != (R, M):
            raise ValueError(
                f"distances must have shape {(R, M)}, got {tuple(distances.shape)}"
            )
        dist = distances.detach().to(_F64)
        ext = hull_extent(x)
    dist = dist.to(ext.device)
    out = dist > rel_tol * ext[:, None]
    nonfinite = ~torch.isfinite(prototypes.detach()).all(dim=2).to(out.device)
    return out | nonfinite


@torch.no_grad()
def outside_hull_frac(
    prototypes: Tensor,
    x: Tensor,
    *,
    rel_tol: float = 1e-6,
    distances: Tensor | None = None,
    max_iter: int = 2000,
) -> Tensor:
    """Fraction of prototypes outside the convex hull, per run.

    Parameters
    ----------
    prototypes : Tensor, shape (R, M, d)
    x : Tensor, shape (R, N, d)
    rel_tol, distances, max_iter
        As in :func:`outside_hull`.

    Returns
    -------
    Tensor, shape (R,), float64
        ``mean_m outside[r, m]``; ``0`` when ``M == 0``.
    """
    out = outside_hull(prototypes, x, rel_tol=rel_tol, distances=distances, max_iter=max_iter)
    if out.shape[1] == 0:
        return torch.zeros(out.shape[0], dtype=_F64, device=out.device)
    return out.to(_F64).mean(dim=1)
