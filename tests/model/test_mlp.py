from __future__ import annotations

import math

import pytest
import torch

from protoreg.model.mlp import GaussianMLP, sample_spacing


def _affine(w, b, v=None):
    m = GaussianMLP(1, len(w), 1, 1, "affine").double()
    with torch.no_grad():
        m.w[0] = torch.tensor(w, dtype=torch.float64)
        m.b[0] = torch.tensor(b, dtype=torch.float64)
        m.v[0] = torch.tensor(v or [1.0] * len(w), dtype=torch.float64)[:, None]
    return m


def test_affine_forward_and_prototype_formula():
    m = _affine([2.0, -4.0], [-1.0, 2.0])
    x = torch.tensor([[[0.5], [0.0], [1.0]]], dtype=torch.float64)
    h, pred = m(x)
    expect = torch.exp(-((x[0] * torch.tensor([2.0, -4.0]) + torch.tensor([-1.0, 2.0])) ** 2))
    torch.testing.assert_close(h[0], expect)
    torch.testing.assert_close(pred[0, :, 0], expect.sum(-1))
    p = m.prototype_positions()[0, :, 0]
    torch.testing.assert_close(p, torch.tensor([0.5, 0.5], dtype=torch.float64))
    # the prototype is where the unit responds most: h = 1 there
    hp, _ = m(p[:1].reshape(1, 1, 1))
    assert float(hp.detach()[0, 0, 0]) == pytest.approx(1.0)


def test_affine_zero_weight_is_infinite_but_never_nan():
    m = _affine([0.0, 1e-13, 1.0], [0.5, -0.5, -0.5])
    pos = m.prototype_positions()[0, :, 0]
    assert math.isinf(pos[0]) and math.isinf(pos[1]) and pos[2] == pytest.approx(0.5)
    protos = m.prototypes()
    assert torch.isfinite(protos).all()
    x = torch.rand(1, 5, 1, dtype=torch.float64)
    loss = (m.prototypes() - x.mean()).pow(2).mul(1e-30).sum() + m(x)[1].sum()
    loss.backward()
    for p in m.parameters():
        assert torch.isfinite(p.grad).all()


def test_radial_forward_matches_formula():
    torch.manual_seed(0)
    m = GaussianMLP(2, 3, 2, 1, "radial").double()
    with torch.no_grad():
        m.centers.normal_()
        m.log_s.uniform_(-1, 0)
        m.v.normal_()
        m.c.normal_()
    x = torch.randn(2, 4, 2, dtype=torch.float64)
    with torch.no_grad():
        h, pred = m(x)
    for r in range(2):
        for i in range(4):
            for j in range(3):
                s = math.exp(float(m.log_s.detach()[r, j]))
                d2 = float(((x[r, i] - m.centers.detach()[r, j]) ** 2).sum())
                assert float(h[r, i, j]) == pytest.approx(math.exp(-d2 / (2 * s * s)))
        torch.testing.assert_close(pred[r], h[r] @ m.v[r] + m.c[r])
    torch.testing.assert_close(m.prototypes(), m.centers)


def test_affine_requires_1d():
    with pytest.raises(ValueError):
        GaussianMLP(1, 3, 2, 1, "affine")


@pytest.mark.parametrize("param", ["affine", "radial"])
def test_initialisation_is_per_run_and_inside_the_data(param):
    x = torch.rand(3, 10, 1, dtype=torch.float64) * 5 + 2
    y = torch.rand(3, 10, 1, dtype=torch.float64)
    batched = GaussianMLP(3, 10, 1, 1, param).double()
    batched.initialize(x, y, [7, 8, 9])
    p = batched.prototype_positions()
    lo, hi = x.amin(1, keepdim=True), x.amax(1, keepdim=True)
    assert ((p >= lo) & (p <= hi)).all(), "prototypes must start inside the data"
    alone = GaussianMLP(1, 10, 1, 1, param).double()
    alone.initialize(x[1:2], y[1:2], [8])
    for (name, a), (_, b) in zip(alone.named_parameters(), batched.named_parameters()):
        torch.testing.assert_close(a[0], b[1], msg=name)
    # the initial receptive width is one sample spacing: h = exp(-1) one spacing away
    s = float(sample_spacing(x)[1])
    p1 = alone.prototype_positions()[0, 0]
    h, _ = alone((p1 + s).reshape(1, 1, 1))
    assert float(h.detach()[0, 0, 0]) == pytest.approx(math.exp(-1.0), rel=1e-6)


@pytest.mark.parametrize("dim", [2, 5])
def test_radial_initialisation_is_inside_the_hull_not_just_the_box(dim):
    from protoreg.geometry import outside_hull

    x = torch.randn(4, 30, dim, dtype=torch.float64)  # a Gaussian cloud: its box is much bigger than its hull
    y = torch.rand(4, 30, 1, dtype=torch.float64)
    model = GaussianMLP(4, 60, dim, 1, "radial").double()
    model.initialize(x, y, [0, 1, 2, 3])
    p = model.prototype_positions()
    assert not outside_hull(p, x).any()
    # and they cover it: spread comparable to the data's, not collapsed onto the centroid
    assert (p.std(1) > 0.4 * x.std(1)).all()


@pytest.mark.parametrize("init", ["uniform", "samples"])
def test_initial_combinations_are_where_the_prototypes_start(init):
    """``initial_combinations`` are convex combinations of each run's own inputs that give its
    initial prototypes (to the model's float32 rounding); none in 1-D (no hull solver there)."""
    x = torch.randn(3, 25, 4, dtype=torch.float64)
    y = torch.rand(3, 25, 1, dtype=torch.float64)
    model = GaussianMLP(3, 40, 4, 1, "radial")  # float32 parameters, float64 combinations
    model.initialize(x, y, [5, 6, 7], init=init)
    assert model.initial_combinations is not None
    index, weight = model.initial_combinations
    assert index.shape == weight.shape == (3, 40, 2) and weight.dtype == torch.float64
    assert torch.all(weight >= 0) and torch.allclose(weight.sum(-1), torch.ones(3, 40, dtype=torch.float64))
    q = (weight[..., None] * x[torch.arange(3)[:, None, None], index]).sum(2)
    assert torch.allclose(q, model.prototype_positions().double(), rtol=0, atol=1e-5)
    if init == "samples":
        assert torch.all(weight[..., 1] == 0)
    flat = GaussianMLP(1, 5, 1, 1, "affine")
    flat.initialize(torch.rand(1, 9, 1), torch.rand(1, 9, 1), [0])
    assert flat.initial_combinations is None
    assert "initial_combinations" not in "".join(model.state_dict())


def test_sample_spacing():
    x = torch.tensor([[[0.0], [1.0], [2.0], [4.0]]])
    assert float(sample_spacing(x)[0]) == pytest.approx(1.0)
    x2 = torch.zeros(1, 5, 2)
    assert float(sample_spacing(x2)[0]) == 1.0


def test_pairwise_sq_dists_exact_when_small_and_gram_when_large() -> None:
    from protoreg.model.mlp import EXACT_DIST_ELEMENTS, pairwise_sq_dists

    g = torch.Generator().manual_seed(0)
    a = torch.rand(2, 7, 3, generator=g, dtype=torch.float64)
    b = torch.rand(2, 5, 3, generator=g, dtype=torch.float64)
    exact = ((a[:, :, None, :] - b[:, None, :, :]) ** 2).sum(-1)
    assert torch.equal(pairwise_sq_dists(a, b), exact)  # small: the explicit difference, bit for bit
    # large and high-dimensional: one batched product, equal to float64 rounding, never negative
    n = int((EXACT_DIST_ELEMENTS / 64) ** 0.5) + 8
    big_a = torch.rand(1, n, 64, generator=g, dtype=torch.float64)
    big_b = torch.cat([big_a[:, :5], torch.rand(1, n - 5, 64, generator=g, dtype=torch.float64)], 1)  # some exact duplicates
    got = pairwise_sq_dists(big_a, big_b)
    ref = torch.cdist(big_a, big_b, compute_mode="donot_use_mm_for_euclid_dist") ** 2
    assert got.shape == (1, n, n) and bool((got >= 0).all())
    torch.testing.assert_close(got, ref, rtol=1e-9, atol=1e-9)
    # gradients flow through the large path (the model's radial units use it)
    c = big_b.clone().requires_grad_(True)
    pairwise_sq_dists(big_a, c).sum().backward()
    torch.testing.assert_close(c.grad, 2 * (n * c.detach() - big_a.sum(1, keepdim=True)), rtol=1e-9, atol=1e-7)
