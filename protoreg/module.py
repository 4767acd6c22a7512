"""``ProtoRegModule``: the LightningModule that trains R independent runs at once.

Per run r the objective is ``fit_mse_r + sum_k weight_{k,r} * L_k,r``; the optimised scalar is the
sum over runs, so each run's gradients depend on its own loss only (Adam is element-wise, so the
runs stay independent through the optimiser too).

Full-batch training over a fixed dataset does not need a data loader: one Lightning *batch* is a
chunk of ``chunk`` optimisation steps run in a tight loop (manual optimisation). Lightning's
per-batch machinery (hooks, logging, callbacks, checkpointing) then runs once per chunk instead of
once per step, while every optimisation step is a plain PyTorch step. ``step`` everywhere in
protoreg (TensorBoard x-axis, geometry checks, ``expelled_at_step``) counts optimisation steps.
"""

from __future__ import annotations

import math
import signal
import threading
from dataclasses import dataclass, field
from typing import Any, Iterator, Mapping, Sequence

import lightning.pytorch as pl
import torch

from .api import LossContext, StructuralLoss
from .errors import LossError
from .metrics import fit_mse
from .model import GaussianMLP, sample_spacing


@dataclass
class LossTerm:
    """A structural loss as configured for R runs: per-run weights and parameters."""

    name: str
    loss: StructuralLoss
    source: str
    weight: list[float]  #: one per run
    params: dict[str, list[Any]] = field(default_factory=dict)  #: parameter -> one value per run


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
            return f"{self.reason} (at step {self.step} of run {self.run})"
        return f"{self.reason} in {self.term!r} ({self.source}) at step {self.step} of run {self.run}"


class _ChunkIterable:
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
    """

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
    ) -> None:
        super().__init__()
        self.automatic_optimization = False
        self.model = model
        r = model.runs
        self.register_buffer("x", x)
        self.register_buffer("y", y)
        self.register_buffer("spacing", sample_spacing(x.double()).to(x.dtype))
        self.terms = [t for t in terms if any(w > 0 for w in t.weight)]
        w = torch.tensor([t.weight for t in self.terms], dtype=x.dtype).reshape(len(self.terms), r)
        self.register_buffer("weights", w)
        self._param_tensors: list[dict[str, torch.Tensor]] = []
        for i, t in enumerate(self.terms):
            tensors = {}
            for k, vals in t.params.items():
                name = f"param_{i}_{k}"
                self.register_buffer(name, torch.tensor([float(v) for v in vals], dtype=x.dtype))
                tensors[k] = name  # type: ignore[assignment]
            self._param_tensors.append(tensors)
        #: per term, the buffer holding the runs where it is on (None: all of them); buffers so
        #: they move with the module (no host-to-device copy per step), not saved in checkpoints
        self._on_runs: list[str | None] = []
        for i, row in enumerate(w):
            if bool((row > 0).all()):
                self._on_runs.append(None)
            else:
                self.register_buffer(f"on_runs_{i}", (row > 0).nonzero().flatten(), persistent=False)
                self._on_runs.append(f"on_runs_{i}")
        self.lr, self.steps, self.chunk = float(lr), int(steps), max(1, int(chunk))
        self.batch_size = batch_size if batch_size is not None and batch_size < x.shape[1] else None
        self.seeds = list(seeds) if seeds is not None else list(range(r))
        self.step_count = 0  #: optimisation steps done
        self.register_buffer("alive", torch.ones(r, dtype=torch.bool))
        self.failures: dict[int, RunFailure] = {}
        self.fail_fast = True  #: stop training when any run fails (fit); sweeps set False
        self.stop_event = threading.Event()  #: set from a signal handler to stop after this step
        self.stop_signal: int | None = None
        self.handle_signals = False  #: take SIGINT/SIGTERM during training (set by the fit/sweep runners)
        self.stopped_reason: str | None = None
        self._checked: set[int] = set()
        self._frozen: dict[str, torch.Tensor] = {}
        self.last: dict[str, torch.Tensor] = {}

    # ------------------------------------------------------------- plumbing
    def configure_optimizers(self) -> torch.optim.Optimizer:
        opt = torch.optim.Adam(self.model.parameters(), lr=self.lr)
        state = getattr(self, "_resume_optimizer_state", None)
        if state is not None:  # continuing a run: Adam's moments and step counts as they were
            opt.load_state_dict(state)
            self._resume_optimizer_state = None
        return opt

    def chunks(self) -> _ChunkIterable:
        """The iterable for ``Trainer.fit``: enough chunks for the remaining steps.

        Chunks end on multiples of ``chunk`` (a run resumed at step 23 with chunk 10 first trains
        to step 30), so logging and geometry checks happen at the same steps as in an
        uninterrupted run."""
        if self.step_count >= self.steps:
            return _ChunkIterable(0)
        return _ChunkIterable(math.ceil(self.steps / self.chunk) - self.step_count // self.chunk)

    def term_params(self, i: int) -> dict[str, torch.Tensor]:
        return {k: getattr(self, buf) for k, buf in self._param_tensors[i].items()}

    # ------------------------------------------------------------ objective
    def _call_loss(self, i: int, ctx: LossContext) -> torch.Tensor:
        """Loss ``i`` per run; runs where its weight is 0 are not evaluated (their value is 0),
        so a loss that is off in a run can never fail that run."""
        term = self.terms[i]
        params = self.term_params(i)
        buf = self._on_runs[i]
        try:
            if buf is None:
                return self._eval_loss(i, ctx, params)
            idx = getattr(self, buf)
            sub = ctx.select(idx)
            val = self._eval_loss(i, sub, {k: v[idx] for k, v in params.items()})
            return ctx.x.new_zeros(ctx.runs).index_add(0, idx, val)
        except LossError:
            raise
        except Exception as exc:  # noqa: BLE001 - a plugin's bug, reported by name
            raise LossError(
                f"loss {term.name!r} ({term.source}) raised {type(exc).__name__}: {exc}"
            ) from exc

    def _eval_loss(self, i: int, ctx: LossContext, params: dict[str, torch.Tensor]) -> torch.Tensor:
        term = self.terms[i]
        loss = term.loss
        if loss.vectorized:
            return self._checked_output(i, loss(ctx, **params), ctx.runs, ctx)
        # Plain-number parameters: evaluate runs that share values together.
        keys = list(params)
        rows = torch.stack([params[k] for k in keys], 1).tolist() if keys else [[] for _ in range(ctx.runs)]
        groups: dict[tuple[float, ...], list[int]] = {}
        for run, row in enumerate(rows):
            groups.setdefault(tuple(row), []).append(run)
        if len(groups) == 1:
            (vals,) = groups
            return self._checked_output(i, loss(ctx, **self._plain(term, keys, vals)), ctx.runs, ctx)
        out = ctx.x.new_zeros(ctx.runs)
        for vals, runs in groups.items():
            idx = torch.tensor(runs, device=ctx.x.device)
            sub = ctx.select(idx)
            val = self._checked_output(i, loss(sub, **self._plain(term, keys, vals)), len(runs), sub)
            out = out.index_add(0, idx, val)
        return out

    @staticmethod
    def _plain(term: LossTerm, keys: list[str], vals: Sequence[float]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for k, v in zip(keys, vals):
            default = term.loss.defaults.get(k)
            out[k] = bool(v) if isinstance(default, bool) else int(v) if isinstance(default, int) else float(v)
        return out

    def _checked_output(self, i: int, val: Any, runs: int, ctx: LossContext) -> torch.Tensor:
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
        self._checked.add(i)
        return val

    def objective(
        self, x: torch.Tensor, y: torch.Tensor
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor], torch.Tensor, torch.Tensor, torch.Tensor]:
        """Per-run values: ``(total (R,), {"fit": (R,), name: (R,)}, hidden, pred, prototypes)``."""
        hidden, pred = self.model(x)
        values = {"fit": fit_mse(pred, y)}
        total = values["fit"]
        protos = self.model.prototypes()
        if self.terms:
            ctx = LossContext(x=x, y=y, hidden=hidden, pred=pred, prototypes=protos, spacing=self.spacing, model=self.model)
            for i, term in enumerate(self.terms):
                val = self._call_loss(i, ctx)
                values[term.name] = val
                total = total + self.weights[i] * val
        return total, values, hidden, pred, protos

    # ------------------------------------------------------------- training
    def _batch(self) -> tuple[torch.Tensor, torch.Tensor]:
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

    def _grads_finite(self) -> torch.Tensor:
        ok = torch.ones_like(self.alive)
        for p in self.model.parameters():
            if p.grad is not None:
                ok &= torch.isfinite(p.grad).flatten(1).all(1)
        return ok

    def _fail(self, bad: torch.Tensor, values: Mapping[str, torch.Tensor], total: torch.Tensor) -> None:
        for run in bad.nonzero().flatten().tolist():
            term, source, reason = "fit", "protoreg (built-in)", "non-finite gradient"
            for name, val in values.items():
                v = float(val[run].detach())
                if not math.isfinite(v):
                    term, reason = name, f"non-finite value {v}"
                    if name != "fit":
                        source = next(t.source for t in self.terms if t.name == name)
                    break
            else:
                if not bool(torch.isfinite(total[run])):
                    reason = "non-finite total loss"
            self.failures[run] = RunFailure(run, self.step_count, term, source, reason)
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

    def dry_run(self) -> None:
        """Evaluate every loss once (with gradients) so a faulty plugin is reported before any
        output exists: wrong shape, dtype, device, no gradient path, or an exception."""
        with torch.enable_grad():
            total, *_ = self.objective(*self._batch())
            if not total.requires_grad:
                raise LossError("the objective has no gradient path to the model parameters")

    def _fail_all(self, exc: LossError) -> None:
        for run in self.alive.nonzero().flatten().tolist():
            self.failures[run] = RunFailure(run, self.step_count, "?", "?", str(exc))
        self.alive &= False
        with torch.no_grad():
            for name, p in self.model.named_parameters():
                self._frozen[name] = p.detach().clone()

    def optimisation_step(self, opt: torch.optim.Optimizer) -> None:
        """One plain PyTorch step over all live runs (failed runs stay frozen)."""
        opt.zero_grad(set_to_none=True)
        x, y = self._batch()
        try:
            total, values, _, _, _ = self.objective(x, y)
        except LossError as exc:  # a plugin that raises mid-training: keep what finished
            self._fail_all(exc)
            return
        live_total = torch.where(self.alive, total, torch.zeros_like(total))
        live_total.sum().backward()
        bad = self.alive & ~(torch.isfinite(total) & self._grads_finite())
        if bool(bad.any()):
            self._fail(bad, values, total)
            if not bool(self.alive.any()):
                return
        opt.step()
        if self._frozen:
            self._restore_frozen()
        self.step_count += 1
        self.last = {k: v.detach() for k, v in values.items()}
        self.last["total"] = total.detach()

    def on_signal(self, signum: int, frame: Any = None) -> None:
        """Signal handler: finish the current step, then stop cleanly."""
        self.stop_signal = signum
        self.stop_event.set()

    def on_train_start(self) -> None:
        # Lightning installs its own SIGTERM handler when fitting starts; ours must win so that
        # the run directory is completed and marked "interrupted".
        if self.handle_signals and threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                signal.signal(sig, self.on_signal)

    def training_step(self, batch: Any, batch_idx: int) -> None:
        opt = self.optimizers()
        raw = opt.optimizer if hasattr(opt, "optimizer") else opt
        n = min(self.chunk - self.step_count % self.chunk, self.steps - self.step_count)
        for _ in range(n):
            self.optimisation_step(raw)
            if self.failures and (self.fail_fast or not bool(self.alive.any())):
                self.stopped_reason = "failed"
                break
            if self.stop_event.is_set():
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
