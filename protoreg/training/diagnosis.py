"""Why a training step failed: which runs, which term, whose code, and at which step.

A run fails at a step when its total loss or a gradient of its parameters is not finite
(:func:`finite_per_run`). :func:`diagnose` then names, per failed run, the first term (``fit``,
then the losses in order) whose value is not finite; else a non-finite total; else the first term
whose gradient alone is not finite (:func:`gradient_culprits`, which evaluates the step's terms
again: only after a failure, so training pays nothing for it). A loss that raises fails every
live run with its error (:func:`every_run`), and so does a loss that did not return before a
second signal (:func:`stopped_by_signal`). :class:`RunFailure` is what a run keeps: why and when
it stopped being trained. :class:`~protoreg.training.module.ProtoRegModule` records the failures
and freezes the failed runs; nothing here changes the module.
"""

from __future__ import annotations

import math
import signal
from dataclasses import dataclass
from typing import Callable, Iterable, Iterator, Mapping, Sequence

import torch

from protoreg.errors import LossError
from protoreg.training.terms import LossTerms

#: The source named for the fit term (``fit_mse``), protoreg's own.
BUILT_IN_SOURCE = "protoreg (built-in)"

#: The step's eager objective: ``(x, y) -> (total, {"fit": ..., name: ...}, hidden, pred, prototypes)``.
Objective = Callable[
    [torch.Tensor, torch.Tensor],
    tuple[torch.Tensor, dict[str, torch.Tensor], torch.Tensor | None, torch.Tensor, torch.Tensor],
]


@dataclass
class RunFailure:
    """Why and when a run stopped being trained."""

    run: int
    step: int
    term: str
    source: str
    reason: str

    def message(self) -> str:
        if self.term == "?":
            return f"{self.reason} at step {self.step}"
        return f"{self.reason} in {self.term!r} ({self.source}) at step {self.step}"


def finite_per_run(grads: Iterable[torch.Tensor | None], like: torch.Tensor) -> torch.Tensor:
    """Per run (R,) bool: every element of every gradient (R, ...) is finite (None: no gradient);
    ``like`` is an (R,) bool tensor giving the shape and device."""
    ok = torch.ones_like(like)
    for g in grads:
        if g is not None:
            ok &= torch.isfinite(g).reshape(g.shape[0], -1).all(1)
    return ok


def term_source(term: str, terms: LossTerms) -> str:
    """Whose code the term ``term`` is: protoreg's for ``fit``, else its loss's distribution."""
    return BUILT_IN_SOURCE if term == "fit" else terms.source_of(term)


def diagnose(
    bad: torch.Tensor,
    values: Mapping[str, torch.Tensor],
    total: torch.Tensor,
    step: int,
    *,
    culprits: Callable[[Sequence[int]], dict[int, str]],
    source: Callable[[str], str],
) -> Iterator[tuple[int, RunFailure]]:
    """``(run, failure)`` of each run where ``bad`` (R,) is set, in increasing run order, from
    this step's per-run ``values`` and ``total``, each diagnosed when it is taken.
    ``culprits(runs)`` is :func:`gradient_culprits` of the step, called only when a failed run has
    finite values and total; ``source(term)`` names the term's code."""
    runs = bad.nonzero().flatten().tolist()
    found: dict[int, str] = {}
    for run in runs:
        term, reason = "?", "non-finite gradient of the total loss"
        for name, val in values.items():
            v = float(val[run].detach())
            if not math.isfinite(v):
                term, reason = name, f"non-finite value {v}"
                break
        else:
            if not bool(torch.isfinite(total[run])):
                reason = "non-finite total loss"
            else:  # every value is finite: find the term whose gradient is not
                if not found:
                    found = culprits(runs)
                if run in found:
                    term, reason = found[run], "non-finite gradient"
        yield run, RunFailure(run, step, term, "?" if term == "?" else source(term), reason)


def gradient_culprits(
    objective: Objective,
    weights: torch.Tensor,
    params: Sequence[torch.Tensor],
    alive: torch.Tensor,
    x: torch.Tensor,
    y: torch.Tensor,
    runs: Sequence[int],
) -> dict[int, str]:
    """Run -> the first term (``fit``, then the losses in order) whose gradient is non-finite
    in that run, found by evaluating this step's terms again (``objective``, eager) and
    differentiating each alone (the losses weighted by ``weights`` (K, R)) with respect to
    ``params``. Only called when a gradient is non-finite, so training pays nothing for it."""
    found: dict[int, str] = {}
    try:
        with torch.enable_grad():
            _, values, *_ = objective(x, y)
            for i, (name, val) in enumerate(values.items()):
                weighted = val if name == "fit" else weights[i - 1] * val
                grads = torch.autograd.grad(weighted.sum(), params, retain_graph=True, allow_unused=True)
                ok = finite_per_run(grads, alive)
                for run in runs:
                    if run not in found and not bool(ok[run]):
                        found[run] = name
    except (LossError, RuntimeError):  # the terms cannot be evaluated again: no culprit named
        return found
    return found


def every_run(alive: torch.Tensor, step: int, term: str, source: str, reason: str) -> dict[int, RunFailure]:
    """The same failure for every live run (``alive`` (R,) bool), in increasing run order."""
    return {run: RunFailure(run, step, term, source, reason) for run in alive.nonzero().flatten().tolist()}


def stopped_by_signal(signum: int) -> str:
    """The reason of a loss that was still running when a second ``signum`` stopped training."""
    return f"did not return (stopped by a second {signal.Signals(signum).name})"
