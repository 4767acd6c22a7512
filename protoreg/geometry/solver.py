"""Batched Wolfe minimum-norm-point solver: certified distances to convex hulls.

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
:func:`~protoreg.geometry.hull_extent`) before solving, so all tolerances are relative to the
extent.

Implementation
--------------
:func:`_wolfe_bounds` runs the iteration as named phases over a
:class:`_CorralState` (the parallel per-query tensors) and a :class:`_Problem`
(the fixed inputs and the outputs), both in :mod:`protoreg.geometry.corral`:

* :func:`_start` -- start at the nearest input;
* :func:`_certify` -- bounds at the current point, the stopping rule
  (:meth:`_Problem.finish`), the Frank-Wolfe vertex and its line-search weight;
* :func:`_make_room` and :func:`_enter` -- the major step: the vertex enters
  the corral (geometric growth of the slots, bordered inverse update);
* :func:`_check_residual` -- periodic refinement / re-inversion;
* :func:`_corral_solution` -- the affine minimiser, with the least-squares
  fallback for ill-conditioned corrals;
* :func:`_minor_step` -- the move towards it and the Schur downdate of
  dropped points (:meth:`_CorralState.downdate`).
"""

from __future__ import annotations

import math
from typing import cast

import torch
from torch import Tensor

from protoreg.geometry._common import _F64
from protoreg.geometry.corral import _CorralState, _Problem
from protoreg.geometry.gram import _U64, GramSearch, combination
from protoreg.geometry.linalg import _rank1_update_, _rows_bmv, _run_scores

# Iterations between residual checks / refinements of the corral solutions.
_CHECK_EVERY = 8
# Relative residual of the corral solution that triggers an exact re-inversion.
_RESIDUAL = 1e-8
# Certified gaps below this (in extent units) count as numerically converged.
_EXACT_GAP = 1e-12
# The float32 vertex search is used when its certified error is at most this share of every
# query's tolerance (and the products are large enough for the halved time to matter).
_F32_SHARE = 1.0 / 16
_F32_MIN_WORK = 1 << 14
# Relative Schur complement below which it is recomputed as a residual norm.
_CANCEL = 1e-1
# Relative Schur-complement size below which a new point is treated as
# affinely dependent on the corral.
_DEPENDENT = 1e-16
# Largest block of corral coordinates gathered at once in Gram space (bytes).
_GATHER_BYTES = 1 << 25


def _score_error(sq: Tensor, d: int) -> Tensor:
    """Per run, ``c`` such that every float32 score differs from the exact ``<x_i, z>`` by at
    most ``c * ||z||``.

    Rounding ``x_i`` and ``z`` to float32 (relative ``u = 2^-24`` each) and the ``d``-term dot
    product (``gamma_d = d u / (1 - d u)``, Higham's bound) err by at most
    ``(2u + u^2 + gamma_d (1 + u)^2) sum_k |x_ik| |z_k| <= c_d ||x_i|| ||z||`` (Cauchy-Schwarz);
    ``c = 2 c_d max_i ||x_i||`` (a factor 2 of slack for the conversion of the result).
    """
    u = 2.0**-24
    gamma = d * u / (1.0 - d * u) if d * u < 0.5 else math.inf
    c_d = 2 * u + u * u + gamma * (1 + u) ** 2
    return 2.0 * c_d * sq.amax(dim=1).sqrt()


def _float32_ok(err: Tensor, run: Tensor, tol: Tensor, N: int, d: int) -> bool:
    """Whether searches may run in float32: the certified error ``err`` (R,) of
    :func:`_score_error` is at most :data:`_F32_SHARE` of every query's tolerance ``tol``
    (queries of runs ``run``) and the products are large enough for the halved time to matter."""
    return run.numel() > 0 and bool((err[run] <= _F32_SHARE * tol).all()) and N * d >= _F32_MIN_WORK


def _stop_rule(ub: Tensor, lb: Tensor, dist: Tensor, tol: Tensor, threshold: Tensor | None, both: bool) -> Tensor:
    """Which queries are finished, given their bounds ``lb <= dist <= ub``.

    Converged (``ub - lb <= tol``, numerically exact, or at distance 0); with a ``threshold``,
    decided (``ub <= threshold`` or ``lb > threshold``): either one suffices, or with ``both``
    the query must be converged *and* decided (numerically exact always stops).
    """
    gap = ub - lb
    exact = (gap <= _EXACT_GAP) | (dist == 0)
    conv = gap <= tol
    if threshold is None:
        return conv | exact
    decided = (ub <= threshold) | (lb > threshold)
    return exact | (conv & decided) if both else exact | conv | decided


def _coords(prob: _Problem, st: _CorralState, rows: Tensor) -> Tensor:
    """Corral coordinates (r, K, d) of state rows ``rows``: gathered in Gram space (zero on
    unused slots), for blocks of rows."""
    xs = prob.xn[prob.run[st.qid[rows]][:, None], st.S[rows]]
    return torch.where(st.mask[rows, :, None], xs, 0.0)


def _gss(prob: _Problem, run: Tensor, S: Tensor, T: Tensor | None = None) -> Tensor:
    """``<x_{S_k}, x_{T_l}>`` (a, K, L) from the float64 Gram matrices, per row of run ``run``
    (``T = S`` by default)."""
    N = prob.xn.shape[1]
    T = S if T is None else T
    lin = ((run[:, None, None] * N + S[:, :, None]) * N + T[:, None, :])
    return cast(Tensor, prob.gram_flat).take(lin)


# --------------------------------------------------------------------------
# phases
# --------------------------------------------------------------------------
def _start(prob: _Problem, near: Tensor | None = None, start: tuple[Tensor, Tensor] | None = None) -> _CorralState:
    """Initial state: every query's corral is its nearest input (``near``, (Q,), when the
    caller already knows it; any input is a valid start, the nearest a good one), or the given
    ``start`` corral and convex weights ((Q, K) each, ``-1`` for unused slots)."""
    p, xn, run, sq = prob.p, prob.xn, prob.run, prob.sq
    Q = p.shape[0]
    device = p.device
    if start is not None:
        return _warm_state(prob, *start)
    if near is None:
        near = (sq[run] - 2.0 * _run_scores(p, run, prob.xt)).argmin(dim=1)  # (Q,)
    qid = torch.arange(Q, device=device)
    S = near[:, None].clone()
    mask = torch.ones(Q, 1, dtype=torch.bool, device=device)
    lam = torch.ones(Q, 1, dtype=_F64, device=device)
    x0 = xn[run, near]
    bs = (x0 * p).sum(-1, keepdim=True)
    xs = x0[:, None, :0].clone() if prob.gram_space else x0[:, None, :].clone()
    Hinv = (1.0 / (sq[run, near] + 1.0))[:, None, None].clone()
    U = Hinv * torch.stack((bs, torch.ones_like(bs)), dim=2)  # (A, K, 2)
    return _fresh_state(qid=qid, S=S, mask=mask, lam=lam, xs=xs, bs=bs, Hinv=Hinv, U=U)


def _fresh_state(**corral: Tensor) -> _CorralState:
    """A state with the given corral tensors (``qid``, ``S``, ``mask``, ``lam``, ``xs``, ``bs``,
    ``Hinv``, ``U``), every row live, taking a major step, on normal equations, unbounded."""
    qid = corral["qid"]
    Q, device = qid.numel(), qid.device
    return _CorralState(
        **corral,
        major=torch.ones(Q, dtype=torch.bool, device=device),
        live=torch.ones(Q, dtype=torch.bool, device=device),
        stable=torch.zeros(Q, dtype=torch.bool, device=device),
        ub=torch.full((Q,), math.inf, dtype=_F64, device=device),
        lb=torch.zeros(Q, dtype=_F64, device=device),
        last=torch.full((Q,), math.inf, dtype=_F64, device=device),
    )


def _warm_state(prob: _Problem, corral: Tensor, weights: Tensor) -> _CorralState:
    """A state whose corrals are ``corral`` (Q, K) (``-1`` unused; used slots first, slot 0
    used in every row) with the convex ``weights`` (Q, K), ``Hinv`` and ``U`` by exact
    inversion."""
    p, xn, run = prob.p, prob.xn, prob.run
    Q, K = corral.shape
    device = p.device
    mask = corral >= 0
    S = corral.clamp(min=0)
    lam = torch.where(mask, weights.clamp(min=0.0), 0.0)
    lam = lam / lam.sum(dim=1, keepdim=True)
    if prob.gram_space:  # <x_s, p> by blocks of rows: no (Q, K, d) copy
        bs = torch.zeros(Q, K, dtype=_F64, device=device)
        block = max(1, _GATHER_BYTES // (8 * K * xn.shape[2]))
        for b0 in range(0, Q, block):
            b = slice(b0, b0 + block)
            bs[b] = torch.bmm(xn[run[b, None], S[b]], p[b, :, None]).squeeze(2)
        bs = torch.where(mask, bs, 0.0)
        xs = p.new_zeros(Q, K, 0)
    else:
        xs = xn[run[:, None], S]  # (Q, K, d)
        bs = torch.where(mask, torch.bmm(xs, p[:, :, None]).squeeze(2), 0.0)
    eye = torch.eye(K, dtype=_F64, device=device).expand(Q, K, K).clone()
    st = _fresh_state(
        qid=torch.arange(Q, device=device), S=S, mask=mask, lam=lam, xs=xs, bs=bs, Hinv=eye,
        U=torch.zeros(Q, K, 2, dtype=_F64, device=device),
    )
    rows = torch.arange(Q, device=device)
    st.refresh(rows, _gss(prob, run, S) if prob.gram_space else None)
    return st


def _certify(prob: _Problem, st: _CorralState) -> tuple[Tensor, Tensor, Tensor]:
    """Bounds and stopping rule of the major rows; their Frank-Wolfe vertex.

    Rows that stop (or stall while already on least squares) are finished; rows
    that stall for the first time switch to least squares and skip this major
    step.

    Returns
    -------
    add : (a,) long
        Rows whose vertex enters the corral.
    s_add : (a,) long
        The entering input of each.
    gamma : (a,) float64
        Its exact line-search weight.
    """
    mj = (st.major & st.live).nonzero().squeeze(1)
    if mj.numel() == 0:
        return mj[:0], mj[:0], st.lb[:0]
    r_mj = prob.run[st.qid[mj]]
    pt = _Point(prob, st, mj, r_mj)
    dist, qz = pt.dist, pt.qz
    s, smin, smin_cert, redo = _vertex(prob, st, mj, pt, r_mj)
    tol_m = prob.tol[st.qid[mj]]
    thr_m = None if prob.threshold is None else prob.threshold[st.qid[mj]]
    ub_m = torch.fmin(st.ub[mj], pt.ub)
    lb_m = torch.maximum(st.lb[mj], pt.hyperplane_bound(smin_cert))
    if redo is not None:
        # near convergence an approximate search cannot rank the inputs: where its vertex does
        # not improve (or is in the corral), a row its certificate does not stop already
        # searches again in float64 (the bounds of the others stay those they stopped with)
        unsure = redo & ~_stop_rule(ub_m, lb_m, dist, tol_m, thr_m, prob.both)
        if bool(unsure.any()):
            rr = unsure.nonzero().squeeze(1)
            sc = _run_scores(pt.z(rr), r_mj[rr], prob.xt)
            s[rr] = sc.argmin(dim=1)
            smin[rr] = smin_cert[rr] = sc.gather(1, s[rr, None]).squeeze(1)  # rr are explicit now
            lb_m[rr] = torch.maximum(st.lb[mj[rr]], pt.hyperplane_bound(smin_cert[rr], rr))
    w = qz - smin  # half the Frank-Wolfe gap at the chosen vertex
    # Wolfe's iteration decreases the distance strictly between checks
    progress = dist < st.last[mj]
    st.last[mj] = dist
    st.ub[mj] = ub_m
    st.lb[mj] = lb_m
    stop = _stop_rule(ub_m, lb_m, dist, tol_m, thr_m, prob.both)
    in_corral = ((st.S[mj] == s[:, None]) & st.mask[mj]).any(dim=1)
    # numerical trouble (the FW vertex is already in the corral, or no
    # decrease): switch the query to least-squares corral solves,
    # give up when that still does not help
    stuck = ~stop & (in_corral | ~progress)
    again = stuck & ~st.stable[mj]
    give_up = stuck & st.stable[mj]
    fin = stop | give_up
    if bool(fin.any()):
        prob.finish(st, mj[fin], give_up[fin])
    st.stable[mj[again]] = True
    go = ~fin & ~again
    add, s_add = mj[go], s[go]
    # exact line-search step towards the new vertex (its initial
    # weight): guarantees a decrease even when the corral solution
    # below is inaccurate
    gamma = (w[go] / pt.step2(go, s_add).clamp(min=1e-300)).clamp(0.0, 1.0)
    return add, s_add, gamma


def _vertex(
    prob: _Problem, st: _CorralState, mj: Tensor, pt: _Point, r_mj: Tensor
) -> tuple[Tensor, Tensor, Tensor, Tensor | None]:
    """The Frank-Wolfe vertex ``s = argmin_i <x_i, z>`` of the major rows ``mj`` at their points
    ``pt`` (``z = q - p``), its score ``smin``, a certified lower bound ``smin_cert`` of the
    minimum over all inputs, and ``redo`` (None when every row searched in float64): the rows
    whose approximate choice does not improve or is in the corral.

    Searched through the Gram matrix (:mod:`protoreg.geometry.gram`) where the solve has one and
    its certified error suits the row, else directly: in float32 where certified, else float64.
    An approximate search's choice gets its exact (float64) score.
    """
    gs = prob.gram_search
    dist = pt.dist
    exact: Tensor | None = None
    if gs is None:
        s, low, exact_all = _direct_search(prob, pt.z(), r_mj, dist)
        if exact_all:
            return s, low, low, None
    else:
        m = mj.numel()
        s = torch.zeros(m, dtype=torch.long, device=dist.device)
        low = torch.zeros(m, dtype=_F64, device=dist.device)
        exact = torch.zeros(m, dtype=torch.bool, device=dist.device)
        qid = st.qid[mj]
        rows = cast(Tensor, prob.gram_rows)[qid]
        S, lam, mask = st.S[mj], st.lam[mj], st.mask[mj]
        use, err = gs.usable(rows, r_mj, S, lam, mask, prob.tol[qid], dist)
        g = use.nonzero().squeeze(1)
        if g.numel():
            sc, off = gs.scores(rows[g], r_mj[g], S[g], lam[g], mask[g], None if prob.gram_space else pt.z(g))
            s[g] = sc.argmin(dim=1)
            low[g] = sc.gather(1, s[g, None]).squeeze(1).double() + off - err[g]
            del sc
        d = (~use).nonzero().squeeze(1)
        if d.numel():
            s[d], low[d], exact[d] = _direct_search(prob, pt.z(d), r_mj[d], dist[d])
    smin, smin_err = pt.score(s)
    smin_cert = torch.minimum(smin - smin_err, low)
    redo = (smin >= pt.qz) | ((st.S[mj] == s[:, None]) & st.mask[mj]).any(dim=1)
    if exact is not None:
        smin = torch.where(exact, low, smin)
        smin_cert = torch.where(exact, low, smin_cert)
        redo &= ~exact
    return s, smin, smin_cert, redo


class _Point:
    """The current points ``q = X_S^T lam`` of the major rows ``mj`` and what their certificates
    need: ``dist = ||z||`` (``z = q - p``), ``qz = <q, z>``, ``ub`` a certified upper bound of
    ``||z||``, and on demand ``z``, exact scores ``<x_s, z>`` and line-search steps.

    From the coordinates, or in Gram space (:attr:`_Problem.gram_space`) from the look-ups
    ``||z||^2 = lam^T G_SS lam - 2 lam^T bs + ||p||^2``, ``O(K^2)`` per row instead of ``O(K d)``,
    with ``e`` a bound on their float64 rounding (every term is a ``d``-term product or a
    ``K^2``-term sum of magnitude at most ``(sum_k lam_k ||x_{S_k}|| + ||p||)^2``; for a vertex's
    score ``||x_s|| (sum_k lam_k ||x_{S_k}|| + ||p||)``): ``ub`` and the lower bounds carry it.
    Rows whose distance is too small for it (or that need ``z``) become *explicit*: from their
    coordinates, as without Gram space.
    """

    _z: Tensor | None
    e: Tensor | None

    def __init__(self, prob: _Problem, st: _CorralState, mj: Tensor, r_mj: Tensor) -> None:
        self.prob, self.st, self.mj, self.r = prob, st, mj, r_mj
        qid = st.qid[mj]
        self.p = prob.p[qid]
        if not prob.gram_space:
            lam, xs = st.lam, st.xs
            q = torch.bmm(lam[mj, None, :], xs[mj]).squeeze(1) if 4 * mj.numel() < st.qid.numel() \
                else torch.bmm(lam[:, None, :], xs).squeeze(1)[mj]  # (m, d)
            self._q, self._z = q, q - self.p
            self.dist = torch.linalg.vector_norm(self._z, dim=1)
            self.qz = (q * self._z).sum(-1)
            self.ub, self.e = self.dist, None
            return
        lam, S, mask = st.lam[mj], st.S[mj], st.mask[mj]
        self.lam, self.S = lam, S
        gl = torch.bmm(_gss(prob, r_mj, S), lam[:, :, None]).squeeze(2)  # <x_{S_k}, q>
        self.qq = (lam * gl).sum(1)
        self.qp = (lam * st.bs[mj]).sum(1)
        pp = cast(Tensor, prob.psq)[qid]
        d2 = self.qq - 2.0 * self.qp + pp
        a = torch.where(mask, lam * prob.sq[r_mj[:, None], S].sqrt(), 0.0).sum(1)
        k = mask.sum(1).to(_F64)
        self.scale = 4.0 * (prob.xn.shape[2] + k * k + 4.0) * _U64 * (a + pp.sqrt())
        self.e = self.scale * (a + pp.sqrt())
        self.dist = d2.clamp(min=0.0).sqrt()
        self.qz = self.qq - self.qp
        self.pz = self.qp - pp  # <p, z>
        self.ub = (d2 + self.e).clamp(min=0.0).sqrt()
        self.explicit = torch.zeros(mj.numel(), dtype=torch.bool, device=mj.device)
        self._z = None
        # where the rounding would be felt in the distance (e / dist beyond tol / 64), exactly
        tiny = 64.0 * self.e > prob.tol[qid] * self.dist
        if bool(tiny.any()):
            self._explicit(tiny.nonzero().squeeze(1))

    def _explicit(self, rows: Tensor) -> None:
        """Make ``rows`` (local) explicit: ``q``, ``z``, ``dist``, ``qz`` from their coordinates."""
        rows = rows[~self.explicit[rows]]
        if rows.numel() == 0:
            return
        if self._z is None:
            self._z = self.p.new_zeros(self.p.shape)
        mj = self.mj[rows]
        q = combination(self.prob.xn, self.r[rows], self.st.S[mj], self.lam[rows], self.st.mask[mj])
        z = q - self.p[rows]
        self._z[rows] = z
        e = cast(Tensor, self.e)
        self.dist[rows] = torch.linalg.vector_norm(z, dim=1)
        self.qz[rows] = (q * z).sum(-1)
        self.qq[rows] = (q * q).sum(-1)
        self.ub[rows] = self.dist[rows]
        e[rows] = 0.0
        self.explicit[rows] = True

    def z(self, rows: Tensor | None = None) -> Tensor:
        """``z = q - p`` of ``rows`` (local; all by default), which become explicit."""
        if self.e is None:
            return cast(Tensor, self._z) if rows is None else cast(Tensor, self._z)[rows]
        rows = torch.arange(self.mj.numel(), device=self.mj.device) if rows is None else rows
        self._explicit(rows)
        return cast(Tensor, self._z)[rows]

    def _xq(self, rows: Tensor, s: Tensor) -> Tensor:
        """``<x_s, q>`` of ``rows`` (local) from the look-ups."""
        g = _gss(self.prob, self.r[rows], s[:, None], self.S[rows]).squeeze(1)
        return (self.lam[rows] * g).sum(1)

    def score(self, s: Tensor) -> tuple[Tensor, Tensor | float]:
        """``<x_s, z>`` of every row for its input ``s`` and a bound on its rounding: float64 from
        the coordinates (bound 0), or in Gram space ``<x_s, q> - <x_s, p>`` (0 for explicit
        rows, which score from their coordinates)."""
        xs = self.prob.xn[self.r, s]
        if self.e is None:
            return (xs * cast(Tensor, self._z)).sum(-1), 0.0
        out = self._xq(torch.arange(s.numel(), device=s.device), s) - (xs * self.p).sum(-1)
        # the same d-term products and K-term sums, of magnitude ||x_s|| (sum lam ||x_k|| + ||p||)
        err = torch.where(self.explicit, 0.0, self.scale * self.prob.sq[self.r, s].sqrt())
        ex = self.explicit.nonzero().squeeze(1)
        if ex.numel():
            out[ex] = (xs[ex] * cast(Tensor, self._z)[ex]).sum(-1)
        return out, err

    def step2(self, rows: Tensor, s: Tensor) -> Tensor:
        """``||x_s - q||^2`` of ``rows`` (local) for their entering inputs ``s``."""
        if self.e is None:
            step = self.prob.xn[self.r[rows], s] - self._q[rows]
            return (step * step).sum(-1)
        return self.prob.sq[self.r[rows], s] - 2.0 * self._xq(rows, s) + self.qq[rows]

    def hyperplane_bound(self, smin_cert: Tensor, rows: Tensor | None = None) -> Tensor:
        """The separating-hyperplane lower bound for the certified lower bounds ``smin_cert``
        of the minimum scores of ``rows`` (local; all by default): ``dist - w / dist``
        (:func:`_hyperplane_bound`), in Gram space ``(smin_cert - <p, z> - e) / ub``."""
        sel = (lambda t: t) if rows is None else (lambda t: t[rows])
        exact = _hyperplane_bound(sel(self.dist), sel(self.qz), smin_cert)
        if self.e is None:
            return exact
        ub = sel(self.ub)
        safe = torch.where(ub > 0, ub, torch.ones_like(ub))
        gram = torch.where(ub > 0, (smin_cert - sel(self.pz) - sel(self.e)).clamp(min=0.0) / safe, torch.zeros_like(ub))
        return torch.where(sel(self.explicit), exact, gram)


def _direct_search(prob: _Problem, z: Tensor, r: Tensor, dist: Tensor) -> tuple[Tensor, Tensor, bool]:
    """``argmin_i <x_i, z>`` by the direct product with all inputs, a lower bound of its minimum
    and whether that bound is the float64 minimum itself; in float32 (half the time of the
    dominant product) where ``prob`` certifies it, the bound then less its error for
    ``||z|| = dist``."""
    if prob.xt32 is None:
        scores = _run_scores(z, r, prob.xt)  # (m, N)
        # argmin + gather: the fused (values, indices) reduction is far
        # slower on CPU for these shapes
        s = scores.argmin(dim=1)
        return s, scores.gather(1, s[:, None]).squeeze(1), True
    scores32 = _run_scores(z.float(), r, prob.xt32)
    s = scores32.argmin(dim=1)
    return s, scores32.gather(1, s[:, None]).squeeze(1).double() - cast(Tensor, prob.score_err)[r] * dist, False  # set with xt32


def _hyperplane_bound(dist: Tensor, qz: Tensor, smin_cert: Tensor) -> Tensor:
    """The separating-hyperplane lower bound ``dist - w / dist`` (``w = qz - smin_cert``, an
    upper bound of half the Frank-Wolfe gap), at least 0; 0 at distance 0."""
    safe = torch.where(dist > 0, dist, torch.ones_like(dist))
    return torch.where(dist > 0, (dist - (qz - smin_cert) / safe).clamp(min=0.0), torch.zeros_like(dist))


def _make_room(
    prob: _Problem, st: _CorralState, add: Tensor, s_add: Tensor, gamma: Tensor
) -> tuple[Tensor, Tensor, Tensor]:
    """A free slot for every entering vertex: grow the slots, or drop rows that have none.

    When the slots are at capacity a full corral already spans the whole
    space, so its affine minimiser is inaccurate: the row switches to least
    squares (or finishes, when it already used them) and its vertex does not
    enter. Returns the remaining ``(add, s_add, gamma)``.
    """
    if add.numel() == 0:
        return add, s_add, gamma
    full = st.mask[add].all(dim=1)
    if not bool(full.any()):
        return add, s_add, gamma
    if st.K >= prob.kcap:
        gone = full & st.stable[add]
        if bool(gone.any()):
            prob.finish(st, add[gone], gone[gone])
        st.stable[add[full]] = True
        return add[~full], s_add[~full], gamma[~full]
    st.grow(prob.kcap)
    return add, s_add, gamma


def _enter(prob: _Problem, st: _CorralState, add: Tensor, s_add: Tensor, gamma: Tensor) -> Tensor:
    """Major step: vertex ``s_add`` enters the first free slot of rows ``add``.

    Bordered update of ``Hinv`` and ``U``; the weights become
    ``(1 - gamma) lam`` and ``gamma`` for the new point. Returns the slot of
    each entering point (empty when none enters).
    """
    if add.numel() == 0:
        return add[:0]
    N = prob.xn.shape[1]
    j = (~st.mask[add]).to(torch.int8).argmax(dim=1)  # first free slot
    r_add = prob.run[st.qid[add]]
    xnew = prob.xn[r_add, s_add]  # (a, d)
    if prob.gram_flat is not None:
        lin = (r_add[:, None] * N + st.S[add]) * N + s_add[:, None]
        hx = prob.gram_flat.take(lin)
    else:
        hx = _rows_bmv(st.xs, add, xnew)
    h = torch.where(st.mask[add], hx + 1.0, 0.0)
    eta = prob.sq[r_add, s_add] + 1.0
    wv = _rows_bmv(st.Hinv, add, h)
    schur = _schur_complement(prob, st, add, xnew, h, wv, eta)
    ar = torch.arange(add.numel(), device=add.device)
    b_new = (xnew * prob.p[st.qid[add]]).sum(-1)
    # U update: delta = (r_j - h^T U) / schur; U -= w delta; U_j = delta
    r_new = torch.stack((b_new, torch.ones_like(b_new)), dim=1)  # (a, 2)
    delta = (r_new - torch.bmm(h[:, None, :], st.U[add]).squeeze(1)) / schur[:, None]
    Ua = st.U[add] - wv[:, :, None] * delta[:, None, :]
    Ua[ar, j] = delta
    st.U[add] = Ua
    _rank1_update_(st.Hinv, add, wv, wv / schur[:, None])
    col = -wv / schur[:, None]
    st.Hinv[add, j, :] = col
    st.Hinv[add, :, j] = col
    st.Hinv[add, j, j] = 1.0 / schur
    st.S[add, j] = s_add
    st.mask[add, j] = True
    st.lam[add] = st.lam[add] * (1.0 - gamma[:, None])
    st.lam[add, j] = gamma
    if not prob.gram_space:
        st.xs[add, j] = xnew
    st.bs[add, j] = b_new
    return j


def _schur_complement(
    prob: _Problem, st: _CorralState, add: Tensor, xnew: Tensor, h: Tensor, wv: Tensor, eta: Tensor
) -> Tensor:
    """Schur complement of the entering point ``xnew`` in the bordered ``H``.

    It is the squared distance of ``(x_new, 1)`` from the span of the
    corral's ``(x_s, 1)``; where the direct formula ``eta - h^T w`` cancels it
    is evaluated as a residual norm instead (stable). Numerically (almost)
    affinely dependent points switch their row to least squares (the inverse
    update is then meaningless) and get ``1``.
    """
    schur = eta - (h * wv).sum(-1)
    cancel = ~(schur > _CANCEL * eta)
    if bool(cancel.any()):
        nr = cancel.nonzero().squeeze(1)
        rows_n = add[nr]
        if prob.gram_space:  # the rows' combinations read only their inputs
            comb = combination(prob.xn, prob.run[st.qid[rows_n]], st.S[rows_n], wv[nr], st.mask[rows_n])
        else:
            comb = torch.bmm(wv[nr, None, :], st.xs[rows_n]).squeeze(1)
        res_x = xnew[nr] - comb
        schur[nr] = (res_x * res_x).sum(-1) + (1.0 - wv[nr].sum(-1)) ** 2
    dep = schur <= _DEPENDENT * eta
    if bool(dep.any()):
        st.stable[add[dep]] = True
        schur = torch.where(dep, torch.ones_like(schur), schur)
    return schur


def _check_residual(prob: _Problem, st: _CorralState) -> None:
    """Residual of ``U = H^{-1} [bs, 1]`` from the coordinates (in Gram space from the
    corrals' Gram matrices).

    One refinement step everywhere; exact re-inversion where the relative
    residual is large.
    """
    mask, xs, U = st.mask, st.xs, st.U
    rhs = torch.stack((torch.where(mask, st.bs, 0.0), mask.to(_F64)), dim=2)
    gss = _gss(prob, prob.run[st.qid], st.S) if prob.gram_space else None
    hx = torch.bmm(xs, torch.bmm(xs.transpose(1, 2), U)) if gss is None else torch.bmm(gss, U)
    hu = hx + U.sum(1, keepdim=True)
    hu = torch.where(mask[:, :, None], hu, U)
    res = rhs - hu
    scale = torch.maximum(rhs.abs().amax(1), hu.abs().amax(1)).clamp(min=1e-300)
    rel = (res.abs().amax(1) / scale).amax(1)
    U.add_(torch.bmm(st.Hinv, res))
    stale = st.live & ~st.stable & ~(rel <= _RESIDUAL)
    if bool(stale.any()):
        rows = stale.nonzero().squeeze(1)
        st.refresh(rows, None if gss is None else gss[rows])


def _corral_solution(prob: _Problem, st: _CorralState, add: Tensor, j: Tensor) -> Tensor:
    """Affine minimiser weights ``mu`` (A, K) of every corral.

    From ``U`` (normal equations), by least squares for the rows flagged
    ``stable``, and for rows whose just-entered point ``j`` did not receive
    positive weight (in exact arithmetic it does: the solve is inaccurate).
    """
    mu = st.affine_minimiser()
    ls = (st.stable & st.live).nonzero().squeeze(1)
    if ls.numel() > 0:
        mu[ls] = _lstsq(prob, st, ls)
    if add.numel() > 0:
        bad = mu[add, j] <= 0
        if bool(bad.any()):
            newly = add[bad & ~st.stable[add]]
            if newly.numel() > 0:
                st.stable[newly] = True
                mu[newly] = _lstsq(prob, st, newly)
    return mu


def _lstsq(prob: _Problem, st: _CorralState, rows: Tensor) -> Tensor:
    """Least-squares affine minimisers of ``rows``; in Gram space in blocks of gathered
    coordinates."""
    if not prob.gram_space:
        return st.lstsq(rows, prob.p)
    block = max(1, _GATHER_BYTES // (8 * st.K * prob.xn.shape[2]))
    parts = []
    for b in range(0, rows.numel(), block):
        r = rows[b : b + block]
        parts.append(st.lstsq(r, prob.p, _coords(prob, st, r)))
    return torch.cat(parts)


def _minor_step(st: _CorralState, mu: Tensor) -> None:
    """Move to ``mu``, or towards it until the first weight reaches zero and drop that point.

    Rows whose ``mu`` is positive (or that are finished) take a major step next.
    """
    mask, lam = st.mask, st.lam
    positive = ((mu > 0) | ~mask).all(dim=1) | ~st.live
    ratio = torch.where(mask & (mu <= 0), lam / (lam - mu).clamp(min=1e-300), math.inf)
    kmin = ratio.argmin(dim=1)
    theta = ratio.gather(1, kmin[:, None]).squeeze(1)
    theta = torch.where(positive, torch.ones_like(theta), theta.clamp(0.0, 1.0))
    lam_new = lam + theta[:, None] * (mu - lam)
    lam_new = torch.where(mask, lam_new.clamp(min=0.0), 0.0)
    slots = torch.arange(st.K, device=mu.device)
    drop = ~positive[:, None] & mask & ((lam_new <= 0) | (slots == kmin[:, None]))
    lam_new = torch.where(drop, 0.0, lam_new)
    st.lam = lam_new / lam_new.sum(1, keepdim=True)
    st.major = positive
    st.downdate(drop)


# --------------------------------------------------------------------------
# driver
# --------------------------------------------------------------------------
def _wolfe_bounds(
    p: Tensor,
    xn: Tensor,
    run: Tensor,
    gram: Tensor | None,
    *,
    tol: float | Tensor,
    threshold: float | Tensor | None,
    max_iter: int,
    corral_out: Tensor | None = None,
    weights_out: Tensor | None = None,
    both: bool = False,
    near: Tensor | None = None,
    start: tuple[Tensor, Tensor] | None = None,
    xt32: Tensor | None = None,
    gram_search: GramSearch | None = None,
    gram_rows: Tensor | None = None,
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
    tol : float or Tensor (Q,)
        Stop a query once ``ub - lb <= tol``.
    threshold : float or Tensor (Q,) or None
        Decision mode: additionally stop once ``ub <= threshold`` or
        ``lb > threshold`` (the comparison ``dist > threshold`` is decided).
    both : bool
        With a ``threshold``: stop only once a query is both within ``tol`` and decided.
    max_iter : int
        Maximum number of (major or minor) iterations.
    corral_out : Tensor, shape (Q, min(N, d + 1)), long, optional
        Filled with each query's final corral (input indices, ``-1`` for
        unused slots): a warm start for the next call (:class:`HullWarmStart`).
    weights_out : Tensor, shape (Q, min(N, d + 1)), float64, optional
        Filled with the convex weights of that corral (0 for unused slots).
    near : Tensor, shape (Q,), long, optional
        Each query's nearest input (the start), when the caller has searched it already.
    start : (Tensor, Tensor), shapes (Q, K), optional
        Start corrals instead (input indices, ``-1`` for unused slots, used slots first, at
        least one per row) and their convex weights: a warm start from an earlier solve.
    xt32 : Tensor, shape (R, d, N), float32, optional
        ``xn.transpose(1, 2)`` in float32, when the caller holds it already (else copied here
        if the float32 search is used).
    gram_search : GramSearch, optional
        Searches through the Gram matrix (:mod:`protoreg.geometry.gram`) for the rows it suits,
        with ``gram_rows`` (Q,): each query's row of it.

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
    Q = p.shape[0]
    ub_out = torch.full((Q,), math.inf, dtype=_F64, device=p.device)
    lb_out = torch.zeros(Q, dtype=_F64, device=p.device)
    if Q == 0:
        return ub_out, lb_out, 0, 0
    N, d = xn.shape[1], xn.shape[2]
    tol_q = torch.as_tensor(tol, dtype=_F64, device=p.device).expand(Q)
    thr_q = None if threshold is None else torch.as_tensor(threshold, dtype=_F64, device=p.device).expand(Q)
    sq = (xn * xn).sum(-1)
    err = _score_error(sq, d)
    # float32 search where its certified error is far below every query's tolerance
    low = _float32_ok(err, run, tol_q, N, d)
    prob = _Problem(
        p=p, xn=xn, run=run, xt=xn.transpose(1, 2), sq=sq,
        gram_flat=gram.reshape(-1) if gram is not None else None, kcap=min(N, d + 1),
        tol=tol_q, threshold=thr_q, ub_out=ub_out, lb_out=lb_out, corral_out=corral_out,
        weights_out=weights_out, both=both,
        xt32=(xt32 if xt32 is not None else xn.float().transpose(1, 2)) if low else None, score_err=err if low else None,
        gram_search=gram_search, gram_rows=gram_rows,
        psq=(p * p).sum(-1) if gram_search is not None and gram is not None else None,
    )
    st = _start(prob, near, start)
    it = 0
    while it < max_iter:
        n_live = int(st.live.sum())
        if n_live == 0:
            break
        if 4 * n_live <= 3 * st.qid.numel():
            st.drop_finished()
        it += 1
        add, s_add, gamma = _certify(prob, st)
        add, s_add, gamma = _make_room(prob, st, add, s_add, gamma)
        j = _enter(prob, st, add, s_add, gamma)
        if it % _CHECK_EVERY == 0:
            _check_residual(prob, st)
        mu = _corral_solution(prob, st, add, j)
        _minor_step(st, mu)
    rest = st.live.nonzero().squeeze(1)
    if rest.numel() > 0:
        prob.finish(st, rest, torch.ones_like(rest, dtype=torch.bool))
    return ub_out, lb_out, it, prob.unresolved
