"""Messages in the caller's words: the Python API names its arguments (``out=``, ``resume=``,
``config=``), the command line its flags (``--out``, ``--resume``, ``--config``).

The CLI runs every command inside :func:`command_line`; everything else speaks the API's words.
The same situation raises the same error class either way; only the words differ.
"""

from __future__ import annotations

import contextlib
from contextvars import ContextVar
from pathlib import Path
from typing import Iterator

_CLI: ContextVar[bool] = ContextVar("protoreg_command_line", default=False)


@contextlib.contextmanager
def command_line() -> Iterator[None]:
    """Within the block, messages use the command line's words."""
    token = _CLI.set(True)
    try:
        yield
    finally:
        _CLI.reset(token)


def on_command_line() -> bool:
    """Whether the current call comes from the ``protoreg`` command."""
    return _CLI.get()


def arg(name: str) -> str:
    """An argument of ``fit``/``sweep`` as the caller wrote it: ``--out`` or ``out=``."""
    return f"--{name.replace('_', '-')}" if _CLI.get() else f"{name}="


def resume_hint(run_dir: Path | str) -> str:
    """How to continue the run directory ``run_dir``."""
    return f"`protoreg fit --resume {run_dir}`" if _CLI.get() else f"`protoreg.fit(resume={str(run_dir)!r})`"


def rerun_sweep() -> str:
    """How to resume a sweep directory."""
    return "re-run its `protoreg sweep` command" if _CLI.get() else "call protoreg.sweep again with the same config and out="
