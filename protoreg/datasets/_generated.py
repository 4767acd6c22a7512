"""What scikit-learn's generated 2-D sets (``moons``, ``circles``, ``blobs``) share: ``data.n``
points seeded by the data seed (modulo 2**32), in scikit-learn's coordinates, ``data.noise``,
and label or one-hot targets."""

from __future__ import annotations

from typing import Any, ClassVar, Mapping

import numpy as np

from protoreg.datasets.rules import require
from protoreg.plugin_api import Dataset


class Generated2D(Dataset):
    """A scikit-learn generator of labelled 2-D points: ``sklearn.datasets.<maker>`` with
    ``noise`` as its noise (subclasses set ``maker``, or override :meth:`generate`)."""

    dim = 2
    targets = ("label", "onehot")
    #: Number of classes (one-hot columns).
    n_classes: ClassVar[int] = 2
    #: The ``sklearn.datasets`` function, called as ``maker(n_samples=n, noise=noise, random_state=state)``.
    maker: ClassVar[str] = ""

    def generate(self, n: int, noise: float, state: int) -> tuple[Any, Any]:
        """``(x (n, 2), labels (n,))`` from scikit-learn."""
        from sklearn import datasets  # scikit-learn is slow to import: only when used

        return getattr(datasets, self.maker)(n_samples=n, noise=noise, random_state=state)

    def load(self, data: Mapping[str, Any], seed: int) -> tuple[np.ndarray, np.ndarray]:
        require(self, data)
        x, labels = self.generate(int(data["n"]), float(self.param(data, "noise")), int(seed) % 2**32)
        labels = np.asarray(labels, dtype=np.int64)
        y = np.eye(self.n_classes)[labels] if self.target(data) == "onehot" else labels[:, None].astype(np.float64)
        return np.asarray(x, dtype=np.float64), y
