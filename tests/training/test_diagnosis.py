"""Why a training step failed (protoreg.training.diagnosis): per-run finiteness of gradients,
whose code a term is, the order in which diagnose names a culprit, and the reasons of losses that
raised or never returned."""

from __future__ import annotations

import math
import signal

import pytest
import torch

from protoreg.training import diagnosis as D
from protoreg.training.terms import LossTerm, LossTerms

NAN, INF = math.nan, math.inf


# ----------------------------------------------------------------- RunFailure.message
def test_message_names_the_term_and_its_source() -> None:
    f = D.RunFailure(run=2, step=17, term="coverage", source="cov-dist 1.2", reason="non-finite value nan")
    assert f.message() == "non-finite value nan in 'coverage' (cov-dist 1.2) at step 17"


def test_message_without_a_term_is_the_reason_and_step() -> None:
    f = D.RunFailure(run=0, step=3, term="?", source="?", reason="non-finite gradient of the total loss")
    assert f.message() == "non-finite gradient of the total loss at step 3"


# ----------------------------------------------------------------- finite_per_run
def test_finite_per_run_is_a_per_run_all_over_every_gradient() -> None:
    g1 = torch.zeros(4, 3, 2)
    g1[1, 2, 0] = NAN
    g2 = torch.zeros(4, 5)
    g2[3, 4] = INF
    like = torch.zeros(4, dtype=torch.bool)
    ok = D.finite_per_run([g1, None, g2], like)
    assert ok.dtype == torch.bool and ok.tolist() == [True, False, True, False]
    # brute force: a run is fine iff every element of each gradient's row is finite
    ref = [all(bool(torch.isfinite(g[r]).all()) for g in (g1, g2)) for r in range(4)]
    assert ok.tolist() == ref


def test_finite_per_run_takes_a_gradient_with_only_the_run_axis() -> None:
    g = torch.zeros(3)
    g[0] = -INF
    assert D.finite_per_run([g], torch.zeros(3, dtype=torch.bool)).tolist() == [False, True, True]


def test_finite_per_run_without_gradients_is_all_true_and_leaves_like_alone() -> None:
    like = torch.zeros(3, dtype=torch.bool)
    ok = D.finite_per_run([None, None], like)
    assert ok.tolist() == [True, True, True]
    assert like.tolist() == [False, False, False]  # a new tensor, not ``like`` changed in place
    assert D.finite_per_run([], like).tolist() == [True, True, True]


# ----------------------------------------------------------------- term_source
class _Zero:
    name = "zero"
    vectorized = True
    defaults: dict[str, object] = {}


def test_term_source_is_protoreg_for_fit_and_the_distribution_otherwise() -> None:
    terms = LossTerms(
        [LossTerm("alpha", _Zero(), "alpha-dist 0.1", [1.0, 0.0]), LossTerm("beta", _Zero(), "beta-dist 2.0", [0.0, 0.5])],  # type: ignore[arg-type]
        2,
        torch.float64,
    )
    assert D.term_source("fit", terms) == D.BUILT_IN_SOURCE == "protoreg (built-in)"
    assert D.term_source("alpha", terms) == "alpha-dist 0.1"
    assert D.term_source("beta", terms) == "beta-dist 2.0"


def test_term_source_of_an_inactive_term_is_not_found() -> None:
    # a term whose weight is 0 in every run is not one of the active terms: no source to name
    terms = LossTerms([LossTerm("off", _Zero(), "off-dist 1.0", [0.0, 0.0])], 2, torch.float64)  # type: ignore[arg-type]
    assert len(terms) == 0
    with pytest.raises(StopIteration):
        D.term_source("off", terms)


# ----------------------------------------------------------------- diagnose
def _source(term: str) -> str:
    return f"src:{term}"


def _no_culprits(runs):  # type: ignore[no-untyped-def]
    raise AssertionError("culprits must not be called when a value or the total names the failure")


def test_diagnose_names_the_first_non_finite_value_in_term_order() -> None:
    values = {
        "fit": torch.tensor([0.0, 1.0, NAN, 0.5]),
        "coverage": torch.tensor([INF, NAN, 1.0, 0.5]),
        "overlap": torch.tensor([NAN, 2.0, 1.0, -INF]),
    }
    bad = torch.tensor([True, True, True, True])
    got = list(D.diagnose(bad, values, torch.zeros(4), 9, culprits=_no_culprits, source=_source))
    assert [r for r, _ in got] == [0, 1, 2, 3]
    assert [(f.run, f.step, f.term, f.source, f.reason) for _, f in got] == [
        (0, 9, "coverage", "src:coverage", "non-finite value inf"),  # fit finite, coverage first
        (1, 9, "coverage", "src:coverage", "non-finite value nan"),
        (2, 9, "fit", "src:fit", "non-finite value nan"),  # fit comes before every loss
        (3, 9, "overlap", "src:overlap", "non-finite value -inf"),
    ]


def test_diagnose_only_takes_the_bad_runs_in_increasing_order() -> None:
    values = {"fit": torch.tensor([NAN, NAN, NAN, NAN, NAN])}
    bad = torch.tensor([False, True, False, True, True])
    got = list(D.diagnose(bad, values, torch.zeros(5), 0, culprits=_no_culprits, source=_source))
    assert [r for r, _ in got] == [1, 3, 4]
    assert all(f.run == r for r, f in got)


def test_diagnose_non_finite_total_with_finite_values() -> None:
    values = {"fit": torch.tensor([1.0, 2.0]), "coverage": torch.tensor([0.0, 0.0])}
    total = torch.tensor([INF, 3.0])
    (got,) = D.diagnose(torch.tensor([True, False]), values, total, 4, culprits=_no_culprits, source=_source)
    run, f = got
    assert run == 0 and (f.term, f.source, f.reason) == ("?", "?", "non-finite total loss")
    assert f.message() == "non-finite total loss at step 4"


def test_diagnose_asks_for_gradient_culprits_once_for_all_runs() -> None:
    calls: list[list[int]] = []

    def culprits(runs):  # type: ignore[no-untyped-def]
        calls.append(list(runs))
        return {0: "coverage", 2: "fit"}

    values = {"fit": torch.tensor([1.0, 1.0, 1.0, 1.0]), "coverage": torch.tensor([NAN, 0.0, 0.0, 0.0])}
    bad = torch.tensor([True, True, True, True])
    got = dict(D.diagnose(bad, values, torch.ones(4), 12, culprits=culprits, source=_source))
    assert calls == [[0, 1, 2, 3]]  # once, with every failed run, although run 0 did not need it
    assert (got[0].term, got[0].reason) == ("coverage", "non-finite value nan")
    assert (got[1].term, got[1].source, got[1].reason) == ("?", "?", "non-finite gradient of the total loss")
    assert (got[2].term, got[2].source, got[2].reason) == ("fit", "src:fit", "non-finite gradient")
    assert (got[3].term, got[3].reason) == ("?", "non-finite gradient of the total loss")
    assert got[2].message() == "non-finite gradient in 'fit' (src:fit) at step 12"


def test_diagnose_is_lazy_each_run_diagnosed_when_taken() -> None:
    seen: list[str] = []

    def source(term: str) -> str:
        seen.append(term)
        return term

    values = {"fit": torch.tensor([NAN, INF])}
    it = D.diagnose(torch.tensor([True, True]), values, torch.zeros(2), 1, culprits=_no_culprits, source=source)
    assert seen == []
    next(it)
    assert seen == ["fit"]
    next(it)
    assert seen == ["fit", "fit"]
    assert list(it) == []


def test_diagnose_of_no_bad_run_yields_nothing() -> None:
    values = {"fit": torch.tensor([NAN])}
    assert list(D.diagnose(torch.tensor([False]), values, torch.zeros(1), 0, culprits=_no_culprits, source=_source)) == []


# ----------------------------------------------------------------- gradient_culprits
def test_gradient_culprits_names_the_first_term_with_a_non_finite_gradient() -> None:
    p = torch.tensor([[1.0], [0.0], [0.0]], requires_grad=True)  # (R=3, 1)

    def objective(x, y):  # type: ignore[no-untyped-def]
        fit = p[:, 0] ** 2  # finite gradient everywhere
        root = torch.sqrt(p[:, 0] ** 2)  # value 0 at p = 0 but gradient NaN there (runs 1, 2)
        return fit + root, {"fit": fit, "root": root}, None, p, p

    weights = torch.tensor([[1.0, 1.0, 0.0]])  # root is off (weight 0) in run 2
    alive = torch.ones(3, dtype=torch.bool)
    x = y = torch.zeros(3, 1)
    found = D.gradient_culprits(objective, weights, [p], alive, x, y, [0, 1, 2])
    # run 2: 0 * NaN is NaN, so the zero weight does not hide the culprit
    assert found == {1: "root", 2: "root"}
    assert D.gradient_culprits(objective, weights, [p], alive, x, y, [0]) == {}


def test_gradient_culprits_is_empty_when_the_terms_cannot_be_evaluated_again() -> None:
    from protoreg.errors import LossError

    def objective(x, y):  # type: ignore[no-untyped-def]
        raise LossError("loss 'x' (x 1.0) raised ValueError: no")

    p = torch.zeros(2, 1, requires_grad=True)
    z = torch.zeros(2, 1)
    assert D.gradient_culprits(objective, torch.zeros(0, 2), [p], torch.ones(2, dtype=torch.bool), z, z, [0, 1]) == {}


# ----------------------------------------------------------------- every_run, stopped_by_signal
def test_every_run_is_the_same_failure_for_each_live_run() -> None:
    alive = torch.tensor([True, False, True, True, False])
    got = D.every_run(alive, 7, "boom", "boom-dist 3.1", "raised ValueError: x")
    assert list(got) == [0, 2, 3]
    assert got[2] == D.RunFailure(2, 7, "boom", "boom-dist 3.1", "raised ValueError: x")
    assert {(f.step, f.term, f.source, f.reason) for f in got.values()} == {(7, "boom", "boom-dist 3.1", "raised ValueError: x")}
    assert [f.run for f in got.values()] == [0, 2, 3]
    assert D.every_run(torch.zeros(3, dtype=torch.bool), 0, "a", "b", "c") == {}


@pytest.mark.parametrize(("signum", "name"), [(signal.SIGINT, "SIGINT"), (signal.SIGTERM, "SIGTERM"), (int(signal.SIGINT), "SIGINT")])
def test_stopped_by_signal_names_the_signal(signum: int, name: str) -> None:
    assert D.stopped_by_signal(signum) == f"did not return (stopped by a second {name})"


def test_stopped_by_signal_message_reads_as_a_failure() -> None:
    f = D.RunFailure(0, 5, "slow", "slow-dist 1.0", D.stopped_by_signal(signal.SIGTERM))
    assert f.message() == "did not return (stopped by a second SIGTERM) in 'slow' (slow-dist 1.0) at step 5"
