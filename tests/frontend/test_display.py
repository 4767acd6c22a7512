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


@pytest.mark.slow  # a real fit or sweep
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


@pytest.mark.slow  # a real fit or sweep
def test_fit_is_quiet_without_a_terminal(tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, no_autoload: None, fast: list[str]) -> None:
    monkeypatch.delenv("PROTOREG_PROGRESS", raising=False)
    protoreg.fit(*fast, out=tmp_path / "run")
    err = capsys.readouterr().err
    assert "step/s" not in err and "it/s" not in err


class _Shell:
    kernel = object()


def test_a_jupyter_kernel_gets_progress_by_default_and_progress_decides(monkeypatch: pytest.MonkeyPatch) -> None:
    import sys
    import types

    from protoreg.frontend.display import in_notebook, progress_setting

    for key in ("CI", "PROTOREG_PROGRESS"):
        monkeypatch.delenv(key, raising=False)
    fake = types.ModuleType("IPython")
    fake.get_ipython = lambda: _Shell()  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "IPython", fake)
    assert in_notebook() and interactive(io.StringIO()) is True  # stderr is no terminal in a kernel
    with progress_setting(False):
        assert interactive(_Tty()) is False
    monkeypatch.setenv("PROTOREG_PROGRESS", "0")
    assert interactive(io.StringIO()) is False
    with progress_setting(True):
        assert interactive(io.StringIO()) is True


@pytest.mark.parametrize("widgets", [True, False])
def test_a_notebook_bar_is_a_widget_with_ipywidgets_else_one_text_line(monkeypatch: pytest.MonkeyPatch, widgets: bool) -> None:
    import sys
    import types
    import warnings

    from protoreg.frontend import display

    fake = types.ModuleType("IPython")
    fake.get_ipython = lambda: _Shell()  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "IPython", fake)
    monkeypatch.setattr(display, "_widgets", lambda: widgets)
    made: list[str] = []
    if widgets:
        import tqdm.notebook

        monkeypatch.setattr(tqdm.notebook, "tqdm", lambda **kw: made.append("widget") or types.SimpleNamespace(close=lambda: None))
    stream = io.StringIO()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no TqdmWarning: IProgress not found
        bar = display.make_bar(stream=stream, total=10, desc="fit", unit="step", mininterval=0)
        if not widgets:
            bar.update(5)
            bar.close()
    if widgets:
        assert made == ["widget"] and stream.getvalue() == ""
    else:
        text = stream.getvalue()
        assert "fit:" in text and "5/10" in text and "\n" not in text.rstrip("\n")  # one line, rewritten with \r


@pytest.mark.slow  # a real fit or sweep
def test_progress_false_draws_nothing_even_when_forced_by_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, no_autoload: None, fast: list[str]
) -> None:
    monkeypatch.setenv("PROTOREG_PROGRESS", "1")
    made: list[StepProgress] = []
    original = StepProgress.__init__

    def spy(self: StepProgress, **kw: object) -> None:
        original(self, **kw)  # type: ignore[arg-type]
        made.append(self)

    monkeypatch.setattr(StepProgress, "__init__", spy)
    protoreg.fit(*fast, out=tmp_path / "r", progress=False)
    assert made and not any(p.enabled for p in made)
