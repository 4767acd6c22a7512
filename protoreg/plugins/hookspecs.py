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
    """Register datasets, selected with ``data.name``.

    Called once per plugin when the dataset registry is built.

    :param register: ``register(dataset)`` with a :class:`protoreg.Dataset` *instance*: its
        ``name``, the ``data.*`` keys it reads with their ``defaults``, its ``targets``, ``dim``
        and ``size``, an optional :meth:`~protoreg.Dataset.check` run with the shared rules
        (:func:`protoreg.datasets.rules.data_problems`) before anything is written, and
        :meth:`~protoreg.Dataset.load`, whose result is checked with
        :func:`protoreg.datasets.rules.validate_loaded`. The older form
        ``register(name, loader)`` takes a plain ``loader(data, seed)`` function (it may read any
        key: ``data.dim``, ``data.low``/``data.high`` and ``data.noise`` are checked for it).
        Duplicate names are an error.
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
