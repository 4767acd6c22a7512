"""protoreg.check_pairing: the design rule, with fit's messages, for a model's own losses."""

from __future__ import annotations

import warnings

import pytest

import protoreg
from protoreg.errors import ConfigError, PairingWarning


def test_an_unpaired_repulsor_is_warned_with_fits_message() -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        unpaired = protoreg.check_pairing({"glvq": "neutral", "push": "repulsor", "pull": "attractor"}, {"push": ["coverage"]})
    assert [u.repulsor for u in unpaired] == ["push"] and [w.category for w in caught] == [PairingWarning]
    assert str(caught[0].message) == (
        "repulsor 'push' (your model) is active with no compatible attractor (candidates: 'coverage'); "
        "it can expel prototypes from the data's convex hull - set losses.<attractor>.weight > 0"
    )


def test_paired_or_unspecified_repulsors_pass_and_strict_refuses() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert protoreg.check_pairing({"pull": "attractor", "push": "repulsor"}, {"push": ["pull"]}) == []
        assert protoreg.check_pairing({"pull": "attractor", "push": "repulsor"}) == []  # any active attractor
        assert protoreg.check_pairing({"fit": "neutral"}) == []
    with pytest.raises(ConfigError, match=r"^pairing.strict: repulsor 'a' \(mine\) .*; repulsor 'b' \(mine\)"):
        protoreg.check_pairing({"a": "repulsor", "b": "repulsor"}, strict=True, source="mine")


def test_bad_roles_are_refused_naming_the_loss() -> None:
    with pytest.raises(ValueError, match=r"roles\['x'\]: expected one of attractor, repulsor, neutral"):
        protoreg.check_pairing({"x": "pusher"})
    with pytest.raises(ValueError, match=r"pairs_with\['y'\]: not a loss in roles"):
        protoreg.check_pairing({"x": "repulsor"}, {"y": ["x"]})
