"""Progress on long work: a step bar with rate and ETA on a terminal, nothing in logs and CI."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

import protoreg
from protoreg.training.progress import StepProgress, interactive


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.mark.parametrize(
    ("env", "tty", "expected"),
    [
        ({}, True, True),
        ({}, False, False),
        ({"CI": "true"}, True, False),
        ({"PROTOREG_PROGRESS": "0"}, True, False),
        ({"PROTOREG_PROGRESS": "1"}, False, True),
    ],
)
def test_progress_is_drawn_on_a_terminal_only(monkeypatch: pytest.MonkeyPatch, env: dict[str, str], tty: bool, expected: bool) -> None:
    for key in ("CI", "PROTOREG_PROGRESS"):
        monkeypatch.delenv(key, raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    assert interactive(_Tty() if tty else io.StringIO()) is expected


def test_fit_draws_a_step_bar_with_rate_on_a_terminal(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, no_autoload: None, fast: list[str]) -> None:
    stream = _Tty()
    made: list[StepProgress] = []
    original = StepProgress.__init__

    def on_terminal(self: StepProgress, **kwargs: object) -> None:
        original(self, **{**kwargs, "stream": stream, "mininterval": 0.0})  # type: ignore[arg-type]
        made.append(self)

    monkeypatch.delenv("CI", raising=False)
    monkeypatch.delenv("PROTOREG_PROGRESS", raising=False)
    monkeypatch.setattr(StepProgress, "__init__", on_terminal)
    run = protoreg.fit(*fast, out=tmp_path / "run")
    assert run.status == "completed" and made and made[0].enabled
    text = stream.getvalue()
    assert "fit" in text and "40/40" in text and "step/s" in text and "loss" in text, text


def test_fit_is_quiet_without_a_terminal(tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, no_autoload: None, fast: list[str]) -> None:
    monkeypatch.delenv("PROTOREG_PROGRESS", raising=False)
    protoreg.fit(*fast, out=tmp_path / "run")
    err = capsys.readouterr().err
    assert "step/s" not in err and "it/s" not in err
