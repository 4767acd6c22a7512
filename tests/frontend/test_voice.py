"""Messages in the caller's words (protoreg.frontend.voice): API argument names outside the
command line, flags inside it, and the setting restored after the block (even on an error)."""

from __future__ import annotations

import threading

import pytest

from protoreg.frontend import voice as V


def test_api_words_by_default() -> None:
    assert V.on_command_line() is False
    assert V.arg("out") == "out="
    assert V.arg("max_runs") == "max_runs="
    assert V.resume_hint("runs/a b") == "`protoreg.fit(resume='runs/a b')`"
    assert V.rerun_sweep() == "call protoreg.sweep again with the same config and out="


def test_command_line_words_inside_the_block() -> None:
    with V.command_line():
        assert V.on_command_line() is True
        assert V.arg("out") == "--out"
        assert V.arg("max_runs") == "--max-runs"
        assert V.resume_hint("runs/a") == "`protoreg fit --resume runs/a`"
        assert V.rerun_sweep() == "re-run its `protoreg sweep` command"
    assert V.on_command_line() is False and V.arg("out") == "out="


def test_nested_blocks_and_errors_restore_the_words() -> None:
    with pytest.raises(RuntimeError):
        with V.command_line():
            with V.command_line():
                assert V.on_command_line()
            assert V.on_command_line()  # the inner block restores the outer one's setting
            raise RuntimeError
    assert V.on_command_line() is False


def test_the_setting_is_per_thread() -> None:
    seen: list[bool] = []
    with V.command_line():
        t = threading.Thread(target=lambda: seen.append(V.on_command_line()))
        t.start()
        t.join()
    assert seen == [False]  # a context variable: another thread speaks the API's words
