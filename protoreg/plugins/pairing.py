"""The design rule of the study, checked before training: every active repulsor needs an active
attractor it pairs with; otherwise it pushes prototypes out of the convex hull of the data."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Sequence

from protoreg.frontend.caller import warn
from protoreg.errors import ConfigError, PairingWarning
from protoreg.plugins.registry import LossEntry

__all__ = ["PairingWarning", "Unpaired", "check_pairing", "unpaired_repulsors"]


@dataclass(frozen=True)
class Unpaired:
    """An active repulsor without an active attractor from its ``pairs_with``."""

    repulsor: str
    source: str
    candidates: tuple[str, ...]

    def message(self) -> str:
        cands = ", ".join(repr(a) for a in self.candidates) or "none declared"
        return (
            f"repulsor {self.repulsor!r} ({self.source}) is active with no compatible attractor "
            f"(candidates: {cands}); it can expel prototypes from the data's convex hull - "
            f"set losses.<attractor>.weight > 0"
        )


def unpaired_repulsors(active: Sequence[str], losses: Mapping[str, LossEntry]) -> list[Unpaired]:
    """Every active repulsor lacking an active attractor from its ``pairs_with``."""
    problems: list[Unpaired] = []
    on = set(active)
    for name in active:
        loss = losses[name].loss
        if loss.role != "repulsor":
            continue
        if any(a in on and a in losses and losses[a].loss.role == "attractor" for a in loss.pairs_with):
            continue
        problems.append(Unpaired(name, losses[name].source, tuple(loss.pairs_with)))
    return problems


def check_pairing(active: Sequence[str], losses: Mapping[str, LossEntry], *, strict: bool) -> list[Unpaired]:
    """Warn (or, when ``strict``, raise :class:`ConfigError`) for each unpaired active repulsor."""
    problems = unpaired_repulsors(active, losses)
    if problems and strict:
        raise ConfigError("pairing.strict: " + "; ".join(p.message() for p in problems))
    for p in problems:
        warn(p.message(), PairingWarning)
    return problems
