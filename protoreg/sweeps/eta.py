"""The sweep's ETA: each remaining batch estimated from its size, calibrated on the batches
that have run.

A batch of R runs on N samples (a minibatch of B of them per step), width M, d inputs, trained
for S steps costs about ``S * c * (a + E)`` seconds, with ``E = R * B * M * d'`` the elements of
one step's distance computation (``d' = d`` for radial units, 1 for the 1-D parameterization)
and ``a`` the per-step work that does not grow with the problem (Python, PyTorch dispatch, Adam,
logging), in the same units. ``c`` is the machine's speed; ``a`` has the prior
:data:`FIXED_ELEMENTS`.

Both are fitted to the finished batches in log space (relative errors), ``a`` with a penalty
that keeps it at its prior unless the batches say otherwise: batches much smaller than ``a``
all cost about the same and cannot tell ``a`` apart from a larger one, so a handful of small
batches does not extrapolate their noise onto the large ones (a free two-parameter least
squares did: after three of the paper grid's six batches it predicted twice the time left).
The remaining batches' predicted seconds are scaled by the wall-clock time per trained second
observed so far, so each batch's setup, the writing of its records and parallel Ray tasks are
accounted for.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Sequence

#: The prior per-step fixed cost ``a`` in elements of ``R * B * M * d'``, measured on
#: configs/paper.yaml on 2 CPU cores: its six batches (E from 720 to 800,000) cost
#: 2.9e-5 to 3.5e-5 seconds per step and element of ``a + E`` with this value.
FIXED_ELEMENTS = 2.0e5

#: What a tenfold departure of ``a`` from its prior costs in the fit, in squared log residuals
#: (one batch mispredicted by about 30 %).
PRIOR_WEIGHT = 0.09

_GRID = [10 ** (k / 8) for k in range(-40, 25)]  # a / prior from 1e-5 to 1e3


@dataclass(frozen=True)
class BatchSize:
    """What the cost of a batch depends on."""

    steps: int
    elements: float  #: R * B * M * d' per step

    @classmethod
    def of(cls, runs: int, n: int, width: int, dim: int, steps: int, batch_size: int | None, radial: bool) -> "BatchSize":
        b = min(int(batch_size), n) if batch_size else n
        return cls(int(steps), float(runs) * b * width * (dim if radial else 1))


@dataclass
class EtaModel:
    """Predicted seconds of batches from the ones that have run (see the module docstring)."""

    fixed_elements: float = FIXED_ELEMENTS
    done: list[tuple[BatchSize, float]] = field(default_factory=list)  #: (size, training seconds)

    def add(self, size: BatchSize, seconds: float) -> None:
        if seconds > 0 and size.steps > 0:
            self.done.append((size, float(seconds)))

    def coefficients(self) -> tuple[float, float]:
        """``(c, a)``: seconds per step and element of ``a + E``, and the fixed part ``a``."""
        if not self.done:
            return 0.0, self.fixed_elements
        best: tuple[float, float, float] | None = None
        for ratio in _GRID:
            a = ratio * self.fixed_elements
            logs = [math.log(t) - math.log(s.steps * (a + s.elements)) for s, t in self.done]
            log_c = sum(logs) / len(logs)
            loss = sum((r - log_c) ** 2 for r in logs) + PRIOR_WEIGHT * math.log10(a / self.fixed_elements) ** 2
            if best is None or loss < best[0]:
                best = (loss, math.exp(log_c), a)
        assert best is not None
        return best[1], best[2]

    def predict(self, size: BatchSize) -> float:
        return self.predict_all([size])

    def predict_all(self, sizes: Sequence[BatchSize]) -> float:
        """Training seconds of ``sizes`` together (the fit made once)."""
        c, a = self.coefficients()
        return sum(s.steps * c * (a + s.elements) for s in sizes)

    def eta(self, remaining: Sequence[BatchSize], wall_elapsed: float) -> float:
        """Seconds left for the ``remaining`` batches, given the wall-clock time so far."""
        trained = sum(t for _, t in self.done)
        scale = wall_elapsed / trained if trained > 0 else 1.0
        return scale * self.predict_all(remaining)
