"""Warnings attributed to the caller's line (protoreg.frontend.caller): the first frame outside
protoreg/Lightning/torch is named, the active filters decide, and the caller's filters are put
back after a call."""

from __future__ import annotations

import sys
import types
import warnings

import pytest

from protoreg.errors import ProtoregWarning, ResultsWarning
from protoreg.frontend import caller as K


def _internal_module(name: str, body: str) -> types.ModuleType:
    """A module whose frames count as protoreg's own (its ``__name__`` is under ``protoreg``)."""
    mod = types.ModuleType(name)
    mod.__dict__["K"] = K
    exec(compile(body, f"<{name}>", "exec"), mod.__dict__)
    return mod


INNER = _internal_module(
    "protoreg._test_inner",
    "def issue(msg, cat):\n    K.warn(msg, cat)\n\ndef deeper(msg, cat):\n    issue(msg, cat)\n\ndef frame():\n    return K.user_frame()\n",
)


def test_the_warning_names_the_callers_line() -> None:
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        line = sys._getframe().f_lineno + 1
        INNER.deeper("careful", ResultsWarning)
    (w,) = rec
    assert (w.category, str(w.message), w.filename, w.lineno) == (ResultsWarning, "careful", __file__, line)


def test_user_frame_is_the_first_frame_outside_the_internal_packages() -> None:
    frame = INNER.frame()
    assert frame is not None and frame.f_code is test_user_frame_is_the_first_frame_outside_the_internal_packages.__code__


def test_every_internal_package_is_skipped() -> None:
    for pkg in ("torch", "lightning", "pluggy", "contextlib"):
        assert pkg in K.INTERNAL_PACKAGES
        mod = _internal_module(f"{pkg}._protoreg_test", "def frame():\n    return K.user_frame()\n")
        frame = mod.frame()
        assert frame is not None and frame.f_globals["__name__"] == __name__
    outside = _internal_module("protoregx._test", "def frame():\n    return K.user_frame()\n")  # a prefix is not the package
    assert outside.frame().f_globals["__name__"] == "protoregx._test"


def test_an_ignore_filter_silences_it() -> None:
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        warnings.simplefilter("ignore", ProtoregWarning)
        INNER.issue("hidden", ResultsWarning)
    assert rec == []


def test_an_error_filter_raises_it() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error", ResultsWarning)
        with pytest.raises(ResultsWarning, match="^boom$"):
            INNER.issue("boom", ResultsWarning)


def test_a_filter_on_the_callers_module_applies() -> None:
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        warnings.filterwarnings("ignore", module=__name__)  # the caller's module, not protoreg's
        INNER.issue("by module", ResultsWarning)
    assert rec == []


def test_default_action_shows_it_once_per_calling_line() -> None:
    g = sys._getframe().f_globals
    g.pop("__warningregistry__", None)
    with warnings.catch_warnings(record=True) as rec:
        warnings.resetwarnings()
        warnings.simplefilter("default")
        for _ in range(3):
            INNER.issue("once", ResultsWarning)
        INNER.issue("once", ResultsWarning)  # another line
    assert len(rec) == 2 and len({w.lineno for w in rec}) == 2


def test_keeps_warning_filters_puts_the_callers_filters_back() -> None:
    @K.keeps_warning_filters
    def adds_filters(x: int) -> int:
        """doc"""
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        warnings.simplefilter("error", UserWarning)
        return x + 1

    @K.keeps_warning_filters
    def raises() -> None:
        warnings.simplefilter("ignore")
        raise ValueError("x")

    with warnings.catch_warnings():
        before = list(warnings.filters)
        assert adds_filters(1) == 2
        assert warnings.filters == before
        with pytest.raises(ValueError):
            raises()
        assert warnings.filters == before
    assert adds_filters.__name__ == "adds_filters" and adds_filters.__doc__ == "doc"
