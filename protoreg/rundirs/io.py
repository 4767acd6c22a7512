"""Atomic writes: a reader never sees a half-written file; a folder staged elsewhere is merged into\nits destination file by file, its completion marker last; one writer at a time per directory."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterator

from protoreg.errors import RunDirError


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write ``text`` to ``path`` via a temporary file in the same folder and ``os.replace``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except OSError as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise naming(exc, path) from None
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


@contextlib.contextmanager
def replacing(path: str | Path, suffix: str = ".tmp") -> Iterator[Path]:
    """A temporary path next to ``path`` for the block to write; ``os.replace``d onto ``path``
    when the block succeeds, removed when it fails (an :class:`OSError` then names ``path``)."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}{suffix}")
    try:
        yield tmp
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise naming(exc, path) from None
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def naming(exc: OSError, path: str | Path) -> OSError:
    """``exc`` with ``path`` as its file name where the failure named none (a write or fsync
    that hits a full disk or a file-size limit says only ``File too large``)."""
    if exc.filename:
        return exc
    named = OSError(exc.errno, exc.strerror or str(exc), str(path))
    named.__traceback__ = exc.__traceback__
    return named


def atomic_write_json(path: str | Path, obj: Any) -> None:
    """JSON with sorted keys; non-finite floats are written as ``Infinity``/``NaN`` (Python's json)."""
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


@contextlib.contextmanager
def exclusive_lock(path: Path, holder: str) -> Iterator[None]:
    """Hold an exclusive, non-blocking lock on the file ``path`` (created, and removed again on
    release) for the duration of the block.

    Raises :class:`~protoreg.errors.RunDirError` naming ``path``'s folder when another process
    holds it (``holder`` says what kind of writer that is, e.g. "protoreg fit"). Where ``fcntl``
    is unavailable (not POSIX) the block runs unlocked.
    """
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX
        yield
        return
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            raise RunDirError(f"{path.parent}: another {holder} is writing to this directory (refusing a second writer)") from None
        try:  # the file we locked may have been removed by its previous holder: lock the current one
            if os.stat(path).st_ino == os.fstat(fd).st_ino:
                break
        except FileNotFoundError:
            pass
        os.close(fd)
    try:
        yield
    finally:
        with contextlib.suppress(OSError):
            os.unlink(path)
        os.close(fd)


def lock_held(path: Path) -> bool:
    """Whether another process holds the lock file ``path`` of :func:`exclusive_lock` now (False
    where there is no such file, or ``fcntl`` is unavailable)."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX
        return False
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except OSError:
        return True
    finally:
        os.close(fd)
    return False


def remove_tree(path: Path) -> None:
    """Remove a file, a symbolic link or a folder with its contents (nothing if absent)."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)


def merge_into(stage: Path, out: Path, *, last: str) -> None:
    """Move every file of the folder ``stage`` into ``out`` (same file system), keeping
    everything else in ``out``; ``stage`` is removed.

    Each file replaces its namesake atomically (``os.replace``); sub-folders are merged the same
    way. ``out/last`` is removed first and ``stage/last`` moved last, so ``out`` holds a ``last``
    only once every other file is in place.
    """
    (out / last).unlink(missing_ok=True)
    for entry in sorted(stage.iterdir()):
        if entry.name != last:
            _merge(entry, out / entry.name)
    if (stage / last).exists():
        os.replace(stage / last, out / last)
    shutil.rmtree(stage)


def _merge(src: Path, dst: Path) -> None:
    if src.is_dir() and not src.is_symlink():
        if dst.is_symlink() or (dst.exists() and not dst.is_dir()):
            dst.unlink()
        dst.mkdir(exist_ok=True)
        for entry in sorted(src.iterdir()):
            _merge(entry, dst / entry.name)
        return
    if dst.is_dir() and not dst.is_symlink():
        shutil.rmtree(dst)
    os.replace(src, dst)
