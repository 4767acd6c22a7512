from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from protoreg.geometry import outside_hull_frac
from protoreg.metrics import fit_mse, recon_error, specialization_ratio


def brute_recon(p: np.ndarray, x: np.ndarray) -> float:
    """Best one-to-one matching by enumerating every injection of the smaller set."""
    m, n = len(p), len(x)
    d = np.sqrt(((p[:, None] - x[None]) ** 2).sum(-1))
    best = math.inf
    if m <= n:
        for cols in itertools.permutations(range(n), m):
            best = min(best, d[range(m), cols].mean())
    else:
        for rows in itertools.permutations(range(m), n):
            best = min(best, d[rows, range(n)].mean())
    return float(best)


@pytest.mark.parametrize("m,n,dim", [(4, 4, 1), (5, 5, 2), (3, 5, 1), (5, 3, 2), (6, 6, 3)])
@pytest.mark.parametrize("seed", range(4))
def test_recon_error_equals_brute_force(m, n, dim, seed):
    rng = np.random.default_rng(seed)
    p, x = rng.normal(size=(m, dim)), rng.normal(size=(n, dim))
    got = recon_error(torch.tensor(p[None]), torch.tensor(x[None]))
    assert float(got[0]) == pytest.approx(brute_recon(p, x), rel=1e-12)


def test_recon_error_non_finite_prototypes():
    x = torch.tensor([[[0.0], [1.0]]])
    # one infinite prototype must be matched when M == N: error is inf
    assert math.isinf(float(recon_error(torch.tensor([[[0.0], [math.inf]]]), x)[0]))
    # with a spare finite prototype it is left unmatched
    got = recon_error(torch.tensor([[[0.0], [math.inf], [0.9]]]), x)
    assert float(got[0]) == pytest.approx(0.05)


@settings(max_examples=40, deadline=None)
@given(arrays(np.float64, (6, 2), elements=st.floats(-10, 10)), arrays(np.float64, (5, 2), elements=st.floats(-10, 10)), st.randoms())
def test_recon_error_is_permutation_invariant(p, x, rnd):
    base = float(recon_error(torch.tensor(p[None]), torch.tensor(x[None]))[0])
    pi, xi = list(range(6)), list(range(5))
    rnd.shuffle(pi)
    rnd.shuffle(xi)
    perm = float(recon_error(torch.tensor(p[pi][None]), torch.tensor(x[xi][None]))[0])
    assert perm == pytest.approx(base, rel=1e-9, abs=1e-12)


@settings(max_examples=40, deadline=None)
@given(arrays(np.float64, (7, 4), elements=st.floats(0, 1)), st.randoms())
def test_specialization_ratio_brute_force_and_unit_permutation(h, rnd):
    hidden = torch.tensor(h[None])
    winners = {int(np.argmax(row)) for row in h}
    assert float(specialization_ratio(hidden)[0]) == pytest.approx(len(winners) / 7)
    cols = list(range(4))
    rnd.shuffle(cols)
    rows = list(range(7))
    rnd.shuffle(rows)
    # permuting units and samples leaves the ratio unchanged (ties aside, argmax picks the first)
    hp = h[rows][:, cols]
    if all(len(set(r)) == len(r) for r in h):
        assert float(specialization_ratio(torch.tensor(hp[None]))[0]) == pytest.approx(len(winners) / 7)


def test_fit_mse_and_outside_interval():
    pred = torch.tensor([[[1.0], [2.0]], [[0.0], [0.0]]])
    y = torch.tensor([[[1.0], [4.0]], [[1.0], [1.0]]])
    torch.testing.assert_close(fit_mse(pred, y), torch.tensor([2.0, 1.0]))
    x = torch.tensor([[[0.0], [1.0], [0.5]]])
    p = torch.tensor([[[-0.1], [0.0], [1.0], [math.inf], [0.3]]])
    assert float(outside_hull_frac(p, x)[0]) == pytest.approx(2 / 5)  # the 1-D exact interval test
