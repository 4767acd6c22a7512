"""Fast Gaussian kernels on CPU: ``exp`` and ``logsumexp`` with underflow handled explicitly.

Gaussian units and kernels produce ``exp(a)`` of very negative ``a`` (a unit far from a sample).
Below ``a`` of about -87.3 (float32; -708.4 in float64) the result is subnormal or zero, and
the x86 vector ``exp`` leaves its fast path for such arguments: measured on this project's
2-core CPU, 10-20x slower per element. Training flushes subnormals to zero anyway
(:func:`protoreg.training.trainer.flush_denormal`), so these functions clamp the argument to the
smallest one with a normal result and set the rest to 0 explicitly: the values and gradients
are those of ``torch.exp`` / ``torch.logsumexp`` with subnormals flushed, bit for bit, at the
fast path's speed. Off the CPU (and for other dtypes) they are ``torch.exp`` / ``torch.logsumexp``.

Plugin authors writing Gaussian kernels can use them the same way.
"""

from __future__ import annotations

import math
from typing import cast

import torch

#: The smallest argument whose ``exp`` is a normal number, per dtype (measured: every float
#: below it gives 0 with subnormals flushed, every float from it on a normal result).
EXP_NORMAL_MIN: dict[torch.dtype, float] = {
    torch.float32: -87.33654022216797,
    torch.float64: -708.3964185322641,
}


def _floor(t: torch.Tensor) -> float | None:
    return EXP_NORMAL_MIN.get(t.dtype) if t.device.type == "cpu" else None


def _exp_flushed(a: torch.Tensor, lo: float) -> torch.Tensor:
    # multiplying by the 0/1 mask is exact (x * 1 == x, finite x * 0 == 0) and, on CPU, cheaper
    # than masked_fill / where; exp in place on the clamped copy saves one (R, N, M) buffer
    return a.clamp_min(lo).exp_().mul_(a >= lo)


class _Exp(torch.autograd.Function):
    """``exp`` whose backward is ``exp``'s own (``grad * result``) on the flushed result."""

    @staticmethod
    def forward(ctx, a: torch.Tensor, lo: float) -> torch.Tensor:
        out = _exp_flushed(a, lo)
        ctx.save_for_backward(out)
        return out

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        (out,) = ctx.saved_tensors
        return grad * out, None


def exp_flushed(a: torch.Tensor) -> torch.Tensor:
    """``torch.exp(a)`` with results below the smallest normal float set to 0 (as with
    subnormals flushed), without the CPU's slow path for underflowing arguments.

    >>> exp_flushed(torch.tensor([0.0, -100.0]))
    tensor([1., 0.])
    """
    lo = _floor(a)
    if lo is None:
        return torch.exp(a)
    return _Exp.apply(a, lo)


def exp_flushed_(a: torch.Tensor) -> torch.Tensor:
    """:func:`exp_flushed` in place, for tensors outside autograd (evaluation): ``a`` is
    overwritten with the same values, and no buffer of its size is allocated but a 1-byte mask.

    >>> exp_flushed_(torch.tensor([0.0, -100.0]))
    tensor([1., 0.])
    """
    if a.requires_grad:
        raise RuntimeError("exp_flushed_ overwrites its argument: use exp_flushed under autograd")
    lo = _floor(a)
    if lo is None:
        return a.exp_()
    keep = a >= lo
    return a.clamp_min_(lo).exp_().mul_(keep)


class _LogSumExp(torch.autograd.Function):
    """``torch.logsumexp(v, dim, keepdim=True)`` computed as ATen does (max-shifted sum of
    exponentials), forward and backward, with :func:`exp_flushed` for the exponentials."""

    @staticmethod
    def forward(ctx, v: torch.Tensor, dim: int) -> torch.Tensor:
        m = v.amax(dim, keepdim=True)
        m = m.masked_fill(m.abs() == math.inf, 0.0)
        out = _exp_flushed(v - m, cast(float, _floor(v))).sum(dim, keepdim=True).log_().add_(m)  # a floor: see logsumexp_flushed
        ctx.save_for_backward(v, out)
        return out

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        v, out = ctx.saved_tensors
        return grad * _exp_flushed(v - out, cast(float, _floor(v))), None  # a floor: see logsumexp_flushed


def logsumexp_flushed(v: torch.Tensor, dim: int) -> torch.Tensor:
    """``torch.logsumexp(v, dim, keepdim=True)`` with the exponentials of :func:`exp_flushed`.

    >>> logsumexp_flushed(torch.tensor([[0.0, 0.0]]), -1)
    tensor([[0.6931]])
    """
    if _floor(v) is None or v.numel() == 0:
        return torch.logsumexp(v, dim, keepdim=True)
    return _LogSumExp.apply(v, dim)
