"""``file``: a data file given by ``data.path``: CSV, ``.npy`` or ``.npz``.

* CSV: UTF-8 (a byte-order mark and CRLF line ends are fine); a first row whose cells are all
  numbers is data, not a header: the columns are then named ``0``..``k-1`` and a
  :class:`~protoreg.errors.DataWarning` says so; cells are plain decimal numbers, so ``1_000`` is
  refused like any non-numeric cell.
* ``.npy``: a 2-D array.
* ``.npz``: arrays ``x`` and ``y``, or a single 2-D array, optionally with an ``image_shape``
  array next to them (the shape, 1 to 3 ints with product d, of an input row).

The last column is the target unless ``data.targets`` lists the target columns (header names,
or 0-based indices).
"""

from __future__ import annotations

import csv
import zipfile
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from protoreg.datasets.rules import check_image_shape
from protoreg.errors import DataError, DataWarning
from protoreg.frontend.caller import warn
from protoreg.plugin_api import Dataset, Loaded, hookimpl


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


class File(Dataset):
    """A CSV, .npy or .npz file given by data.path (selected by setting data.path)."""

    name = "file"
    defaults = {"path": None, "targets": None}

    def check(self, data: Mapping[str, Any]) -> list[str]:
        return [] if data.get("path") else ["data.path: the 'file' dataset needs data.path"]

    def load(self, data: Mapping[str, Any], seed: int) -> Loaded:
        """Load ``data.path`` (see the module doc). ``seed`` is unused.

        Returns ``(x, y)``, or ``(x, y, {"image_shape": shape})`` for an ``.npz`` archive that
        holds an ``image_shape`` array (checked against the inputs' width).
        """
        raw = data.get("path")
        if not raw:
            raise DataError("data.path: the 'file' dataset needs data.path")
        path = Path(str(raw)).expanduser()
        if not path.is_file():
            raise DataError(f"{path}: data file not found (data.path)")
        targets = data.get("targets")
        if path.suffix.lower() in (".npy", ".npz"):
            return _read_numpy(path, targets)
        return _read_csv(path, targets)


@hookimpl
def protoreg_register_datasets(register: Callable[..., None]) -> None:
    register(File())
