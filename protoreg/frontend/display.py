"""Where progress is drawn, decided without importing Lightning: ``progress=`` of
:func:`protoreg.fit` / :func:`protoreg.sweep` when given; otherwise ``PROTOREG_PROGRESS``
(``1``/``0``), then ``CI`` (off), then on in a Jupyter kernel or when stderr is a terminal. In a
notebook the bar is a widget where ``ipywidgets`` is installed, else one text line updated in
place (never tqdm's ``IProgress not found`` warning).
"""

from __future__ import annotations

import contextlib
import os
import sys
from contextvars import ContextVar
from typing import IO, Any, Iterator

from protoreg.frontend.voice import on_command_line

_CHOICE: ContextVar[bool | None] = ContextVar("protoreg_progress", default=None)


@contextlib.contextmanager
def progress_setting(value: bool | None) -> Iterator[None]:
    """Within the block, progress is drawn when ``value`` is True, never when False, and as
    :func:`interactive` decides when None."""
    token = _CHOICE.set(None if value is None else bool(value))
    try:
        yield
    finally:
        _CHOICE.reset(token)


def in_notebook() -> bool:
    """Whether this process is a Jupyter kernel (IPython with a kernel attached)."""
    ipython = sys.modules.get("IPython")
    if ipython is None:
        return False
    try:
        shell = ipython.get_ipython()
    except Exception:  # noqa: BLE001 - an IPython without a shell
        return False
    return shell is not None and getattr(shell, "kernel", None) is not None


def _widgets() -> bool:
    try:
        import ipywidgets  # noqa: F401
    except ImportError:
        return False
    return True


def interactive(stream: IO[str] | None = None) -> bool:
    """Whether progress should be drawn (see the module docstring for the order of precedence)."""
    choice = _CHOICE.get()
    if choice is not None:
        return choice
    forced = os.environ.get("PROTOREG_PROGRESS")
    if forced is not None:
        return forced.strip().lower() not in ("0", "false", "no", "off", "")
    if os.environ.get("CI"):
        return False
    if in_notebook() and not on_command_line():
        return True
    stream = stream if stream is not None else sys.stderr
    isatty = getattr(stream, "isatty", None)
    return bool(isatty and isatty())


def make_bar(*, stream: IO[str], **kwargs: Any) -> Any:
    """A tqdm bar: the notebook widget in a Jupyter kernel with ipywidgets, else the text bar on
    ``stream`` (in a notebook one line rewritten in place)."""
    if in_notebook() and _widgets():
        from tqdm.notebook import tqdm as notebook_tqdm

        return notebook_tqdm(**kwargs)
    from tqdm.std import tqdm

    if in_notebook():
        kwargs.setdefault("ncols", 100)
    else:
        kwargs.setdefault("dynamic_ncols", True)
    return tqdm(file=stream, **kwargs)
