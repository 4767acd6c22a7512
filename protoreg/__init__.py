"""protoreg: structural regularizers for minimal Gaussian MLPs.

The public API is what this module exports, and nothing else is promised:

* training from Python: :func:`fit`, :func:`sweep`, :func:`load_run`, :func:`load_sweep`,
  :func:`load_data`, :func:`resolve_config`, :class:`Run`, :class:`Sweep`;
* writing plugins (:mod:`protoreg.plugin_api`): :class:`StructuralLoss`, :class:`LossContext`,
  :class:`Dataset`, :class:`Study`, :class:`Claim`, :class:`StudyResults`, :data:`hookimpl`
  (hooks: :mod:`protoreg.plugins.hookspecs`);
* errors: :mod:`protoreg.errors` (every one a :class:`ProtoregError`);
* warnings: every one a :class:`ProtoregWarning`, attributed to the caller's line.
"""

from __future__ import annotations

from protoreg.plugin_api import Claim, Dataset, LossContext, StructuralLoss, Study, StudyResults, hookimpl
from protoreg.errors import (
    CheckpointError,
    CompileWarning,
    ConfigError,
    ConfigWarning,
    DataError,
    DataWarning,
    ExpulsionWarning,
    LossError,
    PairingWarning,
    PluginError,
    PluginLoadWarning,
    ProtoregError,
    ProtoregWarning,
    ResultsWarning,
    RunDirError,
    RunDirWarning,
    TrainingError,
    UsageError,
)
from protoreg.api import Run, Sweep, fit, load_data, load_run, load_sweep, resolve_config, sweep

__version__ = "0.1.0"

__all__ = [
    "CheckpointError",
    "Claim",
    "CompileWarning",
    "ConfigError",
    "ConfigWarning",
    "DataError",
    "Dataset",
    "DataWarning",
    "ExpulsionWarning",
    "LossContext",
    "LossError",
    "PairingWarning",
    "PluginError",
    "PluginLoadWarning",
    "ProtoregError",
    "ProtoregWarning",
    "ResultsWarning",
    "Run",
    "RunDirError",
    "RunDirWarning",
    "StructuralLoss",
    "Study",
    "StudyResults",
    "Sweep",
    "TrainingError",
    "UsageError",
    "__version__",
    "fit",
    "hookimpl",
    "load_data",
    "load_run",
    "load_sweep",
    "resolve_config",
    "sweep",
]
