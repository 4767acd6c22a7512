"""Run directories: the one way into them (:func:`writing_run`: one writer at a time, staged,
merged in with ``metrics.json`` last, the user's own files kept), the one writer of
``config.yaml``, ``metrics.json``, ``prototypes.csv`` and ``prototypes.png``, the one format of
prototype rows (shared with a sweep's ``prototypes.csv``), and the reader behind
:func:`protoreg.load_run`.

Kept free of Lightning so that reading a run is quick.
"""

from __future__ import annotations

import contextlib
import csv
import glob
import io
import json
import math
import os
import re
import shutil
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Iterator, Mapping, Sequence

import numpy as np
from omegaconf import DictConfig, OmegaConf

from protoreg.frontend.caller import warn
from protoreg.errors import RunDirError, RunDirWarning
from protoreg.frontend.voice import arg, rerun_sweep, resume_hint
from protoreg.rundirs.io import atomic_write_json, atomic_write_text, exclusive_lock, lock_held, merge_into, remove_tree

if TYPE_CHECKING:  # pragma: no cover
    from protoreg.training import GroupOutcome, RunSpec, Units

CONFIG = "config.yaml"
METRICS = "metrics.json"
PROTOTYPES = "prototypes.csv"
FIGURE = "prototypes.png"
DATA = "data.npz"
RECONSTRUCTIONS = "reconstructions.png"
#: The lock held by the one process writing a run directory (removed when it is done).
LOCK = ".protoreg.lock"
#: Prefix of the staging folder inside a run directory while a run is being trained and written.
STAGE_PREFIX = ".protoreg-partial-"
#: What marks a sweep directory (see :mod:`protoreg.sweeps.store`).
SWEEP_MANIFEST = "sweep.yaml"
#: Columns of a prototype row after the coordinates ``p0..p{d-1}``.
PROTOTYPE_TAIL: tuple[str, ...] = ("outside_hull", "hull_distance", "expelled_at_step", "wins")


# ----------------------------------------------------------------- where
def default_out(root: str | Path) -> Path:
    """A new, empty folder ``root/<timestamp>`` (``root/<timestamp>-2``, ``-3``, ... when that
    one exists: two fits in the same second, or in two processes, each get their own), created
    here so that no other call can take it. Where a command writes when no output is named; the
    caller removes it again (while empty) when the command fails."""
    base = Path(root) / time.strftime("%Y%m%d-%H%M%S")
    ensure_parent(base)
    for k in range(1, 10_000):
        path = base if k == 1 else base.with_name(f"{base.name}-{k}")
        try:
            path.mkdir()
        except FileExistsError:
            continue
        except OSError as exc:
            raise RunDirError(f"{path}: cannot create the output directory ({exc.strerror or exc})") from None
        return path
    raise RunDirError(f"{base}: 9999 output directories of this second exist already; name one with {arg('out')}")  # pragma: no cover


def remove_if_empty(path: Path) -> None:
    """Remove the folder ``path`` if it is empty (a reserved :func:`default_out` nobody wrote to)."""
    with contextlib.suppress(OSError):
        path.rmdir()


def check_out(out: Path) -> None:
    """Refuse an ``--out`` that a new run may not be written to (before training; only missing
    parent folders are created).

    Accepted: a path that does not exist yet (its parent can be created and written) or an empty
    directory, also through a symbolic link or as ``.``, ignoring staging leftovers of a killed
    process (they are cleaned by :func:`writing_run`). Refused, with the reason: a dangling
    symbolic link, a file, a folder that cannot be written, a sweep directory, a run directory
    (continue it with ``--resume``) and any other folder with content.
    """
    if out.is_symlink() and not out.exists():
        raise RunDirError(f"{out}: a symbolic link to {os.readlink(out)}, which does not exist (create it, or choose another {arg('out')})")
    if not out.exists():
        ensure_parent(out)
        return
    if not out.is_dir():
        raise RunDirError(f"{out}: exists and is not a directory")
    _check_writable(out)
    content = _content(out)
    if not content:
        return
    if (out / SWEEP_MANIFEST).is_file():
        raise RunDirError(f"{out}: a sweep directory, not a run directory (choose another {arg('out')})")
    if (out / CONFIG).is_file():
        status = _status(out)
        raise RunDirError(f"{out}: already holds a run ({status}); continue it with {resume_hint(out)}, or choose another {arg('out')}")
    shown = ", ".join(sorted(content)[:3]) + (", ..." if len(content) > 3 else "")
    raise RunDirError(f"{out}: output directory exists and is not empty ({shown}); choose another {arg('out')}")


def check_resumable(run_dir: Path) -> None:
    """Refuse a ``--resume`` directory that is not a run directory written by ``fit``."""
    if not run_dir.is_dir():
        raise RunDirError(f"{run_dir}: run directory not found")
    if (run_dir / SWEEP_MANIFEST).is_file():
        raise RunDirError(f"{run_dir}: a sweep directory; {rerun_sweep()} to resume it")
    if not (run_dir / CONFIG).is_file():
        raise RunDirError(f"{run_dir}: not a run directory (no {CONFIG})")
    _check_writable(run_dir)


def check_not_being_written(run_dir: Path) -> None:
    """Refuse to read a run directory that holds no finished run yet: a fit is still writing it
    (it holds the lock), or a fit that was killed left only its staging folder."""
    if (run_dir / METRICS).is_file() and (run_dir / CONFIG).is_file():
        return  # a finished run (a resume may be under way: these files stay consistent until it merges)
    if lock_held(run_dir / LOCK):
        raise RunDirError(f"{run_dir}: a run is still being written there (a fit holds {LOCK}); load it once that fit has finished")
    if any(p.name.startswith(STAGE_PREFIX) for p in run_dir.iterdir()):
        raise RunDirError(f"{run_dir}: holds only the staging folder of a fit that did not finish; no run was written there")


def _check_writable(path: Path) -> None:
    if not os.access(path, os.W_OK | os.X_OK):
        raise RunDirError(f"{path}: cannot write to the run directory (Permission denied)")


def _status(run_dir: Path) -> str:
    """``status S`` from ``metrics.json``, or why there is none."""
    try:
        return f"status {read_metrics(run_dir).get('status', 'unknown')}"
    except RunDirError:
        return f"incomplete: no readable {METRICS}"


def _content(out: Path) -> list[str]:
    """The names in ``out`` other than protoreg's lock and staging leftovers."""
    return [p.name for p in out.iterdir() if p.name != LOCK and not p.name.startswith(STAGE_PREFIX)]


def _leftovers(out: Path) -> list[Path]:
    """Staging folders of killed ``fit`` processes: inside ``out``, and (written by protoreg
    by older versions) ``.NAME.partial-*`` next to it."""
    inside = [p for p in out.iterdir() if p.name.startswith(STAGE_PREFIX)]
    beside = list(out.parent.glob(f".{glob.escape(out.name)}.partial-*")) if out.name else []
    return sorted(inside) + sorted(p for p in beside if p.is_dir() and not p.is_symlink())


@contextlib.contextmanager
def writing_run(out: Path, *, resume: bool) -> Iterator[Path]:
    """The one way into a run directory: lock ``out`` and yield a staging folder inside it.

    ``out`` is created when missing (a new run) and locked against a second writer (refused
    with :class:`RunDirError`); staging leftovers of killed processes are reported (a warning)
    and removed. When the block completes, the staged files are merged into ``out`` with
    ``metrics.json`` last (:func:`protoreg.rundirs.io.merge_into`), so every file protoreg did not write
    stays. When the block raises, the staging folder is
    removed, ``out`` is left as it was, and a folder created here is removed again.
    """
    created = False
    if not out.exists():
        ensure_parent(out)
        try:
            out.mkdir()
            created = True
        except FileExistsError:
            pass
        except OSError as exc:
            raise RunDirError(f"{out}: cannot create the output directory ({exc.strerror or exc})") from None
    stage: Path | None = None
    try:
        with exclusive_lock(out / LOCK, "protoreg fit"):
            if resume:
                check_resumable(out)
            else:
                check_out(out)
            for old in _leftovers(out):
                warn(f"{old}: removed the staging folder of an earlier protoreg fit that did not finish", RunDirWarning)
                remove_tree(old)
            stage = Path(tempfile.mkdtemp(prefix=STAGE_PREFIX, dir=out))
            try:
                yield stage
            except BaseException:
                shutil.rmtree(stage, ignore_errors=True)
                raise
            merge_into(stage, out, last=METRICS)
    except BaseException:
        if created:
            with contextlib.suppress(OSError):
                out.rmdir()  # only while still empty: nothing of anyone's is removed
        raise


def ensure_parent(out: Path) -> None:
    """Create ``out``'s parent folder, or raise :class:`RunDirError` saying why it cannot be."""
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        if not os.access(out.parent, os.W_OK | os.X_OK):
            raise PermissionError(13, "Permission denied", str(out.parent))
    except OSError as exc:
        raise RunDirError(f"{out}: cannot create the output directory ({exc.strerror or exc}: {exc.filename or out.parent})") from None


# ------------------------------------------------------------ prototypes
def prototype_header(dim: int) -> list[str]:
    """``unit, p0..p{dim-1}, outside_hull, hull_distance, expelled_at_step, wins``."""
    return ["unit", *[f"p{i}" for i in range(dim)], *PROTOTYPE_TAIL]


def prototype_rows(units: "Units", dim: int | None = None) -> list[list[Any]]:
    """One row per unit (see :func:`prototype_header`); coordinates padded with '' up to ``dim``."""
    pos = units.positions
    pad = [""] * ((dim or pos.shape[1]) - pos.shape[1])
    rows = []
    for j in range(pos.shape[0]):
        e = int(units.expelled_at[j])
        rows.append(
            [
                j,
                *[repr(float(v)) for v in pos[j]],
                *pad,
                int(bool(units.outside[j])),
                repr(float(units.hull_distance[j])),
                "" if e < 0 else e,
                int(units.wins[j]),
            ]
        )
    return rows


def csv_text(rows: Iterable[Sequence[Any]]) -> str:
    """Rows as CSV text (``\\n`` line ends)."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    for row in rows:
        w.writerow(row)
    return buf.getvalue()


# ----------------------------------------------------------------- write
def write_run(stage: Path, spec: "RunSpec", outcome: "GroupOutcome", run: int = 0) -> dict[str, Any]:
    """Write run ``run`` of a trained group into the (staging) run directory ``stage``.

    ``metrics.json`` holds every metric, the run's shape, seed, steps, active losses with their
    settings, ``status``, ``train_seconds`` and ``check_seconds`` (wall-clock seconds of the
    training in this process and of the geometry checks within it; a group's time is shared
    equally by its runs) and, unless completed, ``reason`` (and ``stopped_at_step`` for a run
    stopped by the geometry check). ``data.npz`` holds exactly the training data (unless
    ``output.save_data`` is false); image data also get ``reconstructions.png``.
    """
    res = outcome.runs[run]
    atomic_write_text(stage / CONFIG, OmegaConf.to_yaml(spec.cfg))
    module = outcome.group.module
    metrics: dict[str, Any] = dict(res.metrics)
    metrics.update(
        n=int(spec.x.shape[0]),
        dim=int(spec.x.shape[1]),
        width=int(module.model.width),
        parameterization=module.model.parameterization,
        seed=int(spec.cfg.train.seed),
        steps=res.steps,
        losses={name: spec.settings[name] for name in spec.active},
        status=res.status,
        train_seconds=round(float(outcome.seconds) / len(outcome.runs), 4),
        check_seconds=round(float(outcome.geometry.check_seconds) / len(outcome.runs), 4),
        **res.extra,
    )
    if res.reason:
        metrics["reason"] = res.reason
    if spec.image_shape is not None:
        metrics["image_shape"] = list(spec.image_shape)
    atomic_write_json(stage / METRICS, metrics)
    if bool(OmegaConf.select(spec.cfg, "output.save_data", default=True)):
        write_data(stage / DATA, spec.x, spec.y, spec.image_shape)
    atomic_write_text(stage / PROTOTYPES, csv_text([prototype_header(res.prototypes.shape[1]), *prototype_rows(res.units)]))
    _save_figure(outcome.figure(run), stage / FIGURE)
    if spec.image_shape is not None:
        from protoreg.evaluation.figures import reconstruction_figure

        pairs = outcome.reconstruction_pairs if run == 0 else None
        _save_figure(reconstruction_figure(spec.x, res.prototypes, spec.image_shape, pairs=pairs), stage / RECONSTRUCTIONS)
    return metrics


def write_data(path: Path, x: np.ndarray, y: np.ndarray, image_shape: Sequence[int] | None = None) -> None:
    """``data.npz``: arrays ``x`` (N, d) and ``y`` (N, k) (and ``image_shape``), written atomically."""
    arrays: dict[str, np.ndarray] = {"x": np.asarray(x), "y": np.asarray(y)}
    if image_shape is not None:
        arrays["image_shape"] = np.asarray(image_shape, dtype=np.int64)
    tmp = path.with_name(f".{path.name}.tmp.npz")
    try:
        np.savez(tmp, **arrays)  # type: ignore[arg-type]  # numpy's stubs: a key of **arrays could be allow_pickle
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _save_figure(fig: Any, path: Path) -> None:
    from protoreg.evaluation.figures import save_figure

    save_figure(fig, path)


# ------------------------------------------------------------------ read
def read_metrics(run_dir: Path) -> dict[str, Any]:
    path = Path(run_dir) / METRICS
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise RunDirError(f"{run_dir}: not a run directory (no {METRICS})") from None
    except (OSError, ValueError) as exc:
        raise RunDirError(f"{path}: unreadable ({type(exc).__name__}: {exc})") from None
    if not isinstance(data, dict):
        raise RunDirError(f"{path}: expected a JSON object of metrics")
    return data


def read_config(run_dir: Path) -> DictConfig:
    path = Path(run_dir) / CONFIG
    if not path.is_file():
        raise RunDirError(f"{run_dir}: not a run directory (no {CONFIG})")
    return read_yaml(path)


def read_yaml(path: Path, advice: str = "") -> DictConfig:
    """A YAML mapping written by protoreg (``config.yaml``, ``sweep.yaml``); a
    :class:`RunDirError` naming the file (and ``advice``) when it cannot be read as one."""
    suffix = f"; {advice}" if advice else ""
    try:
        cfg = OmegaConf.load(path)
    except Exception as exc:  # noqa: BLE001 - any yaml problem
        raise RunDirError(f"{path}: unreadable ({type(exc).__name__}){suffix}") from None
    if not isinstance(cfg, DictConfig):
        raise RunDirError(f"{path}: expected a mapping of config sections{suffix}")
    return cfg


def read_prototype_positions(path: Path, run: str | None = None) -> np.ndarray:
    """The (M, d) prototype positions of a ``prototypes.csv`` (of ``run`` in a sweep's file)."""
    if not path.is_file():
        raise RunDirError(f"{path}: not found")
    try:
        with path.open(newline="", encoding="utf-8-sig") as fh:  # a spreadsheet's re-save adds a BOM
            reader = csv.reader(fh)
            header = next(reader, [])
            cols = [i for i, h in enumerate(header) if re.fullmatch(r"p\d+", h)]
            rows = [r for r in reader if len(r) == len(header) and (run is None or r[0] == run)]
    except UnicodeDecodeError as exc:
        raise RunDirError(f"{path}: not a UTF-8 text file ({exc.reason} at byte {exc.start})") from None
    try:
        return np.array([[float(r[i]) if r[i] != "" else np.nan for i in cols] for r in rows], dtype=float).reshape(len(rows), len(cols))
    except ValueError as exc:
        raise RunDirError(f"{path}: not a prototypes table ({exc})") from None


def check_consistent(run_dir: Path, metrics: Mapping[str, Any], prototypes: np.ndarray) -> None:
    """Refuse a run directory whose files disagree (one truncated or edited): ``prototypes.csv``
    must hold ``metrics.json``'s ``width`` units of ``dim`` coordinates, and ``data.npz`` (when
    kept) ``n`` samples of ``dim`` inputs. The :class:`RunDirError` names the file that disagrees."""
    run_dir = Path(run_dir)

    def expect(key: str) -> int | None:
        v = metrics.get(key)
        return int(v) if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) else None

    width, dim, n = expect("width"), expect("dim"), expect("n")
    rows, cols = prototypes.shape
    if width is not None and rows != width:
        raise RunDirError(f"{run_dir / PROTOTYPES}: {rows} unit row(s), but {METRICS} says width {width}; the run directory's files disagree (truncated or edited)")
    if dim is not None and cols != dim:
        raise RunDirError(f"{run_dir / PROTOTYPES}: {cols} coordinate column(s), but {METRICS} says dim {dim}; the run directory's files disagree (truncated or edited)")
    data = run_dir / DATA
    if data.is_file() and n is not None and dim is not None:
        try:
            with np.load(data, allow_pickle=False) as z:
                shape = tuple(z["x"].shape)
        except Exception as exc:  # noqa: BLE001 - a truncated or foreign file
            raise RunDirError(f"{data}: unreadable ({type(exc).__name__}: {exc})") from None
        if shape != (n, dim):
            raise RunDirError(f"{data}: inputs of shape {shape}, but {METRICS} says n={n}, dim={dim}; the run directory's files disagree (truncated or edited)")
