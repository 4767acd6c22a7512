"""Typed errors. Every user-facing failure is a :class:`ProtoregError` whose message is one line
that names the culprit (dotted config key, file, plugin and its distribution).

The CLI prints ``protoreg: error: <message>`` and exits with :attr:`ProtoregError.exit_code`.
"""

from __future__ import annotations


class ProtoregError(Exception):
    """Base class of every error protoreg reports to a user (exit code 2: bad input)."""

    exit_code: int = 2


class ConfigError(ProtoregError):
    """A configuration key or value is invalid. The message starts with the full dotted key."""


class DataError(ProtoregError):
    """A dataset could not be loaded or failed validation. The message names the file."""


class PluginError(ProtoregError):
    """A plugin could not be loaded, registered a duplicate name, or a loss misbehaved."""


class LossError(PluginError):
    """A structural loss raised, returned the wrong shape/dtype/device, or had no gradient path."""


class TrainingError(ProtoregError):
    """Training failed at run time (e.g. a loss term became non-finite). Exit code 1."""

    exit_code = 1


class RunDirError(ProtoregError):
    """A run or sweep directory is missing, incomplete, or clashes with an existing one."""


class CheckpointError(ProtoregError):
    """A checkpoint could not be read safely."""
