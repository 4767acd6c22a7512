"""Banded 1-D Gaussian kernels: the dense results (values exactly, sums to float rounding)."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

import protoreg
from helpers import in_place_editor
from protoreg.model import banded
from protoreg.errors import LossError
from protoreg.evaluation.evaluate import stream_responses
from protoreg.losses.coverage import Coverage
from protoreg.losses.overlap import Overlap
from protoreg.training.memory import check_memory, estimate
from protoreg.model.mlp import GaussianMLP
from protoreg.model.kernels import logsumexp_flushed
from protoreg.training.module import CompileWarning, ProtoRegModule
from protoreg.training.terms import LossTerm, LossTerms

TOL = {torch.float64: dict(rtol=1e-12, atol=1e-12), torch.float32: dict(rtol=1e-5, atol=1e-6)}



#: metrics.json's wall-clock times, which differ between any two runs
TIMES = ("train_seconds", "check_seconds")


def untimed(m: dict) -> dict:
    return {k: v for k, v in m.items() if k not in TIMES}

def assert_sums_close(a: torch.Tensor, b: torch.Tensor, dtype: torch.dtype) -> None:
    """Equal up to summation order: the tolerance scales with the largest magnitude (float32
    sums of a few hundred terms with cancellation)."""
    scale = max(1.0, float(b.abs().max()))
    torch.testing.assert_close(a, b, rtol=TOL[dtype]["rtol"], atol=TOL[dtype]["atol"] * scale * (1 if dtype == torch.float64 else 100))


def hard_model(dtype: torch.dtype, parameterization: str, seed: int = 0) -> tuple[GaussianMLP, torch.Tensor, torch.Tensor]:
    """R = 3 runs, M = 400 units of very different widths on N = 300 samples: a wide unit with
    w = 0 (or a huge width), prototypes outside the data, duplicated units (ties), and samples
    far from every prototype (all-zero rows)."""
    g = torch.Generator().manual_seed(seed)
    r, n, m = 3, 300, 400
    x = torch.rand(r, n, 1, generator=g, dtype=dtype)
    y = torch.rand(r, n, 2, generator=g, dtype=dtype)
    model = GaussianMLP(r, m, 1, 2, parameterization).to(dtype)  # type: ignore[arg-type]
    model.initialize(x, y, [seed, seed + 1, seed + 2], init_width=0.3)
    x[:, :5] = torch.tensor([40.0, 50.0, -30.0, 95.0, 72.5], dtype=dtype).view(1, 5, 1)  # no prototype near them
    with torch.no_grad():
        model.v.uniform_(-1.0, 1.0, generator=g)
        if parameterization == "affine":
            model.w[:, :40] *= torch.logspace(-0.5, 0.5, 40, dtype=dtype)  # widths over one decade
            model.w[:, 40:43] *= torch.tensor([0.05, 3.0, -2.0], dtype=dtype)  # one 20x wider, a negative w
            model.w[0, 7] = 0.0  # constant unit exp(-b^2): wide
            model.b[1, 50:60] = model.b[1, 60] + 2.5 * model.w[1, 60]  # prototypes outside the data
            model.w[:, 70], model.b[:, 70] = model.w[:, 71], model.b[:, 71]  # duplicated unit: exact ties
        else:
            model.log_s[:, :40] += torch.linspace(-1.0, 1.0, 40, dtype=dtype)
            model.log_s[0, 7] += 5.0  # 150 times wider: wide
            model.centers[1, 50:60] += 2.5
            model.centers[:, 70], model.log_s[:, 70] = model.centers[:, 71], model.log_s[:, 71]
    return model, x, y


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("parameterization", ["affine", "radial"])
def test_banded_layer_equals_the_dense_one(dtype: torch.dtype, parameterization: str) -> None:
    model, x, y = hard_model(dtype, parameterization)
    bands = banded.unit_bands(model, x)
    assert bands is not None and bool(bands.wide_mask.any())  # the wide-unit path is exercised
    res = banded.banded_forward(model, x, bands, max_units=model.width)
    assert res is not None
    assert res.band.units.shape[2] < model.width // 2  # really a band, not the layer
    hidden, pred = model(x)
    assert bool((hidden[:, :5] == 0).all()) and bool((hidden > 0).any(-1).sum() > 100)
    assert torch.equal(res.dense_hidden(model.width), hidden)  # every non-zero kernel, bit for bit
    torch.testing.assert_close(res.pred, pred, **TOL[dtype])
    winners = res.winners()
    assert winners is not None and torch.equal(winners, hidden.argmax(-1))
    assert bool((winners[:, :5] == 0).all())  # all-zero rows: unit 0, as torch.argmax
    # gradients of a loss of pred and of the hidden values
    g = torch.Generator().manual_seed(1)
    wy = torch.randn(pred.shape, generator=g, dtype=dtype)
    dense = torch.autograd.grad(((pred - y) * wy).square().sum() + hidden.sum(), list(model.parameters()))
    res = banded.banded_forward(model, x, bands, max_units=model.width)
    assert res is not None
    band = torch.autograd.grad(((res.pred - y) * wy).square().sum() + res.hidden.sum(), list(model.parameters()))
    for a, b in zip(band, dense):
        assert_sums_close(a, b, dtype)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("parameterization", ["affine", "radial"])
def test_band_keeps_kernels_at_the_floor_with_cancellation(dtype: torch.dtype, parameterization: str) -> None:
    """Samples at and around the exact radius of units (one per run, so the band is the unit's
    own radius), with large |w x| and |b| (rounding of w x + b): every kernel the dense layer
    leaves non-zero is in the band."""
    floor = -banded.kernel_floor(dtype, torch.device("cpu"))  # type: ignore[operator]
    scale = torch.tensor([1.0, 1e3, 3e4, -7.0, 3e4, 1e12], dtype=torch.float64)  # affine w; radial 1/s
    p = torch.tensor([0.0, 1e3, -2.5e2, 31.0, -2.5e3, 1e6], dtype=torch.float64)
    r = len(p)
    model = GaussianMLP(r, 1, 1, 1, parameterization).to(dtype)  # type: ignore[arg-type]
    with torch.no_grad():
        if parameterization == "affine":
            model.w.copy_(scale.view(r, 1))
            model.b.copy_((-scale * p).view(r, 1))
        else:
            model.centers.copy_(p.view(r, 1, 1))
            model.log_s.copy_((-scale.abs().log() - 0.5 * math.log(2.0)).view(r, 1))  # exp(-(x-c)^2 scale^2)
        model.v.fill_(1.0)
    rows = []
    for j in range(r):
        xs = []
        for side in (-1, 1):
            edge = (p[j] + side * math.sqrt(floor) / scale[j].abs()).to(dtype)
            ulps = [edge]
            for direction in (-math.inf, math.inf):  # 100 floats either side of the exact edge
                e = edge
                for _ in range(100):
                    e = torch.nextafter(e, torch.tensor(direction, dtype=dtype))
                    ulps.append(e)
            spread = edge.double() + (edge.double() - p[j]) * torch.linspace(-0.1, 0.1, 1001, dtype=torch.float64)
            xs += [torch.stack(ulps), spread.to(dtype)]
        rows.append(torch.cat(xs))
    x = torch.stack(rows).unsqueeze(-1)
    hidden = model.hidden(x)
    assert bool((hidden == 0).any(1).all()) and bool((hidden > 0).any(1).all()) and int((hidden > 0).sum()) > 1000
    res = banded.banded_forward(model, x, max_units=1)
    assert res is not None and res.band.units.shape[2] == 1 and bool(res.band.mask.any(-1).any())
    assert torch.equal(res.dense_hidden(1), hidden)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_banded_evaluation_equals_the_dense_one(dtype: torch.dtype, monkeypatch: pytest.MonkeyPatch) -> None:
    model, x, y = hard_model(dtype, "affine", seed=3)
    dense_mse, dense_wins = stream_responses(model, x, y)  # R N M below the threshold: dense
    monkeypatch.setattr(banded, "DENSE_FRACTION", 1.0)
    for chunk in (None, 7, 300):
        got = banded.stream_banded(model, x, y, chunk)
        assert got is not None
        torch.testing.assert_close(got[0], dense_mse, **TOL[dtype])
        assert torch.equal(got[1], dense_wins)
    monkeypatch.setattr(banded, "BANDED_MIN_ELEMENTS", 0)
    mse, wins = stream_responses(model, x, y)
    assert torch.equal(wins, dense_wins)
    with torch.no_grad():
        model.w[0, 3] = math.nan  # a non-finite parameter: the dense semantics
    assert banded.unit_bands(model, x) is None and banded.banded_forward(model, x) is None
    assert torch.equal(stream_responses(model, x, y)[1], torch.zeros_like(wins).scatter_add_(1, model(x)[0].argmax(-1), torch.ones_like(wins[:, :300])))


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_banded_coverage_equals_the_dense_one(dtype: torch.dtype, monkeypatch: pytest.MonkeyPatch) -> None:
    widths: list[int] = []
    take = banded._take
    monkeypatch.setattr(banded, "_take", lambda param, units: widths.append(units.shape[2]) or take(param, units))
    g = torch.Generator().manual_seed(5)
    r, n, m = 2, 400, 500
    x = torch.rand(r, n, 1, generator=g, dtype=dtype)
    x[:, :4] = torch.tensor([3.0, -2.0, 0.5, 0.5], dtype=dtype).view(1, 4, 1)  # far from every prototype; ties
    p = torch.rand(r, m, 1, generator=g, dtype=dtype) * 1.2 - 0.1
    p[0, :30] += 4.0  # prototypes outside the data
    p[1, 10] = 1e12  # "at infinity" (model.prototypes() of w = 0)
    p[:, 40] = p[:, 41]  # duplicated prototypes
    t = torch.tensor([2e-5, 7e-6], dtype=dtype).view(r, 1, 1)
    pa, pb = p.clone().requires_grad_(), p.clone().requires_grad_()
    got = banded.banded_log_mean_exp(x, pa, t)
    assert got is not None
    want = logsumexp_flushed(-((x - pb.transpose(1, 2)).square()) / t, -1) - math.log(m)
    torch.testing.assert_close(got, want, **TOL[dtype])
    gy = torch.randn(got.shape, generator=g, dtype=dtype)
    (got * gy).sum().backward()
    (want * gy).sum().backward()
    assert_sums_close(pa.grad, pb.grad, dtype)
    assert 0 < widths[0] < m // 4  # a band of prototypes, not all of them


def test_coverage_switches_to_the_band_above_the_threshold(monkeypatch: pytest.MonkeyPatch) -> None:
    model, x, y = hard_model(torch.float64, "affine")
    calls: list[bool] = []
    real = banded.banded_log_mean_exp

    def spy(*a: object) -> object:
        out = real(*a)  # type: ignore[arg-type]
        calls.append(out is not None)
        return out

    monkeypatch.setattr(banded, "banded_log_mean_exp", spy)
    protos = model.prototypes()
    ctx = protoreg.LossContext(x, y, model.hidden(x), x, protos, torch.full((3,), 1.0 / 300, dtype=torch.float64), model)
    dense = Coverage()(ctx, tau=1.0)
    assert calls == []  # B M = 120,000 <= 2**22: the dense code
    monkeypatch.setattr(banded, "BANDED_MIN_ELEMENTS", 0)
    band = Coverage()(ctx, tau=torch.tensor([1.0, 0.5, 2.0], dtype=torch.float64))
    assert calls == [True, True, True]  # one band per run
    torch.testing.assert_close(band, Coverage.__call__(Coverage(), ctx, tau=torch.tensor([1.0, 0.5, 2.0], dtype=torch.float64)))
    monkeypatch.setattr(banded, "BANDED_MIN_ELEMENTS", 1 << 22)
    torch.testing.assert_close(band, Coverage()(ctx, tau=torch.tensor([1.0, 0.5, 2.0], dtype=torch.float64)), rtol=1e-12, atol=0)
    assert dense.shape == (3,)


def test_the_dense_path_runs_below_the_threshold(monkeypatch: pytest.MonkeyPatch) -> None:
    assert not banded.use_banded(1, 1024, 4096, 1, torch.float32, torch.device("cpu"))  # = 2**22
    assert banded.use_banded(1, 1024, 4097, 1, torch.float32, torch.device("cpu"))
    assert not banded.use_banded(1, 1024, 100_000, 2, torch.float32, torch.device("cpu"))  # d >= 2
    assert not banded.use_banded(1, 1024, 100_000, 1, torch.bfloat16, torch.device("cpu"))
    module, _ = small_module()
    _, _, hidden, _, _ = module.objective(module.x, module.y)
    assert hidden is not None  # the dense forward
    monkeypatch.setattr(banded, "BANDED_MIN_ELEMENTS", 0)
    _, _, hidden, _, _ = module.objective(module.x, module.y)
    assert hidden is None


def small_module(**kw: object) -> tuple[ProtoRegModule, list[LossTerm]]:
    model, x, y = hard_model(torch.float64, "affine")
    terms = [
        LossTerm("coverage", Coverage(), "protoreg (built-in)", [0.1, 0.1, 0.0], {"tau": [1.0, 1.0, 1.0]}),
        LossTerm("overlap", Overlap(), "protoreg (built-in)", [0.0, 0.05, 0.05]),
    ]
    return ProtoRegModule(model, x, y, terms, lr=0.01, steps=5, **kw), terms  # type: ignore[arg-type]


def test_lazy_hidden_is_the_dense_tensor_with_gradients(monkeypatch: pytest.MonkeyPatch) -> None:
    model, x, y = hard_model(torch.float64, "radial")
    reads: list[int] = []

    def compute() -> torch.Tensor:
        reads.append(1)
        return model.hidden(x)

    ctx = banded.LazyHiddenContext(x, y, compute, x, model.prototypes(), torch.ones(3, dtype=torch.float64), model)
    assert isinstance(ctx, protoreg.LossContext) and ctx.runs == 3
    sub = ctx.select(torch.tensor([2, 0]))
    terms = LossTerms([], 3, torch.float64)
    terms._versions(ctx)
    terms._versions(sub)
    assert reads == [] and not ctx.hidden_materialized and "not computed" in repr(ctx)
    h = sub.hidden
    assert reads == [1] and ctx.hidden is ctx.hidden and reads == [1]
    assert torch.equal(h, model.hidden(x)[[2, 0]])
    assert h.requires_grad
    (grad,) = torch.autograd.grad(h.sum(), [model.log_s])
    assert bool((grad[[0, 2]] != 0).any()) and bool((grad[1] == 0).all())
    assert terms._versions(ctx)[2] == 0
    ctx.hidden.mul_(1.0)
    assert terms._versions(ctx)[2] == 1
    plain = protoreg.LossContext(x, y, model.hidden(x), x, model.prototypes(), torch.ones(3, dtype=torch.float64), model)
    assert banded.hidden_version(plain) == plain.hidden._version


def test_objective_with_overlap_on_the_banded_path(monkeypatch: pytest.MonkeyPatch) -> None:
    module, _ = small_module()
    dense_total, dense_values, *_ = module.objective(module.x, module.y)
    dense_grads = torch.autograd.grad(dense_total.sum(), list(module.model.parameters()))
    monkeypatch.setattr(banded, "BANDED_MIN_ELEMENTS", 0)
    monkeypatch.setattr(banded, "DENSE_FRACTION", 1.0)
    total, values, hidden, _, _ = module.objective(module.x, module.y)
    assert hidden is None
    assert values.keys() == dense_values.keys() == {"fit", "coverage", "overlap"}
    assert torch.equal(values["overlap"], dense_values["overlap"])  # the same dense ctx.hidden
    for key in ("fit", "coverage"):
        torch.testing.assert_close(values[key], dense_values[key], rtol=1e-12, atol=1e-15)
    for a, b in zip(torch.autograd.grad(total.sum(), list(module.model.parameters())), dense_grads):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


def test_a_loss_changing_the_lazy_hidden_in_place_is_caught(monkeypatch: pytest.MonkeyPatch) -> None:
    model, x, y = hard_model(torch.float64, "affine")
    module = ProtoRegModule(model, x, y, [LossTerm("sneaky", in_place_editor("hidden"), "sneaky 1.0", [1.0, 1.0, 1.0])], lr=0.01, steps=5)
    monkeypatch.setattr(banded, "BANDED_MIN_ELEMENTS", 0)
    monkeypatch.setattr(banded, "DENSE_FRACTION", 1.0)
    with pytest.raises(LossError, match=r"modified ctx.hidden in place"):
        module.objective(module.x, module.y)


def test_memory_estimate_of_the_banded_step() -> None:
    big = dict(n=100_000, width=100_000, dim=1, out=1, batch_size=1024)
    est = check_memory(**big, losses=["coverage"])  # type: ignore[arg-type]
    assert est.step < 0.2e9 and est.peak < 1e9
    dense = estimate(**big, losses=["coverage"])  # type: ignore[arg-type]
    assert dense.step > 3e9 and est.step < dense.step / 20
    with_overlap = check_memory(**big, losses=["coverage", "overlap"])  # type: ignore[arg-type]
    assert with_overlap.step == dense.step  # overlap reads ctx.hidden: the dense tensor


FIT = ["data.n=600", "train.batch_size=200", "train.steps=20", "train.log_every_n_steps=10", "geometry.every_n_steps=10", "trainer.accelerator=cpu"]


@pytest.mark.slow  # a real fit or sweep
@pytest.mark.parametrize("precision,rel", [("64-true", 1e-9), ("32-true", 1e-3)])
def test_fit_on_the_banded_path_gives_the_dense_metrics(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, no_autoload: None, precision: str, rel: float) -> None:
    args = [*FIT, f"trainer.precision={precision}"]
    dense = protoreg.fit(*args, out=tmp_path / "dense")
    used: list[bool] = []
    real = banded.sample_band

    def spy(*a: object, **k: object) -> object:
        out = real(*a, **k)  # type: ignore[arg-type]
        used.append(out is not None)
        return out

    monkeypatch.setattr(banded, "sample_band", spy)
    monkeypatch.setattr(banded, "BANDED_MIN_ELEMENTS", 0)
    band = protoreg.fit(*args, out=tmp_path / "band")
    assert len(used) > 20 and all(used)  # every step and evaluation chunk banded
    assert band.status == dense.status == "completed"
    for key, val in dense.metrics.items():
        if key in TIMES:
            continue
        if isinstance(val, float) and not math.isnan(val):
            assert band.metrics[key] == pytest.approx(val, rel=rel, abs=1e-12), key
        else:
            assert band.metrics[key] == val, key


@pytest.mark.slow  # a real fit or sweep
def test_compile_runs_the_banded_step_eagerly_with_one_warning(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, no_autoload: None) -> None:
    monkeypatch.setattr(banded, "BANDED_MIN_ELEMENTS", 0)

    def never(*a: object, **k: object) -> object:
        raise AssertionError("torch.compile must not be called on the banded step")

    args = [*FIT, "train.steps=10"]
    eager = protoreg.fit(*args, out=tmp_path / "eager")
    monkeypatch.setattr(torch, "compile", never)
    with pytest.warns(CompileWarning) as caught:
        run = protoreg.fit(*args, "train.compile=true", out=tmp_path / "compiled")
    msgs = [str(w.message) for w in caught if issubclass(w.category, CompileWarning)]
    assert len(msgs) == 1 and "banded" in msgs[0] and msgs[0].startswith("train.compile:") and "\n" not in msgs[0]
    assert run.status == "completed" and untimed(run.metrics) == untimed(eager.metrics)


@pytest.mark.parametrize("parameterization", ["affine", "radial"])
def test_a_run_in_a_group_equals_the_run_alone_bit_for_bit(monkeypatch: pytest.MonkeyPatch, parameterization: str) -> None:
    """Every run of a group is banded on its own (its band, padding and sums), so its output,
    coverage and gradients are exactly those of the same run trained alone, as on the dense path;
    a run with a non-finite parameter falls back to the dense code without touching the others."""
    monkeypatch.setattr(banded, "BANDED_MIN_ELEMENTS", 0)
    model, x, y = hard_model(torch.float32, parameterization)
    with torch.no_grad():  # run 2's units much narrower: its band differs from the others'
        if parameterization == "affine":
            model.w[2] *= 3.0
            model.b[2] *= 3.0
        else:
            model.log_s[2] -= 1.0
    t = torch.tensor([2e-4, 5e-4, 1e-3]).view(3, 1, 1)

    def loss_and_grads(m: GaussianMLP, xs: torch.Tensor, ts: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        m.zero_grad()
        value = banded.banded_pred(m, xs).square().sum(dim=(1, 2)) + banded.banded_coverage(xs, m.prototypes(), ts).sum(dim=(1, 2))
        value.sum().backward()
        return value.detach(), [p.grad.clone() for p in m.parameters()]

    group, group_grads = loss_and_grads(model, x, t)
    with torch.no_grad():
        group_pred0, group_pred2 = banded.banded_pred(model, x)[[0, 2]]
    for r in range(3):
        alone = GaussianMLP(1, model.width, 1, 2, parameterization)  # type: ignore[arg-type]
        alone.load_state_dict({k: v[r : r + 1].clone() for k, v in model.state_dict().items()})
        value, grads = loss_and_grads(alone, x[r : r + 1], t[r : r + 1])
        assert torch.equal(value, group[r : r + 1])
        for g_alone, g_group in zip(grads, group_grads):
            assert torch.equal(g_alone, g_group[r : r + 1])
    # a run the band cannot serve (non-finite parameter) is dense; the others stay banded
    with torch.no_grad():
        first = model.b if parameterization == "affine" else model.centers
        first[1, 3] = math.inf
    pred = banded.banded_pred(model, x)
    dense_pred = model(x)[1]
    assert torch.equal(pred[1], dense_pred[1])  # the dense code for run 1, nan and inf as they come
    assert torch.equal(pred[0], group_pred0) and torch.equal(pred[2], group_pred2)
