"""Fast Gaussian kernels: exactly torch's values and gradients with subnormals flushed."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from protoreg.numerics import EXP_NORMAL_MIN, exp_flushed, logsumexp_flushed
from protoreg.training.trainer import flush_denormal


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_exp_normal_min_is_the_flush_boundary(dtype: torch.dtype) -> None:
    lo = EXP_NORMAL_MIN[dtype]
    np_dtype = np.float32 if dtype == torch.float32 else np.float64
    below = float(np.nextafter(np_dtype(lo), np_dtype(-np.inf)))
    with flush_denormal():
        assert float(torch.exp(torch.tensor(lo, dtype=dtype))) >= torch.finfo(dtype).tiny
        assert float(torch.exp(torch.tensor(below, dtype=dtype))) == 0.0


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("spread", [5.0, 300.0, 3000.0])
def test_flushed_kernels_equal_torch_bit_for_bit_when_subnormals_are_flushed(dtype: torch.dtype, spread: float) -> None:
    g = torch.Generator().manual_seed(int(spread))
    v = -torch.rand(6, 40, 50, generator=g, dtype=dtype) * spread
    lo = EXP_NORMAL_MIN[dtype]
    v[0, 0, :4] = torch.tensor([lo, np.nextafter(lo, -np.inf), 0.0, -np.inf], dtype=dtype)  # the boundary, 0, -inf
    with flush_denormal():
        for ours, theirs in ((exp_flushed, torch.exp), (lambda t: logsumexp_flushed(t, -1), lambda t: torch.logsumexp(t, -1, keepdim=True))):
            a, b = v.clone().requires_grad_(), v.clone().requires_grad_()
            out_a, out_b = ours(a), theirs(b)
            grad = torch.randn(out_a.shape, generator=g, dtype=dtype)
            out_a.backward(grad)
            out_b.backward(grad)
            assert torch.equal(out_a, out_b)
            assert torch.equal(a.grad, b.grad)


def test_flushed_kernels_never_return_subnormals() -> None:
    v = torch.tensor([-87.0, -88.0, -100.0, -104.0])
    out = exp_flushed(v)  # outside the flush context too
    assert out[0] > 0 and torch.equal(out[1:], torch.zeros(3))
    assert torch.isfinite(logsumexp_flushed(torch.tensor([[-1e30, -1e30]]), -1)).all()
    assert torch.equal(logsumexp_flushed(torch.tensor([[-np.inf, -np.inf]]), -1), torch.tensor([[-np.inf]]))
