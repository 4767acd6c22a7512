"""Run statuses and the one exit-code rule shared by ``fit``, ``sweep`` and the Python API; when
both commands mention the time the geometry checks took."""

from __future__ import annotations

from typing import Iterable

#: Every status a run can end with, and the exit code it gives.
EXIT_CODES: dict[str, int] = {
    "completed": 0,  # trained exactly train.steps (never fewer)
    "stopped": 0,  # stopped early, as asked: the geometry check (geometry.on_expulsion=stop) or trainer.max_time; resumable
    "failed": 1,  # a loss term became non-finite, a plugin raised, or training ended early for another reason
    "interrupted": 130,  # SIGINT/SIGTERM; the run directory is complete and resumable
}


#: The statuses a sweep's run ends with for good: recorded in ``results.csv`` and skipped when the
#: sweep is run again (a stopped or interrupted group trains again).
FINISHED: tuple[str, ...] = ("completed", "failed")


def finished(status: object) -> bool:
    """Whether a sweep's run with this ``status`` is done for good (:data:`FINISHED`)."""
    return status in FINISHED


def exit_code(statuses: Iterable[str]) -> int:
    """The exit code of a command whose runs ended with ``statuses``: 130 if any was
    interrupted, else 1 if any failed (or has an unknown status), else 0."""
    codes = {EXIT_CODES.get(s, 1) for s in statuses}
    return 130 if 130 in codes else 1 if 1 in codes else 0


def checks_notable(seconds: float | None, check_seconds: float | None) -> bool:
    """Whether the geometry checks took a share of training worth telling (``fit``'s summary, a
    sweep's batch line): a fifth or more of at least 5 s."""
    return seconds is not None and check_seconds is not None and seconds >= 5.0 and check_seconds >= 0.2 * seconds
