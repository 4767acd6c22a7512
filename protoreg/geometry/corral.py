"""State of the batched hull solver (:mod:`protoreg.geometry.solver`).

:class:`_Problem` holds one solve's fixed inputs and its outputs,
:class:`_CorralState` the parallel per-query tensors of the active set and the
operations that touch only them: dropping finished rows, growing the slots,
re-inversion, the affine minimiser (normal equations or least squares) and the
Schur downdate of leaving points.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import torch
import torch.nn.functional as F
from torch import Tensor

from protoreg.geometry._common import _F64
from protoreg.geometry.gram import GramSearch
from protoreg.geometry.linalg import _corral_inverse, _corral_lstsq, _rank1_update_


@dataclass
class _Problem:
    """Fixed inputs of one batched solve, and its outputs.

    ``p`` (Q, d) queries, ``xn`` (R, N, d) inputs, ``run`` (Q,) run of each
    query, ``xt`` (R, d, N) transposed inputs, ``sq`` (R, N) squared input
    norms, ``gram_flat`` the flattened Gram matrices (or ``None``), ``kcap``
    the corral capacity ``min(N, d + 1)``.  ``ub_out``, ``lb_out`` (Q,) and
    ``corral_out`` (Q, kcap) (and ``weights_out`` (Q, kcap), the convex weights of the corral)
    receive the results of finished queries; ``unresolved`` counts queries finished before their
    stopping rule held. ``tol`` and ``threshold`` are per query (Q,); with ``both`` a query stops
    only once its distance is within ``tol`` *and* ``dist > threshold`` is decided. With
    ``xt32`` (the transposed inputs in float32) the Frank-Wolfe vertex is searched in float32;
    ``score_err`` (R,) then bounds the error of every float32 score by ``score_err[r] * ||z||``,
    so the lower bound stays certified (:func:`~protoreg.geometry.solver._score_error`).
    ``gram_search`` (with ``gram_rows`` (Q,), each query's row of it) searches through the
    Gram matrix where it suits a row (:mod:`protoreg.geometry.gram`); with ``gram_flat`` too the
    solve runs in Gram space (:attr:`gram_space`).
    """

    p: Tensor
    xn: Tensor
    run: Tensor
    xt: Tensor
    sq: Tensor
    gram_flat: Tensor | None
    kcap: int
    tol: Tensor
    threshold: Tensor | None
    ub_out: Tensor
    lb_out: Tensor
    corral_out: Tensor | None
    weights_out: Tensor | None = None
    both: bool = False
    unresolved: int = 0
    xt32: Tensor | None = None
    score_err: Tensor | None = None
    gram_search: GramSearch | None = None
    gram_rows: Tensor | None = None
    psq: Tensor | None = None

    @property
    def gram_space(self) -> bool:
        """Whether the solve runs without corral coordinates: with Gram searches and the float64
        Gram matrices, every product the iteration needs is a look-up (``psq`` (Q,) then holds
        ``||p||^2``)."""
        return self.gram_search is not None and self.gram_flat is not None

    def finish(self, st: _CorralState, rows: Tensor, unsure: Tensor | None = None) -> None:
        """Write the bounds (and corrals) of state rows ``rows`` out and retire them.

        ``unsure`` (bool, one per row) marks rows stopped before their stopping rule held.
        """
        self.ub_out[st.qid[rows]] = st.ub[rows]
        self.lb_out[st.qid[rows]] = st.lb[rows]
        if self.corral_out is not None:
            self.corral_out[st.qid[rows], : st.S.shape[1]] = torch.where(st.mask[rows], st.S[rows], -1)
        if self.weights_out is not None:
            self.weights_out[st.qid[rows], : st.S.shape[1]] = torch.where(st.mask[rows], st.lam[rows], 0.0)
        st.live[rows] = False
        if unsure is not None:
            self.unresolved += int(unsure.sum())


@dataclass
class _CorralState:
    """Per-query solver state, one row per open (or not yet dropped) query.

    Attributes
    ----------
    qid : (A,) long
        Query index (into :class:`_Problem`) of each row.
    S, mask, lam, xs, bs : (A, K), (A, K), (A, K), (A, K, d), (A, K)
        Corral slots: input indices, slots in use, convex weights,
        coordinates (``(A, K, 0)`` in Gram space, where they are gathered when needed) and
        ``<x_s, p>``.
    Hinv, U : (A, K, K), (A, K, 2)
        Inverse of ``H = X_S X_S^T + 1 1^T`` (identity on unused slots) and
        ``U = Hinv [bs, 1]``.
    major, live, stable : (A,) bool
        Next iteration is a major step; query still open; query uses
        least-squares corral solves.
    ub, lb, last : (A,) float64
        Certified bounds and the distance at the previous check.
    """

    qid: Tensor
    S: Tensor
    mask: Tensor
    lam: Tensor
    xs: Tensor
    bs: Tensor
    Hinv: Tensor
    U: Tensor
    major: Tensor
    live: Tensor
    stable: Tensor
    ub: Tensor
    lb: Tensor
    last: Tensor

    @property
    def K(self) -> int:
        """Number of corral slots."""
        return self.S.shape[1]

    def drop_finished(self) -> None:
        """Keep only live rows; halve the slots when at most half are in use."""
        keep = self.live.nonzero().squeeze(1)
        for f in fields(self):
            setattr(self, f.name, getattr(self, f.name)[keep])
        used = int(self.mask.any(dim=0).nonzero().max()) + 1
        if 2 * used <= self.K:
            K = used
            self.S, self.mask, self.lam, self.bs = (t[:, :K].contiguous() for t in (self.S, self.mask, self.lam, self.bs))
            self.xs, self.U = self.xs[:, :K].contiguous(), self.U[:, :K].contiguous()
            self.Hinv = self.Hinv[:, :K, :K].contiguous()

    def grow(self, kcap: int) -> None:
        """Add free slots (geometric growth, at most ``kcap`` in all)."""
        K = self.K
        grow = min(kcap, max(K + 1, 2 * K)) - K
        self.S = F.pad(self.S, (0, grow))
        self.mask = F.pad(self.mask, (0, grow))
        self.lam = F.pad(self.lam, (0, grow))
        self.bs = F.pad(self.bs, (0, grow))
        self.xs = F.pad(self.xs, (0, 0, 0, grow))
        self.U = F.pad(self.U, (0, 0, 0, grow))
        self.Hinv = F.pad(self.Hinv, (0, grow, 0, grow))
        tail = torch.arange(K, K + grow, device=self.Hinv.device)
        self.Hinv[:, tail, tail] = 1.0

    def refresh(self, rows: Tensor, gss: Tensor | None = None) -> None:
        """Exact re-inversion of ``H`` for ``rows``, then two refinement steps of ``U``.

        The residual of ``U = H^{-1} [bs, 1]`` is evaluated from the
        coordinates (``H U = X_S (X_S^T U) + 1 (1^T U)`` on the used slots), or from
        ``gss`` (r, K, K), the corrals' Gram matrices ``X_S X_S^T``, where given.
        """
        m, x_r = self.mask[rows], self.xs[rows]
        h_r = _corral_inverse(torch.bmm(x_r, x_r.transpose(1, 2)) if gss is None else gss, m)
        rhs = torch.stack((torch.where(m, self.bs[rows], 0.0), m.to(_F64)), dim=2)
        u_r = torch.bmm(h_r, rhs)
        for _ in range(2):
            hx = torch.bmm(x_r, torch.bmm(x_r.transpose(1, 2), u_r)) if gss is None else torch.bmm(gss, u_r)
            hu = hx + u_r.sum(1, keepdim=True)
            hu = torch.where(m[:, :, None], hu, u_r)
            u_r = u_r + torch.bmm(h_r, rhs - hu)
        self.Hinv[rows] = h_r
        self.U[rows] = u_r

    def affine_minimiser(self) -> Tensor:
        """Weights ``mu = u + t v`` of the affine minimiser of every corral, (A, K)."""
        u, v = self.U[..., 0], self.U[..., 1]
        t = (1.0 - u.sum(1)) / v.sum(1)
        return torch.where(self.mask, u + t[:, None] * v, 0.0)

    def lstsq(self, rows: Tensor, p: Tensor, xs: Tensor | None = None) -> Tensor:
        """Affine minimiser weights of ``rows`` by least squares (``p`` all queries; ``xs`` the
        rows' corral coordinates, where not stored)."""
        return _corral_lstsq(self.xs[rows] if xs is None else xs, self.mask[rows], p[self.qid[rows]])

    def downdate(self, drop: Tensor) -> None:
        """Remove the slots flagged in ``drop`` (A, K) by Schur downdates.

        ``Hinv -= f f^T / g``, ``U -= f U_j / g``, slot ``j`` back to identity / zero.
        """
        while bool(drop.any()):
            rows = drop.any(dim=1).nonzero().squeeze(1)
            jd = drop[rows].to(torch.int8).argmax(dim=1)
            rr = torch.arange(rows.numel(), device=rows.device)
            f = self.Hinv[rows, :, jd]
            g = self.Hinv[rows, jd, jd]
            Ur = self.U[rows]
            Ur = Ur - f[:, :, None] * (Ur[rr, jd] / g[:, None])[:, None, :]
            Ur[rr, jd] = 0.0
            self.U[rows] = Ur
            _rank1_update_(self.Hinv, rows, f, -f / g[:, None])
            self.Hinv[rows, jd, :] = 0.0
            self.Hinv[rows, :, jd] = 0.0
            self.Hinv[rows, jd, jd] = 1.0
            self.mask[rows, jd] = False
            drop[rows, jd] = False
