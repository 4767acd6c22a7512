"""The prototype figure keeps the data readable when prototypes fly away."""

from __future__ import annotations

import math

import matplotlib.pyplot as plt
import numpy as np
import pytest

from protoreg.evaluation.figures import prototype_figure


@pytest.mark.parametrize("d", [1, 2, 5])
def test_far_and_infinite_prototypes_are_drawn_at_the_edge_of_the_view(d: int) -> None:
    rng = np.random.default_rng(0)
    x = rng.random((30, d))
    y = rng.random((30, 1))
    pos = np.vstack([x[:3], np.full((1, d), 1e6), np.full((1, d), -math.inf)])
    outside = np.array([False, False, False, True, True])
    fig = prototype_figure(x, y, pos, outside)
    try:
        ax = fig.axes[0]
        (x0, x1), (y0, y1) = ax.get_xlim(), ax.get_ylim()
        assert x1 - x0 < 10 and (d == 1 or y1 - y0 < 10), "the view must stay near the data"
        drawn = np.vstack([c.get_offsets() for c in ax.collections if len(c.get_offsets())])
        assert np.isfinite(drawn).all()
        assert ((drawn[:, 0] >= x0) & (drawn[:, 0] <= x1)).all()
        labels = [t.get_text() for t in ax.get_legend().get_texts()]
        assert any(label.startswith("beyond view") for label in labels)
    finally:
        plt.close(fig)
