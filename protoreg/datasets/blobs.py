"""``blobs``: scikit-learn's Gaussian clusters in 2-D (``make_blobs`` with 3 centers)."""

from __future__ import annotations

from typing import Any, Callable

from protoreg.datasets._generated import Generated2D
from protoreg.plugin_api import hookimpl

BLOB_CENTERS = 3


class Blobs(Generated2D):
    """3 Gaussian clusters in 2-D (``sklearn.datasets.make_blobs``); ``data.noise`` is their ``cluster_std`` (1.0 by default)."""

    name = "blobs"
    defaults = {"noise": 1.0}
    n_classes = BLOB_CENTERS

    def generate(self, n: int, noise: float, state: int) -> tuple[Any, Any]:
        from sklearn import datasets  # scikit-learn is slow to import: only when used

        return datasets.make_blobs(n_samples=n, n_features=2, centers=BLOB_CENTERS, cluster_std=noise, random_state=state)


@hookimpl
def protoreg_register_datasets(register: Callable[..., None]) -> None:
    register(Blobs())
