"""protoreg: structural regularizers for minimal Gaussian MLPs.

The public API is what this module exports, and nothing else is promised:

* training from Python: :func:`fit`, :func:`sweep`, :func:`load_run`, :func:`load_sweep`,
  :func:`load_data`, :func:`resolve_config`, :class:`Run`, :class:`Sweep`;
* writing plugins (:mod:`protoreg.plugin_api`): :class:`StructuralLoss`, :class:`LossContext`,
  :class:`Dataset`, :class:`Study`, :class:`Claim`, :class:`StudyResults`, :data:`hookimpl`
  (hooks: :mod:`protoreg.plugins.hookspecs`);
* instruments for anyone's model: :mod:`protoreg.functional` (the structural losses as
  functions), :class:`HullMonitor` (the hull check), :func:`reconstruct` (the reconstruction
  readout), :mod:`protoreg.callbacks` (``HullCallback`` for Lightning trainers),
  :func:`check_pairing` (the design rule for a model's own losses);
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
from protoreg import callbacks, functional
from protoreg.evaluation.reconstruction import Reconstruction, reconstruct
from protoreg.geometry.monitor import HullMonitor, HullReport
from protoreg.plugins.pairing import check_pairing

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
    "HullMonitor",
    "HullReport",
    "LossContext",
    "LossError",
    "PairingWarning",
    "PluginError",
    "PluginLoadWarning",
    "Reconstruction",
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
    "callbacks",
    "check_pairing",
    "fit",
    "functional",
    "hookimpl",
    "load_data",
    "load_run",
    "load_sweep",
    "reconstruct",
    "resolve_config",
    "sweep",
]
