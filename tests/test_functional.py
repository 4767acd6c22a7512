"""protoreg.functional: the built-in losses' formulas as functions, bit for bit the plugins'."""

from __future__ import annotations

import math

import pytest
import torch

from protoreg import LossContext, functional as F
from protoreg.losses.coverage import Coverage
from protoreg.losses.overlap import Overlap
from protoreg.losses.separation import Separation
from protoreg.model.mlp import GaussianMLP, sample_spacing


def context(r: int = 3, n: int = 30, m: int = 12, d: int = 2, dtype: torch.dtype = torch.float64) -> LossContext:
    g = torch.Generator().manual_seed(0)
    model = GaussianMLP(r, m, d, 1).to(dtype)
    with torch.no_grad():
        model.centers.copy_(torch.rand(r, m, d, generator=g, dtype=dtype))
    x = torch.rand(r, n, d, generator=g, dtype=dtype)
    hidden, pred = model(x)
    return LossContext(x=x, y=torch.zeros(r, n, 1, dtype=dtype), hidden=hidden, pred=pred, prototypes=model.prototypes(), spacing=sample_spacing(x), model=model)


@pytest.mark.parametrize("d, n", [(1, 30), (2, 30), (1, 3000)])  # 1-D with 3000 samples: the banded path
def test_the_plugins_are_the_functions_bit_for_bit(d: int, n: int) -> None:
    ctx = context(d=d, n=n, dtype=torch.float32)
    tau = torch.tensor([0.5, 1.0, 2.0])
    s = ctx.per_run(ctx.spacing, 3)
    assert torch.equal(Coverage()(ctx, tau=tau), F.coverage(ctx.prototypes, ctx.x, tau=ctx.per_run(tau, 3), spacing=s))
    assert torch.equal(Separation()(ctx, tau=tau), F.separation(ctx.prototypes, tau=ctx.per_run(tau, 3), spacing=s))
    assert torch.equal(Overlap()(ctx), F.overlap(ctx.hidden))


def test_the_formulas_against_a_direct_computation() -> None:
    ctx = context()
    p, x = ctx.prototypes[0], ctx.x[0]
    d2 = ((x[:, None, :] - p[None]) ** 2).sum(-1)
    t = 0.05
    ref = (-t * torch.log(torch.exp(-d2 / t).mean(1))).mean()
    torch.testing.assert_close(F.coverage(p, x, tau=t), ref, rtol=1e-12, atol=0)
    pp = ((p[:, None] - p[None]) ** 2).sum(-1)
    m = p.shape[0]
    torch.testing.assert_close(F.separation(p, tau=t), (torch.exp(-pp / t).sum() - m) / (m * (m - 1)), rtol=1e-12, atol=0)
    h = ctx.hidden[0]
    torch.testing.assert_close(F.overlap(h), ((h.T @ h).sum() - (h * h).sum()) / h.shape[0], rtol=1e-12, atol=0)
    # with spacing: fit's units, the same number rescaled
    s = 0.2
    torch.testing.assert_close(F.coverage(p, x, tau=t / s**2, spacing=s), ref / s**2, rtol=1e-12, atol=0)


def test_with_and_without_the_run_axis() -> None:
    ctx = context()
    batched = F.coverage(ctx.prototypes, ctx.x, tau=0.1)
    assert batched.shape == (3,) and F.coverage(ctx.prototypes[1], ctx.x[1], tau=0.1).shape == ()
    assert torch.equal(F.coverage(ctx.prototypes[1], ctx.x[1], tau=0.1), batched[1])
    assert torch.equal(F.separation(ctx.prototypes[2], tau=0.1), F.separation(ctx.prototypes, tau=0.1)[2])
    assert F.separation(ctx.prototypes[:, :1], tau=0.1).tolist() == [0.0, 0.0, 0.0]  # one prototype
    with pytest.raises(ValueError, match="run axis"):
        F.coverage(ctx.prototypes, ctx.x[0], tau=0.1)


def test_gradients_point_the_right_way() -> None:
    x = torch.tensor([[0.0], [0.1], [0.2]])
    far = torch.tensor([[3.0]], requires_grad=True)
    F.coverage(far, x, tau=1.0).backward()
    assert far.grad is not None and float(far.grad) > 0  # descent moves it toward the data (left)
    pair = torch.tensor([[0.0], [0.1]], requires_grad=True)
    F.separation(pair, tau=0.1).backward()
    assert pair.grad is not None and float(pair.grad[0]) > 0 > float(pair.grad[1])  # descent pushes them apart
    h = torch.tensor([[0.6, 0.5]], requires_grad=True)
    F.overlap(h).backward()
    assert h.grad is not None and bool((h.grad > 0).all())  # less joint response lowers it
    assert math.isfinite(float(F.coverage(torch.tensor([[1e6]]), x, tau=1e-3)))  # flushed, never NaN
