"""Plugin manager and registries.

:func:`get_plugin_manager` builds a fresh :class:`pluggy.PluginManager`: the built-in plugin
modules are registered exactly like outside plugins, then the entry points of the group
``protoreg`` are loaded one at a time. An entry point that fails to import is reported with one
warning naming it and its distribution, and loading goes on (``PROTOREG_STRICT_PLUGINS=1`` makes it
an error). ``PROTOREG_DISABLE_PLUGIN_AUTOLOAD=1`` skips entry points altogether.

Plugin code can end in any exception: ``sys.exit`` (``SystemExit``) and other ``BaseException``
subclasses are a failure of that plugin like any other; only ``KeyboardInterrupt`` (the user's
Ctrl-C) goes through.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import logging
import os
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

import pluggy

from protoreg.plugins import hookspecs
from protoreg.datasets.rules import FunctionDataset
from protoreg.plugin_api import PROJECT_NAME, ROLES, Dataset, StructuralLoss, Study
from protoreg.frontend.caller import warn
from protoreg.errors import PluginError, PluginLoadWarning

log = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "protoreg"
DISABLE_AUTOLOAD_ENV = "PROTOREG_DISABLE_PLUGIN_AUTOLOAD"
STRICT_PLUGINS_ENV = "PROTOREG_STRICT_PLUGINS"

BUILTIN_PLUGINS: tuple[str, ...] = (
    "protoreg.losses.coverage",
    "protoreg.losses.separation",
    "protoreg.losses.overlap",
    "protoreg.datasets.uniform",
    "protoreg.datasets.digits",
    "protoreg.datasets.mnist",
    "protoreg.datasets.moons",
    "protoreg.datasets.circles",
    "protoreg.datasets.blobs",
    "protoreg.datasets.files",
    "protoreg.studies.alba2026",
)


def _truthy(value: str | None) -> bool:
    return (value or "").strip().lower() in {"1", "true", "yes", "on"}


def _version() -> str:
    try:
        return importlib.metadata.version(PROJECT_NAME)
    except importlib.metadata.PackageNotFoundError:  # pragma: no cover - source checkout
        return "0+unknown"


def describe_failure(exc: BaseException) -> str:
    """How plugin code ended, for an error message: ``called sys.exit(3)`` or ``raised E: msg``."""
    if isinstance(exc, SystemExit):
        return f"called sys.exit({exc.code!r})"
    return f"raised {type(exc).__name__}: {exc}"


def get_plugin_manager(*, autoload: bool | None = None, extra: Sequence[Any] = ()) -> pluggy.PluginManager:
    """A fresh plugin manager with the built-ins, (unless disabled) the installed plugins, and
    ``extra``: plugin modules or objects registered inline (e.g. from a notebook or a test),
    whose source is ``"<name> (inline)"``. An extra plugin already loaded as an entry point is
    not registered twice.

    The manager records each plugin's source (``"dist version"``) in ``pm.protoreg_sources``,
    keyed by plugin name.
    """
    pm = pluggy.PluginManager(PROJECT_NAME)
    pm.add_hookspecs(hookspecs)
    sources: dict[str, str] = {}
    for modname in BUILTIN_PLUGINS:
        pm.register(importlib.import_module(modname), name=modname)
        sources[modname] = f"{PROJECT_NAME} {_version()} (built-in)"
    if autoload is None:
        autoload = not _truthy(os.environ.get(DISABLE_AUTOLOAD_ENV))
    if autoload:
        _load_entry_points(pm, sources)
    for plugin in extra:
        if pm.is_registered(plugin):
            continue
        name = f"{getattr(plugin, '__name__', type(plugin).__name__)} (inline)"
        pm.register(plugin, name=name)
        sources[name] = name
    pm.check_pending()
    pm.protoreg_sources = sources  # type: ignore[attr-defined]  # protoreg's own record on pluggy's manager
    return pm


def _load_entry_points(pm: pluggy.PluginManager, sources: dict[str, str]) -> None:
    strict = _truthy(os.environ.get(STRICT_PLUGINS_ENV))
    for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        dist = getattr(ep, "dist", None)
        dist_label = f"{dist.name} {dist.version}" if dist is not None else "unknown distribution"
        plugin_name = f"{ep.name} ({dist_label})"
        plugin = None
        try:
            plugin = ep.load()
            if pm.is_registered(plugin):
                continue
            pm.register(plugin, name=plugin_name)
            pm.check_pending()  # e.g. a misspelled hook name: this plugin is skipped, not the program
        except KeyboardInterrupt:
            raise
        except BaseException as exc:  # noqa: BLE001 - any import failure of a third-party plugin, sys.exit included
            if plugin is not None and pm.is_registered(plugin):
                pm.unregister(plugin)
            how = describe_failure(exc) if isinstance(exc, SystemExit) else f"{type(exc).__name__}: {exc}"
            msg = (
                f"plugin entry point {ep.name!r} = {ep.value!r} of distribution {dist_label} "
                f"failed to load and was skipped: {how}"
            )
            if strict:
                raise PluginError(msg + f" ({STRICT_PLUGINS_ENV}=1)") from exc
            warn(msg, PluginLoadWarning)
            continue
        sources[plugin_name] = dist_label


@dataclass(frozen=True)
class LossEntry:
    """A registered loss and where it came from (``"dist version"``)."""

    loss: StructuralLoss
    source: str


def _plugin_source(pm: pluggy.PluginManager, plugin: Any) -> str:
    name = pm.get_name(plugin) or repr(plugin)
    return getattr(pm, "protoreg_sources", {}).get(name, name)


def _call_each(pm: pluggy.PluginManager, hook_name: str, make_register: Callable[[str], Callable[..., None]]) -> None:
    """Call hook ``hook_name`` plugin by plugin, each with its own ``register`` callback."""
    hook = getattr(pm.hook, hook_name)
    for impl in hook.get_hookimpls():  # registration order: built-ins first
        source = _plugin_source(pm, impl.plugin)
        try:
            impl.function(register=make_register(source))
        except (PluginError, KeyboardInterrupt):
            raise
        except BaseException as exc:  # noqa: BLE001 - sys.exit included
            if isinstance(exc, SystemExit):
                raise PluginError(f"plugin {source} {describe_failure(exc)} in {hook_name}") from exc
            raise PluginError(f"plugin {source} raised in {hook_name}: {type(exc).__name__}: {exc}") from exc


def collect_losses(pm: pluggy.PluginManager | None = None) -> dict[str, LossEntry]:
    """All registered losses by name, in registration order (built-ins first)."""
    pm = pm or get_plugin_manager()
    registry: dict[str, LossEntry] = {}

    def make_register(source: str) -> Callable[[StructuralLoss], None]:
        def register(loss: StructuralLoss) -> None:
            _validate_loss(loss, source)
            if loss.name in registry:
                other = registry[loss.name].source
                raise PluginError(
                    f"loss name {loss.name!r} is registered twice: by {other} and by {source}"
                )
            registry[loss.name] = LossEntry(loss, source)

        return register

    _call_each(pm, "protoreg_register_losses", make_register)
    return registry


def _check_registered(obj: Any, base: type[Any], kind: str, source: str) -> str:
    """What a plugin passed to ``register``: an instance of ``base`` with an identifier name.
    Returns the text that names it in later errors."""
    where = f"{kind} {getattr(obj, 'name', obj)!r} from {source}"
    if isinstance(obj, type):
        raise PluginError(f"{where}: register an instance, not the class {obj.__name__}")
    if not isinstance(obj, base):
        raise PluginError(f"{where}: expected a protoreg.{base.__name__} instance, got {type(obj).__name__}")
    if not isinstance(obj.name, str) or not obj.name.isidentifier():
        raise PluginError(f"{where}: name must be an identifier, got {obj.name!r}")
    return where


def _validate_loss(loss: Any, source: str) -> None:
    where = _check_registered(loss, StructuralLoss, "loss", source)
    if loss.role not in ROLES:
        raise PluginError(f"{where}: role must be one of {', '.join(ROLES)}, got {loss.role!r}")
    if loss.pairs_with and loss.role != "repulsor":
        raise PluginError(f"{where}: only repulsors declare pairs_with")
    if "weight" in loss.defaults:
        raise PluginError(f"{where}: 'weight' is reserved and cannot be a loss parameter")
    for key, value in loss.defaults.items():
        problem = loss.check_param(key, value)
        if problem:
            raise PluginError(f"{where}: default {key}={value!r} {problem}")


def _validate_dataset(ds: Any, source: str) -> None:
    where = _check_registered(ds, Dataset, "dataset", source)
    if type(ds).load is Dataset.load:
        raise PluginError(f"{where}: implements no load(data, seed)")
    if not isinstance(ds.targets, tuple) or not all(isinstance(t, str) and t for t in ds.targets):
        raise PluginError(f"{where}: targets must be a tuple of names, got {ds.targets!r}")
    if not isinstance(ds.defaults, Mapping) or not all(isinstance(k, str) for k in ds.defaults):
        raise PluginError(f"{where}: defaults must map data.* keys to values, got {ds.defaults!r}")
    for attr in ("dim", "size"):
        value = getattr(ds, attr)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise PluginError(f"{where}: {attr} must be a positive int or None, got {value!r}")


def collect_datasets(pm: pluggy.PluginManager | None = None) -> dict[str, tuple[Dataset, str]]:
    """All registered datasets by name: ``name -> (dataset, source)``. A plugin registers a
    :class:`~protoreg.plugin_api.Dataset` instance, or (the older form) ``register(name, loader)``
    with a plain ``loader(data, seed)`` function."""
    pm = pm or get_plugin_manager()
    registry: dict[str, tuple[Dataset, str]] = {}

    def make_register(source: str) -> Callable[..., None]:
        def register(dataset: Any, loader: Any = None) -> None:
            if loader is not None or isinstance(dataset, str):
                name = dataset
                if not isinstance(name, str) or not name:
                    raise PluginError(f"dataset from {source}: name must be a non-empty string, got {name!r}")
                if not callable(loader):
                    raise PluginError(f"dataset {name!r} from {source}: loader is not callable")
                dataset = FunctionDataset(name, loader)
            else:
                _validate_dataset(dataset, source)
            if dataset.name in registry:
                raise PluginError(
                    f"dataset name {dataset.name!r} is registered twice: by {registry[dataset.name][1]} and by {source}"
                )
            registry[dataset.name] = (dataset, source)

        return register

    _call_each(pm, "protoreg_register_datasets", make_register)
    return registry


def collect_studies(pm: pluggy.PluginManager | None = None) -> dict[str, tuple[Study, str]]:
    """All registered studies by name: ``name -> (study, source)``."""
    pm = pm or get_plugin_manager()
    registry: dict[str, tuple[Study, str]] = {}

    def make_register(source: str) -> Callable[[Study], None]:
        def register(study: Study) -> None:
            _check_registered(study, Study, "study", source)
            if study.name in registry:
                raise PluginError(f"study name {study.name!r} is registered twice: by {registry[study.name][1]} and by {source}")
            registry[study.name] = (study, source)

        return register

    _call_each(pm, "protoreg_register_studies", make_register)
    return registry


@dataclass
class Registry:
    """What the plugins of one plugin manager registered: losses, datasets and studies."""

    losses: dict[str, LossEntry]
    datasets: dict[str, tuple[Dataset, str]]
    studies: dict[str, tuple[Study, str]] = field(default_factory=dict)

    @classmethod
    def load(cls, pm: pluggy.PluginManager | None = None, *, plugins: Sequence[Any] = ()) -> "Registry":
        """Build the registries from ``pm``, or from a fresh plugin manager with ``plugins``
        registered inline after the installed ones."""
        pm = pm or get_plugin_manager(extra=plugins)
        return cls(collect_losses(pm), collect_datasets(pm), collect_studies(pm))
