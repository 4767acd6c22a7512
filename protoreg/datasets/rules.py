"""Every dataset rule in one place: the rules all datasets share (:func:`data_problems`, run by
config validation before anything is written, with each dataset's own :meth:`Dataset.check`),
the check of what a loader returns (:func:`validate_loaded`), and the adapter that registers a
plain ``loader(data, seed)`` function as a :class:`~protoreg.plugin_api.Dataset`.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Mapping, TypeGuard, cast

import numpy as np

from protoreg.errors import DataError
from protoreg.plugin_api import Dataset, Loaded

MIN_POINTS = 2
MAX_IMAGE_DIMS = 3
#: ``data.*`` keys a dataset reads only where its ``defaults`` name them, with the words that
#: refuse them elsewhere.
OPTIONAL_KEYS: dict[str, str] = {"classes": "classes", "noise": "noise"}


def _num(v: Any) -> TypeGuard[float]:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _names(names: list[str]) -> str:
    quoted = [repr(n) for n in names]
    return quoted[0] if len(quoted) == 1 else ", ".join(quoted[:-1]) + " and " + quoted[-1]


def data_problems(data: Mapping[str, Any], datasets: Mapping[str, Dataset]) -> list[str]:
    """Problems of the ``data`` section (a plain dict): the shared rules, then the selected
    dataset's own :meth:`~protoreg.plugin_api.Dataset.check`; each one line naming its key."""
    p: list[str] = []
    path, name = data.get("path"), data.get("name")
    dname = "file" if path is not None else name
    if path is None and name not in datasets:
        p.append(f"data.name: unknown dataset {name!r}; registered: {', '.join(sorted(datasets))}")
    if path is not None and name not in ("uniform", "file"):
        p.append(f"data.path: set together with data.name={name!r}; a path selects the 'file' dataset")
    seed = data.get("seed")
    if seed is not None and seed < 0:
        p.append(f"data.seed: must be >= 0, got {seed}")
    ds = datasets.get(cast(str, dname))  # a name that is not a string is no dataset's
    if ds is None:
        return p
    for key, what in OPTIONAL_KEYS.items():
        if data.get(key) is not None and key not in ds.defaults:
            having = [n for n, other in datasets.items() if key in other.defaults]
            p.append(f"data.{key}: the {dname!r} dataset has no {what}" + (f" (only {_names(having)} do)" if having else ""))
    noise = data.get("noise")
    if noise is not None and "noise" in ds.defaults and not (_num(noise) and noise >= 0):
        p.append(f"data.noise: must be >= 0 or null, got {noise}")
    if path is None:
        n = data.get("n")
        if n is None:
            if ds.size is None:
                fixed = [k for k, other in datasets.items() if other.size is not None]
                only = f"null (every image) is only for {_names(fixed)}; " if fixed else "null: "
                p.append(f"data.n: {only}the {dname!r} dataset needs a number of points")
        elif n < MIN_POINTS:
            p.append(f"data.n: must be >= {MIN_POINTS}, got {n}")
        if "dim" in ds.defaults and data.get("dim", 1) < 1:
            p.append(f"data.dim: must be >= 1, got {data.get('dim')}")
        if "low" in ds.defaults or "high" in ds.defaults:
            low, high = data.get("low"), data.get("high")
            if not (_num(low) and _num(high) and low < high):
                p.append(f"data.high: must be > data.low, got low={low}, high={high}")
        target = data.get("target")
        if ds.targets and target is not None and target not in ds.targets:
            allowed = " or ".join(repr(t) for t in ds.targets)
            p.append(f"data.target: expected {allowed} for dataset {dname!r}, got {target!r}")
    try:
        own = ds.check(data)
    except Exception as exc:  # noqa: BLE001 - a dataset plugin's bug is a problem, not a traceback
        own = [f"data.name: the {dname!r} dataset's check failed: {type(exc).__name__}: {exc}"]
    if not isinstance(own, (list, tuple)) or not all(isinstance(line, str) for line in own):
        own = [f"data.name: the {dname!r} dataset's check returned {type(own).__name__}, not a list of problem lines"]
    return p + list(own)


def require(ds: Dataset, data: Mapping[str, Any]) -> None:
    """Raise the first problem of ``data`` for ``ds`` (the shared rules and its own check) as a
    :class:`DataError`: a loader called directly, not through a validated config, refuses what
    validation refuses, in the same words."""
    problems = data_problems({**data, "name": ds.name}, {ds.name: ds})
    if problems:
        raise DataError(problems[0])


class FunctionDataset(Dataset):
    """A plain ``loader(data, seed)`` registered with ``register(name, loader)``: it may read any
    ``data.*`` key, so ``data.dim``, ``data.low``/``data.high`` and ``data.noise`` are checked."""

    defaults = {"dim": 1, "low": 0.0, "high": 1.0, "noise": None}

    def __init__(self, name: str, loader: Callable[..., Any]) -> None:
        self.name = name  # type: ignore[misc]  # an instance's own name, as a subclass sets it
        self.loader = loader

    @property
    def description(self) -> str:
        doc = (getattr(self.loader, "__doc__", None) or "").strip()
        return doc.splitlines()[0] if doc else ""

    def load(self, data: Mapping[str, Any], seed: int) -> Loaded:
        return self.loader(data, seed)


# --------------------------------------------------------------------- what a loader returns
def validate_arrays(x: Any, y: Any, where: str) -> tuple[np.ndarray, np.ndarray]:
    """Check a loader's output: 2-D float arrays, equal rows, >= 2 points, all finite."""
    try:
        x = np.asarray(x, dtype=np.float64)
        y = np.asarray(y, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise DataError(f"{where}: inputs/targets are not numeric arrays ({exc})") from None
    if y.ndim == 1:
        y = y[:, None]
    if x.ndim == 1:
        x = x[:, None]
    if x.ndim != 2 or y.ndim != 2:
        raise DataError(f"{where}: expected inputs (N, d) and targets (N, k), got {x.shape} and {y.shape}")
    if x.shape[0] != y.shape[0]:
        raise DataError(f"{where}: {x.shape[0]} inputs but {y.shape[0]} targets")
    if x.shape[0] < MIN_POINTS:
        raise DataError(f"{where}: too few points ({x.shape[0]}); need at least {MIN_POINTS}")
    if x.shape[1] < 1 or y.shape[1] < 1:
        raise DataError(f"{where}: need at least one input and one target column")
    for name, a in (("inputs", x), ("targets", y)):
        bad = ~np.isfinite(a)
        if bad.any():
            row, col = np.argwhere(bad)[0]
            raise DataError(f"{where}: {name} contain NaN/inf (first at row {row}, column {col})")
    return x, y


def _shown(value: Any) -> str:
    text = " ".join(repr(value).split())
    return text if len(text) <= 60 else text[:57] + "..."


def check_image_shape(value: Any, d: int, where: str) -> tuple[int, ...]:
    """``image_shape`` as a tuple of 1 to 3 positive ints whose product is ``d``, or a one-line
    :class:`DataError` naming ``image_shape``, its value and d."""
    items = list(value) if isinstance(value, (tuple, list, np.ndarray)) and np.ndim(value) == 1 else []
    ints = bool(items) and all(isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_)) for v in items)
    if not ints or len(items) > MAX_IMAGE_DIMS or any(int(v) < 1 for v in items):
        raise DataError(
            f"{where}: image_shape {_shown(value)} is not a shape of 1 to {MAX_IMAGE_DIMS} positive ints (inputs have d={d})"
        )
    shape = tuple(int(v) for v in items)
    if math.prod(shape) != d:
        raise DataError(f"{where}: image_shape {shape} has {math.prod(shape)} pixels but the inputs have d={d}")
    return shape


def validate_loaded(result: Any, where: str) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """Check a loader's result, ``(x, y)`` or ``(x, y, info)``: the arrays as
    :func:`validate_arrays` does, and ``info["image_shape"]`` (when present and not null) as
    :func:`check_image_shape` does. Returns ``(x, y, info)`` where ``info`` holds only the keys
    protoreg reads: ``{"image_shape": (ints)}`` or ``{}``."""
    if not isinstance(result, (tuple, list)) or len(result) not in (2, 3):
        got = f"{type(result).__name__} of length {len(result)}" if isinstance(result, (tuple, list)) else type(result).__name__
        raise DataError(f"{where}: a dataset loader returns (x, y) or (x, y, info), got a {got}")
    x, y = validate_arrays(result[0], result[1], where)
    info = result[2] if len(result) == 3 else None
    if info is None:
        return x, y, {}
    if not isinstance(info, Mapping):
        raise DataError(f"{where}: the third element a loader returns (info) must be a mapping, got {type(info).__name__}")
    if info.get("image_shape") is None:
        return x, y, {}
    return x, y, {"image_shape": check_image_shape(info["image_shape"], x.shape[1], where)}
