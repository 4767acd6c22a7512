"""``ProtoRegModule``: the LightningModule that trains a group of R independent runs at once.

Per run r the objective is ``fit_mse_r + sum_k weight_{k,r} * L_k,r``; the optimised scalar is the
sum over runs, so each run's gradients depend on its own loss only (Adam is element-wise, so the
runs stay independent through the optimiser too).

Full-batch training over a fixed dataset does not need a data loader: one Lightning *batch* is a
*chunk* of ``chunk`` optimisation steps run in a tight loop (manual optimisation). Lightning's
per-batch machinery (hooks, logging, callbacks, checkpointing) then runs once per chunk instead of
once per step, while every optimisation step is a plain PyTorch step on a *minibatch* of samples
(``batch_size``; all samples by default). ``step`` everywhere in protoreg (TensorBoard x-axis,
geometry checks, ``expelled_at_step``) counts optimisation steps.
"""

from __future__ import annotations

import math
import threading
from typing import Any, Callable, Iterator, Mapping, Sequence, cast

import lightning.pytorch as pl
import torch

from protoreg.plugin_api import LossContext
from protoreg.model.banded import LazyHiddenContext
from protoreg.frontend.caller import warn
from protoreg.errors import CompileWarning, LossError, first_line
from protoreg.evaluation.evaluate import fit_mse
from protoreg.model.mlp import GaussianMLP, sample_spacing
from protoreg.training.diagnosis import RunFailure, diagnose, every_run, finite_per_run, gradient_culprits, stopped_by_signal, term_source
from protoreg.training.terms import ForcedStop, LossTerm, LossTerms

#: Why training stopped before ``steps``: a run failed (fit), a signal, or the geometry check.
STOP_REASONS = ("failed", "interrupted", "expulsion")


class _Chunks:
    """What the Trainer iterates over: one item per chunk of optimisation steps."""

    def __init__(self, n: int) -> None:
        self.n = n

    def __len__(self) -> int:
        return self.n

    def __iter__(self) -> Iterator[int]:
        return iter(range(self.n))


class ProtoRegModule(pl.LightningModule):
    """Trains a :class:`GaussianMLP` of R runs on per-run data under structural losses.

    Parameters
    ----------
    model : GaussianMLP
        Already initialised.
    x, y : Tensor (R, N, d), (R, N, k)
        Training data of each run.
    terms : list of LossTerm
        Configured structural losses (inactive ones, weight 0 in every run, are skipped).
    lr, steps, chunk : float, int, int
        Adam learning rate, total optimisation steps, steps per Lightning batch.
    batch_size : int or None
        Samples per step (a shared random permutation per step, rotated by the run's seed), or
        None for full batch.
    seeds : sequence of int
        One per run (minibatch rotation).
    fail_fast : bool
        Stop training when any run fails (``fit``); otherwise a failed run is frozen and the
        others go on (``sweep``).
    compile : bool
        ``torch.compile`` the objective of each step (``train.compile``); where compilation is
        unavailable or fails, one warning and the eager objective.
    keep_data : bool
        Save the training data in checkpoints (``output.save_data``); without it a resumed run
        regenerates the data from its config.
    """

    #: buffers, registered in ``__init__`` (declared here for the type checker)
    x: torch.Tensor  #: (R, N, d)
    y: torch.Tensor  #: (R, N, k)
    spacing: torch.Tensor  #: (R,)
    alive: torch.Tensor  #: (R,) bool, False once a run failed

    def __init__(
        self,
        model: GaussianMLP,
        x: torch.Tensor,
        y: torch.Tensor,
        terms: Sequence[LossTerm],
        *,
        lr: float,
        steps: int,
        chunk: int = 50,
        batch_size: int | None = None,
        seeds: Sequence[int] | None = None,
        fail_fast: bool = True,
        keep_data: bool = True,
        compile: bool = False,
    ) -> None:
        super().__init__()
        self.automatic_optimization = False
        self.model = model
        r = model.runs
        self.register_buffer("x", x, persistent=keep_data)
        self.register_buffer("y", y, persistent=keep_data)
        self.register_buffer("spacing", sample_spacing(x.double()).to(x.dtype))
        self.loss_terms = LossTerms(terms, r, x.dtype)
        self.lr, self.steps, self.chunk = float(lr), int(steps), max(1, int(chunk))
        self.batch_size = batch_size if batch_size is not None and batch_size < x.shape[1] else None
        self.seeds = list(seeds) if seeds is not None else list(range(r))
        self.fail_fast = fail_fast
        #: the objective of a training step: eager, or ``torch.compile``'d (``train.compile``)
        self._step_objective: Any = _CompiledObjective(self.objective, eager_reason=self._eager_reason) if compile else self.objective
        self.step_count = 0  #: optimisation steps done
        self.register_buffer("alive", torch.ones(r, dtype=torch.bool))
        self.failures: dict[int, RunFailure] = {}
        self.stopped_reason: str | None = None  #: one of :data:`STOP_REASONS`, or None
        self.stop_signal: int | None = None
        #: the signal of a second SIGINT/SIGTERM (stop at once), when one arrived
        self.forced_signal: int | None = None
        self._stop_event = threading.Event()
        self._frozen: dict[str, torch.Tensor] = {}
        self._optimizer_state: dict[str, Any] | None = None
        self.last: dict[str, torch.Tensor] = {}

    # ------------------------------------------------------------- control
    def request_stop(self, signum: int | None = None) -> None:
        """Finish the current optimisation step, then stop cleanly (safe from a signal handler)."""
        self.stop_signal = signum
        self._stop_event.set()

    @property
    def stop_requested(self) -> bool:
        """Whether a stop was requested (a first SIGINT/SIGTERM)."""
        return self._stop_event.is_set()

    def stop_for_expulsion(self) -> None:
        """Stop at the end of this chunk because prototypes left the hull (``on_expulsion=stop``)."""
        self.stopped_reason = "expulsion"
        self.trainer.should_stop = True

    def restore(self, checkpoint: Mapping[str, Any]) -> None:
        """Continue from a checkpoint of the same run: weights, step, failures, Adam's state."""
        own = self.state_dict()
        self.load_state_dict({k: v for k, v in checkpoint["state_dict"].items() if k in own or not _legacy_key(k)})
        self.on_load_checkpoint(dict(checkpoint))
        self.failures = {}
        opt_states = checkpoint.get("optimizer_states") or []
        self._optimizer_state = opt_states[0] if opt_states else None

    # ------------------------------------------------------------- plumbing
    def configure_optimizers(self) -> torch.optim.Optimizer:
        opt = torch.optim.Adam(self.model.parameters(), lr=self.lr)
        if self._optimizer_state is not None:  # continuing a run: Adam's moments as they were
            opt.load_state_dict(self._optimizer_state)
            self._optimizer_state = None
        return opt

    def chunks(self) -> _Chunks:
        """The iterable for ``Trainer.fit``: enough chunks for the remaining steps.

        Chunks end on multiples of ``chunk`` (a run resumed at step 23 with chunk 10 first trains
        to step 30), so logging and geometry checks happen at the same steps as in an
        uninterrupted run."""
        if self.step_count >= self.steps:
            return _Chunks(0)
        return _Chunks(math.ceil(self.steps / self.chunk) - self.step_count // self.chunk)

    # ------------------------------------------------------------ objective
    def _eager_reason(self, x: torch.Tensor) -> str | None:
        """Why ``train.compile`` runs the step eagerly for samples like ``x``, or None."""
        if self.model.path(x) == "banded":
            return "the banded 1-D kernels have data-dependent shapes and run eagerly"
        return None

    def objective(
        self, x: torch.Tensor, y: torch.Tensor
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor], torch.Tensor | None, torch.Tensor, torch.Tensor]:
        """Per-run values: ``(total (R,), {"fit": (R,), name: (R,)}, hidden, pred, prototypes)``.

        In 1-D above :data:`protoreg.model.banded.BANDED_MIN_ELEMENTS` kernels per step the forward pass
        is banded, run by run (:func:`protoreg.model.banded.banded_pred`), and ``hidden`` is None: the losses get a
        :class:`~protoreg.model.banded.LazyHiddenContext` that computes the dense ``ctx.hidden`` only
        when one reads it. Radial units on large problems (:func:`protoreg.model.mlp.shares_sq_dists`)
        compute the squared distances once, for the hidden layer and ``ctx.sq_dists``."""
        hidden, pred, d2 = self.model.step(x)
        values = {"fit": fit_mse(pred, y)}
        total = values["fit"]
        protos = self.model.prototypes()
        if len(self.loss_terms):
            x_model = x
            if x is self.x:  # full batch: the plugins get copies, so the training data cannot change
                x, y = x.clone(), y.clone()
            if hidden is None:
                ctx: LossContext = LazyHiddenContext(x=x, y=y, hidden=lambda: self.model.hidden(x_model), pred=pred, prototypes=protos, spacing=self.spacing.clone(), model=self.model)
            else:
                ctx = LossContext(x=x, y=y, hidden=hidden, pred=pred, prototypes=protos, spacing=self.spacing.clone(), model=self.model, _sq_dists=d2)
            for i, (name, val) in enumerate(self.loss_terms(ctx).items()):
                values[name] = val
                total = total + self.loss_terms.weights[i] * val
        return total, values, hidden, pred, protos

    def dry_run(self) -> None:
        """Evaluate every loss once (with gradients) so a faulty plugin is reported before any
        output exists: wrong shape, dtype, device, no gradient path, or an exception."""
        with torch.enable_grad():
            total, *_ = self.objective(*self.minibatch())
            if not total.requires_grad:
                raise LossError("the objective has no gradient path to the model parameters")

    # ------------------------------------------------------------- training
    def minibatch(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The samples of this step: all of them, or ``batch_size`` per run."""
        if self.batch_size is None:
            return self.x, self.y
        n = self.x.shape[1]
        g = torch.Generator().manual_seed(1_000_003 * self.step_count + 17)
        perm = torch.randperm(n, generator=g)
        offs = torch.tensor([s % n for s in self.seeds])
        idx = (perm[: self.batch_size].unsqueeze(0) + offs.unsqueeze(1)) % n  # (R,B)
        idx = perm[idx].to(self.x.device)
        gather = lambda t: torch.gather(t, 1, idx.unsqueeze(-1).expand(-1, -1, t.shape[-1]))  # noqa: E731
        return gather(self.x), gather(self.y)

    def optimisation_step(self, opt: torch.optim.Optimizer) -> None:
        """One plain PyTorch step over all live runs (failed runs stay frozen)."""
        opt.zero_grad(set_to_none=True)
        x, y = self.minibatch()
        try:
            total, values, _, _, _ = self._step_objective(x, y)
            live_total = torch.where(self.alive, total, torch.zeros_like(total))
            live_total.sum().backward()
        except LossError as exc:  # a plugin that raises mid-training: keep what finished
            self._fail_all(exc)
            return
        except ForcedStop as exc:  # a second signal before the parameters changed: stop now
            self._force_stop(exc)
            return
        bad = self.alive & ~(torch.isfinite(total) & self._grads_finite())
        if bool(bad.any()):
            self._fail(bad, values, total, x, y)
            if not bool(self.alive.any()):
                return
        opt.step()
        if self._frozen:
            self._restore_frozen()
        self.step_count += 1
        self.last = {k: v.detach() for k, v in values.items()}
        self.last["total"] = total.detach()

    def training_step(self, batch: Any, batch_idx: int) -> None:
        """One chunk: optimisation steps up to the next multiple of ``chunk``."""
        opt = self.optimizers()
        raw = cast(torch.optim.Optimizer, opt.optimizer if hasattr(opt, "optimizer") else opt)  # one optimizer, unwrapped
        n = min(self.chunk - self.step_count % self.chunk, self.steps - self.step_count)
        for _ in range(n):
            self.optimisation_step(raw)
            if self.stopped_reason is not None:  # stopped at once by a second signal
                break
            if self.failures and (self.fail_fast or not bool(self.alive.any())):
                self.stopped_reason = "failed"
                break
            if self._stop_event.is_set():
                self.stopped_reason = "interrupted"
                break
        if self.stopped_reason is not None:
            self.trainer.should_stop = True
        self._log_scalars()

    def _log_scalars(self) -> None:
        if not self.last:
            return
        alive = self.alive
        logs: dict[str, Any] = {}
        for name, val in self.last.items():
            v = val[alive] if bool(alive.any()) else val
            tag = "loss/total" if name == "total" else f"loss/{name}"
            logs[tag] = v.float().mean()
        logs["step"] = float(self.step_count)
        self.log_dict(logs, on_step=True, on_epoch=False, prog_bar=False, batch_size=1)

    # ------------------------------------------------------------- failures
    def _grads_finite(self) -> torch.Tensor:
        return finite_per_run((p.grad for p in self.model.parameters()), self.alive)

    def _fail(self, bad: torch.Tensor, values: Mapping[str, torch.Tensor], total: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> None:
        """Record why each run of ``bad`` failed (:mod:`protoreg.training.diagnosis`) and freeze it
        as it was before this step."""

        def culprits(runs: Sequence[int]) -> dict[int, str]:  # this step's terms again, eagerly
            params = [p for p in self.model.parameters() if p.requires_grad]
            return gradient_culprits(self.objective, self.loss_terms.weights, params, self.alive, x, y, runs)

        self.failures.update(diagnose(bad, values, total, self.step_count, culprits=culprits, source=lambda term: term_source(term, self.loss_terms)))
        self.alive &= ~bad
        with torch.no_grad():
            for name, p in self.model.named_parameters():
                if p.grad is not None:
                    p.grad[bad] = 0.0
                snap = self._frozen.get(name)
                if snap is None:
                    snap = p.detach().clone()
                else:
                    snap[bad] = p.detach()[bad]
                self._frozen[name] = snap

    def _restore_frozen(self) -> None:
        dead = ~self.alive
        with torch.no_grad():
            for name, p in self.model.named_parameters():
                p[dead] = self._frozen[name][dead]

    def _fail_all(self, exc: LossError) -> None:
        self.failures.update(every_run(self.alive, self.step_count, "?", "?", str(exc)))
        self._freeze_all()

    def _freeze_all(self) -> None:
        self.alive &= False
        with torch.no_grad():
            for name, p in self.model.named_parameters():
                self._frozen[name] = p.detach().clone()

    def _force_stop(self, exc: ForcedStop) -> None:
        """A second SIGINT/SIGTERM arrived during this step's objective, before any parameter
        changed: stop now with every run as it was after the previous step. When a loss was being
        evaluated it is blamed: every live run fails naming it (a loss that does not return);
        otherwise the runs are interrupted (resumable)."""
        self.stop_signal = exc.signum
        self.stopped_reason = "interrupted"
        if exc.term is None:
            return
        self.failures.update(every_run(self.alive, self.step_count, exc.term.name, exc.term.source, stopped_by_signal(exc.signum)))
        self._freeze_all()

    # ---------------------------------------------------------- checkpoints
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["protoreg"] = {
            "step_count": self.step_count,
            "failures": {r: vars(f) for r, f in self.failures.items()},
        }

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        state = checkpoint.get("protoreg", {})
        self.step_count = int(state.get("step_count", 0))
        self.failures = {int(r): RunFailure(**f) for r, f in state.get("failures", {}).items()}


class _CompiledObjective:
    """``torch.compile`` of the objective, compiled at its first call; when compilation is
    unavailable (no C++ compiler, an unsupported platform) or fails, one :class:`CompileWarning`
    and the eager objective from then on. An error the eager objective raises too (a faulty
    plugin) is that error, not a compilation problem. ``eager_reason(x)``, when given, names a
    step that must run eagerly (the banded 1-D kernels): one warning with it, nothing compiled."""

    def __init__(self, eager: Any, eager_reason: Callable[[torch.Tensor], str | None] | None = None) -> None:
        self.eager = eager
        self.eager_reason = eager_reason
        self.compiled: Any = None
        self.ready = False

    def __call__(self, x: torch.Tensor, y: torch.Tensor) -> Any:
        if self.ready:
            return (self.compiled or self.eager)(x, y)
        self.ready = True
        reason = self.eager_reason(x) if self.eager_reason is not None else None
        if reason is not None:  # a step torch.compile cannot trace well: one warning, eager
            warn(f"train.compile: {reason}; training eagerly", CompileWarning)
            return self.eager(x, y)
        try:
            self.compiled = torch.compile(self.eager, dynamic=False)
            return self.compiled(x, y)
        except (LossError, ForcedStop):
            self.compiled = None
            raise
        except Exception as exc:  # noqa: BLE001 - any compiler failure: train eagerly
            self.compiled = None
            first = first_line(exc)
            warn(f"train.compile: torch.compile is unavailable here ({type(exc).__name__}: {first[:200]}); training eagerly", CompileWarning)
            return self.eager(x, y)


def _legacy_key(key: str) -> bool:
    """Loss weights and parameters, saved as module buffers by protoreg 0.1 checkpoints."""
    return key == "weights" or key.startswith("param_")
