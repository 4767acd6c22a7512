"""protoreg: structural regularizers for minimal Gaussian MLPs.

The public API (everything plugins may import) is what this module exports.
"""

from __future__ import annotations

from .api import LossContext, StructuralLoss, hookimpl
from .errors import ConfigError, DataError, LossError, PluginError, ProtoregError, TrainingError

__version__ = "0.1.0"

__all__ = [
    "ConfigError",
    "DataError",
    "LossContext",
    "LossError",
    "PluginError",
    "ProtoregError",
    "StructuralLoss",
    "TrainingError",
    "__version__",
    "hookimpl",
]
