"""The sweep directory: manifest, lock, and the CSV files that record finished runs.

``results.csv`` is the record of what is finished: every finished group rewrites it atomically
with its rows appended (``prototypes.csv`` first), so it is never torn and re-running skips
finished runs. The readers also take the files back after a spreadsheet re-saved them (a UTF-8
byte-order mark, CRLF line ends); a row with the wrong number of cells is not a record (a
:class:`ResultsWarning` names it, and re-running the sweep trains that run again).
"""

from __future__ import annotations

import contextlib
import csv
import re
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

import numpy as np
from omegaconf import DictConfig, OmegaConf

from protoreg import config as C
from protoreg.frontend.caller import warn
from protoreg.errors import ResultsWarning, RunDirError
from protoreg.rundirs.io import atomic_write_text, exclusive_lock
from protoreg.frontend.voice import arg, on_command_line
from protoreg.rundirs import layout as rundir
from protoreg.rundirs.layout import csv_text, ensure_parent
from protoreg.sweeps.grid import format_value
from protoreg.sweeps.table import to_float

MANIFEST = "sweep.yaml"
RESULTS = "results.csv"
PROTOTYPES = "prototypes.csv"
SUMMARY = "summary.md"
CLAIMS = "claims.json"
LOCK = ".sweep.lock"
TB = "tb"


def default_out() -> Path:
    """A new, empty ``sweeps/<timestamp>`` (see :func:`protoreg.rundirs.layout.default_out`): where a
    sweep writes when no output is named."""
    return rundir.default_out("sweeps")


#: Settings that may change between invocations on the same directory (results do not depend on them).
VOLATILE_KEYS: tuple[str, ...] = (
    "sweep.max_runs_per_batch",
    "sweep.study",
    "sweep.executor",
    "sweep.ray.address",
    "sweep.ray.num_cpus_per_task",
    "sweep.ray.num_gpus_per_task",
    "sweep.ray.max_retries",
    "sweep.max_runs",
)


def _manifest_container(cfg: DictConfig) -> dict[str, Any]:
    c = OmegaConf.to_container(OmegaConf.create(OmegaConf.to_yaml(cfg)), resolve=True)
    assert isinstance(c, dict)
    flat = C.flatten(c)
    for k in VOLATILE_KEYS:
        flat.pop(k, None)
    return flat


def config_differences(old: DictConfig, new: DictConfig) -> list[str]:
    """``key: old -> new`` for every setting that differs (ignoring :data:`VOLATILE_KEYS`).

    A key missing from ``old`` (a manifest written before the key existed) matches its default."""
    a, b = _manifest_container(old), _manifest_container(new)
    defaults = C.flatten(OmegaConf.to_container(C.default_config(), resolve=True))
    for k in set(b) - set(a):
        if k in defaults and defaults[k] == b[k]:
            a[k] = b[k]
    diffs = []
    for k in sorted(set(a) | set(b)):
        if a.get(k, "<unset>") != b.get(k, "<unset>"):
            diffs.append(f"{k}: {format_value(a.get(k, '<unset>'))} -> {format_value(b.get(k, '<unset>'))}")
    return diffs


@contextlib.contextmanager
def locked(out: Path) -> Iterator[None]:
    """An exclusive lock on the sweep directory for the duration of the block (a second writer
    is refused with :class:`RunDirError`)."""
    with exclusive_lock(out / LOCK, "protoreg sweep"):
        yield


def open_sweep_dir(out: Path, base: DictConfig, columns: Sequence[str], *, create: bool = True) -> None:
    """Check ``out`` (new, empty, or a sweep started by the same config); create it if needed
    (only check, creating nothing, with ``create=False``).

    Raises :class:`RunDirError` for a directory that is not a sweep or was started by a
    different config (the message lists the differing keys).
    """
    if out.exists() and not out.is_dir():
        raise RunDirError(f"{out}: exists and is not a directory")
    if create:
        ensure_parent(out)
    manifest = out / MANIFEST
    if out.is_dir() and any(p.name != LOCK for p in out.iterdir()):
        if not manifest.is_file():
            raise RunDirError(f"{out}: not a sweep directory (no {MANIFEST}) and not empty; choose another {arg('out')}")
        old = rundir.read_yaml(manifest, f"choose another {arg('out')}")
        diffs = config_differences(old, base)
        if diffs:
            shown = "; ".join(diffs[:5]) + (f"; and {len(diffs) - 5} more" if len(diffs) > 5 else "")
            raise RunDirError(
                f"{out}: this sweep directory was started with a different config ({shown}); "
                f"re-run the original {'command' if on_command_line() else 'call'} to resume, or choose another {arg('out')}"
            )
        results = out / RESULTS
        if results.is_file():
            header = read_header(results)
            if header != list(columns):
                raise RunDirError(f"{results}: columns do not match this sweep's ({', '.join(header[:6])} ...); choose another {arg('out')}")
    if create:
        out.mkdir(parents=True, exist_ok=True)


def init_files(out: Path, base: DictConfig, columns: Sequence[str]) -> None:
    if not (out / MANIFEST).is_file():
        atomic_write_text(out / MANIFEST, OmegaConf.to_yaml(base))
    if not (out / RESULTS).is_file():
        atomic_write_text(out / RESULTS, csv_text([list(columns)]))


def _csv_rows(path: Path) -> list[tuple[int, list[str]]]:
    """``(line, cells)`` of every non-blank row of a CSV file, as protoreg wrote it or as a
    spreadsheet re-saved it (UTF-8 with or without a byte-order mark, LF or CRLF line ends)."""
    try:
        with path.open(newline="", encoding="utf-8-sig") as fh:
            reader = csv.reader(fh)
            return [(reader.line_num, row) for row in reader if row]
    except (UnicodeDecodeError, csv.Error) as exc:
        raise RunDirError(f"{path}: not a readable UTF-8 CSV file ({type(exc).__name__}: {exc})") from None


def read_header(path: Path) -> list[str]:
    rows = _csv_rows(path)
    return rows[0][1] if rows else []


def read_results(out: Path | str) -> list[dict[str, str]]:
    """The rows of ``results.csv`` (strings, as written); [] when there is none.

    A row whose number of cells differs from the header's (cut short after its status cell, or
    edited) is left out with a :class:`ResultsWarning` naming its line and run."""
    path = Path(out) / RESULTS
    if not path.is_file():
        return []
    rows = _csv_rows(path)
    if not rows:
        return []
    header = rows[0][1]
    records, bad = [], []
    for line, row in rows[1:]:
        if len(row) != len(header):
            bad.append(f"line {line} (run {row[0]!r}) has {len(row)} cells, expected {len(header)}")
            continue
        records.append(dict(zip(header, row)))
    if bad:  # one warning for the file, however many rows are cut
        shown = "; ".join(bad[:5]) + (f"; and {len(bad) - 5} more" if len(bad) > 5 else "")
        warn(
            f"{path}: {shown}: not a complete record, so the run is not counted as finished "
            "(re-running the sweep trains it again)",
            ResultsWarning,
        )
    return records


def append_rows(path: Path, header: Sequence[str], rows: Sequence[Sequence[Any]], keep: set[str] | None = None) -> None:
    """Rewrite ``path`` atomically with ``rows`` appended (rows whose first cell is not in
    ``keep`` are dropped, when given): readers see the old file or the new one, never a torn row."""
    old: list[list[str]] = []
    if path.is_file():
        old = [r for _, r in _csv_rows(path)[1:] if len(r) == len(header) and (keep is None or r[0] in keep)]
    atomic_write_text(path, csv_text([list(header), *old, *rows]))



def next_group_index(out: Path, rows: Sequence[Mapping[str, str]]) -> int:
    used = [int(r["batch"]) for r in rows if str(r.get("batch", "")).isdigit()]
    tb = out / TB
    if tb.is_dir():
        used += [int(p.name.split("_")[1]) for p in tb.iterdir() if re.fullmatch(r"batch_\d+", p.name)]
    return max(used) + 1 if used else 0


def read_prototype_rows(out: Path | str) -> dict[str, list[list[str]]]:
    """Run -> its rows of ``prototypes.csv`` (as written)."""
    path = Path(out) / PROTOTYPES
    res: dict[str, list[list[str]]] = {}
    rows = _csv_rows(path) if path.is_file() else []
    for _, row in rows[1:]:
        if len(row) == len(rows[0][1]):
            res.setdefault(row[0], []).append(row)
    return res


def read_prototypes(out: Path | str) -> dict[str, np.ndarray]:
    """Run -> (M, d) prototype positions from ``prototypes.csv``."""
    path = Path(out) / PROTOTYPES
    res: dict[str, list[list[float]]] = {}
    rows = _csv_rows(path) if path.is_file() else []
    if not rows:
        return {}
    header = rows[0][1]
    pcols = [i for i, h in enumerate(header) if re.fullmatch(r"p\d+", h)]
    for _, row in rows[1:]:
        if len(row) == len(header):
            res.setdefault(row[0], []).append([to_float(row[i]) for i in pcols])
    return {k: np.asarray(v, dtype=float) for k, v in res.items()}


