"""The loss-term boundary (protoreg.training.terms) on a tiny context, no training: what a
plugin returns is checked once per term, its failures and in-place changes are reported by name,
and a term is evaluated only on the runs where its weight is > 0."""

from __future__ import annotations

import signal
import sys
from typing import Any, Callable

import pytest
import torch

import protoreg
from helpers import in_place_editor
from protoreg.errors import LossError
from protoreg.model.mlp import GaussianMLP
from protoreg.plugin_api import LossContext
from protoreg.training.terms import ForcedStop, LossTerm, LossTerms

R, N, M, D = 3, 5, 4, 2


def make_ctx(dtype: torch.dtype = torch.float64) -> LossContext:
    g = torch.Generator().manual_seed(0)
    x = torch.rand(R, N, D, generator=g, dtype=dtype)
    y = torch.rand(R, N, 1, generator=g, dtype=dtype)
    model = GaussianMLP(R, M, D, 1).to(dtype)
    model.initialize(x, y, list(range(R)))
    hidden, pred = model(x)
    return LossContext(x, y, hidden, pred, model.prototypes(), torch.ones(R, dtype=dtype), model)


def loss(fn: Callable[..., Any], *, name: str = "hostile", vectorized: bool = True, defaults: dict[str, Any] | None = None) -> protoreg.StructuralLoss:
    cls = type(name.title(), (protoreg.StructuralLoss,), {"name": name, "vectorized": vectorized, "defaults": defaults or {}, "__call__": lambda self, ctx, **kw: fn(ctx, **kw)})
    return cls()


def terms_of(fn: Callable[..., Any], weight: list[float] | None = None, **kw: Any) -> LossTerms:
    params = kw.pop("params", {})
    return LossTerms([LossTerm("hostile", loss(fn, **kw), "hostile-dist 1.0", weight or [1.0] * R, params)], R, torch.float64)


def good(ctx: LossContext, **_: Any) -> torch.Tensor:
    return ctx.prototypes.pow(2).sum(dim=(1, 2))


# ----------------------------------------------------------------- what a loss returns
@pytest.mark.parametrize(
    ("fn", "message"),
    [
        (lambda ctx: 1.0, "loss 'hostile' (hostile-dist 1.0) returned float, expected a torch.Tensor of shape (3,)"),
        (lambda ctx: [0.0] * R, "loss 'hostile' (hostile-dist 1.0) returned list, expected a torch.Tensor of shape (3,)"),
        (lambda ctx: good(ctx)[:2], "loss 'hostile' (hostile-dist 1.0) returned shape (2,), expected (3,): one value per run"),
        (lambda ctx: good(ctx).sum(), "loss 'hostile' (hostile-dist 1.0) returned shape (), expected (3,): one value per run"),
        (lambda ctx: good(ctx)[:, None], "loss 'hostile' (hostile-dist 1.0) returned shape (3, 1), expected (3,): one value per run"),
        (lambda ctx: good(ctx).float(), "loss 'hostile' (hostile-dist 1.0) returned dtype torch.float32, expected torch.float64"),
        (lambda ctx: torch.zeros(R, dtype=torch.long), "loss 'hostile' (hostile-dist 1.0) returned dtype torch.int64, expected torch.float64"),
        (lambda ctx: good(ctx).detach(), "loss 'hostile' (hostile-dist 1.0) returned a tensor with no gradient path to the model (detached?)"),
        (
            lambda ctx: torch.zeros(R, dtype=ctx.x.dtype, requires_grad=True) * 2,
            "loss 'hostile' (hostile-dist 1.0) returned a tensor with no gradient path to the model's parameters (computed from tensors of its own?)",
        ),
        (lambda ctx: ctx.x.sum(dim=(1, 2)), "loss 'hostile' (hostile-dist 1.0) returned a tensor with no gradient path to the model (detached?)"),
    ],
)
def test_a_wrong_return_is_refused_by_name(fn: Callable[..., Any], message: str) -> None:
    terms = terms_of(fn)
    with pytest.raises(LossError) as info:
        terms(make_ctx())
    assert str(info.value) == message


def test_a_good_loss_gives_one_value_per_run() -> None:
    ctx = make_ctx()
    out = terms_of(good)(ctx)
    assert list(out) == ["hostile"]
    assert torch.equal(out["hostile"], good(ctx))
    assert out["hostile"].requires_grad


def test_the_output_is_checked_once_per_term() -> None:
    calls = [0]

    def second_call_is_wrong(ctx: LossContext) -> torch.Tensor:
        calls[0] += 1
        return good(ctx) if calls[0] == 1 else good(ctx).detach()

    terms = terms_of(second_call_is_wrong)
    ctx = make_ctx()
    terms(ctx)
    out = terms(ctx)["hostile"]  # checked the first time only: training pays nothing later
    assert calls[0] == 2 and not out.requires_grad


def test_without_gradients_a_detached_value_is_accepted() -> None:
    terms = terms_of(lambda ctx: good(ctx).detach())
    with torch.no_grad():
        out = terms(make_ctx())["hostile"]
    assert out.shape == (R,)


# ----------------------------------------------------------------- a loss that raises
def _raise(ctx: LossContext) -> torch.Tensor:
    raise ValueError("bad input")


def _exit(ctx: LossContext) -> torch.Tensor:
    sys.exit(3)


@pytest.mark.parametrize(
    ("fn", "message", "cause"),
    [
        (_raise, "loss 'hostile' (hostile-dist 1.0) raised ValueError: bad input", ValueError),
        (_exit, "loss 'hostile' (hostile-dist 1.0) called sys.exit(3)", SystemExit),
    ],
)
def test_a_loss_that_raises_is_a_loss_error_naming_it(fn: Callable[..., Any], message: str, cause: type[BaseException]) -> None:
    with pytest.raises(LossError) as info:
        terms_of(fn)(make_ctx())
    assert str(info.value) == message
    assert type(info.value.__cause__) is cause


def test_ctrl_c_and_loss_errors_pass_through_unchanged() -> None:
    def interrupt(ctx: LossContext) -> torch.Tensor:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        terms_of(interrupt)(make_ctx())

    def own(ctx: LossContext) -> torch.Tensor:
        raise LossError("already worded")

    with pytest.raises(LossError) as info:
        terms_of(own)(make_ctx())
    assert str(info.value) == "already worded"


def test_a_forced_stop_records_the_loss_it_interrupted() -> None:
    def stopped(ctx: LossContext) -> torch.Tensor:
        raise ForcedStop(signal.SIGTERM)

    terms = terms_of(stopped)
    with pytest.raises(ForcedStop) as info:
        terms(make_ctx())
    assert info.value.signum == signal.SIGTERM
    assert info.value.term is terms.terms[0] and info.value.term.name == "hostile"


# ----------------------------------------------------------------- in-place changes
@pytest.mark.parametrize("attr", ["x", "y", "hidden", "pred", "spacing"])
def test_a_loss_changing_a_context_tensor_is_named(attr: str) -> None:
    sneaky = in_place_editor(attr) if attr in ("x", "y", "hidden", "pred") else None
    if sneaky is None:

        def fn(ctx: LossContext) -> torch.Tensor:
            ctx.spacing.mul_(0.5)
            return good(ctx)

        terms = terms_of(fn)
        name = "hostile"
    else:
        terms = LossTerms([LossTerm("sneaky", sneaky, "sneaky 1.0", [1.0] * R)], R, torch.float64)
        name = "sneaky"
    ctx = make_ctx()
    ctx = LossContext(ctx.x.detach().clone(), ctx.y, ctx.hidden.detach().clone(), ctx.pred.detach().clone(), ctx.prototypes, ctx.spacing, ctx.model)
    with pytest.raises(LossError) as info:
        with torch.no_grad():  # the sneaky losses return a detached sum of what they edit
            terms(ctx)
    source = "sneaky 1.0" if name == "sneaky" else "hostile-dist 1.0"
    assert str(info.value) == (
        f"loss {name!r} ({source}) modified ctx.{attr} in place; a loss must not change "
        "its inputs (the training data, activations or model parameters)"
    )


def test_a_loss_changing_a_model_parameter_is_named() -> None:
    def fn(ctx: LossContext) -> torch.Tensor:
        with torch.no_grad():
            ctx.model.v.add_(1.0)
        return good(ctx)

    with pytest.raises(LossError, match=r"^loss 'hostile' \(hostile-dist 1\.0\) modified ctx\.model\.v in place;"):
        terms_of(fn)(make_ctx())


def test_a_loss_changing_the_prototypes_names_both_views_of_them() -> None:
    # radial prototypes are the model's centres themselves: one change, two names
    def fn(ctx: LossContext) -> torch.Tensor:
        with torch.no_grad():
            ctx.prototypes.mul_(0.5)
        return good(ctx)

    with pytest.raises(LossError, match=r"^loss 'hostile' \(hostile-dist 1\.0\) modified ctx\.prototypes, ctx\.model\.centers in place;"):
        terms_of(fn)(make_ctx())


def test_a_loss_changing_sq_dists_is_named() -> None:
    def fn(ctx: LossContext) -> torch.Tensor:
        d2 = ctx.sq_dists
        out = d2.sum(dim=(1, 2))
        with torch.no_grad():
            d2.mul_(1.0)
        return out

    with pytest.raises(LossError, match=r"modified ctx\.sq_dists in place"):
        terms_of(fn)(make_ctx())


def test_reading_without_changing_is_not_an_in_place_change() -> None:
    def reads_everything(ctx: LossContext) -> torch.Tensor:
        s = ctx.sq_dists.sum() * 0 + ctx.hidden.sum() * 0 + ctx.x.clone().mul_(2).sum() * 0
        return good(ctx) + s

    out = terms_of(reads_everything)(make_ctx())["hostile"]
    assert out.shape == (R,)


# ----------------------------------------------------------------- weights and parameters
def test_terms_off_in_every_run_are_dropped_and_weights_are_k_by_r() -> None:
    a = LossTerm("a", loss(good, name="a"), "a 1", [0.5, 0.0, 1.0])
    off = LossTerm("off", loss(_raise, name="off"), "off 1", [0.0, 0.0, 0.0])
    b = LossTerm("b", loss(good, name="b"), "b 1", [0.0, 2.0, 0.0])
    terms = LossTerms([a, off, b], R, torch.float64)
    assert len(terms) == 2 and [t.name for t in terms.terms] == ["a", "b"]
    assert terms.weights.dtype == torch.float64
    assert terms.weights.tolist() == [[0.5, 0.0, 1.0], [0.0, 2.0, 0.0]]
    assert "weights" not in terms.state_dict()  # derived from the config, not saved
    out = terms(make_ctx())  # the raising term is never called
    assert list(out) == ["a", "b"]


def test_a_term_is_evaluated_only_where_its_weight_is_positive() -> None:
    seen: list[int] = []

    def fn(ctx: LossContext) -> torch.Tensor:
        seen.append(ctx.runs)
        return good(ctx) + 1.0

    ctx = make_ctx()
    out = terms_of(fn, weight=[0.0, 0.3, 0.0])(ctx)["hostile"]
    assert seen == [1]
    ref = good(ctx).detach() + 1.0
    assert out.detach().tolist() == [0.0, float(ref[1]), 0.0]


def test_a_loss_failing_only_on_off_runs_cannot_fail_them() -> None:
    def fn(ctx: LossContext) -> torch.Tensor:
        if ctx.runs != 2:
            raise AssertionError("evaluated on a run where it is off")
        return good(ctx)

    out = terms_of(fn, weight=[1.0, 0.0, 1.0])(make_ctx())["hostile"]
    assert out[1].item() == 0.0


def test_vectorized_parameters_arrive_as_per_run_tensors() -> None:
    got: list[torch.Tensor] = []

    def fn(ctx: LossContext, *, tau: torch.Tensor) -> torch.Tensor:
        got.append(tau)
        return good(ctx) * tau

    terms = terms_of(fn, weight=[1.0, 0.0, 1.0], params={"tau": [0.5, 9.0, 2.0]})
    assert terms.params(0)["tau"].tolist() == [0.5, 9.0, 2.0]
    terms(make_ctx())
    (tau,) = got
    assert tau.dtype == torch.float64 and tau.tolist() == [0.5, 2.0]  # only the runs where it is on


def test_plain_parameters_group_runs_sharing_values_with_the_defaults_types() -> None:
    calls: list[tuple[int, Any, Any, Any]] = []

    def fn(ctx: LossContext, *, k: int, flag: bool, tau: float) -> torch.Tensor:
        calls.append((ctx.runs, k, flag, tau))
        return good(ctx) * (k + tau)

    terms = terms_of(
        fn,
        vectorized=False,
        defaults={"k": 1, "flag": False, "tau": 1.0},
        params={"k": [2, 2, 3], "flag": [1, 1, 0], "tau": [0.5, 0.5, 0.5]},
    )
    ctx = make_ctx()
    out = terms(ctx)["hostile"]
    assert sorted(calls) == [(1, 3, False, 0.5), (2, 2, True, 0.5)]
    for _, k, flag, tau in calls:
        assert type(k) is int and type(flag) is bool and type(tau) is float
    ref = good(ctx).detach() * torch.tensor([2.5, 2.5, 3.5], dtype=torch.float64)
    torch.testing.assert_close(out.detach(), ref, rtol=0, atol=0)


def test_plain_parameters_shared_by_every_run_are_one_call() -> None:
    calls: list[int] = []

    def fn(ctx: LossContext, *, tau: float) -> torch.Tensor:
        calls.append(ctx.runs)
        return good(ctx) * tau

    terms_of(fn, vectorized=False, defaults={"tau": 1.0}, params={"tau": [0.5] * R})(make_ctx())
    assert calls == [R]


def test_a_wrong_shape_from_a_later_group_of_the_first_call_is_named() -> None:
    def fn(ctx: LossContext, *, tau: float) -> torch.Tensor:
        return good(ctx)[:1].expand(2) if ctx.runs == 1 else good(ctx)

    terms = terms_of(fn, vectorized=False, defaults={"tau": 1.0}, params={"tau": [0.5, 0.5, 0.25]})
    with pytest.raises(LossError, match=r"returned shape \(2,\), expected \(1,\): one value per run"):
        terms(make_ctx())


def test_a_detached_value_from_a_later_group_of_the_first_call_is_refused() -> None:
    def fn(ctx: LossContext, *, tau: float) -> torch.Tensor:
        return good(ctx).detach() if ctx.runs == 1 else good(ctx)

    terms = terms_of(fn, vectorized=False, defaults={"tau": 1.0}, params={"tau": [0.5, 0.5, 0.25]})
    with pytest.raises(LossError, match=r"no gradient path to the model \(detached\?\)"):
        terms(make_ctx())


def test_a_wrong_shape_from_the_first_group_is_named_with_its_size() -> None:
    def fn(ctx: LossContext, *, tau: float) -> torch.Tensor:
        return good(ctx)[:1] if ctx.runs == 2 else good(ctx)

    terms = terms_of(fn, vectorized=False, defaults={"tau": 1.0}, params={"tau": [0.5, 0.5, 0.25]})
    with pytest.raises(LossError) as info:
        terms(make_ctx())
    assert str(info.value) == "loss 'hostile' (hostile-dist 1.0) returned shape (1,), expected (2,): one value per run"


def test_source_of_names_each_terms_distribution() -> None:
    terms = LossTerms(
        [LossTerm("a", loss(good, name="a"), "a-dist 1", [1.0] * R), LossTerm("b", loss(good, name="b"), "b-dist 2", [1.0] * R)],
        R,
        torch.float64,
    )
    assert (terms.source_of("a"), terms.source_of("b")) == ("a-dist 1", "b-dist 2")
