"""From configs to a trainable group of runs: data, model and module with a leading run axis R.

A *group* is R runs of identical shapes and training settings (:data:`GROUP_KEYS`) trained as one
program; ``fit`` trains a group of one, ``sweep`` one group per shape.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence, cast

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from protoreg import config as C
from protoreg.datasets.rules import validate_loaded
from protoreg.frontend.caller import warn
from protoreg.errors import ConfigError, ConfigWarning, DataError, ProtoregError
from protoreg.training.memory import check_memory
from protoreg.model.mlp import GaussianMLP, Parameterization
from protoreg.plugins.registry import Registry, describe_failure
from protoreg.training.module import ProtoRegModule
from protoreg.training.terms import LossTerm


@dataclass
class RunSpec:
    """One validated run: its resolved config, training data and loss settings."""

    cfg: DictConfig
    x: np.ndarray  #: (N, d)
    y: np.ndarray  #: (N, k)
    settings: dict[str, dict[str, Any]]  #: every configured loss: weight and all parameters
    image_shape: tuple[int, ...] | None = None  #: the inputs are images of this shape (prod = d)

    @property
    def active(self) -> list[str]:
        """Losses with weight > 0, in configuration order."""
        return C.active_losses(self.settings)


def load_data(cfg: DictConfig, reg: Registry) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """The (validated) training data of one run: ``x``, ``y`` and what the loader declared
    about them (``image_shape``)."""
    name = "file" if cfg.data.path else cfg.data.name
    dataset, source = reg.datasets[name]
    where = str(cfg.data.path) if cfg.data.path else f"dataset {name!r} ({source})"
    try:
        result = dataset.load(cast(dict[str, Any], OmegaConf.to_container(cfg.data, resolve=True)), C.data_seed(cfg))  # a section is a dict
    except ProtoregError:
        raise
    except KeyboardInterrupt:
        raise
    except BaseException as exc:  # noqa: BLE001 - a dataset plugin's bug, sys.exit included
        how = describe_failure(exc) if isinstance(exc, SystemExit) else f"{type(exc).__name__}: {exc}"
        raise DataError(f"{where}: loader failed: {how}") from exc
    return validate_loaded(result, where)


def run_spec(cfg: DictConfig, reg: Registry, settings: dict[str, dict[str, Any]] | None = None) -> RunSpec:
    """The spec of an already validated config (data loaded, loss settings filled in)."""
    settings = settings if settings is not None else C.loss_settings(cfg, reg.losses)
    x, y, info = load_data(cfg, reg)
    batch = cfg.train.batch_size
    if batch is not None and int(batch) > x.shape[0]:
        warn(f"train.batch_size: {batch} is more than the {x.shape[0]} samples of the data; training full batch", ConfigWarning)
    shape = info.get("image_shape")
    return RunSpec(cfg, x, y, settings, tuple(shape) if shape else None)


def check_group_memory(specs: Sequence[RunSpec]) -> None:
    """Refuse (:class:`ConfigError` naming ``train.batch_size``) a group of runs whose estimated
    peak memory exceeds what is available (:func:`protoreg.training.memory.check_memory`)."""
    cfg = specs[0].cfg
    n, d = specs[0].x.shape
    check_memory(
        n=n,
        width=int(cfg.model.width or n),
        dim=d,
        out=specs[0].y.shape[1],
        runs=len(specs),
        batch_size=cfg.train.batch_size,
        itemsize=torch.finfo(torch_dtype(cfg)).bits // 8,
        losses=specs[0].active,
        accelerator=str(cfg.trainer.get("accelerator", "auto")),
    )


def parameterization(cfg: DictConfig, dim: int) -> Parameterization:
    p = cfg.model.parameterization
    if p == "auto":
        return "affine" if dim == 1 else "radial"
    if p == "affine" and dim > 1:
        raise ConfigError(f"model.parameterization: 'affine' has no point prototype for {dim}-D inputs; use radial")
    return cast(Parameterization, str(p))  # validated: affine or radial


def torch_dtype(cfg: DictConfig) -> torch.dtype:
    prec = str(cfg.trainer.get("precision", "32-true"))
    return torch.float64 if prec.startswith("64") else torch.float32


#: Settings that must agree for runs to train together.
GROUP_KEYS = (
    "model.parameterization",
    "model.init",
    "train.steps",
    "train.lr",
    "train.batch_size",
    "train.log_every_n_steps",
    "train.compile",
    "trainer",
)


def group_key(spec: RunSpec) -> tuple[Any, ...]:
    """Runs with equal keys can train as one group."""
    cfg = spec.cfg
    n, d = spec.x.shape
    k = spec.y.shape[1]
    width = cfg.model.width or n
    return (n, d, k, width, parameterization(cfg, d), tuple(sorted(spec.settings)), float(cfg.model.init_width), spec.image_shape) + tuple(
        str(OmegaConf.select(cfg, key)) for key in GROUP_KEYS
    )


@dataclass
class RunGroup:
    """R runs of identical shapes with their module, ready to train as one program."""

    specs: list[RunSpec]
    module: ProtoRegModule

    @property
    def cfg(self) -> DictConfig:
        """The first run's config (the group's shared training settings)."""
        return self.specs[0].cfg

    @property
    def image_shape(self) -> tuple[int, ...] | None:
        return self.specs[0].image_shape


def build_group(specs: Sequence[RunSpec], reg: Registry, *, fail_fast: bool = True) -> RunGroup:
    """Model and module for runs that share shapes (see :data:`GROUP_KEYS`); every loss is
    evaluated once (:meth:`ProtoRegModule.dry_run`) so a faulty plugin is reported now. A group
    whose estimated memory exceeds what is available is refused first (:func:`check_group_memory`)."""
    specs = list(specs)
    first = specs[0].cfg
    key0 = group_key(specs[0])
    if any(group_key(s) != key0 for s in specs[1:]):
        raise ConfigError("runs of one group must share data shape, width, parameterization and training settings")
    check_group_memory(specs)
    dtype = torch_dtype(first)
    x = torch.tensor(np.stack([s.x for s in specs]), dtype=dtype)
    y = torch.tensor(np.stack([s.y for s in specs]), dtype=dtype)
    n, d = specs[0].x.shape
    terms = []
    for name in specs[0].settings:
        entry = reg.losses[name]
        terms.append(
            LossTerm(
                name=name,
                loss=entry.loss,
                source=entry.source,
                weight=[float(s.settings[name]["weight"]) for s in specs],
                params={p: [s.settings[name][p] for s in specs] for p in entry.loss.defaults},
            )
        )
    seeds = [int(s.cfg.train.seed) for s in specs]
    model = GaussianMLP(len(specs), int(first.model.width or n), d, specs[0].y.shape[1], parameterization(first, d)).to(dtype)
    model.initialize(x, y, seeds, init=first.model.init, init_width=float(first.model.init_width))
    module = ProtoRegModule(
        model,
        x,
        y,
        terms,
        lr=float(first.train.lr),
        steps=int(first.train.steps),
        chunk=int(first.train.log_every_n_steps),
        batch_size=first.train.batch_size,
        seeds=seeds,
        fail_fast=fail_fast,
        keep_data=all(bool(OmegaConf.select(s.cfg, "output.save_data", default=True)) for s in specs),
        compile=bool(OmegaConf.select(first, "train.compile", default=False)),
    )
    module.dry_run()
    return RunGroup(specs, module)
