"""Fast Gaussian kernels: exactly torch's values and gradients with subnormals flushed."""

from __future__ import annotations

import os
import platform
import subprocess
import sys

import numpy as np
import pytest
import torch

from protoreg.model.kernels import EXP_NORMAL_MIN, exp_flushed, logsumexp_flushed
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
