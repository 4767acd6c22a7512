"""Configuration: OmegaConf structured dataclasses are the only defaults.

Precedence: dataclass defaults <- ``--config FILE`` (YAML) <- ``KEY=VALUE`` overrides. Every
problem is reported with its full dotted key; all problems found are reported together, in one
line. Configs never run code: only OmegaConf's built-in interpolations are available.
"""

from __future__ import annotations

import functools
import inspect
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, cast

from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from protoreg.errors import ConfigError, first_line
from protoreg.plugins.registry import LossEntry


@dataclass
class DataConfig:
    """``data.*``: which inputs and targets to train on."""

    name: str = "uniform"  #: a registered dataset (``protoreg plugins`` lists them: uniform, digits, moons, circles, blobs, ...); ``file`` when ``path`` is set
    n: Optional[int] = 20  #: number of points; null = every image (``digits`` and ``mnist`` only)
    dim: int = 1  #: input dimension d (uniform; moons, circles and blobs are 2-D, digits 64-D, mnist 784-D)
    low: float = 0.0  #: lower edge of the input box (uniform)
    high: float = 1.0  #: upper edge of the input box (uniform)
    target: Optional[str] = None  #: null = the dataset's own: uniform ``random`` (or ``sin``), digits and mnist ``onehot`` (or ``label``), moons/circles/blobs ``label`` (or ``onehot``)
    classes: Optional[List[int]] = None  #: digits to keep, e.g. ``[0, 1, 7]`` (digits and mnist only); null = all ten
    noise: Optional[float] = None  #: noise of moons (null = 0.1) and circles (0.05), ``cluster_std`` of blobs (1.0)
    path: Optional[str] = None  #: CSV (a header row, or none: a numeric first row is data), .npy or .npz file; selects the ``file`` dataset
    targets: Optional[List[Any]] = None  #: target columns of a file (names or indices); default: last column
    seed: Optional[int] = None  #: data seed; null = ``train.seed``


@dataclass
class ModelConfig:
    """``model.*``: the Gaussian MLP."""

    width: Optional[int] = None  #: hidden units M; null = N
    parameterization: str = "auto"  #: ``auto`` (affine in 1-D, radial otherwise) | ``affine`` | ``radial``
    init: str = "uniform"  #: prototypes ``uniform`` inside the inputs' hull | at ``samples``
    init_width: float = 1.0  #: initial receptive width, in sample spacings


@dataclass
class TrainConfig:
    """``train.*``: optimisation (Adam)."""

    steps: int = 2000  #: optimisation steps
    lr: float = 0.01  #: Adam learning rate
    seed: int = 0  #: initialisation seed (and data seed unless ``data.seed`` is set)
    batch_size: Optional[int] = None  #: samples per step; null = full batch
    log_every_n_steps: int = 50  #: TensorBoard scalar interval (steps between Lightning batches)
    compile: bool = False  #: ``torch.compile`` the training step (opt-in; the eager step, with a warning, where compilation is unavailable)


@dataclass
class GeometryConfig:
    """``geometry.*``: the convex-hull check of prototypes during and after training."""

    on_expulsion: str = "warn"  #: ``warn`` | ``stop`` | ``ignore``
    every_n_steps: int = 100  #: check interval (rounded up to a multiple of ``train.log_every_n_steps``)
    max_outside_frac: float = 0.0  #: expulsion = outside-hull fraction above this
    #: outside = hull distance above ``margin`` x the data's resolution (the median distance from
    #: an input to its nearest distinct input; docs/geometry.md says why)
    margin: float = 0.1
    #: reported hull distances are certified to within ``rel_tol`` x the data's resolution
    rel_tol: float = 0.01


@dataclass
class PairingConfig:
    """``pairing.*``: the repulsor/attractor design rule."""

    strict: bool = False  #: an unpaired active repulsor is an error instead of a warning


@dataclass
class OutputConfig:
    """``output.*``: what a run directory keeps besides metrics and prototypes."""

    save_data: bool = True  #: keep the training data: ``data.npz`` and the checkpoint's copy (``check`` needs it)


@dataclass
class RayConfig:
    """``sweep.ray.*``: the Ray executor (``sweep.executor: ray``)."""

    address: Optional[str] = None  #: a running cluster (``auto``, ``ray://host:port``); null = start a local Ray instance
    num_cpus_per_task: float = 1.0  #: CPUs reserved by each group's task
    num_gpus_per_task: float = 0.0  #: GPUs reserved by each group's task
    max_retries: int = 2  #: retries of a task whose worker died


@dataclass
class SweepConfig:
    """``sweep.*``: grids of runs for ``protoreg sweep``."""

    grid: Dict[str, List[Any]] = field(default_factory=dict)  #: dotted key -> list of values
    masks: List[str] = field(default_factory=list)  #: losses whose on/off subsets are enumerated
    seeds: Any = 1  #: number of seeds (0..n-1) or an explicit list
    max_runs_per_batch: int = 256  #: cap on runs trained together in one group (one batched program)
    study: Optional[str] = None  #: a registered study whose claims are checked on the results (``protoreg plugins``); null = none
    executor: str = "local"  #: ``local`` (this process) | ``ray`` (one Ray task per group; ``pip install "protoreg[ray]"``)
    ray: RayConfig = field(default_factory=RayConfig)  #: settings of the Ray executor
    max_runs: int = 100_000  #: a sweep with more runs is refused before planning; raise it to plan bigger grids


def _default_losses() -> Dict[str, Dict[str, Any]]:
    return {"coverage": {"weight": 0.1}}


def _default_trainer() -> Dict[str, Any]:
    return {"accelerator": "auto", "devices": 1}


@dataclass
class Config:
    """The whole configuration of a run (and of a sweep's runs)."""

    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    #: ``losses.<name>.weight`` and ``losses.<name>.<param>``; a loss is active when weight > 0
    losses: Dict[str, Dict[str, Any]] = field(default_factory=_default_losses)
    train: TrainConfig = field(default_factory=TrainConfig)
    #: passed to ``lightning.Trainer`` (accelerator, devices, precision, ...)
    trainer: Dict[str, Any] = field(default_factory=_default_trainer)
    geometry: GeometryConfig = field(default_factory=GeometryConfig)
    pairing: PairingConfig = field(default_factory=PairingConfig)
    output: OutputConfig = field(default_factory=OutputConfig)
    sweep: SweepConfig = field(default_factory=SweepConfig)


#: Trainer arguments protoreg sets itself; users set the protoreg key instead.
RESERVED_TRAINER_KEYS: dict[str, str] = {
    "max_steps": "train.steps",
    "max_epochs": "train.steps",
    "min_steps": "train.steps",
    "min_epochs": "train.steps",
    "logger": "the run directory's tb/",
    "callbacks": "plugins",
    "default_root_dir": "--out",
    "enable_checkpointing": "the run directory's checkpoints/",
    "log_every_n_steps": "train.log_every_n_steps",
}


#: Seeds are 64-bit: torch and numpy take any seed in ``[0, MAX_SEED]``.
MAX_SEED = 2**63 - 1
#: The largest accepted value of each integer key. Sizes no run could train and seeds beyond 64
#: bits are refused before anything is built; whether a run fits in memory is estimated apart.
INT_MAXIMA: dict[str, int] = {
    "data.n": 10**9,
    "data.dim": 10**6,
    "data.seed": MAX_SEED,
    "model.width": 10**6,
    "train.steps": 10**9,
    "train.seed": MAX_SEED,
    "train.batch_size": 10**9,
    "train.log_every_n_steps": 10**9,
    "geometry.every_n_steps": 10**9,
    "sweep.max_runs": 10**9,
    "sweep.max_runs_per_batch": 10**6,
    "sweep.ray.max_retries": 1000,
}


def int_maximum_problem(key: str, value: Any) -> str | None:
    """``"key: must be <= MAX, got V"`` when ``value`` exceeds the maximum of :data:`INT_MAXIMA`."""
    top = INT_MAXIMA[key]
    if isinstance(value, int) and not isinstance(value, bool) and value > top:
        shown = "2**63 - 1" if top == MAX_SEED else str(top)
        return f"{key}: must be <= {shown}, got {value}"
    return None


#: Trainer arguments protoreg refuses: they would end training before ``train.steps`` (a run
#: marked completed that is not), or do not apply to protoreg's one-process, manually stepped
#: training. Each maps to what to use instead.
UNSUPPORTED_TRAINER_KEYS: dict[str, str] = {
    "fast_dev_run": "it ends training after one chunk; use train.steps (e.g. train.steps=10) instead",
    "limit_train_batches": "it ends training before train.steps; use train.steps instead",
    "overfit_batches": "it ends training before train.steps; use train.steps and data.n instead",
    "limit_val_batches": "protoreg has no validation loop",
    "val_check_interval": "protoreg has no validation loop",
    "check_val_every_n_epoch": "protoreg has no validation loop",
    "num_sanity_val_steps": "protoreg has no validation loop",
    "limit_test_batches": "protoreg has no test loop",
    "limit_predict_batches": "protoreg has no predict loop",
    "accumulate_grad_batches": "protoreg steps the optimiser itself; use train.batch_size instead",
    "gradient_clip_val": "protoreg steps the optimiser itself (no gradient clipping)",
    "gradient_clip_algorithm": "protoreg steps the optimiser itself (no gradient clipping)",
}


def _trainer_problems(trainer: Mapping[str, Any]) -> list[str]:
    """Trainer settings protoreg refuses: :data:`UNSUPPORTED_TRAINER_KEYS`, and more than one device,
    node or process (protoreg trains in this one process; Lightning would start copies of it)."""
    p: list[str] = []
    if "devices" in trainer and not _one_device(trainer["devices"]):
        p.append(f"trainer.devices: protoreg trains on one device in one process, got {trainer['devices']!r}; use 1 (or one index such as [0])")
    if trainer.get("num_nodes", 1) != 1:
        p.append(f"trainer.num_nodes: protoreg trains on one device in one process, got {trainer['num_nodes']!r}")
    if trainer.get("strategy", "auto") not in ("auto", "single_device"):
        p.append(f"trainer.strategy: protoreg trains on one device in one process, got {trainer['strategy']!r}; use auto")
    return p


def _one_device(devices: Any) -> bool:
    """``trainer.devices`` names exactly one device: 1, ``"1"``, ``[i]`` or ``"i,"``."""
    if isinstance(devices, bool):
        return False
    if isinstance(devices, int):
        return devices == 1
    if isinstance(devices, str):
        text = devices.strip()
        if "," in text:
            return len([part for part in text.split(",") if part.strip()]) == 1
        return text == "1"
    return isinstance(devices, (list, tuple, ListConfig)) and len(devices) == 1


def one_line(exc: OmegaConfBaseException) -> str:
    key = getattr(exc, "full_key", None) or getattr(exc, "key", None)
    msg = str(getattr(exc, "msg", None) or exc).strip().splitlines()[0]
    return f"{key}: {msg}" if key else msg


def _unparsable(item: str, exc: Exception) -> str:
    """One line for an override whose value YAML cannot read (``data.classes=[0,1``)."""
    key, _, value = item.partition("=")
    why = " ".join(str(getattr(exc, "problem", None) or exc).split()) or type(exc).__name__
    context = getattr(exc, "context", None)
    if context:
        why = f"{' '.join(str(context).split())}: {why}"
    hint = ""
    if re.search(r"[{,]\s*[^\s:{},]+:[^\s]", value):
        hint = "; in a YAML mapping put a space after each colon, e.g. {data.n: [3, 5]}"
    return f"{key.strip()}: the value {value!r} is not valid YAML ({why}){hint}"


def default_config() -> DictConfig:
    """The structured default configuration."""
    return OmegaConf.structured(Config)


def load_config(config_file: str | Path | None = None, overrides: Sequence[str] = ()) -> DictConfig:
    """Defaults <- YAML file <- ``KEY=VALUE`` overrides. Raises :class:`ConfigError`.

    This checks keys and types only; :func:`validate` checks values against the registries.
    """
    cfg = default_config()
    if config_file is not None:
        path = Path(config_file)
        if not path.is_file():
            raise ConfigError(f"{path}: config file not found")
        try:
            loaded = OmegaConf.load(path)
        except Exception as exc:  # noqa: BLE001 - yaml errors of any kind
            first = first_line(exc)
            raise ConfigError(f"{path}: not a valid YAML config ({first})") from None
        if not isinstance(loaded, DictConfig):
            raise ConfigError(f"{path}: a config file must be a mapping of sections, got a list")
        try:
            cfg = cast(DictConfig, OmegaConf.merge(cfg, loaded))  # a mapping merged into a mapping
        except OmegaConfBaseException as exc:
            raise ConfigError(f"{path}: {one_line(exc)}") from None
    problems: list[str] = []
    for item in overrides:
        if "=" not in item or item.startswith("="):
            problems.append(f"{item!r}: expected KEY=VALUE")
            continue
        try:
            parsed = OmegaConf.from_dotlist([item])
        except OmegaConfBaseException as exc:
            problems.append(one_line(exc))
            continue
        except Exception as exc:  # noqa: BLE001 - the value is not YAML (yaml's own errors)
            problems.append(_unparsable(item, exc))
            continue
        try:
            cfg = cast(DictConfig, OmegaConf.merge(cfg, parsed))  # a mapping merged into a mapping
        except OmegaConfBaseException as exc:
            problems.append(one_line(exc))
    if problems:
        raise ConfigError("; ".join(problems))
    try:
        OmegaConf.resolve(cfg)
    except OmegaConfBaseException as exc:
        raise ConfigError(one_line(exc)) from None
    return cfg


def _num(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


@functools.lru_cache(maxsize=1)
def _trainer_params() -> frozenset[str]:
    """The arguments of ``lightning.Trainer``, read from the installed Lightning's source without
    importing it (importing Lightning takes seconds; ``fit --print-config`` trains nothing). Where
    the source cannot be read, Lightning is imported and asked."""
    found = _trainer_params_from_source()
    if found:
        return found
    from lightning.pytorch import Trainer

    return frozenset(inspect.signature(Trainer.__init__).parameters) - {"self"}


def _trainer_params_from_source() -> frozenset[str] | None:
    import ast
    import importlib.util
    import sys

    if "lightning.pytorch" in sys.modules:  # already imported: ask it
        return None
    try:
        spec = importlib.util.find_spec("lightning")  # finds, does not import
        if spec is None or not spec.submodule_search_locations:
            return None
        path = Path(list(spec.submodule_search_locations)[0]) / "pytorch" / "trainer" / "trainer.py"
        tree = ast.parse(path.read_text(encoding="utf-8"))
    except (OSError, SyntaxError, ValueError, ImportError):
        return None
    for node in tree.body:
        if isinstance(node, ast.ClassDef) and node.name == "Trainer":
            for item in node.body:
                if isinstance(item, ast.FunctionDef) and item.name == "__init__":
                    a = item.args
                    names = {x.arg for x in [*a.posonlyargs, *a.args, *a.kwonlyargs]} - {"self"}
                    return frozenset(names) if names else None
    return None


def sweep_problems(cfg: DictConfig) -> list[str]:
    """Problems of the ``sweep.*`` settings that do not depend on the registries (executor, Ray
    resources, limits); the same checks for ``fit`` and ``sweep``."""
    p: list[str] = []
    sw = cfg.sweep
    if sw.executor not in ("local", "ray"):
        p.append(f"sweep.executor: expected local or ray, got {sw.executor!r}")
    if not (_num(sw.ray.num_cpus_per_task) and sw.ray.num_cpus_per_task > 0):
        p.append(f"sweep.ray.num_cpus_per_task: must be > 0, got {sw.ray.num_cpus_per_task}")
    if not (_num(sw.ray.num_gpus_per_task) and sw.ray.num_gpus_per_task >= 0):
        p.append(f"sweep.ray.num_gpus_per_task: must be >= 0, got {sw.ray.num_gpus_per_task}")
    if sw.ray.max_retries < 0:
        p.append(f"sweep.ray.max_retries: must be >= 0, got {sw.ray.max_retries}")
    if sw.ray.address is not None and not str(sw.ray.address).strip():
        p.append("sweep.ray.address: empty; give a cluster's address (auto, HOST:PORT, ray://HOST:PORT) or null for a local instance")
    if sw.max_runs < 1:
        p.append(f"sweep.max_runs: must be >= 1, got {sw.max_runs}")
    for ikey in INT_MAXIMA:
        if ikey.startswith("sweep."):
            problem = int_maximum_problem(ikey, OmegaConf.select(cfg, ikey))
            if problem:
                p.append(problem)
    return p


def _dims(d: Any, datasets: Mapping[str, Any]) -> int:
    """The input dimension a config's dataset will have: the dataset's own, else ``data.dim``."""
    ds = datasets.get(d.name)
    return int(ds.dim) if ds is not None and ds.dim is not None else int(d.dim)


def validate(
    cfg: DictConfig,
    losses: Mapping[str, LossEntry],
    datasets: Mapping[str, Any],
    *,
    check_trainer: bool = True,
) -> None:
    """Check values against the rules and the registries; report every problem at once."""
    from protoreg.datasets.rules import data_problems

    d, m, t, g = cfg.data, cfg.model, cfg.train, cfg.geometry
    sets = {name: entry[0] for name, entry in datasets.items()}
    p = data_problems(cast(dict[str, Any], OmegaConf.to_container(d, resolve=True)), sets)  # a DictConfig section is a dict

    if m.width is not None and m.width < 1:
        p.append(f"model.width: must be >= 1 or null (= N), got {m.width}")
    if m.parameterization not in ("auto", "affine", "radial"):
        p.append(f"model.parameterization: expected auto, affine or radial, got {m.parameterization!r}")
    elif m.parameterization == "affine" and d.path is None and _dims(d, sets) > 1:
        dims = _dims(d, sets)
        p.append(f"model.parameterization: 'affine' has no point prototype for {dims}-D inputs (data.name={d.name}); use radial")
    if m.init not in ("uniform", "samples"):
        p.append(f"model.init: expected uniform or samples, got {m.init!r}")
    if not (_num(m.init_width) and m.init_width > 0):
        p.append(f"model.init_width: must be > 0, got {m.init_width}")

    if t.steps < 1:
        p.append(f"train.steps: must be >= 1, got {t.steps}")
    if not (_num(t.lr) and t.lr > 0):
        p.append(f"train.lr: must be > 0, got {t.lr}")
    if t.seed < 0:
        p.append(f"train.seed: must be >= 0, got {t.seed}")
    if t.batch_size is not None and t.batch_size < 1:
        p.append(f"train.batch_size: must be >= 1 or null (full batch), got {t.batch_size}")
    if t.log_every_n_steps < 1:
        p.append(f"train.log_every_n_steps: must be >= 1, got {t.log_every_n_steps}")

    if g.on_expulsion not in ("warn", "stop", "ignore"):
        p.append(f"geometry.on_expulsion: expected warn, stop or ignore, got {g.on_expulsion!r}")
    if g.every_n_steps < 1:
        p.append(f"geometry.every_n_steps: must be >= 1, got {g.every_n_steps}")
    if not (_num(g.max_outside_frac) and 0 <= g.max_outside_frac <= 1):
        p.append(f"geometry.max_outside_frac: must be in [0, 1], got {g.max_outside_frac}")
    if not (_num(g.margin) and g.margin >= 0):
        p.append(f"geometry.margin: must be a finite number >= 0 (a fraction of the data's nearest-neighbour distance), got {g.margin}")
    if not (_num(g.rel_tol) and g.rel_tol > 0):
        p.append(f"geometry.rel_tol: must be a finite number > 0, got {g.rel_tol}")

    p.extend(sweep_problems(cfg))
    for ikey in INT_MAXIMA:
        if ikey.startswith("sweep."):
            continue  # sweep_problems checks them
        problem = int_maximum_problem(ikey, OmegaConf.select(cfg, ikey))
        if problem:
            p.append(problem)

    for name, params in cfg.losses.items():
        key = f"losses.{name}"
        if name not in losses:
            p.append(f"{key}: unknown loss {name!r}; registered: {', '.join(losses) or 'none'}")
            continue
        if not isinstance(params, Mapping):
            p.append(f"{key}: expected a mapping of weight and parameters, got {params!r}")
            continue
        loss = losses[name].loss
        for pkey, value in params.items():
            if pkey == "weight":
                if not (_num(value) and value >= 0):
                    p.append(f"{key}.weight: must be a number >= 0, got {value!r}")
            elif pkey not in loss.defaults:
                known = ", ".join(["weight", *loss.defaults])
                p.append(f"{key}.{pkey}: unknown parameter of loss {name!r}; it takes {known}")
            else:
                problem = loss.check_param(pkey, value)
                if problem:
                    p.append(f"{key}.{pkey}: {problem}")

    if check_trainer:
        allowed = _trainer_params()
        for tkey in cfg.trainer:
            if tkey in RESERVED_TRAINER_KEYS:
                p.append(f"trainer.{tkey}: set by protoreg; use {RESERVED_TRAINER_KEYS[tkey]} instead")
            elif tkey in UNSUPPORTED_TRAINER_KEYS:
                p.append(f"trainer.{tkey}: not supported, {UNSUPPORTED_TRAINER_KEYS[tkey]}")
            elif tkey not in allowed:
                p.append(f"trainer.{tkey}: not an argument of lightning.Trainer")
        p.extend(_trainer_problems(cfg.trainer))
    if p:
        raise ConfigError("; ".join(p))


def loss_settings(cfg: DictConfig, losses: Mapping[str, LossEntry]) -> dict[str, dict[str, Any]]:
    """Every configured loss with its weight and all parameters (defaults filled in)."""
    out: dict[str, dict[str, Any]] = {}
    for name, params in cfg.losses.items():
        loss = losses[name].loss
        merged = {"weight": 0.0, **dict(loss.defaults), **cast(dict[str, Any], OmegaConf.to_container(params))}  # a section is a dict
        out[name] = merged
    return out


def resolved(cfg: DictConfig, losses: Mapping[str, LossEntry]) -> DictConfig:
    """A copy of ``cfg`` with every configured loss's parameters written out."""
    out = cfg.copy()
    out.losses = loss_settings(cfg, losses)
    return out


def flatten(d: Any, prefix: str = "") -> dict[str, Any]:
    """A nested mapping as ``{"dotted.key": value}`` (empty sub-mappings kept as ``{}``)."""
    out: dict[str, Any] = {}
    if isinstance(d, dict):
        for k, v in d.items():
            out.update(flatten(v, f"{prefix}{k}."))
        if not d and prefix:
            out[prefix[:-1]] = {}
    else:
        out[prefix[:-1]] = d
    return out


def data_seed(cfg: DictConfig) -> int:
    """The data seed of a run: ``data.seed``, or ``train.seed`` when it is null."""
    return int(cfg.data.seed if cfg.data.seed is not None else cfg.train.seed)


def active_losses(settings: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """Names of losses whose weight is > 0, in configuration order."""
    return [name for name, s in settings.items() if float(s.get("weight", 0.0)) > 0]
