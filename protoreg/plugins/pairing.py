"""The design rule of the study, checked before training: every active repulsor needs an active
attractor it pairs with; otherwise it pushes prototypes out of the convex hull of the data."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Sequence

from protoreg.frontend.caller import warn
from protoreg.errors import ConfigError, PairingWarning
from protoreg.plugins.registry import LossEntry

__all__ = ["PairingWarning", "Unpaired", "check_active", "check_pairing", "unpaired_repulsors"]


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


def check_active(active: Sequence[str], losses: Mapping[str, LossEntry], *, strict: bool) -> list[Unpaired]:
    """Warn (or, when ``strict``, raise :class:`ConfigError`) for each unpaired active repulsor."""
    problems = unpaired_repulsors(active, losses)
    if problems and strict:
        raise ConfigError("pairing.strict: " + "; ".join(p.message() for p in problems))
    for p in problems:
        warn(p.message(), PairingWarning)
    return problems


class _Declared:
    """A user's own loss, declared by its role and the attractors it pairs with."""

    def __init__(self, name: str, role: str, pairs_with: Sequence[str]) -> None:
        self.name, self.role, self.pairs_with = name, role, tuple(pairs_with)


def check_pairing(
    roles: Mapping[str, str],
    pairs_with: Mapping[str, Sequence[str]] | None = None,
    *,
    strict: bool = False,
    source: str = "your model",
) -> list[Unpaired]:
    """The design rule for a model's own losses: every active repulsor needs an active attractor
    it pairs with, or it pushes prototypes out of the data's convex hull.

    ``roles``: each active loss's role, ``{"my_attractor": "attractor", "my_repulsor":
    "repulsor", ...}`` (``neutral`` for the rest); ``pairs_with``: for a repulsor, the
    attractors it is compatible with (none given: every active attractor is). The same rule and
    messages as ``fit``'s check: one :class:`~protoreg.PairingWarning` per unpaired repulsor,
    or with ``strict`` a :class:`~protoreg.ConfigError` naming them all. Returns the unpaired
    repulsors.

    >>> check_pairing({"pull": "attractor", "push": "repulsor"}, {"push": ["pull"]})
    []
    """
    from protoreg.plugin_api import ROLES

    pairs_with = dict(pairs_with or {})
    for name, role in roles.items():
        if role not in ROLES:
            raise ValueError(f"roles[{name!r}]: expected one of {', '.join(ROLES)}, got {role!r}")
    for name in pairs_with:
        if name not in roles:
            raise ValueError(f"pairs_with[{name!r}]: not a loss in roles ({', '.join(roles) or 'none'})")
    attractors = [n for n, r in roles.items() if r == "attractor"]
    declared = {
        n: LossEntry(_Declared(n, r, pairs_with.get(n, attractors if r == "repulsor" else ())), source)  # type: ignore[arg-type]  # duck-typed: the rule reads role and pairs_with
        for n, r in roles.items()
    }
    return check_active(list(roles), declared, strict=strict)
