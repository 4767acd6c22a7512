"""``circles``: scikit-learn's small circle inside a large one in 2-D (``make_circles``)."""

from __future__ import annotations

from typing import Any, Callable

from protoreg.datasets._generated import Generated2D
from protoreg.plugin_api import hookimpl


class Circles(Generated2D):
    """A small circle inside a large one in 2-D (``sklearn.datasets.make_circles``), noise 0.05 by default."""

    name = "circles"
    defaults = {"noise": 0.05}

    def generate(self, n: int, noise: float, state: int) -> tuple[Any, Any]:
        from sklearn import datasets  # scikit-learn is slow to import: only when used

        return datasets.make_circles(n_samples=n, noise=noise, random_state=state)


@hookimpl
def protoreg_register_datasets(register: Callable[..., None]) -> None:
    register(Circles())
