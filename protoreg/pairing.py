"""The design rule of the study, checked before training: every active repulsor needs an active
attractor it pairs with; otherwise it pushes prototypes out of the convex hull of the data."""

from __future__ import annotations

import warnings
from typing import Mapping, Sequence

from .errors import ConfigError
from .plugins import LossEntry


class PairingWarning(UserWarning):
    """An active repulsor has no active compatible attractor."""


def unpaired_repulsors(active: Sequence[str], losses: Mapping[str, LossEntry]) -> list[str]:
    """One message per active repulsor lacking an active attractor from its ``pairs_with``."""
    problems: list[str] = []
    on = set(active)
    for name in active:
        loss = losses[name].loss
        if loss.role != "repulsor":
            continue
        ok = [a for a in loss.pairs_with if a in on and a in losses and losses[a].loss.role == "attractor"]
        if ok:
            continue
        cands = ", ".join(repr(a) for a in loss.pairs_with) or "none declared"
        problems.append(
            f"repulsor {name!r} ({losses[name].source}) is active with no compatible attractor "
            f"(candidates: {cands}); it can expel prototypes from the data's convex hull - "
            f"set losses.<attractor>.weight > 0"
        )
    return problems


def check_pairing(active: Sequence[str], losses: Mapping[str, LossEntry], *, strict: bool) -> list[str]:
    """Warn (or, when ``strict``, raise :class:`ConfigError`) for each unpaired active repulsor."""
    problems = unpaired_repulsors(active, losses)
    if problems and strict:
        raise ConfigError("pairing.strict: " + "; ".join(problems))
    for msg in problems:
        warnings.warn(msg, PairingWarning, stacklevel=2)
    return problems
