"""Batched linear-algebra kernels of the hull solver (:mod:`protoreg.geometry.solver`).

Scores of queries against their run's inputs, row-subset matrix products and rank-one
updates, exact and least-squares corral solves.
"""

from __future__ import annotations


import torch
from torch import Tensor

#: A corral column whose QR pivot is at most this share of its norm counts as dependent on the
#: others (its least-squares solve then takes the SVD's minimum-norm solution).
_QR_INDEPENDENT = 1e-9


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
    if runs.numel() == 1:  # one run: the product itself, no padding and no gathered copy
        return torch.bmm(z[None], xt[runs] if xt.shape[0] > 1 else xt)[0]
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


def _corral_inverse(gss: Tensor, mask: Tensor) -> Tensor:
    """Exact inverse of the padded corral matrix.

    Parameters
    ----------
    gss : Tensor, shape (a, K, K)
        The corrals' Gram matrices ``X_S X_S^T`` (unused slots arbitrary).
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
    H = gss + 1.0
    eye = torch.eye(K, dtype=gss.dtype, device=gss.device).expand_as(H)
    H = torch.where(pair, H, eye)
    inv, info = torch.linalg.inv_ex(H)
    singular = (info != 0).nonzero().squeeze(1)
    if singular.numel():  # the pseudo-inverse (an eigendecomposition) only where it is needed
        inv[singular] = torch.linalg.pinv(H[singular], hermitian=True)
    return inv


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
    a, K, d = xs.shape
    ar = torch.arange(a, device=xs.device)
    ref = mask.to(torch.int8).argmax(dim=1)
    x0 = xs[ar, ref]
    use = mask.clone()
    use[ar, ref] = False
    k = use.sum(dim=1)
    order = (~use).to(torch.int8).argsort(dim=1, stable=True)  # used slots first
    b = p - x0
    c = torch.zeros(a, K, dtype=xs.dtype, device=xs.device)
    for kk in torch.unique(k).tolist():
        if kk == 0:
            continue
        r = (k == kk).nonzero().squeeze(1)
        cols = order[r, :kk]
        E = (xs[r[:, None], cols] - x0[r, None, :]).transpose(1, 2)  # (g, d, kk), kk <= d
        c[r[:, None], cols] = _independent_lstsq(E, b[r])
    c[ar, ref] = 1.0 - c.sum(dim=1)
    return torch.where(mask, c, 0.0)


def _independent_lstsq(E: Tensor, b: Tensor) -> Tensor:
    """``argmin_c ||E c - b||`` for (g, d, k) ``E`` with ``k <= d`` and (g, d) ``b``.

    Householder QR (``geqrf``, ``Q^T b`` by ``ormqr``, a triangular solve) where every pivot
    ``|R_jj|`` exceeds :data:`_QR_INDEPENDENT` times its column's norm: backward stable, and
    several times faster than an SVD for the corrals' shapes. Rows with (numerically) dependent
    columns get the minimum-norm solution from the SVD (``gelsd``; the pseudo-inverse off CPU).
    """
    k = E.shape[2]
    rhs = b[:, :, None]
    qr, tau = torch.geqrf(E)
    R = qr[:, :k, :k].triu()
    c = torch.linalg.solve_triangular(R, torch.ormqr(qr, tau, rhs, transpose=True)[:, :k], upper=True)[..., 0]
    pivots = R.diagonal(dim1=1, dim2=2).abs()
    ok = (pivots > _QR_INDEPENDENT * torch.linalg.vector_norm(E, dim=1)).all(dim=1) & torch.isfinite(c).all(dim=1)
    if not bool(ok.all()):
        r = (~ok).nonzero().squeeze(1)
        if E.device.type == "cpu":
            c[r] = torch.linalg.lstsq(E[r], rhs[r], driver="gelsd").solution[..., 0]
        else:
            c[r] = (torch.linalg.pinv(E[r]) @ rhs[r])[..., 0]
    return c
