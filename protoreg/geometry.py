"""Prototype geometry diagnostics: convex-hull distances and collapse checks.

Every tensor carries a leading *run axis* ``R``: ``R`` independent problems
are processed together and never interact.

Convex-hull distance
--------------------
For one run with inputs ``x_1, ..., x_N`` (rows of ``X``, shape ``(N, d)``)
and a query point ``p`` the distance to the convex hull is

.. math::

    \\operatorname{dist}(p, \\operatorname{conv} X)
        = \\min_{\\lambda \\in \\Delta_N} \\lVert X^\\top \\lambda - p \\rVert_2,
    \\qquad \\Delta_N = \\{\\lambda \\ge 0,\\ \\mathbf 1^\\top \\lambda = 1\\}.

In one dimension the hull is the interval ``[lo, hi]`` and the distance is
``max(lo - p, p - hi, 0)`` exactly.  For ``d >= 2`` the problem is solved
with Wolfe's minimum-norm-point active-set algorithm (the same family as
Gilbert-Johnson-Keerthi), batched over all ``R * M`` queries and started at
the nearest input:

* a *corral* ``S`` of at most ``min(N, d + 1)`` affinely independent inputs
  is kept per query, together with the explicit inverse of
  ``H_S = X_S X_S^T + 1 1^T`` and ``U = H_S^{-1} [X_S p, 1]``, updated in
  ``O(|S|^2)`` when a point enters (bordering) or leaves (Schur downdate);
* a *major* step adds the Frank-Wolfe vertex
  ``s = argmin_i <x_i, q - p>`` (``q`` the current point; it enters with the
  exact line-search weight towards ``s``) and moves to the minimiser of
  ``||y - p||`` over the affine hull of ``S``:
  ``mu = u + t v`` with ``(u, v) = U`` and ``t = (1 - 1^T u) / (1^T v)``;
* a *minor* step, taken when that affine minimiser has a non-positive
  weight, moves towards it until a weight hits zero and drops that point.

The algorithm terminates finitely in exact arithmetic and in practice needs
a small multiple of the face dimension of iterations (``d + 1`` for interior
points).  ``H_S`` squares the condition number of the corral, so the
updated inverses are checked against residuals computed from the
coordinates (refined or re-inverted), and a query whose corral becomes too
ill-conditioned (no decrease, a corral point re-selected, a numerically
dependent entering point) switches to backward-stable least-squares solves.

Each check of a query produces two certificates from the current feasible
point ``q = X_S^T lambda``:

* upper bound ``ub = ||q - p||`` (``q`` is a convex combination);
* lower bound ``lb = max(0, <u, p> - max_i <u, x_i>)`` with
  ``u = (p - q) / ||p - q||`` (a separating hyperplane), which equals
  ``ub - w / ub`` where ``w = max_i <q - x_i, q - p>`` is half the
  Frank-Wolfe duality gap.

The true distance always lies in ``[lb, ub]``; the returned distance is
``ub`` and a query stops once ``ub - lb <= tol`` (or, when flagging, once
``dist > threshold`` is decided).  Coordinates are centred on the bounding
box and divided by the extent (largest bounding-box side, see
:func:`hull_extent`) before solving, so all tolerances are relative to the
extent.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "hull_extent",
    "hull_distance",
    "outside_hull",
    "outside_hull_frac",
    "min_prototype_gap",
    "duplicate_prototypes",
    "dead_units",
    "geometry_report",
    "HullWarmStart",
]

logger = logging.getLogger(__name__)

_F64 = torch.float64
# Iterations between residual checks / refinements of the corral solutions.
_CHECK_EVERY = 8
# Relative residual of the corral solution that triggers an exact re-inversion.
_RESIDUAL = 1e-8
# Certified gaps below this (in extent units) count as numerically converged.
_EXACT_GAP = 1e-12
# Normalised coordinates beyond which a prototype is treated as far away.
_FAR = 1e150
# Working-memory budget of one batched solver call (queries are chunked).
_CHUNK_BYTES = 1 << 28
# Relative Schur complement below which it is recomputed as a residual norm.
_CANCEL = 1e-1
# Relative Schur-complement size below which a new point is treated as
# affinely dependent on the corral.
_DEPENDENT = 1e-16


# --------------------------------------------------------------------------
# validation helpers
# --------------------------------------------------------------------------
def _check_points(name: str, t: Tensor) -> None:
    if not isinstance(t, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if t.dim() != 3:
        raise ValueError(f"{name} must have shape (R, n, d), got {tuple(t.shape)}")


def _check_pair(prototypes: Tensor, x: Tensor) -> None:
    _check_points("prototypes", prototypes)
    _check_points("x", x)
    if prototypes.shape[0] != x.shape[0]:
        raise ValueError(
            f"run axis mismatch: prototypes has R={prototypes.shape[0]}, "
            f"x has R={x.shape[0]}"
        )
    if prototypes.shape[2] != x.shape[2]:
        raise ValueError(
            f"dimension mismatch: prototypes has d={prototypes.shape[2]}, "
            f"x has d={x.shape[2]}"
        )


# --------------------------------------------------------------------------
# extent
# --------------------------------------------------------------------------
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


# --------------------------------------------------------------------------
# batched Wolfe minimum-norm-point solver
# --------------------------------------------------------------------------
def _run_scores(z: Tensor, run: Tensor, xt: Tensor) -> Tensor:
    """Inner products of per-query vectors with their own run's inputs.

    Parameters
    ----------
    z : Tensor, shape (A, d)
        One vector per query.
    run : Tensor, shape (A,), long, sorted ascending
        Run index of each query.
    xt : Tensor, shape (R, d, N)
        Transposed inputs of every run.

    Returns
    -------
    Tensor, shape (A, N)
        ``out[a, i] = <x[run[a], i], z[a]>``, computed with one padded bmm.
    """
    A, d = z.shape
    if A == 0:
        return z.new_zeros(0, xt.shape[2])
    runs, inv, counts = torch.unique_consecutive(run, return_inverse=True, return_counts=True)
    starts = torch.cumsum(counts, 0) - counts
    pos = torch.arange(A, device=z.device) - starts[inv]
    width = int(counts.max())
    zp = z.new_zeros(runs.shape[0], width, d)
    zp[inv, pos] = z
    xr = xt if runs.shape[0] == xt.shape[0] else xt.index_select(0, runs)
    return torch.bmm(zp, xr)[inv, pos]


def _rows_bmv(M: Tensor, rows: Tensor, v: Tensor) -> Tensor:
    """``M[rows] @ v`` for a batch of matrices, avoiding a gather when most rows are used.

    Parameters
    ----------
    M : Tensor, shape (A, K, L)
    rows : Tensor, shape (a,), long
    v : Tensor, shape (a, L)

    Returns
    -------
    Tensor, shape (a, K)
    """
    if 2 * rows.numel() >= M.shape[0]:
        full = v.new_zeros(M.shape[0], v.shape[1])
        full[rows] = v
        return torch.bmm(M, full[:, :, None]).squeeze(2)[rows]
    return torch.bmm(M[rows], v[:, :, None]).squeeze(2)


def _rank1_update_(M: Tensor, rows: Tensor, a: Tensor, b: Tensor) -> None:
    """``M[rows[i]] += a[i] b[i]^T`` in place (``M`` (A, K, K); ``a``, ``b`` (n, K)).

    Uses one in-place pass over ``M`` when most rows are touched, a
    gather / update / scatter of the touched rows otherwise.
    """
    if 2 * rows.numel() >= M.shape[0]:
        fa = a.new_zeros(M.shape[0], M.shape[1])
        fb = torch.zeros_like(fa)
        fa[rows] = a
        fb[rows] = b
        M.addcmul_(fa[:, :, None], fb[:, None, :])
    else:
        sub = M[rows]
        sub.addcmul_(a[:, :, None], b[:, None, :])
        M[rows] = sub


def _corral_inverse(xs: Tensor, mask: Tensor) -> Tensor:
    """Exact inverse of the padded corral matrix.

    Parameters
    ----------
    xs : Tensor, shape (a, K, d)
        Corral coordinates (unused slots arbitrary).
    mask : BoolTensor, shape (a, K)
        Slots in use.

    Returns
    -------
    Tensor, shape (a, K, K)
        Inverse of ``H = X_S X_S^T + 1 1^T`` on the used slots, identity on the
        unused ones (``H`` is block-diagonal after a permutation).
    """
    K = mask.shape[1]
    pair = mask[:, :, None] & mask[:, None, :]
    H = torch.bmm(xs, xs.transpose(1, 2)) + 1.0
    eye = torch.eye(K, dtype=xs.dtype, device=xs.device).expand_as(H)
    H = torch.where(pair, H, eye)
    inv, info = torch.linalg.inv_ex(H)
    return torch.where((info == 0)[:, None, None], inv, torch.linalg.pinv(H, hermitian=True))


def _corral_lstsq(xs: Tensor, mask: Tensor, p: Tensor) -> Tensor:
    """Affine minimiser weights by a backward-stable least-squares solve.

    Used for queries whose corral is too ill-conditioned for the normal
    equations (``H`` squares the condition number).

    Parameters
    ----------
    xs : Tensor, shape (a, K, d)
        Corral coordinates.
    mask : BoolTensor, shape (a, K)
        Slots in use (at least one per row).
    p : Tensor, shape (a, d)
        Query points.

    Returns
    -------
    Tensor, shape (a, K)
        ``mu`` with ``sum(mu) = 1`` minimising ``||X_S^T mu - p||``: with the
        first used slot ``0`` as reference, ``c = argmin ||E c - (p - x_0)||``
        for ``E = [x_k - x_0]`` (minimum-norm solution when rank deficient),
        ``mu_k = c_k`` and ``mu_0 = 1 - sum(c)``.
    """
    a = xs.shape[0]
    ar = torch.arange(a, device=xs.device)
    ref = mask.to(torch.int8).argmax(dim=1)
    x0 = xs[ar, ref]
    use = mask.clone()
    use[ar, ref] = False
    E = torch.where(use[:, :, None], xs - x0[:, None, :], 0.0).transpose(1, 2).contiguous()
    rhs = (p - x0)[:, :, None]
    if E.device.type == "cpu":
        # SVD-based driver: rank-deficient (zero) columns are expected
        c = torch.linalg.lstsq(E, rhs, driver="gelsd").solution[..., 0]
    else:
        c = (torch.linalg.pinv(E) @ rhs)[..., 0]
    c = torch.where(use, c, 0.0)
    c[ar, ref] = 1.0 - c.sum(dim=1)
    return torch.where(mask, c, 0.0)


def _wolfe_bounds(
    p: Tensor,
    xn: Tensor,
    run: Tensor,
    gram: Tensor | None,
    *,
    tol: float,
    threshold: float | None,
    max_iter: int,
    corral_out: Tensor | None = None,
    init: Tensor | None = None,
) -> tuple[Tensor, Tensor, int, int]:
    """Certified bounds on ``dist(p[a], conv xn[run[a]])`` for every query.

    Wolfe's minimum-norm-point iteration (see the module docstring), batched.
    Per query the state is a corral of ``K`` slots (``S`` input indices,
    ``mask`` in use, ``lam`` convex weights, ``xs`` coordinates,
    ``bs = <x_s, p>``), the inverse ``Hinv`` of ``H = X_S X_S^T + 1 1^T``
    (identity on unused slots) and ``U = Hinv [bs, 1]`` (``(K, 2)``), from
    which the affine minimiser is ``mu = u + t v``,
    ``t = (1 - 1^T u) / (1^T v)``.  ``Hinv`` and ``U`` are updated in
    ``O(K^2)`` resp. ``O(K)`` per entering / leaving point and recomputed
    from scratch when a residual check fails.

    Parameters
    ----------
    p : Tensor, shape (Q, d), float64
        Finite, normalised query points.
    xn : Tensor, shape (R, N, d), float64
        Finite, normalised inputs (``N >= 1``).
    run : Tensor, shape (Q,), long, sorted ascending
        Run of each query.
    gram : Tensor, shape (R, N, N), float64, or None
        ``xn xn^T`` for O(1) look-ups of inner products (computed on the fly
        when ``None``).
    tol : float
        Stop a query once ``ub - lb <= tol``.
    threshold : float or None
        Decision mode: additionally stop once ``ub <= threshold`` or
        ``lb > threshold`` (the comparison ``dist > threshold`` is decided).
    max_iter : int
        Maximum number of (major or minor) iterations.
    corral_out : Tensor, shape (Q, min(N, d + 1)), long, optional
        Filled with each query's final corral (input indices, ``-1`` for
        unused slots): a warm start for the next call (:class:`HullWarmStart`).
    init : Tensor, shape (Q, min(N, d + 1)), long, optional
        A starting corral per query (used slots first, ``-1`` unused; a row
        starting with ``-1`` starts cold at its nearest input). Hinted rows
        begin with a minor step from the corral's centroid. Any hint is safe:
        the bounds are certified from the iterates whatever the start.

    Returns
    -------
    ub, lb : Tensor, shape (Q,), float64
        ``lb <= dist <= ub``.
    iterations : int
        Iterations performed.
    unresolved : int
        Queries stopped by ``max_iter`` or numerical stalling before their
        stopping rule was met.
    """
    device = p.device
    Q, d = p.shape
    R, N, _ = xn.shape
    ub_out = torch.full((Q,), math.inf, dtype=_F64, device=device)
    lb_out = torch.zeros(Q, dtype=_F64, device=device)
    if Q == 0:
        return ub_out, lb_out, 0, 0

    xt = xn.transpose(1, 2)  # (R, d, N)
    kcap = min(N, d + 1)
    sq = (xn * xn).sum(-1)  # (R, N)
    gram_flat = gram.reshape(-1) if gram is not None else None

    # ---- initial corral: the nearest input -------------------------------
    near = (sq[run] - 2.0 * _run_scores(p, run, xt)).argmin(dim=1)  # (Q,)
    qid = torch.arange(Q, device=device)
    K = 1
    S = near[:, None].clone()
    mask = torch.ones(Q, 1, dtype=torch.bool, device=device)
    lam = torch.ones(Q, 1, dtype=_F64, device=device)
    xs = xn[run, near][:, None, :].clone()
    bs = (xs[:, 0, :] * p).sum(-1, keepdim=True)
    Hinv = (1.0 / (sq[run, near] + 1.0))[:, None, None].clone()
    U = Hinv * torch.stack((bs, torch.ones_like(bs)), dim=2)  # (A, K, 2)
    major = torch.ones(Q, dtype=torch.bool, device=device)
    live = torch.ones(Q, dtype=torch.bool, device=device)
    stable = torch.zeros(Q, dtype=torch.bool, device=device)  # use least squares
    ub = torch.full((Q,), math.inf, dtype=_F64, device=device)
    lb = torch.zeros(Q, dtype=_F64, device=device)
    last = torch.full((Q,), math.inf, dtype=_F64, device=device)  # previous check

    unresolved = 0

    def finish(rows: Tensor, unsure: Tensor | None = None) -> None:
        nonlocal unresolved
        ub_out[qid[rows]] = ub[rows]
        lb_out[qid[rows]] = lb[rows]
        if corral_out is not None:
            corral_out[qid[rows], : S.shape[1]] = torch.where(mask[rows], S[rows], -1)
        live[rows] = False
        if unsure is not None:
            unresolved += int(unsure.sum())

    def refresh(rows: Tensor) -> None:
        # exact re-inversion, then two steps of iterative refinement of
        # U = H^{-1} [bs, 1] with the residual evaluated from the coordinates
        # (H U = X_S (X_S^T U) + 1 (1^T U) on the used slots)
        m, x_r = mask[rows], xs[rows]
        h_r = _corral_inverse(x_r, m)
        rhs = torch.stack((torch.where(m, bs[rows], 0.0), m.to(_F64)), dim=2)
        u_r = torch.bmm(h_r, rhs)
        for _ in range(2):
            hu = torch.bmm(x_r, torch.bmm(x_r.transpose(1, 2), u_r)) + u_r.sum(1, keepdim=True)
            hu = torch.where(m[:, :, None], hu, u_r)
            u_r = u_r + torch.bmm(h_r, rhs - hu)
        Hinv[rows] = h_r
        U[rows] = u_r

    def affine_minimiser() -> Tensor:
        u, v = U[..., 0], U[..., 1]
        t = (1.0 - u.sum(1)) / v.sum(1)
        return torch.where(mask, u + t[:, None] * v, 0.0)

    if init is not None and Q > 0 and bool((init[:, 0] >= 0).any()):
        # ---- warm start: every hinted query starts from its given corral ----
        hinted = init[:, 0] >= 0
        K = kcap
        slot0 = torch.zeros(Q, K, dtype=torch.bool, device=device)
        slot0[:, 0] = True
        mask = torch.where(hinted[:, None], init >= 0, slot0)
        S = torch.where(mask, init.clamp(min=0), 0)
        S[:, 0] = torch.where(hinted, S[:, 0], near)
        xs = torch.where(mask[..., None], xn[run[:, None], S], 0.0)
        bs = torch.where(mask, (xs * p[:, None, :]).sum(-1), 0.0)
        lam = mask.to(_F64) / mask.sum(1, keepdim=True)
        Hinv = torch.eye(K, dtype=_F64, device=device).repeat(Q, 1, 1)
        U = torch.zeros(Q, K, 2, dtype=_F64, device=device)
        refresh(torch.arange(Q, device=device))
        major = ~hinted

    it = 0
    while it < max_iter:
        # ---- drop finished queries once they are a sizeable fraction ----
        n_live = int(live.sum())
        if n_live == 0:
            break
        if 4 * n_live <= 3 * qid.numel():
            keep = live.nonzero().squeeze(1)
            qid, S, mask, lam, xs, bs, Hinv, U, major, live, stable, ub, lb, last = (
                t[keep]
                for t in (qid, S, mask, lam, xs, bs, Hinv, U, major, live, stable, ub, lb, last)
            )
            used = int(mask.any(dim=0).nonzero().max()) + 1
            if 2 * used <= K:
                K = used
                S, mask, lam, bs = (t[:, :K].contiguous() for t in (S, mask, lam, bs))
                xs, U = xs[:, :K].contiguous(), U[:, :K].contiguous()
                Hinv = Hinv[:, :K, :K].contiguous()
        it += 1

        # ---- major rows: certificates and Frank-Wolfe vertex -------------
        mj = (major & live).nonzero().squeeze(1)
        add = mj[:0]
        s_add = mj[:0]
        gamma = lb[:0]
        if mj.numel() > 0:
            q = torch.bmm(lam[mj, None, :], xs[mj]).squeeze(1) if 4 * mj.numel() < qid.numel() \
                else torch.bmm(lam[:, None, :], xs).squeeze(1)[mj]  # (m, d)
            z = q - p[qid[mj]]
            scores = _run_scores(z, run[qid[mj]], xt)  # (m, N)
            # argmin + gather: the fused (values, indices) reduction is far
            # slower on CPU for these shapes
            s = scores.argmin(dim=1)
            smin = scores.gather(1, s[:, None]).squeeze(1)
            dist = torch.linalg.vector_norm(z, dim=1)
            w = (q * z).sum(-1) - smin  # half the Frank-Wolfe gap
            safe = torch.where(dist > 0, dist, torch.ones_like(dist))
            lb_new = torch.where(dist > 0, (dist - w / safe).clamp(min=0.0), torch.zeros_like(dist))
            # Wolfe's iteration decreases the distance strictly between checks
            progress = dist < last[mj]
            last[mj] = dist
            ub_m = torch.fmin(ub[mj], dist)
            lb_m = torch.maximum(lb[mj], lb_new)
            ub[mj] = ub_m
            lb[mj] = lb_m
            gap = ub_m - lb_m
            stop = (gap <= tol) | (gap <= _EXACT_GAP) | (dist == 0)
            if threshold is not None:
                stop |= (ub_m <= threshold) | (lb_m > threshold)
            in_corral = ((S[mj] == s[:, None]) & mask[mj]).any(dim=1)
            # numerical trouble (the FW vertex is already in the corral, or no
            # decrease): switch the query to least-squares corral solves,
            # give up when that still does not help
            stuck = ~stop & (in_corral | ~progress)
            again = stuck & ~stable[mj]
            give_up = stuck & stable[mj]
            fin = stop | give_up
            if bool(fin.any()):
                finish(mj[fin], give_up[fin])
            stable[mj[again]] = True
            go = ~fin & ~again
            add, s_add = mj[go], s[go]
            # exact line-search step towards the new vertex (its initial
            # weight): guarantees a decrease even when the corral solution
            # below is inaccurate
            step = xn[run[qid[add]], s_add] - q[go]
            gamma = (w[go] / (step * step).sum(-1).clamp(min=1e-300)).clamp(0.0, 1.0)

        # ---- add the Frank-Wolfe vertex (bordered inverse update) -------
        if add.numel() > 0:
            full = mask[add].all(dim=1)
            if bool(full.any()):
                if K >= kcap:
                    # no free slot: the corral already spans the whole space,
                    # so its affine minimiser is inaccurate -- switch to least
                    # squares, give up if that was already in use
                    gone = full & stable[add]
                    if bool(gone.any()):
                        finish(add[gone], gone[gone])
                    stable[add[full]] = True
                    add, s_add, gamma = add[~full], s_add[~full], gamma[~full]
                else:
                    grow = min(kcap, max(K + 1, 2 * K)) - K  # geometric growth
                    K += grow
                    S = F.pad(S, (0, grow))
                    mask = F.pad(mask, (0, grow))
                    lam = F.pad(lam, (0, grow))
                    bs = F.pad(bs, (0, grow))
                    xs = F.pad(xs, (0, 0, 0, grow))
                    U = F.pad(U, (0, 0, 0, grow))
                    Hinv = F.pad(Hinv, (0, grow, 0, grow))
                    tail = torch.arange(K - grow, K, device=device)
                    Hinv[:, tail, tail] = 1.0
        j = add[:0]
        if add.numel() > 0:
            j = (~mask[add]).to(torch.int8).argmax(dim=1)  # first free slot
            r_add = run[qid[add]]
            xnew = xn[r_add, s_add]  # (a, d)
            if gram is not None:
                lin = (r_add[:, None] * N + S[add]) * N + s_add[:, None]
                hx = gram_flat.take(lin)
            else:
                hx = _rows_bmv(xs, add, xnew)
            h = torch.where(mask[add], hx + 1.0, 0.0)
            eta = sq[r_add, s_add] + 1.0
            wv = _rows_bmv(Hinv, add, h)
            # Schur complement = squared distance of (x_new, 1) from the span
            # of the corral's (x_s, 1); where the direct formula cancels,
            # evaluate it as a residual norm instead (stable)
            schur = eta - (h * wv).sum(-1)
            near = ~(schur > _CANCEL * eta)
            if bool(near.any()):
                nr = near.nonzero().squeeze(1)
                rows_n = add[nr]
                res_x = xnew[nr] - torch.bmm(wv[nr, None, :], xs[rows_n]).squeeze(1)
                schur[nr] = (res_x * res_x).sum(-1) + (1.0 - wv[nr].sum(-1)) ** 2
            dep = schur <= _DEPENDENT * eta
            if bool(dep.any()):
                # numerically (almost) affinely dependent: the inverse update
                # is meaningless, continue with least-squares corral solves
                stable[add[dep]] = True
                schur = torch.where(dep, torch.ones_like(schur), schur)
        if add.numel() > 0:
            ar = torch.arange(add.numel(), device=device)
            b_new = (xnew * p[qid[add]]).sum(-1)
            # U update: delta = (r_j - h^T U) / schur; U -= w delta; U_j = delta
            r_new = torch.stack((b_new, torch.ones_like(b_new)), dim=1)  # (a, 2)
            delta = (r_new - torch.bmm(h[:, None, :], U[add]).squeeze(1)) / schur[:, None]
            Ua = U[add] - wv[:, :, None] * delta[:, None, :]
            Ua[ar, j] = delta
            U[add] = Ua
            _rank1_update_(Hinv, add, wv, wv / schur[:, None])
            col = -wv / schur[:, None]
            Hinv[add, j, :] = col
            Hinv[add, :, j] = col
            Hinv[add, j, j] = 1.0 / schur
            S[add, j] = s_add
            mask[add, j] = True
            lam[add] = lam[add] * (1.0 - gamma[:, None])
            lam[add, j] = gamma
            xs[add, j] = xnew
            bs[add, j] = b_new

        # ---- affine minimiser of every corral ------------------------------
        if it % _CHECK_EVERY == 0:
            # residual of U = H^{-1} [bs, 1] from the coordinates: one
            # refinement step where small, exact re-inversion where large
            rhs = torch.stack((torch.where(mask, bs, 0.0), mask.to(_F64)), dim=2)
            hu = torch.bmm(xs, torch.bmm(xs.transpose(1, 2), U)) + U.sum(1, keepdim=True)
            hu = torch.where(mask[:, :, None], hu, U)
            res = rhs - hu
            scale = torch.maximum(rhs.abs().amax(1), hu.abs().amax(1)).clamp(min=1e-300)
            rel = (res.abs().amax(1) / scale).amax(1)
            U.add_(torch.bmm(Hinv, res))
            stale = live & ~stable & ~(rel <= _RESIDUAL)
            if bool(stale.any()):
                refresh(stale.nonzero().squeeze(1))
        mu = affine_minimiser()
        st = (stable & live).nonzero().squeeze(1)
        if st.numel() > 0:
            mu[st] = _corral_lstsq(xs[st], mask[st], p[qid[st]])

        if add.numel() > 0:
            # in exact arithmetic the entering point receives positive weight;
            # if it does not, the corral solve is inaccurate: use least squares
            bad = mu[add, j] <= 0
            if bool(bad.any()):
                newly = add[bad & ~stable[add]]
                if newly.numel() > 0:
                    stable[newly] = True
                    mu[newly] = _corral_lstsq(xs[newly], mask[newly], p[qid[newly]])

        positive = ((mu > 0) | ~mask).all(dim=1) | ~live
        # minor step: move towards mu until the first weight reaches zero
        ratio = torch.where(mask & (mu <= 0), lam / (lam - mu).clamp(min=1e-300), math.inf)
        kmin = ratio.argmin(dim=1)
        theta = ratio.gather(1, kmin[:, None]).squeeze(1)
        theta = torch.where(positive, torch.ones_like(theta), theta.clamp(0.0, 1.0))
        lam_new = lam + theta[:, None] * (mu - lam)
        lam_new = torch.where(mask, lam_new.clamp(min=0.0), 0.0)
        slots = torch.arange(K, device=device)
        drop = ~positive[:, None] & mask & ((lam_new <= 0) | (slots == kmin[:, None]))
        lam_new = torch.where(drop, 0.0, lam_new)
        lam = lam_new / lam_new.sum(1, keepdim=True)
        major = positive

        # Schur downdate for every dropped slot:
        # Hinv -= f f^T / g, U -= f U_j / g, slot j back to identity / zero
        while bool(drop.any()):
            rows = drop.any(dim=1).nonzero().squeeze(1)
            jd = drop[rows].to(torch.int8).argmax(dim=1)
            rr = torch.arange(rows.numel(), device=device)
            f = Hinv[rows, :, jd]
            g = Hinv[rows, jd, jd]
            Ur = U[rows]
            Ur = Ur - f[:, :, None] * (Ur[rr, jd] / g[:, None])[:, None, :]
            Ur[rr, jd] = 0.0
            U[rows] = Ur
            _rank1_update_(Hinv, rows, f, -f / g[:, None])
            Hinv[rows, jd, :] = 0.0
            Hinv[rows, :, jd] = 0.0
            Hinv[rows, jd, jd] = 1.0
            mask[rows, jd] = False
            drop[rows, jd] = False

    rest = live.nonzero().squeeze(1)
    if rest.numel() > 0:
        finish(rest, torch.ones_like(rest, dtype=torch.bool))
    return ub_out, lb_out, it, unresolved


def _corral_upper_bound(p: Tensor, xn: Tensor, run: Tensor, hint: Tensor) -> Tensor:
    """Distance from each query to the best convex combination of its hinted inputs.

    For query ``a`` with hinted input indices ``hint[a]`` (``-1`` unused, used ones first) the
    affine least-squares weights are computed (pseudo-inverse, any device), clipped to be
    non-negative and renormalised, so the point ``q`` is a convex combination of inputs and
    ``||q - p||`` is a valid upper bound on the hull distance whatever the hint. ``inf`` where a
    query has no hint.
    """
    valid = hint >= 0
    has = valid[:, 0]
    idx = hint.clamp(min=0)
    xs = xn[run[:, None], idx]  # (Q, K, d)
    x0 = xs[:, 0]
    edges = (xs[:, 1:] - x0[:, None, :]) * valid[:, 1:, None]  # (Q, K-1, d), zero rows unused
    if edges.shape[1] > 0:
        c = torch.bmm(torch.linalg.pinv(edges.transpose(1, 2)), (p - x0)[:, :, None]).squeeze(2)
        c = c * valid[:, 1:]
        lam = torch.cat((1.0 - c.sum(1, keepdim=True), c), dim=1)
    else:
        lam = torch.ones_like(valid, dtype=_F64)
    lam = torch.where(valid, lam.clamp(min=0.0), 0.0)
    total = lam.sum(1, keepdim=True)
    ok = has & (total[:, 0] > 0)
    lam = lam / torch.where(total > 0, total, torch.ones_like(total))
    q = torch.bmm(lam[:, None, :], xs).squeeze(1)
    ub = torch.linalg.vector_norm(q - p, dim=1)
    return torch.where(ok & torch.isfinite(ub), ub, math.inf)


class HullWarmStart:
    """A cache that makes repeated hull checks of slowly moving prototypes cheap.

    Pass the same instance to successive :func:`hull_distance` calls (as the geometry callback
    does between checks): each call remembers every prototype's final corral (the inputs whose
    convex combination is nearest to it), and the next call first tries that corral again. A
    prototype still inside the hull of its old corral (within the tolerance) is answered by one
    small least-squares solve instead of the active-set iteration; all others are solved as
    usual. Results are certified exactly as without the cache (the bound comes from an actual
    convex combination of inputs); only the last bits of distances at or below the tolerance
    can differ. The cache resets itself when the shapes change.
    """

    def __init__(self) -> None:
        self._key: tuple[int, int, int, int] | None = None
        self._corral: Tensor | None = None

    def hint(self, R: int, M: int, N: int, kcap: int, device: torch.device) -> Tensor | None:
        if self._key != (R, M, N, kcap) or self._corral is None:
            return None
        return self._corral.to(device)

    def store(self, R: int, M: int, N: int, kcap: int, flat: Tensor, corral: Tensor) -> None:
        full = torch.full((R * M, kcap), -1, dtype=torch.long, device=corral.device)
        # used slots first (the hint check takes slot 0 as its origin)
        order = (corral < 0).to(torch.int8).argsort(dim=1, stable=True)
        full[flat] = corral.gather(1, order)
        self._key, self._corral = (R, M, N, kcap), full.view(R, M, kcap)

    def clear(self) -> None:
        self._key, self._corral = None, None

    def state_dict(self) -> dict[str, object]:
        """Plain, checkpoint-safe state (a list and a tensor)."""
        if self._key is None or self._corral is None:
            return {}
        return {"key": list(self._key), "corral": self._corral.detach().cpu()}

    def load_state_dict(self, state: dict[str, object]) -> None:
        key, corral = state.get("key"), state.get("corral")
        if isinstance(key, (list, tuple)) and len(key) == 4 and isinstance(corral, Tensor):
            self._key = (int(key[0]), int(key[1]), int(key[2]), int(key[3]))
            self._corral = corral.to(torch.long)
        else:
            self.clear()


def _hull_bounds(
    prototypes: Tensor,
    x: Tensor,
    *,
    tol: float,
    max_iter: int,
    threshold: float | None,
    warm: "HullWarmStart | None" = None,
) -> tuple[Tensor, Tensor, Tensor]:
    """Bounds on hull distances in original units.

    With ``warm``, queries whose previous corral still holds them (within the
    tolerance) are answered without the solver, and ``warm`` is updated.

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
        pf = P - center[:, None, :]
        big = pf.abs().amax(dim=2, keepdim=True).clamp(min=1e-300)
        far_d = torch.where(far, big[..., 0] * torch.linalg.vector_norm(pf / big, dim=2), math.inf)
        fin_c = torch.isfinite(pf).all(dim=2)
        # P - centre itself overflowed: rescale before subtracting
        p2 = P / 2.0**600
        c2 = center[:, None, :] / 2.0**600
        far_d2 = torch.linalg.vector_norm(p2 - c2, dim=2) * 2.0**600
        far_d = torch.where(fin_c, far_d, far_d2)
        ub = torch.where(far, far_d, ub)
        lb = torch.where(far, far_d, lb)
    query = finite_p & run_ok[:, None] & ~far
    flat = query.flatten().nonzero().squeeze(1)
    run = torch.div(flat, M, rounding_mode="floor")
    pq = pn.reshape(R * M, d)[flat]
    # bound the solver's working memory: per query roughly two (K, K)
    # matrices, the (K, d) corral and a few length-N score rows
    k1 = min(N, d + 1) + 1
    per_query = 8 * (2 * k1 * k1 + k1 * d + 3 * N + 4 * d)
    chunk = max(1, _CHUNK_BYTES // per_query)
    # Gram matrix for O(1) look-ups of <x_k, x_new> when it fits the budget
    gram = torch.bmm(xn, xn.transpose(1, 2)) if R * N * N * 8 <= _CHUNK_BYTES else None
    u = torch.empty(flat.numel(), dtype=_F64, device=device)
    l = torch.empty_like(u)
    kcap = min(N, d + 1)
    corral = torch.full((flat.numel(), kcap), -1, dtype=torch.long, device=device) if warm is not None else None
    todo = torch.arange(flat.numel(), device=device)
    hint = warm.hint(R, M, N, kcap, device) if warm is not None else None
    if hint is not None and corral is not None:
        h = hint.reshape(R * M, kcap)[flat]
        stop = tol if threshold is None else max(tol, threshold)
        ub_h = _corral_upper_bound(pq, xn, run, h)
        held = ub_h <= stop
        u[held], l[held] = ub_h[held], 0.0
        corral[held] = h[held]
        todo = (~held).nonzero().squeeze(1)
    iters = unresolved = 0

    def solve(todo: Tensor, warm_start: bool) -> int:
        nonlocal iters
        missed = 0
        for c0 in range(0, todo.numel(), chunk):
            idx = todo[c0 : c0 + chunk]
            part = None if corral is None else torch.full((idx.numel(), kcap), -1, dtype=torch.long, device=device)
            u[idx], l[idx], it_c, un_c = _wolfe_bounds(
                pq[idx], xn, run[idx], gram, tol=tol, threshold=threshold, max_iter=max_iter, corral_out=part,
                init=h[idx] if warm_start else None,
            )
            if corral is not None and part is not None:
                corral[idx] = part
            iters = max(iters, it_c)
            missed += un_c
        return missed

    if hint is None:
        unresolved = solve(todo, False)
    elif solve(todo, True):
        # a warm start that stalled (a poor hint) is redone from scratch: hints never cost accuracy
        gap = u[todo] - l[todo]
        done = (gap <= tol) | (gap <= _EXACT_GAP) | (u[todo] == 0)
        if threshold is not None:
            done |= (u[todo] <= threshold) | (l[todo] > threshold)
        unresolved = solve(todo[~done], False)
    if warm is not None and corral is not None:
        warm.store(R, M, N, kcap, flat, corral)
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


# --------------------------------------------------------------------------
# public hull API
# --------------------------------------------------------------------------
@torch.no_grad()
def hull_distance(
    prototypes: Tensor,
    x: Tensor,
    *,
    tol: float = 1e-6,
    max_iter: int = 2000,
    warm: HullWarmStart | None = None,
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
    ub, _, _ = _hull_bounds(prototypes, x, tol=tol, max_iter=max_iter, threshold=None, warm=warm)
    return ub


@torch.no_grad()
def outside_hull(
    prototypes: Tensor,
    x: Tensor,
    *,
    rel_tol: float = 1e-6,
    distances: Tensor | None = None,
    max_iter: int = 2000,
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
            prototypes, x, tol=0.0, max_iter=max_iter, threshold=rel_tol
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


# --------------------------------------------------------------------------
# collapse diagnostics
# --------------------------------------------------------------------------
def _pairwise_dist_blocks(p: Tensor, block: int = 512) -> Iterator[tuple[int, int, Tensor]]:
    """Yield ``(i0, i1, D)`` with ``D[r, a, b] = ||p[r, i0 + a] - p[r, b]||``.

    ``p`` (R, M, d) must be finite.  Differences are taken directly (no
    ``|a|^2 + |b|^2 - 2ab`` expansion) after an exact power-of-two rescaling
    per run (no overflow of the squares), in row blocks of ``block``
    prototypes to bound memory at ``R * block * M``.
    """
    M = p.shape[1]
    big = p.abs().flatten(1).amax(dim=1) if p.numel() else p.new_zeros(p.shape[0])
    scale = torch.where(big > 0, torch.exp2(torch.floor(torch.log2(big))), torch.ones_like(big))
    ps = p / scale[:, None, None]
    for i0 in range(0, M, block):
        i1 = min(M, i0 + block)
        D = torch.cdist(ps[:, i0:i1], ps, compute_mode="donot_use_mm_for_euclid_dist")
        yield i0, i1, D * scale[:, None, None]


@torch.no_grad()
def min_prototype_gap(prototypes: Tensor) -> Tensor:
    """Smallest pairwise distance among the finite prototypes of each run.

    Parameters
    ----------
    prototypes : Tensor, shape (R, M, d)

    Returns
    -------
    Tensor, shape (R,), float64
        ``min_{i < j, p_i, p_j finite} ||p_i - p_j||``; ``+inf`` when a run has
        fewer than two finite prototypes.
    """
    _check_points("prototypes", prototypes)
    R, M, d = prototypes.shape
    P = prototypes.detach().to(_F64)
    finite = torch.isfinite(P).all(dim=2)
    P = torch.where(finite[..., None], P, 0.0)
    best = torch.full((R,), math.inf, dtype=_F64, device=P.device)
    if M < 2:
        return best
    idx = torch.arange(M, device=P.device)
    for i0, i1, D in _pairwise_dist_blocks(P):
        valid = finite[:, i0:i1, None] & finite[:, None, :] & (idx[i0:i1, None] != idx[None, :])
        D = torch.where(valid, D, math.inf)
        best = torch.minimum(best, D.flatten(1).amin(dim=1))
    return best


@torch.no_grad()
def duplicate_prototypes(
    prototypes: Tensor,
    *,
    rel_tol: float = 1e-6,
    extent: Tensor | None = None,
) -> Tensor:
    """Number of prototypes that duplicate an earlier one, per run.

    Parameters
    ----------
    prototypes : Tensor, shape (R, M, d)
    rel_tol : float, default 1e-6
        Prototype ``j`` is a duplicate when some ``i < j`` has
        ``||p_i - p_j|| <= rel_tol * extent[r]``.
    extent : Tensor, shape (R,), optional
        Length scale per run; defaults to :func:`hull_extent` of the finite
        prototypes themselves (pass ``hull_extent(x)`` to measure against the
        data scale).

    Returns
    -------
    LongTensor, shape (R,)
        Count of such ``j``.  Non-finite prototypes are never counted and never
        serve as the earlier prototype.
    """
    _check_points("prototypes", prototypes)
    R, M, d = prototypes.shape
    P = prototypes.detach().to(_F64)
    finite = torch.isfinite(P).all(dim=2)
    P = torch.where(finite[..., None], P, 0.0)
    if M < 2:
        return torch.zeros(R, dtype=torch.long, device=P.device)
    if extent is None:
        big = torch.finfo(_F64).max
        lo = torch.where(finite[..., None], P, big).amin(dim=1)
        hi = torch.where(finite[..., None], P, -big).amax(dim=1)
        ext = (hi - lo).amax(dim=1) if d > 0 else torch.zeros(R, dtype=_F64, device=P.device)
        extent = torch.where(torch.isfinite(ext) & (ext > 0), ext, torch.ones_like(ext))
    else:
        if extent.shape != (R,):
            raise ValueError(f"extent must have shape {(R,)}, got {tuple(extent.shape)}")
        extent = extent.detach().to(device=P.device, dtype=_F64)
    thr = rel_tol * extent
    dup = torch.zeros(R, M, dtype=torch.bool, device=P.device)
    idx = torch.arange(M, device=P.device)
    for i0, i1, D in _pairwise_dist_blocks(P):
        # D[r, a, b]: earlier prototype b < later prototype i0 + a
        earlier = idx[None, :] < idx[i0:i1, None]
        close = (D <= thr[:, None, None]) & earlier & finite[:, None, :] & finite[:, i0:i1, None]
        dup[:, i0:i1] = close.any(dim=2)
    return dup.sum(dim=1)


@torch.no_grad()
def dead_units(hidden: Tensor) -> Tensor:
    """Number of hidden units that never win the argmax over units.

    Parameters
    ----------
    hidden : Tensor, shape (R, N, M)
        Hidden activations per run, sample and unit.

    Returns
    -------
    LongTensor, shape (R,)
        ``M - |{argmax_j hidden[r, n, j] : n}|``.  Ties go to the lowest unit
        index (``torch.argmax``); with ``N == 0`` every unit is dead.
    """
    if not isinstance(hidden, Tensor) or hidden.dim() != 3:
        raise ValueError("hidden must be a tensor of shape (R, N, M)")
    R, N, M = hidden.shape
    if M == 0:
        return torch.zeros(R, dtype=torch.long, device=hidden.device)
    hits = torch.zeros(R, M, dtype=torch.bool, device=hidden.device)
    if N > 0:
        win = hidden.detach().argmax(dim=2)  # (R, N)
        hits.scatter_(1, win, True)
    return M - hits.sum(dim=1)


@torch.no_grad()
def geometry_report(
    prototypes: Tensor,
    x: Tensor,
    hidden: Tensor,
    *,
    rel_tol: float = 1e-6,
    warm: HullWarmStart | None = None,
) -> dict[str, Tensor]:
    """All geometry diagnostics of a batch of runs.

    Parameters
    ----------
    prototypes : Tensor, shape (R, M, d)
    x : Tensor, shape (R, N, d)
    hidden : Tensor, shape (R, N, M)
    rel_tol : float, default 1e-6
        Relative tolerance (times :func:`hull_extent` of ``x``) used for the
        hull distances (``tol``), the outside flags and duplicate detection.
    warm : HullWarmStart, optional
        Cache carried between successive reports of the same runs (see
        :class:`HullWarmStart`).

    Returns
    -------
    dict[str, Tensor]
        Per-run ``(R,)`` tensors:

        ``outside_hull_frac`` (float64)
            fraction of units with ``outside``;
        ``mean_hull_distance`` (float64)
            mean of ``hull_distance`` over units -- ``+inf`` when any unit has a
            non-finite prototype (its distance is ``+inf``);
        ``max_hull_distance`` (float64)
            maximum over units (``+inf`` likewise);
        ``min_prototype_gap`` (float64)
            :func:`min_prototype_gap`;
        ``duplicate_prototypes`` (long)
            :func:`duplicate_prototypes` with ``extent = hull_extent(x)``;
        ``dead_units`` (long)
            :func:`dead_units` of ``hidden``;

        and per-unit ``(R, M)`` tensors ``hull_distance`` (float64) and
        ``outside`` (bool).
    """
    _check_pair(prototypes, x)
    R, M, d = prototypes.shape
    if hidden.dim() != 3 or hidden.shape != (R, x.shape[1], M):
        raise ValueError(
            f"hidden must have shape {(R, x.shape[1], M)}, got {tuple(hidden.shape)}"
        )
    dist = hull_distance(prototypes, x, tol=rel_tol, warm=warm)
    outside = outside_hull(prototypes, x, rel_tol=rel_tol, distances=dist)
    ext = hull_extent(x)
    if M > 0:
        frac = outside.to(_F64).mean(dim=1)
        mean_d = dist.mean(dim=1)
        max_d = dist.amax(dim=1)
    else:
        frac = torch.zeros(R, dtype=_F64, device=dist.device)
        mean_d = torch.full((R,), math.nan, dtype=_F64, device=dist.device)
        max_d = mean_d.clone()
    return {
        "outside_hull_frac": frac,
        "mean_hull_distance": mean_d,
        "max_hull_distance": max_d,
        "min_prototype_gap": min_prototype_gap(prototypes),
        "duplicate_prototypes": duplicate_prototypes(prototypes, rel_tol=rel_tol, extent=ext),
        "dead_units": dead_units(hidden),
        "hull_distance": dist,
        "outside": outside,
    }
