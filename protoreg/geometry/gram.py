"""Vertex searches in Gram space: ``O(N K)`` instead of ``O(N d)`` per query and search.

Every search of the hull checks (the Frank-Wolfe vertex of the solver, the separating
hyperplanes of the screening) is ``min_i <x_i, q - p>`` over all ``N`` inputs, for a convex
combination ``q = sum_k lam_k x_{s_k}`` of ``K`` inputs (the nearest input: ``K = 1``; a corral:
a few) and a fixed query ``p``. Written with the inputs' Gram matrix ``G = X X^T`` and
``c = X p``,

.. math::

    \\langle x_i, q - p \\rangle = \\sum_k \\lambda_k G_{i s_k} - c_i ,

a weighted sum of ``K`` rows of ``G`` per query plus one subtraction, where the
direct search is a dense ``d``-term product per input. In 784-D with corrals of 1-10 points
(MNIST) that is several times faster; in 64-D (digits) it is not, so :func:`gram_search` builds
one only where ``d >= GRAM_MIN_DIM`` and the matrices fit the memory budget.

The products run in float32 (``G`` and ``c`` rounded from float64), with a certified error:
every score is within :meth:`GramSearch.error` of the exact one, and the lower bounds subtract
it. A query whose bound is too wide for its tolerance searches directly instead
(:mod:`protoreg.geometry.solver`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from protoreg.geometry.linalg import _run_scores

#: Dimension from which searches over a corral of a few points are cheaper through the Gram
#: matrix than directly (the weighted row sum reads ``K`` rows of ``N`` floats per query against
#: ``d`` multiply-adds per input and query; measured in docs/performance.md).
GRAM_MIN_DIM = 256
#: Largest corral (non-zero weights) a query may search with through the Gram matrix: beyond
#: ``d / GRAM_MAX_K_SHARE`` points the direct product is as fast.
GRAM_MAX_K_SHARE = 32
#: A query searches through the Gram matrix when the certified error this leaves in its lower
#: bound is at most this share of its tolerance (as the direct float32 search's rule).
GRAM_SHARE = 1.0 / 16
_U32 = 2.0**-24
_U64 = 2.0**-53


def gram_bytes(runs: int, n: int, queries: int, dim: int) -> int:
    """Bytes the Gram searches of one hull call hold for ``queries`` queries (0 where none is
    built): the float64 Gram matrices, their centred float32 copies (``runs * n * n`` each),
    ``c`` (``queries * n`` float32), the centred inputs and the copy of the inputs that keys
    the cache (``runs * n * dim`` float64 each)."""
    return 12 * runs * n * n + 4 * queries * n + 16 * runs * n * dim if dim >= GRAM_MIN_DIM else 0


def gram_fits(runs: int, n: int, queries: int, dim: int, chunk_bytes: int) -> bool:
    """Whether a hull call builds Gram searches: ``dim >= GRAM_MIN_DIM``, the float64 Gram
    matrices within ``chunk_bytes`` (as the solver's look-ups need) and the float32 ones with
    ``c`` too."""
    return dim >= GRAM_MIN_DIM and 8 * runs * n * n <= chunk_bytes and 4 * (runs * n * n + queries * n) <= chunk_bytes


@dataclass
class GramBase:
    """What Gram searches need of the normalised inputs ``xn`` (R, N, d) alone, reusable for as
    long as they do not change (:class:`~protoreg.geometry.HullWarmStart` keeps it between
    checks): ``gram`` (R, N, N) float64 ``X X^T``; ``mu`` (R, d) the inputs' means; ``amu``
    (R, N) ``<x_i, mu>``; ``y`` (R, N, d') the centred inputs ``x_i - mu`` on the coordinates
    ``cols`` (d',) where some input differs from the mean (on the others every ``x_i - mu`` is
    exactly 0, so products with ``y`` leave them out: 121 of MNIST's 784 pixels are constant);
    ``norms`` (R, N) ``||x_i - mu||``; ``buf``
    (R * N + C, N) float32: ``<x_i - mu, x_k - mu>`` stacked over the runs (``g32``), then room
    for ``C`` queries' rows of ``c`` (:func:`gram_search` writes them; the weighted row sum then
    subtracts them in the same pass)."""

    gram: Tensor
    mu: Tensor
    amu: Tensor
    y: Tensor
    cols: Tensor
    norms: Tensor
    buf: Tensor

    @property
    def g32(self) -> Tensor:
        R, N = self.norms.shape
        return self.buf[: R * N]

    def room(self, queries: int) -> None:
        """Make ``buf`` hold ``queries`` rows of ``c`` after the Gram rows."""
        R, N = self.norms.shape
        if self.buf.shape[0] < R * N + queries:
            buf = torch.empty(R * N + queries, N, dtype=self.buf.dtype, device=self.buf.device)
            buf[: R * N] = self.g32
            self.buf = buf


def gram_base(xn: Tensor, chunk_bytes: int, queries: int = 0, gram: Tensor | None = None) -> GramBase:
    """:class:`GramBase` of ``xn`` (``gram``, its float64 Gram matrices, when known) with room
    for ``queries`` rows of ``c``; the centring runs in blocks of at most ``chunk_bytes / 4``."""
    R, N, d = xn.shape
    if gram is None:
        gram = torch.bmm(xn, xn.transpose(1, 2))
    mu = xn.mean(dim=1)  # (R, d)
    a = torch.bmm(xn, mu[:, :, None]).squeeze(2)  # <x_i, mu>
    m = (mu * mu).sum(-1)
    buf = torch.empty(R * N + queries, N, dtype=torch.float32, device=xn.device)
    block = max(1, chunk_bytes // (4 * 8 * N))
    for r in range(R):
        for s in range(0, N, block):
            g = gram[r, s : s + block] - a[r, s : s + block, None] - a[r, None, :] + m[r]
            buf[r * N + s : r * N + s + g.shape[0]] = g
    y = xn - mu[:, None, :]
    cols = (y != 0).flatten(0, 1).any(dim=0).nonzero().squeeze(1)
    return GramBase(gram=gram, mu=mu, amu=a, y=y[..., cols].contiguous(), cols=cols, norms=torch.linalg.vector_norm(y, dim=2), buf=buf)


@dataclass
class GramSearch:
    """Gram-space scores for the queries of one hull call, centred on the inputs' mean ``mu``
    (the scores shift by ``<mu, q - p>``, one number per query; centring halves the magnitudes
    that float32 rounds for pixel data, whose bounding-box centre is far from the images).

    ``base``: the inputs' :class:`GramBase`, whose ``buf`` holds, after the Gram rows, ``c``
    (Q, N) float32: ``<x_i - mu, p_a - mu>`` for every query ``a`` (of run ``run[a]``);
    ``ymax`` (R,): the largest ``||x_i - mu||``; ``rnorm`` (Q,): ``||p_a - mu||``; ``e64``
    (Q,): a bound on the error of the float64 work behind them; ``max_k``: the largest corral
    searched this way; ``pmu`` (Q,): ``<mu, p_a>``.
    """

    base: GramBase
    ymax: Tensor
    rnorm: Tensor
    e64: Tensor
    max_k: int
    pmu: Tensor

    @property
    def N(self) -> int:
        return int(self.base.g32.shape[1])

    def error(self, rows: Tensor, run: Tensor, S: Tensor, lam: Tensor, mask: Tensor) -> Tensor:
        """Per query, a bound on ``|score + offset - <x_i, q - p>|`` of :meth:`scores` for every
        ``i``; ``q = sum_k lam_k x_{S_k}`` over the used slots ``mask``, ``rows`` index the rows of ``c``.

        With ``y = x - mu`` and ``r = p - mu``: rounding ``<y_i, y_k>``, ``lam``, ``<y_i, r>``
        and the difference to float32, and the ``K``-term float32 sum (``gamma_K``, any order),
        err by at most ``ymax ((K + 4) u A + 2 u ||r||) (1 + u)^2`` with
        ``A = sum_k lam_k ||y_{S_k}||``; plus ``e64``; a factor 2 of slack on top.
        """
        k = mask.sum(dim=1).to(lam.dtype)
        a = torch.where(mask, lam * self.base.norms[run[:, None], S], 0.0).sum(dim=1)
        f32 = self.ymax[run] * ((k + 4.0) * _U32 * a + 2.0 * _U32 * self.rnorm[rows]) * (1.0 + _U32) ** 2
        return 2.0 * (f32 + self.e64[rows])

    def usable(self, rows: Tensor, run: Tensor, S: Tensor, lam: Tensor, mask: Tensor, tol: Tensor, dist: Tensor) -> tuple[Tensor, Tensor]:
        """``(use, err)``: which queries search through the Gram matrix (a corral of at most
        ``max_k`` points, and an :meth:`error` at most :data:`GRAM_SHARE` of their tolerance
        ``tol`` times their distance ``dist``: the error it leaves in the lower bound), and that
        error."""
        err = self.error(rows, run, S, lam, mask)
        return (mask.sum(dim=1) <= self.max_k) & (err <= GRAM_SHARE * tol * dist), err

    def scores(
        self, rows: Tensor, run: Tensor, S: Tensor, lam: Tensor, mask: Tensor, z: Tensor | None = None
    ) -> tuple[Tensor, Tensor]:
        """float32 scores (a, N), ``sum_k lam_k <y_i, y_{S_k}> - <y_i, r>`` (one weighted sum of
        rows, :func:`_weighted_rows`: the weights, and ``-1`` at each query's row of ``c``), and
        the float64 offset (a,) ``<mu, z>`` (``z = q - p``) that makes them ``<x_i, z>`` (see
        :meth:`error`): from ``z`` where given, else ``sum_k lam_k <x_{S_k}, mu> - <mu, p>``
        from the look-ups."""
        N = self.N
        idx = torch.cat((run[:, None] * N + S, (self.base.norms.numel() + rows)[:, None]), dim=1)
        w = torch.cat((lam.float(), lam.new_full((rows.numel(), 1), -1.0, dtype=torch.float32)), dim=1)
        keep = torch.cat((mask, mask.new_ones(rows.numel(), 1)), dim=1)
        if z is None:
            off = torch.where(mask, lam * self.base.amu[run[:, None], S], 0.0).sum(-1) - self.pmu[rows]
        else:
            off = (self.base.mu[run] * z).sum(-1)
        return _weighted_rows(self.base.buf, idx, w, keep), off


def _weighted_rows(table: Tensor, idx: Tensor, w: Tensor, keep: Tensor) -> Tensor:
    """``out[j] = sum_k w[j, k] table[idx[j, k]]`` over the slots ``keep[j, k]`` (a, width): one
    ``embedding_bag`` (a weighted sum of the rows it reads, twice as fast on CPU as the same
    sum as a sparse-dense product, and on the GPU too)."""
    if keep.shape[0] == 0:
        return table.new_zeros(0, table.shape[1])
    n = keep.sum(dim=1)
    offsets = torch.cumsum(n, 0) - n
    return F.embedding_bag(idx[keep], table, offsets, mode="sum", per_sample_weights=w[keep])


def combination(xn: Tensor, run: Tensor, S: Tensor, lam: Tensor, mask: Tensor) -> Tensor:
    """``q_j = sum_k lam[j, k] x[run[j], S[j, k]]`` over the used slots (a, d), reading only
    those inputs (a weighted row sum) instead of gathering every slot's coordinates."""
    R, N, d = xn.shape
    return _weighted_rows(xn.reshape(R * N, d), run[:, None] * N + S, lam, mask)


def gram_search(pq: Tensor, xn: Tensor, run: Tensor, base: GramBase, chunk_bytes: int) -> tuple[GramSearch, Tensor]:
    """A :class:`GramSearch` for the normalised queries ``pq`` (Q, d) of runs ``run`` against
    ``xn`` (R, N, d) with its ``base``, and each query's nearest input (Q,), found exactly from
    ``<x_i - mu, p - mu>`` in float64 on the way (in blocks of at most ``chunk_bytes / 4``)."""
    R, N, d = xn.shape
    Q = pq.shape[0]
    base.room(Q)
    mu, norms = base.mu, base.norms
    cbuf = base.buf[R * N : R * N + Q]
    nn = torch.empty(Q, dtype=torch.long, device=xn.device)
    rq = pq - mu[run]
    rqc = rq[:, base.cols] if base.cols.numel() < d else rq  # <x_i - mu, p - mu> over the coordinates where x_i - mu is not 0
    ysq = norms * norms
    block = max(1, chunk_bytes // (4 * 8 * (2 * N + d)))
    yt = base.y.transpose(1, 2)
    for s in range(0, Q, block):
        r = run[s : s + block]
        c = _run_scores(rqc[s : s + block], r, yt)  # <x_i - mu, p - mu>
        cbuf[s : s + block] = c
        nn[s : s + block] = c.mul_(-2.0).add_(ysq[r]).argmin(dim=1)  # ||y_i||^2 - 2 c, in place
    xmax, mun, pn = xn.square().sum(-1).amax(dim=1).sqrt(), mu.square().sum(-1).sqrt(), torch.linalg.vector_norm(pq, dim=1)
    # every float64 product and sum behind the Gram rows and c (d terms at most, a few more
    # for the centring); ||x_i - mu|| <= xmax + ||mu||, ||p - mu|| <= ||p|| + ||mu||
    g64 = 8.0 * (d + 4) * _U64 / (1.0 - (d + 4) * _U64)
    big = (xmax + mun)[run]
    gs = GramSearch(
        base=base, ymax=norms.amax(dim=1), rnorm=torch.linalg.vector_norm(rq, dim=1),
        e64=g64 * big * (big + pn + mun[run]), max_k=max(1, d // GRAM_MAX_K_SHARE), pmu=(mu[run] * pq).sum(-1),
    )
    return gs, nn
