"""``circles``: scikit-learn's small circle inside a large one in 2-D (``make_circles``)."""

from __future__ import annotations

from typing import Callable

from protoreg.datasets._generated import Generated2D
from protoreg.plugin_api import hookimpl


class Circles(Generated2D):
    """A small circle inside a large one in 2-D (``sklearn.datasets.make_circles``), noise 0.05 by default."""

    name = "circles"
    defaults = {"noise": 0.05}
    maker = "make_circles"


@hookimpl
def protoreg_register_datasets(register: Callable[..., None]) -> None:
    register(Circles())
