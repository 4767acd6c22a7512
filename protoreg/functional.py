"""protoreg's structural losses as pure functions on tensors, for any model and any training loop.

The same formulas as the built-in plugins (docs/losses.md), which are thin wrappers over these.
Every function takes tensors with or without a leading run axis R (prototypes ``(M, d)`` or
``(R, M, d)``, inputs ``(N, d)`` or ``(R, N, d)``) and returns one value per run (a 0-d tensor
without the run axis), differentiable in its tensor arguments.

Temperatures ``tau`` are in the units the caller passes. With ``spacing=None`` they are squared
input units and so is the coverage value. ``protoreg fit`` measures them in squared *sample
spacings* instead (``s = extent / N^(1/d)``, see docs/index.md): it passes ``spacing=s`` and the
function uses ``t = tau * s**2`` and returns the coverage in units of ``s**2``. To reproduce
``fit``'s number for ``losses.coverage.tau=1.0`` pass ``tau=1.0, spacing=s``; to use an absolute
temperature of 0.01 squared input units pass ``tau=0.01``.

>>> import torch
>>> x = torch.tensor([[0.0], [1.0]])
>>> coverage(x.clone(), x, tau=0.1)  # every sample has a prototype on it: nearly 0
tensor(0.0693)
>>> separation(torch.tensor([[0.0], [10.0]]), tau=1.0)  # far apart: no repulsion
tensor(0.)
>>> overlap(torch.tensor([[1.0, 0.0], [0.0, 1.0]]))  # each sample excites one unit
tensor(0.)
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from protoreg.model.kernels import exp_flushed, logsumexp_flushed
from protoreg.model.mlp import pairwise_sq_dists

__all__ = ["coverage", "overlap", "separation", "soft_min"]


def _batched(*tensors: Tensor) -> tuple[bool, list[Tensor]]:
    """Whether the tensors came without the run axis, and all of them with it."""
    if any(t.dim() not in (2, 3) for t in tensors):
        shapes = ", ".join(str(tuple(t.shape)) for t in tensors)
        raise ValueError(f"expected (M, d) / (N, d) tensors, or (R, M, d) / (R, N, d) with a run axis; got {shapes}")
    single = tensors[0].dim() == 2
    if any((t.dim() == 2) != single for t in tensors):
        raise ValueError("give every tensor with the run axis, or none")
    return single, [t.unsqueeze(0) if single else t for t in tensors]


def _per_run(value: float | Tensor, like: Tensor, ndim: int) -> Tensor:
    """A number, a 0-d or an (R,) tensor (or already (R, 1, ..., 1)) as shape (R, 1, ..., 1)."""
    t = torch.as_tensor(value, dtype=like.dtype, device=like.device)
    r = like.shape[0]
    if t.dim() == 0:
        t = t.expand(r)
    return t.reshape((r,) + (1,) * (ndim - 1))


def _unbatched(value: Tensor, single: bool) -> Tensor:
    return value[0] if single else value


def soft_min(x: Tensor, prototypes: Tensor, t: Tensor, *, sq_dists: Tensor | None = None) -> Tensor:
    """Per sample, the soft minimum over prototypes of the squared distance,
    ``-t log mean_j exp(-||x_i - p_j||^2 / t)``: shape (R, N, 1) for ``x`` (R, N, d),
    ``prototypes`` (R, M, d) and temperatures ``t`` (R, 1, 1) in squared input units.

    ``sq_dists`` (R, N, M), when given, are those squared distances already computed. In 1-D on
    large problems only the prototypes whose term can be non-zero are computed (the same value
    up to summation order); otherwise ``exp`` of arguments below the normal range is flushed to
    exactly 0 (:func:`protoreg.model.kernels.logsumexp_flushed`).
    """
    from protoreg.model.banded import banded_coverage, coverage_uses_banded

    if sq_dists is None and coverage_uses_banded(x, prototypes):
        lme = banded_coverage(x, prototypes, t)
    else:
        d2 = pairwise_sq_dists(x, prototypes) if sq_dists is None else sq_dists
        lme = logsumexp_flushed(d2 / -t, -1) - math.log(d2.shape[-1])  # = -d2 / t exactly
    return -t * lme


def coverage(prototypes: Tensor, x: Tensor, *, tau: float | Tensor, spacing: float | Tensor | None = None, sq_dists: Tensor | None = None) -> Tensor:
    """The attractor: every sample should have a prototype near it.

    ``L = mean_i [ -t log mean_j exp(-||x_i - p_j||^2 / t) ]``, the soft minimum over prototypes
    of each sample's squared distance averaged over samples: between the mean nearest and the
    mean average squared distance, so ``L >= 0``. ``t = tau`` (squared input units), or with
    ``spacing`` ``t = tau * spacing**2`` and ``L`` divided by ``spacing**2`` (what ``fit`` does).
    ``tau`` and ``spacing`` are numbers or one value per run. ``sq_dists`` (R, N, M): the squared
    sample-prototype distances, when the caller has them already.

    >>> coverage(torch.tensor([[0.0], [1.0]]), torch.tensor([[0.0], [0.5], [1.0]]), tau=0.01)
    tensor(0.0880)
    """
    single, (p, xs) = _batched(prototypes, x)
    if sq_dists is not None and sq_dists.dim() == 2:
        sq_dists = sq_dists.unsqueeze(0)
    if spacing is None:
        t = _per_run(tau, xs, 3)
        return _unbatched(soft_min(xs, p, t, sq_dists=sq_dists).mean(dim=(1, 2)), single)
    s2 = _per_run(spacing, xs, 3).pow(2)
    t = _per_run(tau, xs, 3) * s2  # (R,1,1)
    return _unbatched((soft_min(xs, p, t, sq_dists=sq_dists) / s2).mean(dim=(1, 2)), single)


def separation(prototypes: Tensor, *, tau: float | Tensor, spacing: float | Tensor | None = None) -> Tensor:
    """A repulsor: Gaussian-kernel repulsion between every pair of prototypes.

    ``L = 1/(M(M-1)) sum_{j != k} exp(-||p_j - p_k||^2 / t)``, in [0, 1]; ``t = tau``, or
    ``tau * spacing**2`` with ``spacing``. 0 for fewer than two prototypes.

    >>> separation(torch.tensor([[0.0], [0.0]]), tau=1.0)  # on top of each other
    tensor(1.)
    """
    single, (p,) = _batched(prototypes)
    t = _per_run(tau, p, 3) if spacing is None else _per_run(tau, p, 3) * _per_run(spacing, p, 3).pow(2)
    m = p.shape[1]
    if m < 2:
        return _unbatched(p.sum(dim=(1, 2)) * 0.0, single)
    k = exp_flushed(pairwise_sq_dists(p, p) / -t)
    off = k.sum(dim=(1, 2)) - k.diagonal(dim1=1, dim2=2).sum(-1)
    return _unbatched(off / (m * (m - 1)), single)


def overlap(hidden: Tensor) -> Tensor:
    """A repulsor on the hidden responses ``hidden`` (N, M) or (R, N, M), entries in [0, 1]:
    ``L = mean_i sum_{j != k} h_ij h_ik``, how strongly pairs of distinct units respond to the
    same sample together (0 when every sample excites at most one unit). O(N M), no Gram matrix.

    >>> overlap(torch.tensor([[1.0, 1.0]]))
    tensor(2.)
    """
    single, (h,) = _batched(hidden)
    # sum_{j,k} G_jk = 1/N sum_i (sum_j h_ij)^2 and tr G = 1/N sum_ij h_ij^2
    return _unbatched((h.sum(-1).pow(2) - h.pow(2).sum(-1)).mean(-1), single)
