"""Memory estimate of a group of runs, and the refusal of one that cannot fit.

Training holds, per optimisation step, a few tensors of R x B x M elements (B the minibatch,
``train.batch_size``, or N for full batch): the hidden responses, the loss kernels and their
gradients; in 1-D above :data:`protoreg.model.banded.BANDED_MIN_ELEMENTS` (the banded kernels) only
R x B x band tensors, unless a loss reads ``ctx.hidden`` (any loss but
:data:`HIDDEN_FREE_LOSSES` is assumed to). Evaluation streams over chunks of samples (:func:`protoreg.evaluation.evaluate.eval_chunk`); the exact
matching holds one float64 N x M cost matrix in d >= 2 (:func:`protoreg.evaluation.matching.matching_bytes`). :func:`check_memory`
compares the estimate with the memory available (``/proc/meminfo`` ``MemAvailable`` on Linux,
``os.sysconf`` elsewhere, the free memory of the GPU for CUDA training) and refuses with a
one-line :class:`~protoreg.errors.ConfigError` naming ``train.batch_size`` before anything is
written. The environment variable ``PROTOREG_MEMORY_LIMIT`` (bytes, or with a suffix K, M, G, T:
``PROTOREG_MEMORY_LIMIT=2G``) replaces the detected amount.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import Iterable

import torch

from protoreg.model import banded
from protoreg.model.mlp import forward_path
from protoreg.errors import ConfigError
from protoreg.evaluation.evaluate import EVAL_CHUNK_ELEMENTS
from protoreg.geometry import check_bytes
from protoreg.evaluation.matching import matching_bytes

#: Environment variable that sets the memory available, in bytes (suffixes K, M, G, T).
MEMORY_LIMIT_ENV = "PROTOREG_MEMORY_LIMIT"

#: R x B x M tensors alive at the peak of one training step (forward, loss kernels, backward);
#: measured: a 1-D step with B = 1,024 and M = 100,000 in float32 peaks 2.8 GB above the idle process.
STEP_TENSORS = 8
#: Extra R x M x M tensors of a loss that compares every pair of prototypes (``separation``).
PAIR_TENSORS = 4
#: R x chunk x M tensors alive while evaluating one chunk.
EVAL_TENSORS = 4
#: Losses whose memory grows with M x M.
PAIRWISE_LOSSES = ("separation",)
#: Built-in losses that never read ``ctx.hidden``: with only these, a banded step (d = 1, see
#: :mod:`protoreg.model.banded`) never builds an R x B x M tensor.
HIDDEN_FREE_LOSSES = ("coverage", "separation")
#: Band width (units per sample, the wide units included) assumed for a banded step: a uniform
#: layer needs a few dozen (float32) to about a hundred (float64).
BAND_UNITS = 512
#: Bytes per unit and run of a banded step (sorted prototypes, radii, index arrays, gradients).
BAND_UNIT_BYTES = 256

_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}


@dataclass(frozen=True)
class Estimate:
    """Peak memory of training and evaluating a group, in bytes, and where it goes."""

    step: int  #: one training step
    evaluation: int  #: one evaluation chunk and the exact matching
    fixed: int  #: data, parameters and Adam's moments
    checks: int = 0  #: the geometry checks (hull and collapse), at their peak

    @property
    def peak(self) -> int:
        return self.fixed + max(self.step, self.evaluation, self.checks)


def _dtype(itemsize: int) -> torch.dtype | None:
    return {4: torch.float32, 8: torch.float64}.get(itemsize)


def banded_step(*, width: int, dim: int, runs: int = 1, batch: int, itemsize: int = 4, losses: Iterable[str] = ()) -> bool:
    """Whether a training step of ``runs`` runs on ``batch`` samples of ``dim`` inputs with
    ``width`` units runs the banded 1-D kernels (:func:`protoreg.model.mlp.forward_path`) without an
    R x B x M tensor: every active loss is one of :data:`HIDDEN_FREE_LOSSES`."""
    dtype = _dtype(itemsize)
    if dtype is None or not all(name in HIDDEN_FREE_LOSSES for name in losses):
        return False
    return forward_path(radial=dim > 1, runs=runs, samples=batch, width=width, dim=dim, dtype=dtype, device=torch.device("cpu")) == "banded"


def estimate(
    *,
    n: int,
    width: int,
    dim: int,
    out: int,
    runs: int = 1,
    batch_size: int | None = None,
    itemsize: int = 4,
    losses: Iterable[str] = (),
    banded_training: bool = False,
) -> Estimate:
    """Peak bytes of a group of ``runs`` runs with N = ``n`` samples of ``dim`` inputs and ``out``
    targets, M = ``width`` units, minibatch ``batch_size`` (None: full batch), ``itemsize``
    bytes per element (4: float32), active ``losses``. ``banded_training``: the step runs the
    banded kernels (:func:`banded_step`; R x B x :data:`BAND_UNITS` instead of R x B x M
    tensors). Evaluation is banded wherever :func:`protoreg.model.mlp.forward_path` says so."""
    b = min(batch_size or n, n)
    dtype = _dtype(itemsize)
    if banded_training:
        # R x B x band tensors (long indices included) and the O(R M) sorting
        step = STEP_TENSORS * runs * b * BAND_UNITS * 8 + BAND_UNIT_BYTES * runs * width
    else:
        step = STEP_TENSORS * runs * b * width * itemsize
    if any(name in PAIRWISE_LOSSES for name in losses):
        step += PAIR_TENSORS * runs * width * width * itemsize
    if dtype is not None and forward_path(radial=dim > 1, runs=runs, samples=n, width=width, dim=dim, dtype=dtype, device=torch.device("cpu")) == "banded":
        kernels = EVAL_TENSORS * banded.BANDED_EVAL_ELEMENTS * 8 + BAND_UNIT_BYTES * runs * width
    else:
        chunk = min(n, max(1, EVAL_CHUNK_ELEMENTS // max(1, runs * width)))
        kernels = EVAL_TENSORS * runs * chunk * width * itemsize
    evaluation = kernels + matching_bytes(width, n, dim) + 16 * 8 * (n + width)
    fixed = runs * (3 * n * (dim + out) + 4 * width * (dim + out + 2)) * itemsize
    return Estimate(step, evaluation, fixed, checks=check_bytes(runs, n, width, dim))


def _parse_bytes(text: str) -> int:
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMGT]?)i?B?\s*", text, flags=re.IGNORECASE)
    if not m:
        raise ConfigError(f"{MEMORY_LIMIT_ENV}: expected bytes such as 2000000000 or 2G, got {text!r}")
    return int(float(m.group(1)) * _UNITS[m.group(2).upper()])


def available_bytes(device: str = "cpu") -> int | None:
    """Memory available for new allocations: ``PROTOREG_MEMORY_LIMIT`` when set; for ``cuda``
    the GPU's free memory (``torch.cuda.mem_get_info``); else ``MemAvailable`` of
    ``/proc/meminfo``, or free pages times the page size from ``os.sysconf``. None if unknown."""
    limit = os.environ.get(MEMORY_LIMIT_ENV)
    if limit:
        return _parse_bytes(limit)
    if device == "cuda":
        return int(torch.cuda.mem_get_info()[0])
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return int(os.sysconf("SC_AVPHYS_PAGES")) * int(os.sysconf("SC_PAGE_SIZE"))
    except (AttributeError, ValueError, OSError):
        return None


def training_device(accelerator: str) -> str:
    """``cuda`` when ``trainer.accelerator`` will train on a CUDA GPU, else ``cpu``."""
    acc = str(accelerator).lower()
    return "cuda" if acc in ("gpu", "cuda") or (acc == "auto" and torch.cuda.is_available()) else "cpu"


def _gb(n: int) -> str:
    return f"{n / 1e9:.2f} GB"


def check_memory(
    *, n: int, width: int, dim: int, out: int, runs: int = 1, batch_size: int | None = None, itemsize: int = 4, losses: Iterable[str] = (), accelerator: str = "auto"
) -> Estimate:
    """The :func:`estimate` (a banded step where :func:`banded_step` says so), or a
    :class:`ConfigError` naming ``train.batch_size`` when it exceeds :func:`available_bytes`
    (tensors on the training device, matching on the host)."""
    losses = list(losses)
    b = min(batch_size or n, n)
    band = banded_step(width=width, dim=dim, runs=runs, batch=b, itemsize=itemsize, losses=losses)
    est = estimate(n=n, width=width, dim=dim, out=out, runs=runs, batch_size=batch_size, itemsize=itemsize, losses=losses, banded_training=band)
    device = training_device(accelerator)
    matching = matching_bytes(width, n, dim)  # on the host
    needs = [(device, est.peak)] if device == "cpu" else [(device, est.fixed + max(est.step, est.evaluation - matching, est.checks)), ("cpu", matching)]
    for where, need in needs:
        have = available_bytes(where)
        if have is not None and need > have:
            b = min(batch_size or n, n)
            mem = f"{'GPU ' if where == 'cuda' else ''}memory"
            if est.step >= max(est.evaluation, est.checks) or where != device:
                pair = " + M x M pairs of " + ", ".join(x for x in losses if x in PAIRWISE_LOSSES) if any(x in PAIRWISE_LOSSES for x in losses) else ""
                raise ConfigError(
                    f"train.batch_size: training needs about {_gb(need)} ({runs} run(s) x batch {b} x width {width}{pair}, "
                    f"{itemsize * 8}-bit) but {_gb(have)} of {mem} is available; "
                    f"lower train.batch_size (or model.width, data.n)"
                )
            what = "the geometry checks" if est.checks >= est.evaluation else "the evaluation and matching"
            raise ConfigError(
                f"model.width: {what} need about {_gb(need)} ({runs} run(s) x {n} samples x width {width} in {dim}-D; "
                f"a smaller train.batch_size does not help) but {_gb(have)} of {mem} is available; "
                f"lower model.width (or data.n)"
            )
    return est
