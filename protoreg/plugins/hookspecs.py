"""Hook specifications: the only hooks protoreg calls. Plugins implement them with
:data:`protoreg.hookimpl`.

Hooks are called once per plugin manager (see :func:`protoreg.plugins.registry.get_plugin_manager`), when a
command first needs the registry, in plugin registration order: built-ins first, then installed
entry points of the group ``protoreg`` in the order ``importlib.metadata`` lists them.
"""

from __future__ import annotations

from typing import Callable

import pluggy

from protoreg.plugin_api import PROJECT_NAME, StructuralLoss, Study

hookspec = pluggy.HookspecMarker(PROJECT_NAME)


@hookspec
def protoreg_register_losses(register: Callable[[StructuralLoss], None]) -> None:
    """Register structural losses.

    Called once per plugin when the loss registry is built (before any config is validated).

    :param register: call it once per loss with a :class:`protoreg.StructuralLoss` *instance*.
        It raises :class:`protoreg.errors.PluginError` when the instance is malformed (no name,
        unknown role, ``pairs_with`` on a non-repulsor) or when another plugin already registered
        the same name (the message names both sources).
    :return: nothing; return values are ignored.
    """


@hookspec
def protoreg_register_datasets(register: Callable[..., None]) -> None:
    """Register dataset loaders, selected with ``data.name``.

    Called once per plugin when the dataset registry is built.

    :param register: ``register(name, loader)``, where ``loader(cfg, seed)`` receives the
        ``data`` config section as a plain dict (``n``, which may be null, ``dim``, ``low``,
        ``high``, ``target``, which is null unless set, ``classes``, ``noise``, ``path``,
        ``targets``, ``seed``) and the integer data seed, and returns ``(X, y)`` or
        ``(X, y, info)``: float numpy arrays of shapes ``(N, d)`` and ``(N, k)``, and an optional
        mapping of which protoreg reads only ``image_shape``, a tuple of 1 to 3 positive ints
        whose product is d that each input row reshapes to (e.g. ``(8, 8)``). Results are checked
        with :func:`protoreg.datasets.builtin.validate_loaded`. It should raise
        :class:`protoreg.errors.DataError` for bad input. Duplicate names are an error.
    :return: nothing; return values are ignored.
    """


@hookspec
def protoreg_register_studies(register: Callable[[Study], None]) -> None:
    """Register studies: sets of claims checked on a sweep's results, selected with ``sweep.study``.

    Called once per plugin when the study registry is built (``protoreg sweep`` with a study
    named, ``protoreg plugins``).

    :param register: call it once per study with a :class:`protoreg.Study` *instance* (a
        ``name`` that is an identifier, a one-line ``description``, and ``evaluate(results)``
        returning a list of :class:`protoreg.Claim`). A duplicate name is an error naming both
        sources.
    :return: nothing; return values are ignored.
    """
