"""Lightning plumbing shared by every group of runs: the Trainer, signals, quiet logs, checkpoints."""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import platform
import signal
import threading
import time
import warnings
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

import lightning.pytorch as pl
import torch
from lightning.pytorch.loggers import TensorBoardLogger

from protoreg.errors import ConfigError, first_line
from protoreg.rundirs.io import naming, replacing
from protoreg.frontend.voice import on_command_line
from protoreg.training.module import ProtoRegModule
from protoreg.training.terms import ForcedStop

#: Seconds a second SIGINT/SIGTERM gives the program to stop before the process exits (130)
#: without writing anything more: what a plugin that swallows the stop gets.
FORCE_EXIT_SECONDS = 5.0


def make_trainer(trainer_kwargs: Mapping[str, Any], log_dir: Path | None, callbacks: Sequence[Any], *, tb_name: str = "tb") -> pl.Trainer:
    """A Lightning Trainer for one epoch of chunks, logging to ``log_dir/tb_name`` (none if None).

    ``trainer_kwargs`` is the ``trainer`` config section; Lightning's own complaints about it
    become a :class:`ConfigError` naming ``trainer``.
    """
    logger: Any = False
    if log_dir is not None:
        logger = TensorBoardLogger(str(log_dir), name=tb_name, version="", default_hp_metric=False)
    try:
        with quiet_lightning():
            return pl.Trainer(
                max_epochs=1,
                logger=logger,
                callbacks=[*callbacks, WriterHealth()] if logger else list(callbacks),
                enable_checkpointing=False,
                enable_progress_bar=False,
                enable_model_summary=False,
                log_every_n_steps=1,
                num_sanity_val_steps=0,
                **dict(trainer_kwargs),
            )
    except Exception as exc:  # noqa: BLE001 - Lightning's own validation of trainer.*
        line = first_line(exc)
        raise ConfigError(f"trainer: {line}") from None


@contextlib.contextmanager
def quiet_lightning() -> Iterator[None]:
    """Silence Lightning's informational chatter (device banners, tips) during a run."""
    names = ("lightning.pytorch", "lightning.fabric", "pytorch_lightning", "lightning_fabric")
    saved = {n: logging.getLogger(n).level for n in names}
    for n in names:
        logging.getLogger(n).setLevel(logging.WARNING)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*does not have many workers.*")
            warnings.filterwarnings("ignore", message=".*`training_step` returned `None`.*")
            warnings.filterwarnings("ignore", message=".*Checkpoint directory.*exists and is not empty.*")
            warnings.filterwarnings("ignore", message=".*LeafSpec.*")
            yield
    finally:
        for n, lvl in saved.items():
            logging.getLogger(n).setLevel(lvl)


#: glibc ``mallopt`` settings training applies (once per process, :func:`tune_allocator`): blocks
#: up to 32 MB come from (and go back to) the heap instead of fresh ``mmap`` pages, and up to
#: 256 MB of freed heap is kept for the next step.
MALLOC_SETTINGS: dict[str, int] = {"M_MMAP_THRESHOLD": 32 << 20, "M_TRIM_THRESHOLD": 256 << 20}
_MALLOPT_PARAM = {"M_TRIM_THRESHOLD": -1, "M_MMAP_THRESHOLD": -3}
_allocator_tuned: bool | None = None


def tune_allocator() -> bool:
    """Stop glibc's allocator from returning every large tensor to the kernel (once per process).

    With its default dynamic thresholds, glibc serves the per-step tensors of a large problem
    (tens of MB: a 1,797 x 1,797 float64 block is 26 MB) with ``mmap`` and unmaps them when
    freed, so every optimisation step page-faults its memory in again: on 64-D digits with
    M = N = 1,797 that was about 3.6 million page faults and 7 of the 55 CPU seconds of 200
    steps. :data:`MALLOC_SETTINGS` keep such blocks in the heap. Only glibc is touched, only
    once, and ``PROTOREG_MALLOC_TUNING=0`` leaves the allocator alone. Returns whether the
    settings are in effect.
    """
    global _allocator_tuned
    if _allocator_tuned is None:
        _allocator_tuned = False
        if os.environ.get("PROTOREG_MALLOC_TUNING", "1").strip() != "0" and platform.libc_ver()[0] == "glibc":
            try:
                mallopt = ctypes.CDLL(None).mallopt
                mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
                _allocator_tuned = all(mallopt(_MALLOPT_PARAM[k], v) == 1 for k, v in MALLOC_SETTINGS.items())
            except (OSError, AttributeError):  # no mallopt in this C library
                _allocator_tuned = False
    return _allocator_tuned


@contextlib.contextmanager
def flush_denormal() -> Iterator[None]:
    """Treat subnormal floats as zero on CPU while training.

    Far-away Gaussian units give ``exp(-z**2)`` in the subnormal range (float32: ``z**2`` of about
    87-103), where x86 arithmetic is 10-100x slower; a group of many runs is then dominated by
    them. Flushing changes values below ~1e-38 (float32) / ~1e-308 (float64) only, and is the same
    for ``fit`` and ``sweep`` so that a run trained in a group equals the run trained alone.
    """
    ok = torch.set_flush_denormal(True)
    try:
        yield
    finally:
        if ok:
            torch.set_flush_denormal(False)


class StopOnSignals(pl.Callback):
    """SIGINT/SIGTERM stop training after the current optimisation step instead of killing the
    process; the previous handlers come back when training ends (or fails).

    A second signal stops at once, even inside a loss that never returns: it raises
    :class:`~protoreg.training.terms.ForcedStop` where the program is. When that is a loss, the
    step is abandoned before any parameter changed and the runs fail naming the loss (the run
    directory is written); anywhere else training ends with ``KeyboardInterrupt`` and nothing more
    is written. On the command line only: if the program still runs :data:`FORCE_EXIT_SECONDS`
    later (a plugin swallowed the stop), the process exits with status 130. From the Python API
    the process is the caller's: every further signal raises again, and the caller gets
    ``KeyboardInterrupt`` once the run directory is consistent, as Python does.

    Installed when fitting is set up and again at ``on_train_start``, after Lightning's own
    SIGTERM handler, so ours wins and the run is recorded as interrupted."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self) -> None:
        self._old: dict[int, Any] = {}
        self._released = threading.Event()

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        self._install(pl_module)

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._install(pl_module)

    def _install(self, pl_module: pl.LightningModule) -> None:
        if threading.current_thread() is not threading.main_thread():
            return
        assert isinstance(pl_module, ProtoRegModule)
        self._released.clear()
        for sig in self.SIGNALS:
            old = signal.signal(sig, lambda signum, frame: self._on_signal(pl_module, signum))
            self._old.setdefault(sig, old)

    def _on_signal(self, module: ProtoRegModule, signum: int) -> None:
        name = signal.Signals(signum).name
        if not module.stop_requested:
            module.request_stop(signum)
            _say(f"protoreg: {name}: stopping after the current step (send it again to stop at once)")
            return
        module.forced_signal = signum
        if on_command_line():  # ending the process is the command's choice, never the library's
            threading.Thread(target=self._exit_unless_stopped, args=(module, name), daemon=True).start()
        raise ForcedStop(signum)

    def _exit_unless_stopped(self, module: ProtoRegModule, name: str) -> None:
        """End the process unless training stopped (or ended) within FORCE_EXIT_SECONDS."""
        deadline = time.monotonic() + FORCE_EXIT_SECONDS
        while time.monotonic() < deadline:
            if self._released.wait(0.05) or module.stopped_reason is not None:
                return
        _say(f"protoreg: error: still running {FORCE_EXIT_SECONDS:g}s after a second {name}; exiting without writing more")
        os._exit(130)

    def restore(self) -> None:
        """Put the previous handlers back (idempotent)."""
        for sig, old in self._old.items():
            signal.signal(sig, old)
        self._old.clear()
        self._released.set()

    def teardown(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        self.restore()

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        self.restore()


def _say(line: str) -> None:
    """One line on stderr, safe from a signal handler (no buffered stream involved)."""
    try:
        os.write(2, (line + "\n").encode())
    except OSError:
        pass


def fit_chunks(module: ProtoRegModule, trainer: pl.Trainer) -> None:
    """Train ``module`` for its remaining steps.

    A second signal that stops training outside a loss ends here as ``KeyboardInterrupt`` (exit
    130 on the command line), after the signal handlers were put back."""
    try:
        tune_allocator()
        with quiet_lightning(), flush_denormal(), _writer_failures_reported_here():
            trainer.fit(module, train_dataloaders=module.chunks())
    except OSError as exc:  # a full disk or a file-size limit: name the file
        if exc.filename:
            raise
        raise naming(exc, _events_file(trainer) or "TensorBoard events file") from None
    except ForcedStop as exc:
        raise KeyboardInterrupt(f"stopped by a second {signal.Signals(exc.signum).name}") from None
    finally:
        for cb in trainer.callbacks:  # type: ignore[attr-defined]  # set by Lightning's callback connector, not declared on Trainer
            if isinstance(cb, StopOnSignals):
                cb.restore()


def save_checkpoint(trainer: pl.Trainer, path: Path) -> None:
    """The trainer's checkpoint at ``path``, written atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with replacing(path) as tmp:
        trainer.save_checkpoint(str(tmp), weights_only=False)


class WriterHealth(pl.Callback):
    """Stops training at the first chunk after the TensorBoard writer failed (a full disk, a
    file-size limit) instead of training on until the writer is next flushed; the error names
    the events file."""

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int) -> None:
        exp = getattr(trainer.logger, "experiment", None) if trainer.logger is not None else None
        flush = getattr(exp, "flush", None)
        if callable(flush):
            flush()  # re-raises the writer thread's failure, if any


def _events_file(trainer: pl.Trainer) -> str | None:
    """The newest TensorBoard events file of ``trainer``'s logger (None without one)."""
    log_dir = getattr(trainer.logger, "log_dir", None) if trainer.logger is not None else None
    if not log_dir:
        return None
    files = sorted(Path(log_dir).glob("events.out.tfevents.*"), key=lambda p: p.stat().st_mtime)
    return str(files[-1]) if files else str(log_dir)


@contextlib.contextmanager
def _writer_failures_reported_here() -> Iterator[None]:
    """While training, an I/O failure in TensorBoard's writer thread is not printed as that
    thread's traceback: it reaches the caller as the training's one error (see
    :class:`WriterHealth`). Every other thread's exception goes to the hook that was installed;
    the hook is put back afterwards."""
    previous = threading.excepthook

    def hook(args: Any) -> None:
        if isinstance(args.exc_value, OSError) and type(args.thread).__name__ == "_AsyncWriterThread":
            return
        previous(args)

    threading.excepthook = hook
    try:
        yield
    finally:
        if threading.excepthook is hook:
            threading.excepthook = previous
