"""The plugin API, what a plugin subclasses: :class:`StructuralLoss` (and the
:class:`LossContext` it reads), :class:`Dataset`, :class:`Study` (with :class:`Claim` and
:class:`StudyResults`), and the :data:`hookimpl` marker. (The Python API, ``protoreg.fit`` and
friends, is :mod:`protoreg.api`.)

A structural loss is a small object with a ``name``, a ``role`` ("attractor", "repulsor" or
"neutral"), the attractors it ``pairs_with`` (repulsors only), the ``defaults`` of every parameter,
and a ``__call__(ctx, **params)`` returning one value per run, shape ``(R,)``. A dataset has a
``name``, the ``data.*`` keys it reads with their ``defaults``, a :meth:`Dataset.check` of them
and a :meth:`Dataset.load` returning ``(x, y)`` or ``(x, y, info)``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal, Mapping, Sequence

import numpy as np

import pluggy
import torch

PROJECT_NAME = "protoreg"

hookimpl = pluggy.HookimplMarker(PROJECT_NAME)
"""Marker for plugin functions implementing a protoreg hook (see :mod:`protoreg.plugins.hookspecs`)."""

Role = Literal["attractor", "repulsor", "neutral"]
ROLES: tuple[str, ...] = ("attractor", "repulsor", "neutral")


@dataclass(frozen=True)
class LossContext:
    """Everything a structural loss may look at, for R independent runs at once.

    Attributes
    ----------
    x : Tensor (R, N, d)
        Training inputs of each run (the current batch).
    y : Tensor (R, N, k)
        Targets.
    hidden : Tensor (R, N, M)
        Hidden responses ``h_j(x_i)`` of the M Gaussian units.
    pred : Tensor (R, N, k)
        Network outputs.
    prototypes : Tensor (R, M, d)
        Differentiable prototype positions (always finite: a unit whose prototype is at infinity
        appears here very far away, so distance kernels vanish without NaN).
    spacing : Tensor (R,)
        The typical sample spacing of each run's inputs, ``extent / N**(1/d)``. Built-in losses
        measure their temperatures in units of ``spacing**2`` so one setting works at every N.
    model : torch.nn.Module
        The :class:`~protoreg.model.mlp.GaussianMLP` (its parameters carry the run axis too).
    sq_dists : Tensor (R, N, M)
        Squared Euclidean distances ``||x_i - p_j||^2`` between the samples and the prototypes,
        differentiable in the prototypes (read-only property, see :attr:`sq_dists`).
    """

    x: torch.Tensor
    y: torch.Tensor
    hidden: torch.Tensor
    pred: torch.Tensor
    prototypes: torch.Tensor
    spacing: torch.Tensor
    model: torch.nn.Module
    #: The training step's own squared distances (radial units on large problems), else None.
    _sq_dists: torch.Tensor | None = field(default=None, repr=False, compare=False)
    _sq_dists_version0: int = field(default=0, repr=False, compare=False)
    #: Whether ``_sq_dists`` came from the model's step (not computed at a loss's first read).
    _shared: bool = field(default=False, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self._sq_dists is not None:
            object.__setattr__(self, "_sq_dists_version0", int(self._sq_dists._version))
            object.__setattr__(self, "_shared", True)

    @property
    def sq_dists(self) -> torch.Tensor:
        """Squared distances ``||x_i - p_j||^2``, shape (R, N, M), computed at the first read and
        then the same tensor for every loss of the step (do not change it in place).

        For radial units on large problems (where :func:`~protoreg.model.mlp.pairwise_sq_dists`
        uses the Gram expansion) it is the tensor the hidden layer was computed from, so a loss
        that reads it (the built-in ``coverage`` does) costs no second distance computation.
        """
        d2 = self._sq_dists
        if d2 is None:
            from protoreg.model.mlp import pairwise_sq_dists

            d2 = pairwise_sq_dists(self.x, self.prototypes)
            object.__setattr__(self, "_sq_dists", d2)
            object.__setattr__(self, "_sq_dists_version0", int(d2._version))
        return d2

    @property
    def shared_sq_dists(self) -> torch.Tensor | None:
        """The squared distances the model computed for this step's hidden layer (radial units on
        large problems), else None: pass it to :mod:`protoreg.functional` (``sq_dists=``) so that
        a loss costs no second distance computation."""
        return self._sq_dists if self._shared else None

    def sq_dists_version(self) -> int:
        """In-place changes of :attr:`sq_dists` since it was computed (0 before), without computing it."""
        if self._sq_dists is None:
            return 0
        return int(self._sq_dists._version) - self._sq_dists_version0

    @property
    def runs(self) -> int:
        """Number of runs R."""
        return int(self.x.shape[0])

    def per_run(self, value: float | torch.Tensor, ndim: int = 1) -> torch.Tensor:
        """``value`` (a number or an (R,) tensor) as a tensor of shape ``(R, 1, ..., 1)``.

        ``ndim`` is the number of dimensions of the result, so ``ctx.per_run(tau, 3)`` broadcasts
        against an ``(R, N, M)`` tensor.
        """
        t = torch.as_tensor(value, dtype=self.x.dtype, device=self.x.device)
        if t.ndim == 0:
            t = t.expand(self.runs)
        return t.reshape((self.runs,) + (1,) * (ndim - 1))

    def select(self, runs: torch.Tensor) -> "LossContext":
        """The context restricted to the runs with indices ``runs`` (model stays whole)."""
        sub = LossContext(
            x=self.x[runs],
            y=self.y[runs],
            hidden=self.hidden[runs],
            pred=self.pred[runs],
            prototypes=self.prototypes[runs],
            spacing=self.spacing[runs],
            model=self.model,
            _sq_dists=None if self._sq_dists is None else self._sq_dists[runs],
        )
        object.__setattr__(sub, "_shared", self._shared)
        return sub


class StructuralLoss:
    """Base class of structural losses (built-in and third-party alike).

    Subclasses set the class attributes and implement ``__call__``::

        class Anchor(protoreg.StructuralLoss):
            name = "anchor"
            role = "attractor"
            defaults = {"tau": 1.0}

            def __call__(self, ctx, *, tau):
                ...  # return shape (R,)

    ``vectorized = True`` declares that ``__call__`` accepts every parameter as an ``(R,)``
    tensor (one value per run; use :meth:`LossContext.per_run`). Otherwise parameters arrive
    as plain Python numbers, and runs of a sweep with different values are evaluated in groups.
    """

    name: ClassVar[str] = ""
    role: ClassVar[Role] = "neutral"
    pairs_with: ClassVar[tuple[str, ...]] = ()
    defaults: ClassVar[Mapping[str, Any]] = {}
    vectorized: ClassVar[bool] = False

    # ``*args: Any, **params: Any``: type checkers accept a subclass's own keyword parameters
    def __call__(self, ctx: LossContext, *args: Any, **params: Any) -> torch.Tensor:  # pragma: no cover
        raise NotImplementedError

    @property
    def description(self) -> str:
        """First line of the class docstring."""
        doc = (type(self).__doc__ or "").strip()
        return doc.splitlines()[0] if doc else ""

    def check_param(self, key: str, value: Any) -> str | None:
        """Return a problem with parameter ``key`` = ``value``, or None when it is acceptable.

        The default accepts finite numbers (and bools where the default is a bool) and requires
        parameters named ``tau``/``tau_*``/``*_tau`` to be > 0. Override to add constraints.
        """
        default = self.defaults.get(key)
        if isinstance(default, bool):
            return None if isinstance(value, bool) else f"expected true/false, got {value!r}"
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return f"expected a number, got {value!r}"
        if not math.isfinite(float(value)):
            return f"expected a finite number, got {value!r}"
        if (key == "tau" or key.startswith("tau_") or key.endswith("_tau")) and value <= 0:
            return f"must be > 0, got {value!r}"
        return None

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r} ({self.role})>"


# ---------------------------------------------------------------------------- datasets
#: What :meth:`Dataset.load` returns: ``(x, y)`` or ``(x, y, info)``.
Loaded = tuple[np.ndarray, np.ndarray] | tuple[np.ndarray, np.ndarray, dict[str, Any]]


class Dataset:
    """Base class of datasets (built-in and third-party alike), selected with ``data.name``.

    Subclasses set the class attributes and implement :meth:`load`; :meth:`check` is optional::

        class Spiral(protoreg.Dataset):
            '''Two interleaved spirals in 2-D.'''

            name = "spiral"
            dim = 2
            targets = ("label", "onehot")
            defaults = {"noise": 0.05}

            def check(self, data):
                return [] if data["n"] <= 10_000 else [f"data.n: at most 10000 points, got {data['n']}"]

            def load(self, data, seed):
                ...  # return (x, y) or (x, y, {"image_shape": (h, w)})

    The rules every dataset shares are applied before :meth:`check` (one place:
    :func:`protoreg.datasets.rules.data_problems`): ``data.n`` >= 2 (null only where ``size``
    is set), ``data.target`` one of ``targets``, a ``data.noise`` or ``data.classes`` set only
    where ``defaults`` names it, ``data.dim`` >= 1 and ``data.low`` < ``data.high`` where it
    reads them. All of it runs before anything is written; what :meth:`load` returns is then
    checked too (:func:`protoreg.datasets.rules.validate_loaded`).
    """

    name: ClassVar[str] = ""
    #: The input dimension when the dataset fixes it (None: ``data.dim``, or known once loaded).
    dim: ClassVar[int | None] = None
    #: The accepted ``data.target`` values, the first the default (``data.target: null``);
    #: empty: the dataset has one kind of target and ``data.target`` is passed through.
    targets: ClassVar[tuple[str, ...]] = ()
    #: The ``data.*`` keys it reads besides ``n``, ``target`` and ``seed``, each with the value
    #: that null (or unset) stands for: ``{"noise": 0.1}``.
    defaults: ClassVar[Mapping[str, Any]] = {}
    #: A fixed-size set (an image collection): its number of samples; ``data.n: null`` then takes
    #: them all. None: ``data.n`` must be a number.
    size: ClassVar[int | None] = None

    def check(self, data: Mapping[str, Any]) -> list[str]:
        """Problems of the ``data`` section (a plain dict of every ``data.*`` key) for this
        dataset beyond the shared rules, each one line starting with its dotted key
        (``"data.noise: must be >= 0, got -1"``); ``[]`` when there are none."""
        return []

    def load(self, data: Mapping[str, Any], seed: int) -> Loaded:  # pragma: no cover - abstract
        """The training data: float arrays ``x`` (N, d) and ``y`` (N, k), and optionally a
        mapping of which protoreg reads only ``image_shape`` (1 to 3 positive ints with product
        d). ``data`` is the validated ``data`` section, ``seed`` the integer data seed. Raise
        :class:`protoreg.errors.DataError` for bad input (a file that cannot be read)."""
        raise NotImplementedError

    def param(self, data: Mapping[str, Any], key: str) -> Any:
        """``data[key]``, or the dataset's default for ``key`` when it is null or missing."""
        value = data.get(key)
        return self.defaults.get(key) if value is None else value

    def target(self, data: Mapping[str, Any]) -> str | None:
        """``data.target``, or the dataset's default target (the first of ``targets``)."""
        return data.get("target") or (self.targets[0] if self.targets else None)

    @property
    def description(self) -> str:
        """First line of the class docstring."""
        doc = (type(self).__doc__ or "").strip()
        return doc.splitlines()[0] if doc else ""

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r}>"


# ---------------------------------------------------------------------------- studies
Verdict = Literal["PASS", "PARTIAL", "FAIL", "NOT EVALUATED"]
VERDICTS: tuple[str, ...] = ("PASS", "PARTIAL", "FAIL", "NOT EVALUATED")


@dataclass(frozen=True)
class Claim:
    """One checked claim of a study.

    Attributes
    ----------
    id : str
        Short identifier (``"C1"``).
    statement : str
        What is claimed, one sentence.
    verdict : str
        ``PASS`` (holds everywhere it was tested), ``PARTIAL``, ``FAIL`` or ``NOT EVALUATED``
        (the sweep cannot test it; ``details`` say what it needs).
    summary : str
        One line: where it holds (e.g. ``"holds at 5 of 6 N"``).
    numbers : mapping
        The numbers behind the verdict, by name (JSON-serialisable).
    details : tuple of str
        One line per cell or check, shown under the claim in ``summary.md``.
    """

    id: str
    statement: str
    verdict: Verdict
    summary: str = ""
    numbers: Mapping[str, Any] = field(default_factory=dict)
    details: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.verdict not in VERDICTS:
            raise ValueError(f"claim {self.id!r}: verdict must be one of {', '.join(VERDICTS)}, got {self.verdict!r}")

    def as_dict(self) -> dict[str, Any]:
        """The claim as JSON values (what ``claims.json`` holds); :meth:`from_dict` reads it back."""
        return {"id": self.id, "statement": self.statement, "verdict": self.verdict, "summary": self.summary, "numbers": dict(self.numbers), "details": list(self.details)}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "Claim":
        """The claim :meth:`as_dict` wrote (``summary``, ``numbers`` and ``details`` optional)."""
        return cls(d["id"], d["statement"], d["verdict"], d.get("summary", ""), d.get("numbers", {}), tuple(d.get("details", ())))


@dataclass(frozen=True)
class StudyResults:
    """What a study sees of a sweep.

    Attributes
    ----------
    rows : list of dict
        The rows of ``results.csv`` (every run recorded so far), numbers parsed: metrics are
        floats, ``n``/``seed``/``steps`` ints, swept values as written (strings); ``status`` is
        ``completed`` or ``failed``.
    keys : list of str
        The swept config keys (``sweep.grid``), in order.
    masks : list of str
        The mask names in sweep order (``none`` first when masks are swept).
    config : mapping
        The sweep's resolved config as plain containers (``config["losses"]["coverage"]["tau"]``).
    data : mapping
        Run name -> ``(x, y)``, the training inputs (N, d) and targets (N, k) of the run.
    """

    rows: Sequence[Mapping[str, Any]]
    keys: Sequence[str]
    masks: Sequence[str]
    config: Mapping[str, Any]
    data: Mapping[str, tuple[np.ndarray, np.ndarray]]

    def completed(self) -> list[Mapping[str, Any]]:
        """The rows of runs that trained to the end."""
        return [r for r in self.rows if r.get("status") == "completed"]


class Study:
    """Base class of studies (built-in and third-party alike): claims checked on a sweep.

    Subclasses set ``name`` (an identifier, selected with ``sweep.study``) and a one-line
    ``description``, and implement :meth:`evaluate`; :meth:`plots` is optional::

        class AnchorInside(protoreg.Study):
            name = "anchor_inside"
            description = "anchor keeps every prototype inside the hull"

            def evaluate(self, results):
                return [protoreg.Claim("A1", "...", "PASS", numbers={...})]
    """

    name: ClassVar[str] = ""
    description: ClassVar[str] = ""
    #: Markdown shown under the claims in ``summary.md`` (how verdicts are decided), optional.
    notes: ClassVar[str] = ""

    def evaluate(self, results: StudyResults) -> list[Claim]:  # pragma: no cover - abstract
        """The study's claims, in order, each with its verdict and numbers."""
        raise NotImplementedError

    def plots(self, results: StudyResults, out: Path) -> list[str]:
        """Write extra figures into the sweep directory ``out``; return their file names."""
        return []

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r}>"
