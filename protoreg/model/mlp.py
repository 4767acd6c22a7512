"""The one-hidden-layer Gaussian MLP, with a leading run axis R on every parameter.

Two parameterizations of unit j (``d`` input dimensions, ``k`` outputs):

* ``affine`` (the study's, 1-D only): ``h_j(x) = exp(-(w_j x + b_j)^2)``, prototype
  ``p_j = -b_j / w_j`` (infinite when ``w_j = 0``);
* ``radial`` (any ``d``): ``h_j(x) = exp(-||x - p_j||^2 / (2 s_j^2))`` with learnable centre ``p_j``
  and width ``s_j = exp(log_s_j)``.

Output ``y_hat = sum_j v_j h_j(x) + c``. Runs never interact: every parameter has shape (R, ...)
and run r only ever touches index r.

Initialisation (:meth:`GaussianMLP.initialize`), per run from its own seed, so a run initialises
identically alone or inside a batch:

* prototypes inside the convex hull of the run's inputs (``init="uniform"``, default): in 1-D
  uniform over ``[min x, max x]``, in d >= 2 uniform on the segment between two random training
  samples (a bounding box would put some outside the hull); or at distinct training samples
  (``init="samples"``, with replacement when M > N);
* receptive width ``s0 = init_width * spacing`` (spacing = ``extent / N**(1/d)``): affine
  ``w_j = 1/s0, b_j = -p_j/s0``; radial ``s_j = s0/sqrt(2)``, so both start as ``exp(-(x-p)^2/s0^2)``;
* output weights ``v ~ U(-1/sqrt(M), 1/sqrt(M))``, bias ``c`` = mean target.
"""

from __future__ import annotations

import math
from typing import Literal, NamedTuple, Sequence

import torch
from torch import nn

from protoreg.model.kernels import exp_flushed, exp_flushed_

Parameterization = Literal["affine", "radial"]

#: ``|w_j|`` below this makes an affine prototype infinite in reports (and "far away" in losses).
AFFINE_EPS = 1e-12


#: Largest (R, P, Q, d) difference tensor for which :func:`pairwise_sq_dists` computes exactly;
#: larger problems (high-dimensional data with many units) use the Gram expansion.
EXACT_DIST_ELEMENTS = 1 << 22


def pairwise_sq_dists(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Squared Euclidean distances, ``(R, P, d) x (R, Q, d) -> (R, P, Q)``.

    As an explicit difference (exact, never negative) while the ``(R, P, Q, d)`` difference has
    at most :data:`EXACT_DIST_ELEMENTS` elements (always in 1-D); beyond that as
    ``|a|^2 + |b|^2 - 2 a.b`` with one batched matrix product (clamped at 0), which needs
    ``O(R P Q)`` memory instead of ``O(R P Q d)``: 64-D digits with P = Q = 1,797 go from a
    826 MB temporary per call to 13 MB.
    """
    r, p, d = a.shape
    q = b.shape[1]
    if d == 1:  # the same values without the (R, P, Q, 1) intermediate
        return (a - b.transpose(1, 2)).square()
    if r * p * q * d <= EXACT_DIST_ELEMENTS:
        return (a.unsqueeze(2) - b.unsqueeze(1)).square().sum(-1)
    an = a.square().sum(-1, keepdim=True)  # (R,P,1)
    bn = b.square().sum(-1).unsqueeze(1)  # (R,1,Q)
    d2 = torch.baddbmm(an + bn, a, b.transpose(1, 2), alpha=-2.0)
    # without autograd (evaluation) clamped in place: the same values, one (R, P, Q) buffer less
    return d2.clamp_min(0.0) if d2.requires_grad else d2.clamp_min_(0.0)


#: The forward paths of a training step (:func:`forward_path`).
ForwardPath = Literal["banded", "shared", "dense"]


def forward_path(*, radial: bool, runs: int, samples: int, width: int, dim: int, dtype: torch.dtype, device: torch.device) -> ForwardPath:
    """The forward path of a step of ``runs`` runs on ``samples`` samples with ``width`` units:

    * ``banded``: 1-D, more than :data:`protoreg.model.banded.BANDED_MIN_ELEMENTS` kernels per
      run: only the units near each sample (:mod:`protoreg.model.banded`);
    * ``shared``: radial units on problems large enough for the Gram expansion of
      :func:`pairwise_sq_dists`: the squared distances once, for the hidden layer and the
      losses' ``ctx.sq_dists``;
    * ``dense``: everything else (the 1-D study, small 2-D sets), the plain forward pass.

    The one rule: the step (:meth:`GaussianMLP.step`), evaluation and the memory estimate ask it.
    """
    from protoreg.model.banded import use_banded

    if use_banded(runs, samples, width, dim, dtype, device):
        return "banded"
    if radial and dim >= 2 and runs * samples * width * dim > EXACT_DIST_ELEMENTS:
        return "shared"
    return "dense"


class Step(NamedTuple):
    """One forward pass of a training step: ``hidden`` (R, B, M), or None on the banded path;
    ``pred`` (R, B, k); ``sq_dists`` (R, B, M) on the shared path, else None."""

    hidden: torch.Tensor | None
    pred: torch.Tensor
    sq_dists: torch.Tensor | None


class _Readout(torch.autograd.Function):
    """``c + h @ v`` whose backward computes ``dL/dv`` as ``(g^T h)^T``: the same product as
    autograd's ``h^T g``, about 7x faster for a wide ``h`` (1,797 x 1,797 x 10: 1.1 ms
    instead of 7.5 ms on 2 CPU cores), equal up to summation order."""

    @staticmethod
    def forward(ctx, h: torch.Tensor, v: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(h, v)
        return torch.baddbmm(c.unsqueeze(1), h, v)

    @staticmethod
    def backward(ctx, g: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        h, v = ctx.saved_tensors
        gh = torch.bmm(g, v.transpose(1, 2)) if ctx.needs_input_grad[0] else None
        gv = torch.bmm(g.transpose(1, 2), h).transpose(1, 2) if ctx.needs_input_grad[1] else None
        gc = g.sum(1) if ctx.needs_input_grad[2] else None
        return gh, gv, gc


def readout(h: torch.Tensor, v: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    """The output layer ``c + h @ v``, ``(R, N, M), (R, M, k), (R, k) -> (R, N, k)``, with the
    fast backward of :class:`_Readout` (on the ``shared`` path of :func:`forward_path`)."""
    return _Readout.apply(h, v, c)


def sample_spacing(x: torch.Tensor) -> torch.Tensor:
    """Typical sample spacing ``extent / N**(1/d)`` per run, ``(R, N, d) -> (R,)``.

    ``extent`` is the mean side of the bounding box; constant inputs give spacing 1.
    """
    n, d = x.shape[1], x.shape[2]
    extent = (x.amax(dim=1) - x.amin(dim=1)).mean(dim=-1)
    spacing = extent / (n ** (1.0 / d))
    return torch.where(extent > 0, spacing, torch.ones_like(spacing))


class GaussianMLP(nn.Module):
    """R independent Gaussian MLPs of width M on d inputs and k outputs.

    Parameters
    ----------
    runs, width, dim, out : int
        R, M, d, k.
    parameterization : "affine" | "radial"
        ``affine`` requires ``dim == 1``.
    """

    def __init__(self, runs: int, width: int, dim: int, out: int, parameterization: Parameterization = "radial") -> None:
        super().__init__()
        if parameterization == "affine" and dim != 1:
            raise ValueError("the affine parameterization has a point prototype only in 1-D")
        if parameterization not in ("affine", "radial"):
            raise ValueError(f"unknown parameterization {parameterization!r}")
        self.runs, self.width, self.dim, self.out = runs, width, dim, out
        self.parameterization: Parameterization = parameterization
        if parameterization == "affine":
            self.w = nn.Parameter(torch.ones(runs, width))
            self.b = nn.Parameter(torch.zeros(runs, width))
        else:
            self.centers = nn.Parameter(torch.zeros(runs, width, dim))
            self.log_s = nn.Parameter(torch.zeros(runs, width))
        self.v = nn.Parameter(torch.zeros(runs, width, out))
        self.c = nn.Parameter(torch.zeros(runs, out))
        #: set by :meth:`initialize` in d >= 2: the convex combinations of training inputs the
        #: prototypes start at, ``(index (R, M, 2) long, weight (R, M, 2) float64)`` (for
        #: ``init="samples"`` the second weight is 0); the first hull check starts from them
        #: (:meth:`protoreg.geometry.HullWarmStart.seed`). Not a parameter or buffer: no part of
        #: the model's state_dict.
        self.initial_combinations: tuple[torch.Tensor, torch.Tensor] | None = None

    # ------------------------------------------------------------------ init
    @torch.no_grad()
    def initialize(
        self,
        x: torch.Tensor,
        y: torch.Tensor,
        seeds: Sequence[int],
        *,
        init: Literal["uniform", "samples"] = "uniform",
        init_width: float = 1.0,
    ) -> None:
        """Seeded initialisation of every run from its own data ``x[r]``, ``y[r]`` (see module doc)."""
        if len(seeds) != self.runs:
            raise ValueError(f"need one seed per run ({self.runs}), got {len(seeds)}")
        spacing = sample_spacing(x.double())
        m = self.width
        index = torch.zeros(self.runs, m, 2, dtype=torch.long)
        weight = torch.zeros(self.runs, m, 2, dtype=torch.float64)
        for r, seed in enumerate(seeds):
            g = torch.Generator().manual_seed(int(seed))
            xr = x[r].detach().double().cpu()
            if init == "samples":
                n = xr.shape[0]
                idx = torch.randperm(n, generator=g)[:m] if m <= n else torch.randint(n, (m,), generator=g)
                p = xr[idx]
                index[r, :, 0], weight[r, :, 0] = idx, 1.0
            elif self.dim == 1:
                lo, hi = xr.amin(0), xr.amax(0)
                p = lo + (hi - lo) * torch.rand(m, self.dim, generator=g, dtype=torch.float64)
            else:
                # Inside the convex hull (a bounding box is not): uniform on the segment between
                # two random training samples.
                n = xr.shape[0]
                a, b = torch.randint(n, (2, m), generator=g)
                u = torch.rand(m, 1, generator=g, dtype=torch.float64)
                p = xr[a] + u * (xr[b] - xr[a])
                index[r, :, 0], index[r, :, 1] = a, b
                weight[r, :, 0], weight[r, :, 1] = 1.0 - u[:, 0], u[:, 0]
            s0 = float(init_width) * float(spacing[r])
            a = 1.0 / math.sqrt(m)
            v = (torch.rand(m, self.out, generator=g, dtype=torch.float64) * 2 - 1) * a
            if self.parameterization == "affine":
                self.w[r] = 1.0 / s0
                self.b[r] = (-p[:, 0] / s0).to(self.b)
            else:
                self.centers[r] = p.to(self.centers)
                self.log_s[r] = math.log(s0 / math.sqrt(2.0))
            self.v[r] = v.to(self.v)
            self.c[r] = y[r].double().mean(0).to(self.c)
        self.initial_combinations = (index, weight) if self.dim >= 2 and self.parameterization == "radial" else None

    # --------------------------------------------------------------- forward
    def hidden(self, x: torch.Tensor, sq_dists: torch.Tensor | None = None) -> torch.Tensor:
        """Hidden responses, ``(R, N, d) -> (R, N, M)``; radial units take precomputed squared
        distances ``sq_dists`` (R, N, M) to the centres when given."""
        if self.parameterization == "affine":
            z = x * self.w.unsqueeze(1) + self.b.unsqueeze(1)  # (R,N,1)*(R,1,M)
            return exp_flushed(-z.square())
        d2 = pairwise_sq_dists(x, self.centers) if sq_dists is None else sq_dists  # (R,N,M)
        inv = torch.exp(-2.0 * self.log_s).unsqueeze(1) * 0.5  # 1/(2 s^2), (R,1,M)
        if sq_dists is None and not torch.is_grad_enabled():  # evaluation: d2 is ours to overwrite
            return exp_flushed_(d2.mul_(-inv))  # the same values in place
        return exp_flushed(d2 * -inv)  # = -d2 * inv exactly, one pass less over (R, N, M)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(R, N, d) -> (hidden (R, N, M), pred (R, N, k))``."""
        h = self.hidden(x)
        pred = torch.baddbmm(self.c.unsqueeze(1), h, self.v)
        return h, pred

    # ------------------------------------------------------------ prototypes
    def path(self, x: torch.Tensor) -> ForwardPath:
        """The forward path of a step on samples ``x`` (R, B, d) (:func:`forward_path`)."""
        r, b, d = x.shape
        return forward_path(radial=self.parameterization == "radial", runs=r, samples=b, width=self.width, dim=d, dtype=x.dtype, device=x.device)

    def step(self, x: torch.Tensor) -> Step:
        """The forward pass of a training step on its own path (:meth:`path`): banded (``hidden``
        None; the losses compute it only when one reads it), shared squared distances, or dense."""
        path = self.path(x)
        if path == "banded":
            from protoreg.model.banded import banded_pred

            return Step(None, banded_pred(self, x), None)
        if path == "shared":
            d2 = pairwise_sq_dists(x, self.centers)
            hidden = self.hidden(x, sq_dists=d2)
            return Step(hidden, readout(hidden, self.v, self.c), d2)
        hidden, pred = self(x)
        return Step(hidden, pred, None)

    def prototypes(self) -> torch.Tensor:
        """Differentiable, always-finite prototypes ``(R, M, d)`` for losses.

        Affine units with ``|w| < AFFINE_EPS`` are placed at ``-b / (±AFFINE_EPS)``: astronomically
        far, so distance kernels vanish, without NaN in values or gradients.
        """
        if self.parameterization == "radial":
            return self.centers
        w = self.w
        sign = torch.where(w < 0, -torch.ones_like(w), torch.ones_like(w))
        safe = torch.where(w.abs() < AFFINE_EPS, sign * AFFINE_EPS, w)
        return (-self.b / safe).unsqueeze(-1)

    @torch.no_grad()
    def prototype_positions(self) -> torch.Tensor:
        """Exact prototypes ``(R, M, d)`` for reports: ``±inf`` where an affine ``w`` vanishes."""
        if self.parameterization == "radial":
            return self.centers.detach().clone()
        w, b = self.w.detach(), self.b.detach()
        p = -b / torch.where(w.abs() < AFFINE_EPS, torch.ones_like(w), w)
        inf = torch.where(b > 0, -math.inf, math.inf) * torch.ones_like(p)
        return torch.where(w.abs() < AFFINE_EPS, inf, p).unsqueeze(-1)

    def extra_repr(self) -> str:
        return f"runs={self.runs}, width={self.width}, dim={self.dim}, out={self.out}, {self.parameterization}"
