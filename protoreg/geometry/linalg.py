"""Batched linear-algebra kernels of the hull solver (:mod:`protoreg.geometry.solver`).

Scores of queries against their run's inputs, row-subset matrix products and rank-one
updates, exact and least-squares corral solves.
"""

from __future__ import annotations


import torch
from torch import Tensor



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
