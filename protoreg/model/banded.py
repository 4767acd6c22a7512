"""Banded Gaussian kernels in 1-D: only the units near a sample, exactly.

A Gaussian unit far from a sample has a kernel argument below the floor of
:func:`protoreg.model.kernels.exp_flushed` (-87.3 in float32, -708.4 in float64 on CPU): its value
and its gradient are exactly 0. In 1-D the units whose kernel can be non-zero at a sample ``x``
are those whose prototype lies within the unit's *radius* of ``x``: after sorting the prototypes,
a contiguous range found by binary search. Computing only that range (padded to the
longest range of the batch, with a mask) with exactly the same elementwise float operations as
the dense path gives the same hidden values, element for element, and sums (``pred``, the
coverage loss, gradients) that differ from the dense ones only in summation order.

Units differ in width, so they are split per step:

* *narrow* units (radius at most :data:`WIDE_FACTOR` x the median radius), searched in the
  sorted band;
* *wide* units (larger radius, ``w = 0``: a prototype at infinity, non-finite radius) computed
  against every sample, so one very wide unit cannot make the band the whole layer.

The radius of an affine unit ``exp(-(w x + b)^2)`` is ``sqrt(F) / |w|``, of a radial unit
``exp(-(x - c)^2 / (2 s^2))`` it is ``s sqrt(2 F)`` (``F`` = minus the floor), widened by
:data:`REL_MARGIN` and by :data:`ABS_MARGIN` machine epsilons of the magnitudes involved, which
bounds the float rounding of the kernel's argument with a wide safety factor (a wider band costs
little; a too narrow one would drop non-zero kernels).

Used automatically (:func:`use_banded`) when d = 1 and one run's dense per-step tensor ``B x M``
has more than :data:`BANDED_MIN_ELEMENTS` elements, for float32 and float64; below it the dense
code runs unchanged. Training computes every run of a group on its own (:func:`banded_pred`,
:func:`banded_coverage`): the band of a run depends on that run only, so a run trained in a group
equals the run trained alone, bit for bit, as on the dense path. Training (:func:`banded_forward` for ``pred``; the built-in ``coverage`` loss
through :func:`banded_log_mean_exp`) and evaluation (:func:`stream_banded`: ``fit_mse`` and each
sample's strongest unit) use it. Plugins still see ``ctx.hidden`` as the dense ``(R, B, M)``
tensor: :class:`LazyHiddenContext` computes it at the first read only.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Iterator, Literal, Protocol, cast

import numpy as np
import torch

from protoreg.plugin_api import LossContext
from protoreg.model.mlp import GaussianMLP, pairwise_sq_dists
from protoreg.model.kernels import EXP_NORMAL_MIN, exp_flushed, logsumexp_flushed

#: The banded path runs in 1-D when one run's dense per-step tensor B x M has more elements.
BANDED_MIN_ELEMENTS = 1 << 22
#: Relative widening of every radius (float rounding is ~1e-7 relative in float32).
REL_MARGIN = 4e-3
#: Absolute widening of every radius, in machine epsilons of ``|x| + |prototype|``: covers the
#: cancellation in ``w x + b`` and the rounding of the search itself.
ABS_MARGIN = 16.0
#: Units whose radius exceeds this many times the median radius of their run are wide.
WIDE_FACTOR = 4.0
#: A band (plus the wide units) of more than this fraction of M runs the dense path instead.
DENSE_FRACTION = 0.5
#: Elements (R x samples x band width) of one banded evaluation chunk.
BANDED_EVAL_ELEMENTS = 1 << 21
#: ``exp(a)`` is exactly 0 below these arguments (below half the smallest subnormal), for the
#: plain ``torch.exp`` used off the CPU.
EXP_ZERO_BELOW: dict[torch.dtype, float] = {torch.float32: -104.0, torch.float64: -746.0}


class BandedModel(Protocol):
    """What the banded kernels read of a model: a :class:`~protoreg.model.mlp.GaussianMLP`, or
    one run of it (:class:`_RunView`). The parameters carry the run axis; ``w``, ``b`` exist for
    affine units only, ``centers``, ``log_s`` for radial ones."""

    @property
    def parameterization(self) -> str: ...
    @property
    def width(self) -> int: ...
    @property
    def w(self) -> torch.Tensor: ...
    @property
    def b(self) -> torch.Tensor: ...
    @property
    def centers(self) -> torch.Tensor: ...
    @property
    def log_s(self) -> torch.Tensor: ...
    @property
    def v(self) -> torch.Tensor: ...
    @property
    def c(self) -> torch.Tensor: ...
    def named_parameters(self) -> Iterator[tuple[str, torch.Tensor]]: ...


def kernel_floor(dtype: torch.dtype, device: torch.device) -> float | None:
    """The argument below which the kernels are exactly 0: the floor of
    :func:`~protoreg.model.kernels.exp_flushed` on CPU, where ``exp`` underflows to 0 elsewhere;
    None for dtypes without a banded path."""
    if device.type == "cpu":
        return EXP_NORMAL_MIN.get(dtype)
    return EXP_ZERO_BELOW.get(dtype)


def use_banded(runs: int, samples: int, width: int, dim: int, dtype: torch.dtype, device: torch.device) -> bool:
    """Whether ``runs`` runs of B = ``samples`` x M = ``width`` kernels in ``dim`` inputs take the
    banded path: d = 1, float32 or float64, ``B M >`` :data:`BANDED_MIN_ELEMENTS`. The rule is
    per run (``runs`` does not enter it), so a run takes the same path alone and in a group."""
    return dim == 1 and samples * width > BANDED_MIN_ELEMENTS and kernel_floor(dtype, device) is not None


def model_uses_banded(model: BandedModel, x: torch.Tensor) -> bool:
    """:func:`use_banded` for ``model`` (a :class:`~protoreg.model.mlp.GaussianMLP`) on ``x`` (R, B, d)."""
    r, b, d = x.shape
    return use_banded(r, b, int(model.width), d, x.dtype, x.device)


# ----------------------------------------------------------------------------- the layer
def _np(t: torch.Tensor) -> np.ndarray:
    """A detached tensor as a float64 (or integer) numpy array on the host."""
    a = t.detach().cpu().numpy()
    return a.astype(np.float64) if a.dtype.kind == "f" else a


def _searchsorted(keys: np.ndarray, values: np.ndarray, side: Literal["left", "right"]) -> np.ndarray:
    """Per run: ``keys`` (R, M) sorted along axis 1, ``values`` (R, B) -> positions (R, B)."""
    return np.stack([np.searchsorted(keys[i], values[i], side=side) for i in range(keys.shape[0])]).astype(np.int64, copy=False)


@dataclass(frozen=True)
class UnitBands:
    """The units of R runs sorted for the band search (host arrays, no gradients).

    The band search is index arithmetic: it runs in numpy on the host (several times faster than
    torch on CPU for these O(M) steps, and on a GPU a transfer of M numbers per step).

    Attributes
    ----------
    keys : ndarray (R, M) float64
        Prototypes of the narrow units in increasing order, then ``+inf`` (the other units).
    order : ndarray (R, M) int64
        The unit at each sorted position (ties by index).
    radius : ndarray (R,) float64
        Half-width of the band: the largest radius of a narrow unit (0 when there is none).
    wide : ndarray (R, W) int64
        The wide units of each run in increasing index, padded with unit 0.
    wide_mask : ndarray (R, W) bool
        False on padding.
    """

    keys: np.ndarray
    order: np.ndarray
    radius: np.ndarray
    wide: np.ndarray
    wide_mask: np.ndarray


def _inv_two_s2(log_s: torch.Tensor) -> torch.Tensor:
    """``1 / (2 s^2)`` of radial units, the same operations as :meth:`GaussianMLP.hidden`."""
    return torch.exp(-2.0 * log_s) * 0.5


@torch.no_grad()
def unit_bands(model: BandedModel, x: torch.Tensor) -> UnitBands | None:
    """Sort the units of ``model`` for samples like ``x`` (R, B, 1); None when a parameter or an
    input is not finite (the dense path then gives the dense semantics, NaN included)."""
    floor = kernel_floor(x.dtype, x.device)
    if floor is None:
        return None
    xs = _np(x)
    params = {name: _np(p) for name, p in model.named_parameters()}
    if not (np.isfinite(xs).all() and all(np.isfinite(p).all() for p in params.values())):
        return None
    eps = float(torch.finfo(x.dtype).eps)
    xabs = float(np.abs(xs).max()) if xs.size else 0.0
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        if model.parameterization == "affine":
            w, b = params["w"], params["b"]
            proto = np.where(w != 0, -b / w, np.inf)
            radius = math.sqrt(-floor) * (1 + REL_MARGIN) / np.abs(w)  # inf where w = 0
        else:
            proto = params["centers"][..., 0]
            inv = _np(_inv_two_s2(model.log_s))  # the float values the kernels use
            ok = np.isfinite(inv) & (inv > 0)
            radius = np.where(ok, np.sqrt(-floor / np.where(ok, inv, 1.0)) * (1 + REL_MARGIN), np.inf)
        radius = radius + ABS_MARGIN * eps * (xabs + np.abs(proto))
        finite = np.isfinite(radius) & np.isfinite(proto)
        r, m = proto.shape
        med = np.array([np.median(radius[i][finite[i]]) if finite[i].any() else np.nan for i in range(r)])
        narrow = finite & (radius <= WIDE_FACTOR * med[:, None])  # NaN median: nothing narrow
    keys = np.where(narrow, proto, np.inf)
    order = np.argsort(keys, axis=1, kind="stable")
    keys = np.take_along_axis(keys, order, axis=1)
    band = np.where(narrow, radius, 0.0).max(axis=1, initial=0.0)
    wide_count = (~narrow).sum(axis=1)
    w_max = int(wide_count.max()) if r else 0
    wide = np.zeros((r, w_max), dtype=np.int64)
    for i in range(r):
        idx = np.flatnonzero(~narrow[i])
        wide[i, : idx.size] = idx
    wide_mask = np.arange(w_max)[None, :] < wide_count[:, None]
    return UnitBands(keys, order, band, wide, wide_mask)


@dataclass(frozen=True)
class Band:
    """The units each sample is computed against (band and wide units), padded with a mask.

    Attributes
    ----------
    units : Tensor (R, B, K) long
        Unit indices (padding repeats a valid unit).
    mask : Tensor (R, B, K) bool
        False on padding.
    """

    units: torch.Tensor
    mask: torch.Tensor


def _window(keys: np.ndarray, order: np.ndarray, lo: np.ndarray, count: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Units at sorted positions ``lo .. lo + count`` per sample, padded to ``k``: (R, B, K)
    unit indices (padding repeats a valid one) and the mask."""
    r, b = lo.shape
    m = keys.shape[1]
    ar = np.arange(k)
    pos = np.minimum(lo[..., None] + ar, m - 1)
    units = np.take_along_axis(order, pos.reshape(r, b * k), axis=1).reshape(r, b, k)
    return units, ar < count[..., None]


@torch.no_grad()
def sample_band(bands: UnitBands, x: torch.Tensor, max_units: int | None = None) -> Band | None:
    """For each sample of ``x`` (R, B, 1) the narrow units within the band radius and every wide
    unit; None when that is more than ``max_units`` units for some sample (default
    :data:`DENSE_FRACTION` x M): the dense path is then cheaper."""
    r, b, _ = x.shape
    m = bands.keys.shape[1]
    xs = _np(x)[..., 0]
    rad = bands.radius[:, None]
    lo = _searchsorted(bands.keys, xs - rad, "left")
    count = _searchsorted(bands.keys, xs + rad, "right") - lo
    k = int(count.max()) if count.size else 0
    w = bands.wide.shape[1]
    if k + w > (max_units if max_units is not None else DENSE_FRACTION * m):
        return None
    units, mask = _window(bands.keys, bands.order, lo, count, k)
    if w:
        units = np.concatenate([units, np.broadcast_to(bands.wide[:, None, :], (r, b, w))], axis=2)
        mask = np.concatenate([mask, np.broadcast_to(bands.wide_mask[:, None, :], (r, b, w))], axis=2)
    return Band(torch.from_numpy(np.ascontiguousarray(units)).to(x.device), torch.from_numpy(np.ascontiguousarray(mask)).to(x.device))


def _take(param: torch.Tensor, units: torch.Tensor) -> torch.Tensor:
    """``param`` (R, M) at ``units`` (R, B, K) -> (R, B, K); differentiable (scatter-add back)."""
    r, b, k = units.shape
    return param.gather(1, units.reshape(r, b * k)).view(r, b, k)


def band_hidden(model: BandedModel, x: torch.Tensor, band: Band) -> torch.Tensor:
    """Hidden responses ``(R, B, K)`` of the units of ``band`` at ``x`` (R, B, 1): the dense
    path's elementwise operations (so equal values), 0 on padding."""
    if model.parameterization == "affine":
        z = x * _take(model.w, band.units) + _take(model.b, band.units)
        h = exp_flushed(-z.square())
    else:
        d2 = (x - _take(model.centers[..., 0], band.units)).square()
        h = exp_flushed(-d2 * _take(_inv_two_s2(model.log_s), band.units))
    return h * band.mask.to(h.dtype)


def band_pred(model: BandedModel, band: Band, h: torch.Tensor) -> torch.Tensor:
    """``c + sum_j h_j v_j`` over the band, ``(R, B, k)``."""
    r, b, k = band.units.shape
    out = model.v.shape[2]
    idx = band.units.reshape(r, b * k, 1).expand(r, b * k, out)
    v = model.v.gather(1, idx).view(r, b, k, out)
    return model.c.unsqueeze(1) + (h.unsqueeze(-1) * v).sum(dim=2)


@dataclass(frozen=True)
class BandedResponses:
    """The banded forward pass: band, hidden values on it, and the network output."""

    band: Band
    hidden: torch.Tensor  #: (R, B, K), 0 on padding
    pred: torch.Tensor  #: (R, B, k)

    def dense_hidden(self, width: int) -> torch.Tensor:
        """The band scattered into an ``(R, B, M)`` tensor (0 elsewhere; for checks)."""
        r, b, _ = self.hidden.shape
        out = self.hidden.new_zeros(r, b, width)
        return out.scatter_add(2, self.band.units, self.hidden)

    def winners(self) -> torch.Tensor | None:
        """Each sample's strongest unit ``(R, B)``, exactly ``hidden.argmax(-1)`` of the dense
        responses: the lowest index among the maximal values; unit 0 when every response is 0
        (then every unit ties, the ones outside the band included). None when a response is NaN
        (the caller then uses the dense argmax)."""
        h = self.hidden.detach()
        if h.shape[2] == 0:  # no unit near any sample: every response is 0
            return torch.zeros(h.shape[:2], dtype=torch.long, device=h.device)
        if bool(torch.isnan(h).any()):
            return None
        hv = torch.where(self.band.mask, h, torch.full_like(h, -1.0))
        top = hv.amax(dim=2, keepdim=True)
        big = torch.iinfo(torch.long).max
        first = torch.where(hv == top, self.band.units, torch.full_like(self.band.units, big)).amin(dim=2)
        return torch.where(top[..., 0] > 0, first, torch.zeros_like(first))


def banded_forward(model: BandedModel, x: torch.Tensor, bands: UnitBands | None = None, max_units: int | None = None) -> BandedResponses | None:
    """The banded forward pass of ``model`` at ``x`` (R, B, 1): hidden values on the band and
    ``pred`` (R, B, k), with gradients to every parameter; None where the dense path must run
    (a non-finite parameter or input, a band of more than ``max_units`` units, see
    :func:`sample_band`)."""
    bands = bands if bands is not None else unit_bands(model, x)
    if bands is None:
        return None
    band = sample_band(bands, x, max_units)
    if band is None:
        return None
    h = band_hidden(model, x, band)
    return BandedResponses(band, h, band_pred(model, band, h))


@torch.no_grad()
def stream_banded(model: BandedModel, x: torch.Tensor, y: torch.Tensor, chunk: int | None = None) -> tuple[torch.Tensor, torch.Tensor] | None:
    """``fit_mse`` (R,) and ``wins`` (R, M) like :func:`protoreg.evaluation.evaluate.stream_responses`, over
    banded chunks of ``chunk`` samples (default: R x chunk x band width <=
    :data:`BANDED_EVAL_ELEMENTS`); None where the dense evaluation must run (see
    :func:`banded_forward`)."""
    r, n, _ = x.shape
    m = int(model.width)
    bands = unit_bands(model, x)
    if bands is None:
        return None
    # the widest band over all samples, to size the chunks (O(N log M))
    xs = _np(x)[..., 0]
    rad = bands.radius[:, None]
    count = _searchsorted(bands.keys, xs + rad, "right") - _searchsorted(bands.keys, xs - rad, "left")
    width = (int(count.max()) if count.size else 0) + bands.wide.shape[1]
    if width > DENSE_FRACTION * m:
        return None
    chunk = chunk or max(1, BANDED_EVAL_ELEMENTS // max(1, r * width))
    wins = torch.zeros(r, m, dtype=torch.long, device=x.device)
    sq = torch.zeros(r, dtype=torch.float64, device=x.device)
    for s in range(0, n, chunk):
        xc = x[:, s : s + chunk]
        band = sample_band(bands, xc, max_units=m)
        if band is None:  # cannot happen with max_units = M; the dense evaluation if it did
            return None
        h = band_hidden(model, xc, band)
        res = BandedResponses(band, h, band_pred(model, band, h))
        winners = res.winners()
        if winners is None:
            return None
        sq += (res.pred - y[:, s : s + chunk]).square().sum(dim=(1, 2), dtype=torch.float64)
        wins.scatter_add_(1, winners, torch.ones_like(winners))
    return (sq / (n * y.shape[2])).to(y.dtype), wins


class _RunView:
    """Run ``r`` of a :class:`~protoreg.model.mlp.GaussianMLP` as a model of one run: the same
    attribute names, each parameter sliced (differentiably) to ``[r : r + 1]``."""

    #: the model's parameters, set by name in ``__init__`` (``w``, ``b`` or ``centers``, ``log_s``)
    w: torch.Tensor
    b: torch.Tensor
    centers: torch.Tensor
    log_s: torch.Tensor
    v: torch.Tensor
    c: torch.Tensor

    def __init__(self, model: BandedModel, r: int) -> None:
        self.parameterization = model.parameterization
        self.width = model.width
        self._params = {name: p[r : r + 1] for name, p in model.named_parameters()}
        for name, t in self._params.items():
            setattr(self, name, t)

    def named_parameters(self) -> Iterator[tuple[str, torch.Tensor]]:
        return iter(self._params.items())


def _dense_run_pred(view: _RunView, x: torch.Tensor) -> torch.Tensor:
    """``pred`` of one run by the dense code (:meth:`GaussianMLP.hidden` and the output layer)."""
    h = GaussianMLP.hidden(view, x)  # type: ignore[arg-type]  # a _RunView has every attribute hidden() reads
    return torch.baddbmm(view.c.unsqueeze(1), h, view.v)


def banded_pred(model: BandedModel, x: torch.Tensor) -> torch.Tensor:
    """The network output ``pred`` (R, B, k) of every run at ``x`` (R, B, 1), banded.

    Each run is computed on its own (its band, its padding, its sums), so its values and
    gradients are those it has alone; a run whose band cannot be used (a non-finite parameter or
    input, a band of more than :data:`DENSE_FRACTION` of the units) is computed densely.
    """
    preds = []
    for r in range(x.shape[0]):
        view, xr = _RunView(model, r), x[r : r + 1]
        res = banded_forward(view, xr)
        preds.append(res.pred if res is not None else _dense_run_pred(view, xr))
    return preds[0] if len(preds) == 1 else torch.cat(preds, dim=0)


# ------------------------------------------------------------------------- coverage
def coverage_uses_banded(x: torch.Tensor, prototypes: torch.Tensor) -> bool:
    """Whether the coverage of ``x`` (R, B, d) against ``prototypes`` (R, M, d) takes the banded
    path (:func:`use_banded`)."""
    r, b, d = x.shape
    return use_banded(r, b, prototypes.shape[1], d, x.dtype, x.device) and prototypes.dtype == x.dtype


def banded_log_mean_exp(x: torch.Tensor, prototypes: torch.Tensor, t: torch.Tensor) -> torch.Tensor | None:
    """``logsumexp_j(-(x_i - p_j)^2 / t) - log M`` per sample, ``(R, B, 1)``, from the prototypes
    near each sample only; None when an input is not finite (use the dense path).

    The max-shifted logsumexp keeps only prototypes with ``(x_i - p_j)^2 / t`` within ``F`` (minus
    the kernel floor) of the nearest one's: ``|x_i - p_j| <= sqrt(d_min^2 + F t)``, widened by
    :data:`REL_MARGIN` and :data:`ABS_MARGIN` epsilons. Padding enters as ``-inf``: exactly 0,
    never the max.
    """
    r, b, _ = x.shape
    m = prototypes.shape[1]
    floor = kernel_floor(x.dtype, x.device)
    if floor is None or m == 0:
        return None
    xs, keys = _np(x)[..., 0], _np(prototypes)[..., 0]
    t64 = _np(t).reshape(-1)
    if not (np.isfinite(xs).all() and np.isfinite(keys).all() and np.isfinite(t64).all()):
        return None
    order = np.argsort(keys, axis=1, kind="stable")
    keys = np.take_along_axis(keys, order, axis=1)
    pos = _searchsorted(keys, xs, "left")
    left = np.take_along_axis(keys, np.clip(pos - 1, 0, m - 1), axis=1)
    right = np.take_along_axis(keys, np.clip(pos, 0, m - 1), axis=1)
    dmin = np.minimum(np.abs(xs - left), np.abs(xs - right))
    eps = float(torch.finfo(x.dtype).eps)
    base = np.sqrt(dmin * dmin + (-floor) * np.broadcast_to(t64, (r,))[:, None])
    rad = base * (1 + REL_MARGIN) + ABS_MARGIN * eps * (2 * np.abs(xs) + base)
    lo = _searchsorted(keys, xs - rad, "left")
    count = _searchsorted(keys, xs + rad, "right") - lo
    units_np, mask_np = _window(keys, order, lo, count, int(count.max()))
    units, mask = torch.from_numpy(units_np).to(x.device), torch.from_numpy(mask_np).to(x.device)
    p = _take(prototypes[..., 0], units)
    d2 = (x - p).square()  # the dense sq_dists' operations in 1-D
    v = -d2 / t.reshape(-1, 1, 1)
    v = torch.where(mask, v, torch.full_like(v, -math.inf))
    return logsumexp_flushed(v, -1) - math.log(m)


def banded_coverage(x: torch.Tensor, prototypes: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """``logsumexp_j(-(x_i - p_j)^2 / t) - log M`` per sample, ``(R, B, 1)``, every run on its
    own (:func:`banded_log_mean_exp`; the dense operations for a run with a non-finite input),
    so a run's value and gradients do not depend on the other runs of its group."""
    parts = []
    m = prototypes.shape[1]
    for r in range(x.shape[0]):
        xr, pr, tr = x[r : r + 1], prototypes[r : r + 1], t[r : r + 1]
        lme = banded_log_mean_exp(xr, pr, tr)
        if lme is None:
            lme = logsumexp_flushed(-pairwise_sq_dists(xr, pr) / tr, -1) - math.log(m)
        parts.append(lme)
    return parts[0] if len(parts) == 1 else torch.cat(parts, dim=0)


# ------------------------------------------------------------------ the lazy context
class LazyHiddenContext(LossContext):
    """A :class:`~protoreg.plugin_api.LossContext` whose ``hidden`` is computed at its first read.

    The banded path never builds the dense ``(R, B, M)`` hidden responses; a loss that reads
    ``ctx.hidden`` (the built-in ``overlap``) gets them, computed then by the dense code with
    gradients, and every later read the same tensor. ``hidden`` may be given as a tensor or as a
    function of no arguments returning it; the other attributes are those of ``LossContext``.
    """

    # set in __init__ with object.__setattr__ (the context is frozen)
    _hidden_fn: Callable[[], torch.Tensor] | None  #: computes ``hidden``; None when it was given
    _hidden: torch.Tensor | None  #: ``hidden`` once computed (or given)
    _hidden_version0: int | None  #: its version counter then

    def __init__(
        self,
        x: torch.Tensor,
        y: torch.Tensor,
        hidden: torch.Tensor | Callable[[], torch.Tensor],
        pred: torch.Tensor,
        prototypes: torch.Tensor,
        spacing: torch.Tensor,
        model: torch.nn.Module,
    ) -> None:
        for name, val in (("x", x), ("y", y), ("pred", pred), ("prototypes", prototypes), ("spacing", spacing), ("model", model)):
            object.__setattr__(self, name, val)
        object.__setattr__(self, "_hidden_fn", None if isinstance(hidden, torch.Tensor) else hidden)
        object.__setattr__(self, "_hidden", hidden if isinstance(hidden, torch.Tensor) else None)
        object.__setattr__(self, "_hidden_version0", 0 if isinstance(hidden, torch.Tensor) else None)

    @property
    def hidden(self) -> torch.Tensor:  # noqa: D102 - documented in LossContext
        h = self._hidden
        if h is None:
            h = cast("Callable[[], torch.Tensor]", self._hidden_fn)()  # given whenever hidden is not
            object.__setattr__(self, "_hidden", h)
            object.__setattr__(self, "_hidden_version0", h._version)
        return h

    @property
    def hidden_materialized(self) -> bool:
        """Whether ``hidden`` has been computed."""
        return self._hidden is not None

    def hidden_version(self) -> int:
        """In-place changes of ``hidden`` since it was computed (0 before), without computing it."""
        if self._hidden is None:
            return 0
        return int(self._hidden._version) - int(cast(int, self._hidden_version0))  # set with _hidden

    def select(self, runs: torch.Tensor) -> "LossContext":
        """The context restricted to the runs ``runs``; ``hidden`` stays lazy."""
        return LazyHiddenContext(
            x=self.x[runs],
            y=self.y[runs],
            hidden=lambda: self.hidden[runs],
            pred=self.pred[runs],
            prototypes=self.prototypes[runs],
            spacing=self.spacing[runs],
            model=self.model,
        )

    def __repr__(self) -> str:
        state = "computed" if self._hidden is not None else "not computed"
        return f"LazyHiddenContext(runs={self.runs}, x={tuple(self.x.shape)}, hidden {state})"


def hidden_version(ctx: LossContext) -> int:
    """The version counter of ``ctx.hidden``, without computing a lazy one."""
    if isinstance(ctx, LazyHiddenContext):
        return ctx.hidden_version()
    return int(ctx.hidden._version)
