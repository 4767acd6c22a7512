"""Fast Gaussian kernels: exactly torch's values and gradients with subnormals flushed."""

from __future__ import annotations

import os
import platform
import subprocess
import sys

import numpy as np
import pytest
import torch

from protoreg.model.kernels import EXP_NORMAL_MIN, exp_flushed, exp_flushed_, logsumexp_flushed
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


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_flushed_exp_of_non_finite_and_large_arguments_is_torchs(dtype: torch.dtype) -> None:
    lo = EXP_NORMAL_MIN[dtype]
    v = torch.tensor([np.nan, np.inf, -np.inf, 80.0, 1e4, lo, -1e30, -0.0], dtype=dtype)  # lo: the floor itself, whose exp is normal
    with flush_denormal():
        ours, theirs = exp_flushed(v), torch.exp(v)
    assert torch.equal(ours.isnan(), theirs.isnan()) and bool(ours.isnan()[0])
    assert torch.equal(ours[1:], theirs[1:]) and not torch.signbit(ours[1:]).any()  # +inf, 0 and no -0


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_the_in_place_flushed_exp_gives_the_same_bits(dtype: torch.dtype) -> None:
    """``exp_flushed_`` overwrites its argument with exactly ``exp_flushed``'s values (the
    boundary, underflow, NaN, infinities included) and refuses a tensor under autograd; the
    evaluation's hidden layer, which uses it, equals the training one bit for bit."""
    from protoreg.model.mlp import GaussianMLP

    g = torch.Generator().manual_seed(3)
    lo = EXP_NORMAL_MIN[dtype]
    v = -torch.rand(4, 30, generator=g, dtype=dtype) * 300.0
    v[0, :8] = torch.tensor([lo, np.nextafter(lo, -np.inf), 0.0, -np.inf, np.inf, np.nan, 80.0, -0.0], dtype=dtype)
    ref = exp_flushed(v)
    w = v.clone()
    out = exp_flushed_(w)
    assert out.data_ptr() == w.data_ptr()
    assert torch.equal(out.isnan(), ref.isnan()) and torch.equal(out.nan_to_num(), ref.nan_to_num())
    with pytest.raises(RuntimeError, match="autograd"):
        exp_flushed_(v.clone().requires_grad_())
    for n, m, d in ((50, 40, 3), (300, 200, 80)):  # the exact differences and the Gram expansion
        x = torch.randn(2, n, d, generator=g, dtype=dtype)
        model = GaussianMLP(2, m, d, 2).to(dtype)
        model.initialize(x, torch.rand(2, n, 2, generator=g, dtype=dtype), [0, 1])
        with torch.no_grad():
            model.log_s.add_(torch.linspace(-4.0, 1.0, m, dtype=dtype))  # far units underflow
            h_eval, pred_eval = model(x)
        h_train, pred_train = model(x)
        assert h_train.requires_grad and bool((h_eval == 0).any())
        assert torch.equal(h_eval, h_train.detach()) and torch.equal(pred_eval, pred_train.detach())


def test_flushed_kernels_never_return_subnormals() -> None:
    v = torch.tensor([-87.0, -88.0, -100.0, -104.0])
    out = exp_flushed(v)  # outside the flush context too
    assert out[0] > 0 and torch.equal(out[1:], torch.zeros(3))
    assert torch.isfinite(logsumexp_flushed(torch.tensor([[-1e30, -1e30]]), -1)).all()
    assert torch.equal(logsumexp_flushed(torch.tensor([[-np.inf, -np.inf]]), -1), torch.tensor([[-np.inf]]))


# ---------------------------------------------------------------------------------------------
# the allocator setting training applies
# ---------------------------------------------------------------------------------------------
_FAULTS = r"""
import resource, torch
torch.set_num_threads(1)
from protoreg.training.trainer import tune_allocator
print(tune_allocator())
def step(k):  # four blocks of 8 MB and more alive at once, a little larger every step
    blocks = [torch.ones((8 << 18) + (k << 16)) for _ in range(4)]
    return sum(float(b[-1]) for b in blocks)
step(0)
f0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for k in range(1, 21):
    step(k)
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f0)
"""


@pytest.mark.slow  # a real fit or sweep
@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="the setting exists for glibc only")
def test_tuned_allocator_stops_page_faulting_every_step() -> None:
    """Steps whose tensors are tens of MB page-fault their memory in again with glibc's defaults;
    with training's setting they reuse the heap (a fresh process each, so nothing leaks between
    them), and PROTOREG_MALLOC_TUNING=0 leaves the allocator alone."""

    def run(env: dict[str, str]) -> tuple[str, int]:
        # without allocator settings of the surrounding environment
        base = {k: v for k, v in os.environ.items() if not k.startswith(("MALLOC_", "GLIBC_TUNABLES", "LD_PRELOAD"))}
        out = subprocess.run([sys.executable, "-c", _FAULTS], capture_output=True, text=True, env={**base, **env}, check=True)
        tuned, faults = out.stdout.split()
        return tuned, int(faults)

    tuned, with_setting = run({"PROTOREG_MALLOC_TUNING": "1"})
    off, without = run({"PROTOREG_MALLOC_TUNING": "0"})
    assert (tuned, off) == ("True", "False")
    # by default every block is larger than any freed one, so glibc maps it afresh: about 218,000
    # page faults in 20 steps; tuned the heap keeps them and only grows (about 10,000)
    assert with_setting * 10 < without, (with_setting, without)
