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


class UsageError(ProtoregError):
    """A command or function was called with arguments that do not go together (e.g. ``resume=``
    with ``config=`` or ``out=``), or a command line that does not parse."""


# --------------------------------------------------------------------------- warnings
# Every warning protoreg issues is one of these, attributed to the caller's own line (the first
# frame outside protoreg, Lightning and torch: :func:`protoreg.frontend.caller.warn`), so that
# ``warnings.simplefilter("ignore", protoreg.ProtoregWarning)`` silences them all and a
# notebook shows the user's cell, not protoreg's source.


class ProtoregWarning(UserWarning):
    """Base class of every warning protoreg issues."""


class ExpulsionWarning(ProtoregWarning):
    """Prototypes left the convex hull of the training inputs (the first time in a run; later
    expulsions of the same run are counted in ``metrics.json``'s ``expulsion_events``)."""


class PairingWarning(ProtoregWarning):
    """An active repulsor has no active compatible attractor (``pairing.strict=true`` makes it
    a :class:`ConfigError`)."""


class PluginLoadWarning(ProtoregWarning):
    """An installed plugin's entry point failed to import or register and was skipped."""


class CompileWarning(ProtoregWarning):
    """``train.compile=true`` could not compile the training step; it trains eagerly."""


class DataWarning(ProtoregWarning):
    """A data file was read in a way that may not be what was meant (e.g. no header row)."""


class ResultsWarning(ProtoregWarning):
    """Rows of a sweep's ``results.csv`` are not complete records (e.g. cut short) and are ignored."""


class ConfigWarning(ProtoregWarning):
    """A config value was adjusted to what can run (e.g. ``train.batch_size`` above N)."""


class RunDirWarning(ProtoregWarning):
    """Something about a run directory worth knowing that did not stop the command (staging
    leftovers of a killed process were removed; a signal arrived after training had finished)."""


def first_line(exc: BaseException) -> str:
    """The first line of ``exc``'s message (a library may append tracebacks or advice), or the
    exception's class name when the message is empty: how protoreg quotes a failure in one line."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
