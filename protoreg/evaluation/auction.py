"""The forward auction algorithm with epsilon-scaling (Bertsekas) for large dense square
assignment problems, in torch: what :func:`~protoreg.evaluation.matching.optimal_matching` runs
from :data:`~protoreg.evaluation.matching.LAPJV_FLOAT32_MIN_PAIRS` pairs on when M = N.

Each unassigned row bids for the column of least ``cost[i, j] + price[j]``, raising that price
by the gap to its second-best column plus epsilon; all unassigned rows bid at once (Jacobi),
and each column goes to its highest bid. A phase ends when every row holds a column; then the
assignment satisfies epsilon-complementary slackness, so its total is within ``n * eps`` of the
optimum. Epsilon shrinks by a constant factor from phase to phase, and each phase starts from the
previous prices, so that the late phases, with their tiny epsilon, only settle what is left.

The phases of large epsilon run on the float32 rounding of the cost matrix (half the bytes of
every row read); once epsilon nears float32's resolution, the phases go on in float64 on the
matrix itself, down to an epsilon at which ``n * eps`` is within the caller's tolerance. The
final prices are the dual potentials ``v = -price`` of
:func:`~protoreg.evaluation.lapcert.dual_bound`, which proves the assignment's gap to the
optimum: the caller accepts it only with that proof.

Why an auction here: Jonker-Volgenant's augmenting paths scan rows one at a time on one core, and
on 20,000 x 20,000 trained 64-D prototypes they spend most of their 700 s waiting on memory; a
bidding round reads each bidding row once, in blocks, on every core (docs/performance.md).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
import torch

#: Elements of one block of bidding rows (16 MB of float32).
_BLOCK_ELEMENTS = 1 << 22

#: Columns per group of the two-smallest search (:func:`_two_smallest`).
_GROUP = 64

#: Epsilon shrinks by this factor per float32 phase, and by :data:`THETA64` per float64 phase
#: (where the assignment is already nearly optimal and a phase costs little more than one pass).
THETA32 = 6.0
THETA64 = 40.0

#: The auction gives up (returns ``None``) after this many bids per row in all: a guard against a
#: pathological price war, so that the caller's exact solver takes over in bounded time.
MAX_BIDS_PER_ROW = 400

#: With fewer unassigned rows than this, a phase finishes one bid at a time (:meth:`_Auction._serial`).
SERIAL_BELOW = 128

#: Float32 phases stop at this many units in the last place of the largest value a bid compares
#: (``max|cost| + max price``); below it a bid's increment could round away.
_ULPS32 = 16.0


def _two_smallest(b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per row of ``b`` (k, n), n >= 2: the column of the smallest entry, its value and the
    second-smallest value (equal to the smallest on a tie). Overwrites ``b``.

    ``torch.min(dim=1)`` with indices and ``torch.topk`` scan at about 1 ns per float32 entry on
    CPU, ``amin`` without indices at a fifteenth of that: so group minima by ``amin``, then the
    indices within the winning group only."""
    k, n = b.shape
    full = n // _GROUP
    parts = [b[:, : full * _GROUP].view(k, full, _GROUP).amin(2)] if full else []
    if n > full * _GROUP:
        parts.append(b[:, full * _GROUP :].amin(1, keepdim=True))
    gm = parts[0] if len(parts) == 1 else torch.cat(parts, 1)
    w1, gi = gm.min(1)
    base = gi * _GROUP
    idx = base[:, None] + torch.arange(_GROUP)
    outside = idx >= n
    vals = b.gather(1, idx.clamp_max_(n - 1)).masked_fill_(outside, math.inf)
    wj = vals.argmin(1)
    vals.scatter_(1, wj[:, None], math.inf)
    gm.scatter_(1, gi[:, None], math.inf)
    w2 = torch.minimum(vals.amin(1), gm.amin(1))
    return base + wj, w1, w2


class _Auction:
    """The bidding state of one problem: prices, the row of each column and the column of each row."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.bids = 0
        self.owner = torch.full((n,), -1, dtype=torch.long)  # column -> row
        self.col = torch.full((n,), -1, dtype=torch.long)  # row -> column
        self.first = torch.empty(n, dtype=torch.long)  # per-column scratch: the winning row

    def phase(self, c: torch.Tensor, price: torch.Tensor, eps: float, max_bids: int) -> bool:
        """One phase at ``eps`` from all rows unassigned; ``price`` (in ``c``'s dtype) is updated
        in place. False when the bid budget ran out first."""
        n = self.n
        self.owner.fill_(-1)
        self.col.fill_(-1)
        block = max(1, min(n, _BLOCK_ELEMENTS // n))
        buf = torch.empty(block, n, dtype=c.dtype)
        best = torch.empty(n, dtype=c.dtype)  # per-column scratch: the highest bid
        rows = torch.arange(n)
        contiguous = True  # the first round bids with every row, in order: no gather
        while rows.numel():
            k = rows.numel()
            if k <= SERIAL_BELOW:
                return self._serial(c, price, eps, rows.tolist(), max_bids)
            self.bids += k
            if self.bids > max_bids:
                return False
            cols = torch.empty(k, dtype=torch.long)
            raise_by = torch.empty(k, dtype=c.dtype)
            for s in range(0, k, block):
                r = rows[s : s + block]
                b = buf[: r.numel()]
                if contiguous:
                    torch.add(c[s : s + r.numel()], price, out=b)
                else:
                    torch.index_select(c, 0, r, out=b).add_(price)
                j, w1, w2 = _two_smallest(b)
                cols[s : s + r.numel()] = j
                raise_by[s : s + r.numel()] = w2 - w1
            contiguous = False
            bid = price[cols] + raise_by + eps
            # each column goes to its highest bid, a tie to the lowest row
            best.index_fill_(0, cols, -math.inf).scatter_reduce_(0, cols, bid, "amax")
            top = bid == best[cols]
            self.first.index_fill_(0, cols, n).scatter_reduce_(0, cols, torch.where(top, rows, n), "amin")
            won = top & (rows == self.first[cols])
            winners, taken = rows[won], cols[won]
            previous = self.owner[taken]
            displaced = previous[previous >= 0]
            price[taken] = bid[won]
            self.col[displaced] = -1
            self.owner[taken] = winners
            self.col[winners] = taken
            rows = torch.cat([rows[~won], displaced])
        return True

    def _serial(self, c: torch.Tensor, price: torch.Tensor, eps: float, todo: list[int], max_bids: int) -> bool:
        """The end of a phase, one bid at a time (Gauss-Seidel) on numpy views of the same
        arrays: with a few rows left a round is all overhead (about 0.5 ms of torch calls against
        tens of microseconds of numpy for one row)."""
        cn, pn, owner, col = c.numpy(), price.numpy(), self.owner.numpy(), self.col.numpy()
        row = np.empty(self.n, dtype=cn.dtype)
        while todo:
            self.bids += 1
            if self.bids > max_bids:
                return False
            i = todo.pop()
            np.add(cn[i], pn, out=row)
            j = int(row.argmin())
            w1 = row[j]
            row[j] = np.inf
            pn[j] += (row.min() - w1) + eps
            previous = int(owner[j])
            owner[j] = i
            col[i] = j
            if previous >= 0:
                col[previous] = -1
                todo.append(previous)
        return True


class AuctionResult(NamedTuple):
    """What :func:`auction_assignment` found."""

    cols: np.ndarray  #: (n,) int64: the column of each row
    potentials: np.ndarray  #: (n,) float64: column potentials ``v = -price`` for the dual bound
    bids_per_row: float  #: bids made in all phases, per row


def auction_assignment(cost: np.ndarray, rel_tol: float) -> AuctionResult | None:
    """An assignment of every row of the square float64 ``cost`` (n, n), n >= 2, to a distinct
    column, and column potentials for its dual bound, with ``n * eps`` of the last phase at most
    ``rel_tol / 2`` of a lower bound of the optimum (the sum of the row minima), so that
    :func:`~protoreg.evaluation.lapcert.dual_bound` proves it within ``rel_tol`` unless the
    float64 resolution of the prices prevents it. ``None`` when an entry is not finite or beyond
    float32's range, or when the bids ran past :data:`MAX_BIDS_PER_ROW` per row.

    Memory: the float32 copy of ``cost`` (4 n^2 bytes) and 16 MB blocks."""
    n = cost.shape[0]
    c64 = torch.from_numpy(cost)
    lo, hi = float(c64.amin()), float(c64.amax())
    cmax = max(abs(lo), abs(hi))
    if not (math.isfinite(lo) and math.isfinite(hi)) or cmax > 2.0**100:
        return None
    state = _Auction(n)
    max_bids = MAX_BIDS_PER_ROW * n
    if hi == lo:  # every assignment costs the same
        return AuctionResult(np.arange(n), np.zeros(n), 0.0)
    lower = math.fsum(c64.amin(1).tolist())
    eps = (hi - lo) / 4.0
    price = torch.zeros(n, dtype=torch.float64)
    if eps >= _ULPS32 * 2.0**-23 * cmax:  # float32 resolves it: the phases of large epsilon there
        c32 = c64.to(torch.float32)
        price32 = torch.zeros(n, dtype=torch.float32)
        while True:
            if not state.phase(c32, price32, eps, max_bids):
                return None
            if eps / THETA32 < _ULPS32 * 2.0**-23 * (cmax + float(price32.abs().max())):
                break
            eps /= THETA32
        del c32
        price = price32.to(torch.float64)
        eps /= THETA64
    final = max(0.5 * rel_tol * lower / n, _ULPS32 * 2.0**-52 * (cmax + float(price.abs().max())))
    while True:
        eps = max(eps, final)
        if not state.phase(c64, price, eps, max_bids):
            return None
        if eps <= final:
            break
        eps /= THETA64
    return AuctionResult(state.col.numpy().copy(), (-price).numpy(), state.bids / n)
