"""The corral least-squares solve of the hull solver: QR where the corral is independent, the
SVD's minimum-norm solution where it is not, one group per corral size."""

from __future__ import annotations

import numpy as np
import torch

from protoreg.geometry import linalg
from protoreg.geometry.linalg import _corral_lstsq, _independent_lstsq


def _reference(xs: torch.Tensor, mask: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
    """The affine minimiser weights by numpy's SVD least squares, one row at a time."""
    out = torch.zeros(mask.shape, dtype=torch.float64)
    for a in range(xs.shape[0]):
        slots = mask[a].nonzero().flatten().tolist()
        x0 = xs[a, slots[0]].numpy()
        e = np.stack([xs[a, s].numpy() - x0 for s in slots[1:]], axis=1) if len(slots) > 1 else np.zeros((xs.shape[2], 0))
        c = np.linalg.lstsq(e, p[a].numpy() - x0, rcond=None)[0] if e.shape[1] else np.zeros(0)
        out[a, slots[0]] = 1.0 - c.sum()
        for s, v in zip(slots[1:], c):
            out[a, s] = v
    return out


def test_corrals_of_every_size_match_the_svd_solution() -> None:
    g = torch.Generator().manual_seed(0)
    A, K, d = 40, 9, 12
    xs = torch.randn(A, K, d, generator=g, dtype=torch.float64)
    p = torch.randn(A, d, generator=g, dtype=torch.float64)
    mask = torch.rand(A, K, generator=g) < 0.6
    mask[torch.arange(A), torch.randint(K, (A,), generator=g)] = True  # at least one slot per row
    mask[0] = False
    mask[0, 3] = True  # a single point: weight 1
    got = _corral_lstsq(xs, mask, p)
    torch.testing.assert_close(got, _reference(xs, mask, p), rtol=0, atol=1e-12)
    assert torch.allclose(got.sum(dim=1), torch.ones(A, dtype=torch.float64), atol=1e-12)
    assert bool((got[~mask] == 0).all())
    assert float(got[0, 3]) == 1.0


def test_dependent_columns_get_the_minimum_norm_solution(monkeypatch) -> None:
    g = torch.Generator().manual_seed(1)
    E = torch.randn(3, 6, 3, generator=g, dtype=torch.float64)
    E[1, :, 2] = 2.0 * E[1, :, 0]  # exactly dependent: QR's pivot vanishes
    b = torch.randn(3, 6, generator=g, dtype=torch.float64)
    calls = []
    real = torch.linalg.lstsq

    def spy(*args, **kwargs):
        calls.append(args[0].shape[0])
        return real(*args, **kwargs)

    monkeypatch.setattr(torch.linalg, "lstsq", spy)
    c = _independent_lstsq(E, b)
    assert calls == [1]  # only the dependent row went to the SVD
    for a in range(3):
        want = np.linalg.lstsq(E[a].numpy(), b[a].numpy(), rcond=None)[0]
        np.testing.assert_allclose(c[a].numpy(), want, atol=1e-12)
    # the minimum-norm solution splits the weight of the pair (x, 2x) as c0 : c2 = 1 : 2
    assert abs(float(c[1, 0]) * 2.0 - float(c[1, 2])) < 1e-10


def test_nearly_dependent_columns_are_judged_by_the_pivot_threshold(monkeypatch) -> None:
    # pivots 1.4 and 7e-13 (below the threshold times the column's norm): the SVD solves it
    E = torch.tensor([[[1.0, 1.0], [0.0, 1e-12], [0.0, 0.0]], [[1.0, 1.0], [0.0, 1e-3], [0.0, 0.0]]], dtype=torch.float64)
    b = torch.tensor([[1.0, 1.0, 0.0], [1.0, 1.0, 0.0]], dtype=torch.float64)
    assert 1e-12 < linalg._QR_INDEPENDENT < 1e-3
    rows = []
    real = torch.linalg.lstsq
    monkeypatch.setattr(torch.linalg, "lstsq", lambda A, B, **kw: rows.append(A.shape[0]) or real(A, B, **kw))
    c = _independent_lstsq(E, b)
    assert rows == [1]
    for a in range(2):
        np.testing.assert_allclose(c[a].numpy(), np.linalg.lstsq(E[a].numpy(), b[a].numpy(), rcond=None)[0], rtol=1e-6)
