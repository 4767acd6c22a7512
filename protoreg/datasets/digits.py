"""``digits``: scikit-learn's bundled 8x8 handwritten digits (1,797 images, d = 64)."""

from __future__ import annotations

from functools import lru_cache
from typing import Callable

import numpy as np

from protoreg.datasets._labelled import LabelledImages
from protoreg.plugin_api import hookimpl

#: Images per digit 0..9 in scikit-learn's ``load_digits`` (1,797 in all).
DIGITS_CLASS_COUNTS: tuple[int, ...] = (178, 182, 177, 183, 181, 182, 181, 179, 174, 180)
DIGITS_IMAGE_SHAPE = (8, 8)


@lru_cache(maxsize=1)
def _digits() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits  # scikit-learn is slow to import: only when used

    bunch = load_digits()
    x = np.asarray(bunch.data, dtype=np.float64) / 16.0
    labels = np.asarray(bunch.target, dtype=np.int64)
    x.setflags(write=False)
    labels.setflags(write=False)
    return x, labels


class Digits(LabelledImages):
    """scikit-learn's bundled 8x8 handwritten digits, pixels / 16 (in [0, 1]).

    ``data.classes`` keeps only the listed digits; ``data.n`` draws a class-stratified subset of
    that size seeded by the data seed (each class gets its share of n, rounded by largest
    remainder so the total is exactly n), ``data.n: null`` keeps every image. Targets ``onehot``
    (10 columns, one per digit, whatever ``data.classes`` keeps; the default) or ``label`` (the
    digit 0..9 as one column). Declares ``image_shape`` (8, 8).
    """

    name = "digits"
    dim = 64
    class_counts = DIGITS_CLASS_COUNTS
    size = sum(DIGITS_CLASS_COUNTS)
    image_shape = DIGITS_IMAGE_SHAPE

    def images(self) -> tuple[np.ndarray, np.ndarray]:
        return _digits()


@hookimpl
def protoreg_register_datasets(register: Callable[..., None]) -> None:
    register(Digits())
