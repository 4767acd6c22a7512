"""Datasets, registered through the ``protoreg_register_datasets`` hook like any plugin's.

Built-ins:

* ``uniform``: ``data.n`` points uniform in ``[data.low, data.high]^data.dim``; targets
  ``random`` (uniform in [0, 1]) or ``sin`` (``mean_d sin(2 pi u_d)``, u the inputs scaled to [0,1]).
* ``file``: ``data.path`` to a CSV file with a header row, a ``.npy`` 2-D array, or a ``.npz``
  archive (arrays ``x`` and ``y``, or a single 2-D array). The last column is the target unless
  ``data.targets`` lists the target columns (header names, or 0-based indices).
"""

from __future__ import annotations

import csv
import math
import zipfile
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from .api import hookimpl
from .errors import DataError

MIN_POINTS = 2


def uniform_dataset(cfg: Mapping[str, Any], seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``data.n`` inputs uniform in the box, seeded by ``seed`` (see module doc)."""
    n, dim = int(cfg["n"]), int(cfg["dim"])
    low, high = float(cfg["low"]), float(cfg["high"])
    rng = np.random.default_rng(seed)
    x = low + (high - low) * rng.random((n, dim))
    target = cfg.get("target", "random")
    if target == "random":
        y = rng.random((n, 1))
    elif target == "sin":
        u = (x - low) / (high - low)
        y = np.sin(2 * math.pi * u).mean(axis=1, keepdims=True)
    else:
        raise DataError(f"data.target: expected 'random' or 'sin', got {target!r}")
    return x, y


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


def _read_csv(path: Path, targets: Sequence[Any] | None) -> tuple[np.ndarray, np.ndarray]:
    try:
        with path.open(newline="", encoding="utf-8") as fh:
            rows = [row for row in csv.reader(fh) if row and any(cell.strip() for cell in row)]
    except UnicodeDecodeError:
        raise DataError(f"{path}: not a UTF-8 text CSV file") from None
    if not rows:
        raise DataError(f"{path}: empty file (expected a header row and data rows)")
    header = [h.strip() for h in rows[0]]
    body = rows[1:]
    if not body:
        raise DataError(f"{path}: no data rows after the header")
    if len(header) < 2:
        raise DataError(f"{path}: need at least 2 columns (inputs and a target), header has {len(header)}")
    table = np.empty((len(body), len(header)))
    for i, row in enumerate(body, start=2):
        if len(row) != len(header):
            raise DataError(f"{path}: line {i} has {len(row)} cells, the header has {len(header)} (ragged rows)")
        for j, cell in enumerate(row):
            try:
                table[i - 2, j] = float(cell)
            except ValueError:
                raise DataError(f"{path}: line {i}, column {header[j]!r}: non-numeric cell {cell!r}") from None
    cols = _target_columns(targets, header, len(header), str(path))
    return _split(table, cols)


def _read_numpy(path: Path, targets: Sequence[Any] | None) -> tuple[np.ndarray, np.ndarray]:
    try:
        obj = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as exc:
        raise DataError(f"{path}: cannot read as {path.suffix} ({exc})") from None
    if isinstance(obj, np.lib.npyio.NpzFile):
        with obj:
            keys = set(obj.files)
            lower = {k.lower(): k for k in keys}
            if "x" in lower and "y" in lower:
                x, y = np.asarray(obj[lower["x"]]), np.asarray(obj[lower["y"]])
                x = x.reshape(len(x), -1) if x.ndim == 1 else x
                y = y.reshape(len(y), -1) if y.ndim == 1 else y
                if x.ndim != 2 or y.ndim != 2 or len(x) != len(y):
                    raise DataError(f"{path}: arrays x {x.shape} and y {y.shape} must be 2-D with equal rows")
                return _numeric(x, path), _numeric(y, path)
            if len(keys) != 1:
                raise DataError(f"{path}: expected arrays 'x' and 'y' or a single array, found {sorted(keys)}")
            table = np.asarray(obj[keys.pop()])
    else:
        table = np.asarray(obj)
    if table.size == 0:
        raise DataError(f"{path}: empty array")
    if table.ndim != 2 or table.shape[1] < 2:
        raise DataError(f"{path}: expected a 2-D array with >= 2 columns (inputs and a target), got shape {table.shape}")
    table = _numeric(table, path)
    return _split(table, _target_columns(targets, None, table.shape[1], str(path)))


def _numeric(a: np.ndarray, path: Path) -> np.ndarray:
    if a.dtype.kind not in "biuf":
        raise DataError(f"{path}: expected a numeric array, got dtype {a.dtype}")
    return a.astype(np.float64)


def file_dataset(cfg: Mapping[str, Any], seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Load ``data.path`` (CSV/.npy/.npz; see module doc). ``seed`` is unused."""
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


@hookimpl
def protoreg_register_datasets(register):  # type: ignore[no-untyped-def]
    register("uniform", uniform_dataset)
    register("file", file_dataset)
