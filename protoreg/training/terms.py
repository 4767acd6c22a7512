"""Structural loss terms as configured for a group of R runs, and the plugin call boundary.

:class:`LossTerms` evaluates every active term on a :class:`~protoreg.LossContext` and checks
what a plugin returns (type, shape, dtype, device, a gradient path to the model's parameters)
the first time each term is called. At every call, an exception inside a plugin (``sys.exit``
included) and an in-place change of anything the plugin received (the context's tensors or the
model's parameters, seen through their version counters: no copy, no per-element cost) become a
:class:`~protoreg.errors.LossError` that names the loss and its distribution. A term is evaluated
only on the runs where its weight is > 0, so a loss that is off in a run can never fail that run.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

import torch
from torch import nn

from protoreg.plugin_api import LossContext, StructuralLoss
from protoreg.model.banded import hidden_version
from protoreg.errors import LossError
from protoreg.plugins.registry import describe_failure

#: The tensors of a :class:`LossContext`, in the order their version counters are compared.
CONTEXT_TENSORS: tuple[str, ...] = ("x", "y", "hidden", "pred", "prototypes", "spacing", "sq_dists")


class ForcedStop(BaseException):
    """A second SIGINT/SIGTERM during training: stop now, wherever the program is.

    A ``BaseException`` so that a plugin's ``except Exception`` cannot swallow it. ``term`` is the
    loss that was being evaluated when it arrived (None: protoreg's own code)."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum
        self.term: LossTerm | None = None


@dataclass
class LossTerm:
    """A structural loss as configured for R runs: per-run weights and parameters."""

    name: str
    loss: StructuralLoss
    source: str
    weight: list[float]  #: one per run
    params: dict[str, list[Any]] = field(default_factory=dict)  #: parameter -> one value per run


class LossTerms(nn.Module):
    """The active terms of a group of runs; ``forward(ctx)`` returns ``{name: (R,) value}``.

    Weights and parameters are buffers (one value per run) so they move with the module; they
    are derived from the config and not saved in checkpoints.
    """

    weights: torch.Tensor  #: (K, R) buffer, registered in ``__init__``

    def __init__(self, terms: Sequence[LossTerm], runs: int, dtype: torch.dtype) -> None:
        super().__init__()
        self.terms = [t for t in terms if any(w > 0 for w in t.weight)]
        w = torch.tensor([t.weight for t in self.terms], dtype=dtype).reshape(len(self.terms), runs)
        self.register_buffer("weights", w, persistent=False)
        self._params: list[dict[str, str]] = []
        self._on_runs: list[str | None] = []  #: per term, the buffer of runs where it is on (None: all)
        for i, t in enumerate(self.terms):
            names = {}
            for k, vals in t.params.items():
                names[k] = f"param_{i}_{k}"
                self.register_buffer(names[k], torch.tensor([float(v) for v in vals], dtype=dtype), persistent=False)
            self._params.append(names)
            if bool((w[i] > 0).all()):
                self._on_runs.append(None)
            else:
                self.register_buffer(f"on_runs_{i}", (w[i] > 0).nonzero().flatten(), persistent=False)
                self._on_runs.append(f"on_runs_{i}")
        self._checked: set[int] = set()
        self._model_params: tuple[int, tuple[torch.Tensor, ...]] = (0, ())  #: (id(model), its parameters)

    def __len__(self) -> int:
        return len(self.terms)

    def source_of(self, name: str) -> str:
        return next(t.source for t in self.terms if t.name == name)

    def params(self, i: int) -> dict[str, torch.Tensor]:
        """Parameters of term ``i`` as (R,) tensors."""
        return {k: getattr(self, buf) for k, buf in self._params[i].items()}

    def forward(self, ctx: LossContext) -> dict[str, torch.Tensor]:
        return {term.name: self._call(i, ctx) for i, term in enumerate(self.terms)}

    # ------------------------------------------------------------ one term
    def _call(self, i: int, ctx: LossContext) -> torch.Tensor:
        """Term ``i`` per run; runs where its weight is 0 get 0 without evaluating it."""
        term = self.terms[i]
        params = self.params(i)
        buf = self._on_runs[i]
        try:
            if buf is None:
                return self._evaluate(i, ctx, params)
            idx = getattr(self, buf)
            val = self._evaluate(i, ctx.select(idx), {k: v[idx] for k, v in params.items()})
            return ctx.x.new_zeros(ctx.runs).index_add(0, idx, val)
        except (LossError, KeyboardInterrupt):
            raise
        except ForcedStop as exc:
            if exc.term is None:
                exc.term = term
            raise
        except BaseException as exc:  # noqa: BLE001 - a plugin's bug (sys.exit included), reported by name
            raise LossError(f"loss {term.name!r} ({term.source}) {describe_failure(exc)}") from exc

    def _evaluate(self, i: int, ctx: LossContext, params: dict[str, torch.Tensor]) -> torch.Tensor:
        term = self.terms[i]
        loss = term.loss
        if loss.vectorized:
            return self._check_output(i, self._invoke(i, ctx, params), ctx.runs, ctx)
        # Plain-number parameters: evaluate runs that share values together.
        keys = list(params)
        rows = torch.stack([params[k] for k in keys], 1).tolist() if keys else [[] for _ in range(ctx.runs)]
        groups: dict[tuple[float, ...], list[int]] = {}
        for run, row in enumerate(rows):
            groups.setdefault(tuple(row), []).append(run)
        if len(groups) == 1:
            (vals,) = groups
            return self._check_output(i, self._invoke(i, ctx, _plain(term, keys, vals)), ctx.runs, ctx)
        out = ctx.x.new_zeros(ctx.runs)
        for vals, runs in groups.items():
            idx = torch.tensor(runs, device=ctx.x.device)
            sub = ctx.select(idx)
            val = self._check_output(i, self._invoke(i, sub, _plain(term, keys, vals)), len(runs), sub, last=False)
            out = out.index_add(0, idx, val)
        self._checked.add(i)  # every group of the first call was checked
        return out

    def _invoke(self, i: int, ctx: LossContext, params: dict[str, Any]) -> Any:
        """Call the plugin of term ``i``; a :class:`LossError` if it changed anything it received
        in place (a tensor of ``ctx`` or a model parameter)."""
        before = self._versions(ctx)
        val = self.terms[i].loss(ctx, **params)
        after = self._versions(ctx)
        if after != before:
            names = [*(f"ctx.{n}" for n in CONTEXT_TENSORS), *(f"ctx.model.{n}" for n, _ in ctx.model.named_parameters())]
            changed = ", ".join(n for n, a, b in zip(names, before, after) if a != b)
            term = self.terms[i]
            raise LossError(
                f"loss {term.name!r} ({term.source}) modified {changed} in place; a loss must not change "
                "its inputs (the training data, activations or model parameters)"
            )
        return val

    def _versions(self, ctx: LossContext) -> tuple[int, ...]:
        """The version counters of everything a loss receives (in the order of
        :data:`CONTEXT_TENSORS`, then the model's parameters): any in-place change bumps one."""
        if self._model_params[0] != id(ctx.model):
            self._model_params = (id(ctx.model), tuple(ctx.model.parameters()))
        return (
            ctx.x._version,
            ctx.y._version,
            hidden_version(ctx),  # a lazy ctx.hidden (banded path) is not computed for this
            ctx.pred._version,
            ctx.prototypes._version,
            ctx.spacing._version,
            ctx.sq_dists_version(),  # not computed for this either
            *[p._version for p in self._model_params[1]],
        )

    def _check_output(self, i: int, val: Any, runs: int, ctx: LossContext, *, last: bool = True) -> torch.Tensor:
        """``val`` after checking it once per term: a tensor of shape (runs,), right dtype and
        device, with a gradient path to the model. ``last=False``: more groups of runs of the
        same call follow, and each is checked too (the caller marks the term checked)."""
        if i in self._checked:
            return val
        term = self.terms[i]
        where = f"loss {term.name!r} ({term.source})"
        if not isinstance(val, torch.Tensor):
            raise LossError(f"{where} returned {type(val).__name__}, expected a torch.Tensor of shape ({runs},)")
        if tuple(val.shape) != (runs,):
            raise LossError(f"{where} returned shape {tuple(val.shape)}, expected ({runs},): one value per run")
        if not val.is_floating_point() or val.dtype != ctx.x.dtype:
            raise LossError(f"{where} returned dtype {val.dtype}, expected {ctx.x.dtype}")
        if val.device != ctx.x.device:
            raise LossError(f"{where} returned a tensor on {val.device}, expected {ctx.x.device}")
        if torch.is_grad_enabled() and not val.requires_grad:
            raise LossError(f"{where} returned a tensor with no gradient path to the model (detached?)")
        if torch.is_grad_enabled() and not _reaches(val, ctx.model):
            raise LossError(
                f"{where} returned a tensor with no gradient path to the model's parameters "
                "(computed from tensors of its own?)"
            )
        if last:
            self._checked.add(i)
        return val


def _plain(term: LossTerm, keys: list[str], vals: Sequence[float]) -> dict[str, Any]:
    """Parameter values as the Python types of the loss's defaults (bool, int or float)."""
    out: dict[str, Any] = {}
    for k, v in zip(keys, vals):
        default = term.loss.defaults.get(k)
        out[k] = bool(v) if isinstance(default, bool) else int(v) if isinstance(default, int) else float(v)
    return out


def _reaches(val: torch.Tensor, model: nn.Module) -> bool:
    """Whether the autograd graph of ``val`` leads to a parameter of ``model`` (a graph walk, no
    computation; done once per term)."""
    params = {id(p) for p in model.parameters()}
    seen: set[int] = set()
    stack = [val.grad_fn]
    while stack:
        fn = stack.pop()
        if fn is None or id(fn) in seen:
            continue
        seen.add(id(fn))
        if id(getattr(fn, "variable", None)) in params:
            return True
        stack.extend(nxt for nxt, _ in fn.next_functions)
    return False
