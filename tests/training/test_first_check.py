"""The geometry callback's first check starts from where the model put the prototypes."""

from __future__ import annotations

import pytest
import torch

import protoreg
from protoreg.geometry import HullWarmStart


@pytest.mark.slow  # a real fit
def test_the_first_check_is_seeded_with_the_initial_combinations(tmp_path, monkeypatch: pytest.MonkeyPatch, no_autoload: None) -> None:
    """A fit's step-0 check seeds its warm start with the model's ``initial_combinations`` (once,
    before any corral is stored) and the check then holds every prototype within the tolerance
    of its hull, so nothing is flagged."""
    seeded: list[tuple[torch.Tensor, bool]] = []
    real = HullWarmStart.seed

    def spy(self, corral, weights, n, dim):  # type: ignore[no-untyped-def]
        took = real(self, corral, weights, n=n, dim=dim)
        seeded.append((corral.clone(), took))
        return took

    monkeypatch.setattr(HullWarmStart, "seed", spy)
    run = protoreg.fit(
        "data.name=digits", "data.n=80", "model.width=40", "train.steps=2", "geometry.every_n_steps=1",
        "trainer.accelerator=cpu", out=tmp_path / "run",
    )
    assert len(seeded) == 1 and seeded[0][1]
    corral = seeded[0][0]
    assert corral.shape == (1, 40, 2) and bool((corral >= 0).all()) and bool((corral < 80).all())
    assert run.metrics["outside_hull_frac"] == 0.0
