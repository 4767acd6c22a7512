"""protoreg.rundirs.status: the one exit-code rule and when the checks' time is worth telling."""

from __future__ import annotations

import pytest

from protoreg.rundirs.status import EXIT_CODES, checks_notable, exit_code


@pytest.mark.parametrize(
    "statuses, code",
    [
        ([], 0),
        (["completed"], 0),
        (["completed", "stopped"], 0),
        (["completed", "failed"], 1),
        (["completed", "no-such-status"], 1),  # unknown counts as failed
        (["failed", "interrupted", "completed"], 130),  # an interruption wins over a failure
        (["interrupted"], 130),
    ],
)
def test_exit_code_of_a_command_from_its_runs(statuses: list[str], code: int) -> None:
    assert exit_code(statuses) == code
    assert exit_code(iter(statuses)) == code  # any iterable, consumed once


def test_every_status_has_the_documented_code() -> None:
    assert EXIT_CODES == {"completed": 0, "stopped": 0, "failed": 1, "interrupted": 130}


@pytest.mark.parametrize(
    "seconds, checks, notable",
    [(10.0, 2.0, True), (10.0, 1.99, False), (4.99, 4.0, False), (5.0, 1.0, True), (None, 1.0, False), (10.0, None, False)],
)
def test_checks_are_notable_at_a_fifth_of_at_least_five_seconds(seconds: float | None, checks: float | None, notable: bool) -> None:
    assert checks_notable(seconds, checks) is notable


def test_finished_runs_are_completed_or_failed() -> None:
    from protoreg.rundirs.status import FINISHED, finished

    assert FINISHED == ("completed", "failed")
    assert finished("completed") and finished("failed")
    assert not any(finished(s) for s in ("stopped", "interrupted", None, ""))
