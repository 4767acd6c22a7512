from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from protoreg.plugin_api import LossContext
from protoreg.losses.coverage import Coverage
from protoreg.losses.overlap import Overlap
from protoreg.losses.separation import Separation
from protoreg.model.mlp import GaussianMLP, sample_spacing
from protoreg.training.module import ProtoRegModule
from protoreg.training.terms import LossTerm


def ctx_for(x, protos, hidden=None):
    x = torch.as_tensor(x, dtype=torch.float64)
    p = torch.as_tensor(protos, dtype=torch.float64)
    r, n, _ = x.shape
    m = p.shape[1]
    h = hidden if hidden is not None else torch.zeros(r, n, m, dtype=torch.float64)
    return LossContext(x=x, y=torch.zeros(r, n, 1, dtype=torch.float64), hidden=h, pred=torch.zeros(r, n, 1, dtype=torch.float64),
                       prototypes=p, spacing=sample_spacing(x), model=torch.nn.Identity())


def np_coverage(x, p, tau):
    s = (x.max(0) - x.min(0)).mean() / len(x) ** (1 / x.shape[1])
    t = tau * s * s
    d2 = ((x[:, None, :] - p[None, :, :]) ** 2).sum(-1)
    soft = -t * np.log(np.exp(-d2 / t).mean(1))
    return float((soft / (s * s)).mean())


def test_coverage_matches_numpy_and_is_bounded():
    rng = np.random.default_rng(0)
    x, p = rng.random((7, 2)), rng.random((5, 2))
    val = Coverage()(ctx_for(x[None], p[None]), tau=0.7)
    assert val.shape == (1,)
    assert float(val) == pytest.approx(np_coverage(x, p, 0.7), rel=1e-10)
    s2 = float(sample_spacing(torch.tensor(x[None]))[0]) ** 2
    d2 = ((x[:, None] - p[None]) ** 2).sum(-1)
    assert d2.min(1).mean() / s2 - 1e-12 <= float(val) <= d2.mean(1).mean() / s2 + 1e-12


def test_coverage_pulls_nearest_prototype_toward_uncovered_sample():
    x = torch.tensor([[[0.0], [0.1], [0.2], [1.0]]], dtype=torch.float64)
    p = torch.tensor([[[0.05], [0.15], [0.6]]], dtype=torch.float64, requires_grad=True)
    Coverage()(ctx_for(x, p), tau=1.0).sum().backward()
    # the sample at 1.0 is uncovered; its nearest prototype (0.6) must move toward it (right)
    assert p.grad[0, 2, 0] < 0
    before = abs(1.0 - 0.6)
    after = abs(1.0 - float(p.detach()[0, 2, 0] - 0.01 * p.grad[0, 2, 0] / p.grad.abs().max()))
    assert after < before


def test_separation_pushes_close_prototypes_apart():
    x = torch.linspace(0, 1, 10, dtype=torch.float64).reshape(1, 10, 1)
    p = torch.tensor([[[0.50], [0.52], [0.9]]], dtype=torch.float64, requires_grad=True)
    val = Separation()(ctx_for(x, p), tau=1.0)
    val.sum().backward()
    assert p.grad[0, 0, 0] > 0 and p.grad[0, 1, 0] < 0  # descent moves 0 left, 1 right
    s = 1 / 10
    k = np.exp(-((np.array([0.5, 0.52, 0.9])[:, None] - [0.5, 0.52, 0.9]) ** 2) / (s * s))
    assert float(val.detach()) == pytest.approx((k.sum() - 3) / 6, rel=1e-10)


def test_overlap_lowers_when_units_move_apart_and_matches_gram():
    x = torch.linspace(0, 1, 21, dtype=torch.float64).reshape(1, 21, 1)
    m = GaussianMLP(1, 2, 1, 1, "radial").double()
    with torch.no_grad():
        m.log_s.fill_(math.log(0.1))
    vals = []
    for gap in (0.0, 0.1, 0.3, 0.6):
        with torch.no_grad():
            m.centers[0, :, 0] = torch.tensor([0.5 - gap / 2, 0.5 + gap / 2])
        h, _ = m(x)
        val = Overlap()(ctx_for(x, m.centers.detach(), hidden=h))
        g = (h[0].T @ h[0]) / 21
        assert float(val.detach()) == pytest.approx(float((g.sum() - g.trace()).detach()), rel=1e-10)
        vals.append(float(val.detach()))
    assert vals == sorted(vals, reverse=True) and vals[-1] < 0.05 * vals[0]


@pytest.mark.parametrize("loss", [Coverage(), Separation()])
def test_vectorized_tau_equals_separate_calls(loss):
    rng = np.random.default_rng(1)
    x, p = rng.random((3, 6, 1)), rng.random((3, 4, 1))
    taus = torch.tensor([0.1, 1.0, 10.0], dtype=torch.float64)
    together = loss(ctx_for(x, p), tau=taus)
    for r in range(3):
        alone = loss(ctx_for(x[r : r + 1], p[r : r + 1]), tau=float(taus[r]))
        assert float(together[r]) == pytest.approx(float(alone[0]), rel=1e-12)


def _module(x, y, seeds=(0, 1, 2)):
    r, n, _ = x.shape
    model = GaussianMLP(r, n, 1, 1, "affine").double()
    model.initialize(x, y, list(seeds))
    terms = [
        LossTerm("coverage", Coverage(), "builtin", [0.1] * r, {"tau": [1.0] * r}),
        LossTerm("separation", Separation(), "builtin", [0.1] * r, {"tau": [0.5] * r}),
        LossTerm("overlap", Overlap(), "builtin", [0.1] * r, {}),
    ]
    return ProtoRegModule(model, x, y, terms, lr=0.01, steps=10)


def test_runs_are_independent():
    torch.manual_seed(0)
    x = torch.rand(3, 8, 1, dtype=torch.float64)
    y = torch.rand(3, 8, 1, dtype=torch.float64)
    grads = []
    for variant in range(2):
        xv = x.clone()
        if variant:
            xv[2] = torch.rand(8, 1, dtype=torch.float64) * 3  # change only run 2's data
        mod = _module(xv, y)
        total, *_ = mod.objective(mod.x, mod.y)
        total.sum().backward()
        grads.append({k: p.grad.clone() for k, p in mod.model.named_parameters()})
    for k in grads[0]:
        torch.testing.assert_close(grads[0][k][:2], grads[1][k][:2], rtol=0, atol=0, msg=k)
        assert not torch.equal(grads[0][k][2], grads[1][k][2]) or k == "c"


def test_objective_is_fit_plus_weighted_terms():
    x = torch.rand(1, 6, 1, dtype=torch.float64)
    y = torch.rand(1, 6, 1, dtype=torch.float64)
    mod = _module(x, y, seeds=(3,))
    total, values, *_ = mod.objective(mod.x, mod.y)
    expect = values["fit"] + 0.1 * (values["coverage"] + values["separation"] + values["overlap"])
    torch.testing.assert_close(total, expect)


def test_restore_reads_checkpoints_that_still_hold_loss_buffers():
    """Checkpoints of protoreg 0.1 saved loss weights and parameters as module buffers; they come
    from the config now and are ignored on resume, while an unknown key is still an error."""
    torch.manual_seed(0)
    x = torch.rand(3, 6, 1, dtype=torch.float64)
    y = torch.rand(3, 6, 1, dtype=torch.float64)
    old, new = _module(x, y), _module(x, y, seeds=(5, 6, 7))
    state = dict(old.state_dict())
    assert "weights" not in state and not any(k.startswith("param_") for k in state)
    legacy = {**state, "weights": torch.zeros(3, 3), "param_0_tau": torch.ones(3)}
    new.restore({"state_dict": legacy, "protoreg": {"step_count": 4, "failures": {}}})
    assert new.step_count == 4 and torch.equal(new.model.w, old.model.w) and torch.equal(new.model.b, old.model.b)
    with pytest.raises(RuntimeError, match="nosuch"):
        new.restore({"state_dict": {**state, "nosuch": torch.ones(1)}})
