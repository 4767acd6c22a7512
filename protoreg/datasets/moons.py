"""``moons``: scikit-learn's two interleaved half circles in 2-D (``make_moons``)."""

from __future__ import annotations

from typing import Callable

from protoreg.datasets._generated import Generated2D
from protoreg.plugin_api import hookimpl


class Moons(Generated2D):
    """Two interleaved half circles in 2-D (``sklearn.datasets.make_moons``), noise 0.1 by default."""

    name = "moons"
    defaults = {"noise": 0.1}
    maker = "make_moons"


@hookimpl
def protoreg_register_datasets(register: Callable[..., None]) -> None:
    register(Moons())
