"""Large radial steps compute the sample-prototype squared distances once (hidden layer and
``ctx.sq_dists``) and use the fast readout backward: the same objective and gradients as the
separate computations, and the context's guarantees (laziness, in-place detection) hold."""

from __future__ import annotations

import pytest
import torch

import protoreg
import protoreg.model.mlp as model_mod
from helpers import in_place_editor
from protoreg.plugin_api import LossContext
from protoreg.errors import LossError
from protoreg.losses.coverage import Coverage
from protoreg.losses.overlap import Overlap
from protoreg.losses.separation import Separation
from protoreg.model.mlp import GaussianMLP, pairwise_sq_dists, readout
from protoreg.training.module import ProtoRegModule
from protoreg.training.terms import LossTerm


def radial(dtype: torch.dtype = torch.float64, r: int = 2, n: int = 120, m: int = 90, d: int = 16) -> tuple[GaussianMLP, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(3)
    x = torch.rand(r, n, d, generator=g, dtype=dtype)
    y = torch.rand(r, n, 3, generator=g, dtype=dtype)
    model = GaussianMLP(r, m, d, 3).to(dtype)
    model.initialize(x, y, list(range(r)))
    with torch.no_grad():
        model.v.uniform_(-1.0, 1.0, generator=g)
        model.log_s.add_(torch.rand(r, m, generator=g, dtype=dtype))
    return model, x, y


def terms(r: int) -> list[LossTerm]:
    return [
        LossTerm("coverage", Coverage(), "builtin", [0.3] * r, {"tau": [1.0] * r}),
        LossTerm("separation", Separation(), "builtin", [0.2] * r, {"tau": [0.1] * r}),
        LossTerm("overlap", Overlap(), "builtin", [0.1] * r),
    ]


def objective_and_grads(module: ProtoRegModule) -> tuple[dict[str, torch.Tensor], list[torch.Tensor]]:
    total, values, *_ = module.objective(module.x, module.y)
    grads = torch.autograd.grad(total.sum(), list(module.model.parameters()))
    return {k: v.detach() for k, v in values.items()}, list(grads)


def shares_sq_dists(model: GaussianMLP, x: torch.Tensor) -> bool:
    return model.path(x) == "shared"


def dense_instead_of_shared(monkeypatch: pytest.MonkeyPatch, used: list[bool] | None = None) -> None:
    """The model's step takes the dense path where it would share the distances."""
    real = model_mod.forward_path

    def path(**kw: object) -> str:
        p = real(**kw)  # type: ignore[arg-type]
        if used is not None:
            used.append(p == "shared")
        return "dense" if p == "shared" and used is None else p

    monkeypatch.setattr(model_mod, "forward_path", path)


def test_the_rule_covers_large_radial_problems_only() -> None:
    digits = GaussianMLP(1, 1797, 64, 10)
    assert shares_sq_dists(digits, torch.zeros(1, 1797, 64))
    assert not shares_sq_dists(digits, torch.zeros(1, 20, 64))  # small: exact differences
    assert not shares_sq_dists(GaussianMLP(1, 4000, 1, 1), torch.zeros(1, 4000, 1))  # 1-D: banded
    assert GaussianMLP(1, 4000, 1, 1).path(torch.zeros(1, 4000, 1)) == "banded"
    assert not shares_sq_dists(GaussianMLP(1, 4000, 1, 1, "affine"), torch.zeros(1, 4000, 1))
    assert GaussianMLP(1, 10, 1, 1, "affine").path(torch.zeros(1, 10, 1)) == "dense"


def test_shared_step_equals_the_separate_one(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(model_mod, "EXACT_DIST_ELEMENTS", 0)  # the Gram expansion, as at scale
    model, x, y = radial()
    module = ProtoRegModule(model, x, y, terms(2), lr=0.01, steps=5)
    calls: list[int] = []
    real = model_mod.pairwise_sq_dists

    def counting(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        if a is not b:  # sample-prototype distances (separation's are prototype-prototype)
            calls.append(1)
        return real(a, b)

    monkeypatch.setattr(model_mod, "pairwise_sq_dists", counting)
    monkeypatch.setattr(protoreg.functional, "pairwise_sq_dists", counting)  # the losses' own call
    assert shares_sq_dists(model, x)
    shared, shared_grads = objective_and_grads(module)
    n_shared = len(calls)
    dense_instead_of_shared(monkeypatch)
    calls.clear()
    separate, separate_grads = objective_and_grads(module)
    # hidden layer and coverage: one sample-prototype distance computation instead of two
    assert (n_shared, len(calls)) == (1, 2)
    assert shared.keys() == separate.keys() == {"fit", "coverage", "separation", "overlap"}
    for key in shared:  # the same distances: the same values, bit for bit
        assert torch.equal(shared[key], separate[key]), key
    for a, b in zip(shared_grads, separate_grads):  # gradients up to summation order
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-14)
        assert a.abs().max() > 0


@pytest.mark.parametrize("needs", [(True, True, True), (True, False, False), (False, True, True)])
def test_readout_backward_is_the_products_gradient(needs: tuple[bool, bool, bool]) -> None:
    g = torch.Generator().manual_seed(0)
    h = torch.rand(3, 50, 40, generator=g, dtype=torch.float64)
    v = torch.randn(3, 40, 4, generator=g, dtype=torch.float64)
    c = torch.randn(3, 4, generator=g, dtype=torch.float64)
    up = torch.randn(3, 50, 4, generator=g, dtype=torch.float64)
    ins = [t.clone().requires_grad_(n) for t, n in zip((h, v, c), needs)]
    out = readout(*ins)
    assert torch.equal(out, torch.baddbmm(c.unsqueeze(1), h, v))
    got = torch.autograd.grad(out, [t for t in ins if t.requires_grad], up)
    ref_in = [t.clone().requires_grad_(n) for t, n in zip((h, v, c), needs)]
    ref = torch.autograd.grad(torch.baddbmm(ref_in[2].unsqueeze(1), ref_in[0], ref_in[1]), [t for t in ref_in if t.requires_grad], up)
    for a, b in zip(got, ref):
        torch.testing.assert_close(a, b, rtol=1e-13, atol=1e-13)
    assert torch.autograd.gradcheck(readout, tuple(ins))


@pytest.mark.parametrize("shared", [True, False])
def test_a_loss_changing_sq_dists_in_place_is_caught(monkeypatch: pytest.MonkeyPatch, shared: bool) -> None:
    if shared:
        monkeypatch.setattr(model_mod, "EXACT_DIST_ELEMENTS", 0)
    model, x, y = radial()
    assert shares_sq_dists(model, x) is shared
    module = ProtoRegModule(model, x, y, [LossTerm("sneaky", in_place_editor("sq_dists"), "sneaky 1.0", [1.0, 1.0])], lr=0.01, steps=5)
    with pytest.raises(LossError, match=r"loss 'sneaky' \(sneaky 1.0\) modified ctx.sq_dists in place"):
        module.objective(module.x, module.y)


def test_ctx_sq_dists_is_lazy_cached_and_follows_select() -> None:
    model, x, y = radial(r=3)
    h, pred = model(x)
    ctx = LossContext(x=x, y=y, hidden=h, pred=pred, prototypes=model.prototypes(), spacing=torch.ones(3, dtype=x.dtype), model=model)
    assert ctx._sq_dists is None and ctx.sq_dists_version() == 0
    d2 = ctx.sq_dists
    assert ctx.sq_dists is d2 and torch.equal(d2, pairwise_sq_dists(x, model.centers))
    (grad,) = torch.autograd.grad(d2.sum(), model.centers)
    assert grad.abs().max() > 0
    runs = torch.tensor([2, 0])
    sub = ctx.select(runs)
    assert torch.equal(sub.sq_dists, d2[runs])
    fresh = LossContext(x=x, y=y, hidden=h, pred=pred, prototypes=model.prototypes(), spacing=torch.ones(3, dtype=x.dtype), model=model)
    assert fresh.select(runs)._sq_dists is None  # not computed for a selection either


@pytest.mark.slow  # a real fit or sweep
def test_fit_on_the_shared_path_gives_the_separate_metrics(tmp_path, monkeypatch: pytest.MonkeyPatch, no_autoload: None) -> None:
    args = ["data.name=digits", "data.n=60", "model.width=60", "train.steps=30", "train.log_every_n_steps=10",
            "geometry.every_n_steps=30", "trainer.precision=64-true", "losses.coverage.weight=0.1", "trainer.accelerator=cpu"]
    monkeypatch.setattr(model_mod, "EXACT_DIST_ELEMENTS", 0)
    used: list[bool] = []
    dense_instead_of_shared(monkeypatch, used)  # counting only
    shared = protoreg.fit(*args, out=tmp_path / "shared")
    assert used and any(used)
    dense_instead_of_shared(monkeypatch)
    separate = protoreg.fit(*args, out=tmp_path / "separate")
    for key in ("fit_mse", "recon_error", "recon_ssim", "specialization_ratio", "mean_hull_distance"):
        assert shared.metrics[key] == pytest.approx(separate.metrics[key], rel=1e-6, abs=1e-9), key
