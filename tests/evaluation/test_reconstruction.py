"""protoreg.reconstruct: fit's matching and reconstruction metrics for anyone's prototypes."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.optimize import linear_sum_assignment

import protoreg
from protoreg.evaluation.images import image_metrics
from protoreg.evaluation.matching import recon_error


def test_the_matching_is_optimal_and_its_metrics_are_fits() -> None:
    rng = np.random.default_rng(0)
    p, x = rng.random((15, 3)), rng.random((20, 3))
    r = protoreg.reconstruct(torch.from_numpy(p), x)
    cost = np.linalg.norm(p[:, None] - x[None], axis=-1)
    rows, cols = linear_sum_assignment(cost)
    assert [(i, j) for i, j, _ in r.pairs] == list(zip(rows.tolist(), cols.tolist()))
    assert r.recon_error == pytest.approx(cost[rows, cols].mean(), rel=1e-12)
    assert r.recon_error == float(recon_error(torch.from_numpy(p)[None], torch.from_numpy(x)[None])[0])
    with pytest.raises(ValueError, match="image_shape"):
        r.figure()


def test_images_get_the_image_metrics_and_the_figure() -> None:
    rng = np.random.default_rng(1)
    x = rng.random((6, 64))
    p = np.clip(x[::-1] + 0.05 * rng.standard_normal((6, 64)), 0, 1)
    r = protoreg.reconstruct(p, x, image_shape=(8, 8))
    ref = image_metrics(torch.from_numpy(p)[None], torch.from_numpy(x)[None], (8, 8))
    assert {k: v for k, v in r.metrics.items() if k != "recon_error"} == {k: float(v[0]) for k, v in ref.items()}
    assert [j for _, j, _ in r.pairs] == [5, 4, 3, 2, 1, 0]  # each prototype on its own image
    fig = r.figure()
    assert len(fig.axes) >= 6
