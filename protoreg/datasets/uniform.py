"""``uniform``: ``data.n`` points uniform in the box ``[data.low, data.high]^data.dim``."""

from __future__ import annotations

import math
from typing import Any, Callable, Mapping

import numpy as np

from protoreg.datasets.rules import require
from protoreg.plugin_api import Dataset, hookimpl


class Uniform(Dataset):
    """Points uniform in a box; targets random or a sine of the inputs.

    Targets ``random`` (uniform in [0, 1]; the default) or ``sin`` (``mean_d sin(2 pi u_d)``, u
    the inputs scaled to [0, 1]). Seeded by the data seed.
    """

    name = "uniform"
    targets = ("random", "sin")
    defaults = {"dim": 1, "low": 0.0, "high": 1.0}

    def load(self, data: Mapping[str, Any], seed: int) -> tuple[np.ndarray, np.ndarray]:
        require(self, data)
        n, dim = int(data["n"]), int(self.param(data, "dim"))
        low, high = float(self.param(data, "low")), float(self.param(data, "high"))
        rng = np.random.default_rng(seed)
        x = low + (high - low) * rng.random((n, dim))
        if self.target(data) == "random":
            y = rng.random((n, 1))
        else:
            u = (x - low) / (high - low)
            y = np.sin(2 * math.pi * u).mean(axis=1, keepdims=True)
        return x, y


@hookimpl
def protoreg_register_datasets(register: Callable[..., None]) -> None:
    register(Uniform())
