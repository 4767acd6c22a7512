"""``moons``: scikit-learn's two interleaved half circles in 2-D (``make_moons``)."""

from __future__ import annotations

from typing import Any, Callable

from protoreg.datasets._generated import Generated2D
from protoreg.plugin_api import hookimpl


class Moons(Generated2D):
    """Two interleaved half circles in 2-D (``sklearn.datasets.make_moons``), noise 0.1 by default."""

    name = "moons"
    defaults = {"noise": 0.1}

    def generate(self, n: int, noise: float, state: int) -> tuple[Any, Any]:
        from sklearn import datasets  # scikit-learn is slow to import: only when used

        return datasets.make_moons(n_samples=n, noise=noise, random_state=state)


@hookimpl
def protoreg_register_datasets(register: Callable[..., None]) -> None:
    register(Moons())
