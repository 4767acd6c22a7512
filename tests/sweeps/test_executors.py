"""protoreg.sweeps.executors without Ray: the unreachable-address refusal, Ray's words on one line."""

from __future__ import annotations

import socket

import pytest

from protoreg.errors import ConfigError
from protoreg.sweeps.executors import _first_line, _ray_said, _reachable


def test_an_address_nobody_listens_on_is_refused_in_one_line() -> None:
    with socket.socket() as s:  # a port that was just free: nothing listens there
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    for address in (f"127.0.0.1:{port}", f"ray://127.0.0.1:{port}"):
        with pytest.raises(ConfigError, match=r"^sweep.ray.address: no Ray cluster answers at .*sweep.ray.address=null") as ei:
            _reachable(address)
        assert "\n" not in str(ei.value)


def test_a_listening_address_and_auto_pass() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        _reachable(f"127.0.0.1:{s.getsockname()[1]}")
    _reachable("auto")  # left to Ray


def test_ray_messages_become_one_line_without_flags_protoreg_has_not() -> None:
    exc = ConnectionError("Could not find any running Ray instance. Please specify the one to connect to by setting `--address` flag or `RAY_ADDRESS` environment variable.\nTraceback ...")
    said = _ray_said(exc)
    assert said == "Could not find any running Ray instance. (set sweep.ray.address to the cluster's address, or null for a local instance)"
    assert _first_line(RuntimeError("x" * 400)) == "x" * 297 + "..."
    assert _first_line(RuntimeError("")) == "RuntimeError"
    assert _first_line(RuntimeError("  a   b \n c")) == "a b"
