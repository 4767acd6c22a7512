"""Helpers shared by the tests (importable as ``helpers``; the fixtures live in conftest.py)."""

from __future__ import annotations

import functools
import importlib.metadata
import json
import types
import warnings
from pathlib import Path
from typing import Any

import pytest
import torch

import protoreg


def make_plugin_module(name: str, *losses: protoreg.StructuralLoss) -> types.ModuleType:
    """A plugin module registering ``losses`` through the hook, as a third party would."""
    mod = types.ModuleType(name)

    @protoreg.hookimpl
    def protoreg_register_losses(register):  # type: ignore[no-untyped-def]
        for loss in losses:
            register(loss)

    mod.protoreg_register_losses = protoreg_register_losses  # type: ignore[attr-defined]
    return mod


class FakeDist:
    def __init__(self, name: str, version: str = "1.0") -> None:
        self.name, self.version = name, version


def fake_entry_points(monkeypatch: pytest.MonkeyPatch, eps: list[tuple[str, str, str]]) -> None:
    """Make importlib.metadata list the given (name, module, dist) entry points of group protoreg."""
    objs = [importlib.metadata.EntryPoint(n, m, "protoreg")._for(FakeDist(d)) for n, m, d in eps]  # type: ignore[attr-defined]

    def entry_points(**kw):  # type: ignore[no-untyped-def]
        return importlib.metadata.EntryPoints(objs if kw.get("group") == "protoreg" else [])

    monkeypatch.setattr(importlib.metadata, "entry_points", entry_points)
    monkeypatch.delenv("PROTOREG_DISABLE_PLUGIN_AUTOLOAD", raising=False)


ROOT = Path(__file__).resolve().parents[1]
#: The small paper grid (32 runs) and overrides that make its runs quick.
QUICK = ROOT / "configs" / "paper_quick.yaml"
FAST_SWEEP = ["train.steps=30", "train.log_every_n_steps=10", "geometry.every_n_steps=10"]


@functools.cache
def builtin_registries() -> tuple[Any, Any]:
    """``(losses, datasets)`` of the built-in plugins only (no installed distributions)."""
    from protoreg.plugins.registry import collect_datasets, collect_losses, get_plugin_manager

    pm = get_plugin_manager(autoload=False)
    return collect_losses(pm), collect_datasets(pm)


def quick(*overrides: str) -> Any:
    """configs/paper_quick.yaml with quick runs and ``overrides`` (a sweep config)."""
    from protoreg.config import load_config

    return load_config(QUICK, [*FAST_SWEEP, *overrides])


def run_quiet(cfg: Any, out: Path, reg: Any, **kw: Any) -> Any:
    """``run_sweep`` without plots or warnings; ``engine=...`` injects a training engine."""
    from protoreg.sweeps.runner import run_sweep

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return run_sweep(cfg, out, reg=reg, plots=False, **kw)


class TrainCounter:
    """A training engine for ``run_sweep(engine=...)``: counts the runs it trains and can crash
    on the k-th group."""

    def __init__(self, fail_on_batch: int | None = None) -> None:
        self.runs = 0
        self.batches = 0
        self.fail_on_batch = fail_on_batch

    def __call__(self, group: Any, geometry: Any, **kw: Any) -> Any:
        from protoreg.training import train_group

        self.batches += 1
        if self.fail_on_batch is not None and self.batches == self.fail_on_batch:
            raise RuntimeError("simulated crash")
        self.runs += group.module.model.runs
        return train_group(group, geometry, **kw)


def cli(capsys: pytest.CaptureFixture[str], *argv: object) -> tuple[int, str, str]:
    """``protoreg`` on ``argv`` in this process: the exit code and the captured stdout, stderr."""
    from protoreg.frontend.cli import main

    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def error_lines(err: str) -> list[str]:
    """The ``protoreg: error:`` lines of a captured stderr."""
    return [line for line in err.splitlines() if line.startswith("protoreg: error:")]


def in_place_editor(attr: str) -> protoreg.StructuralLoss:
    """A loss named ``sneaky`` that reads ``ctx.<attr>`` and then halves it in place: the loss
    terms must refuse it (a :class:`~protoreg.errors.LossError` naming ``ctx.<attr>``)."""

    class Sneaky(protoreg.StructuralLoss):
        name = "sneaky"
        vectorized = True

        def __call__(self, ctx: protoreg.LossContext) -> torch.Tensor:
            t = getattr(ctx, attr)
            out = t.sum(dim=(1, 2))
            t.mul_(0.5)
            return out

    return Sneaky()


def specialization_ratio(hidden: torch.Tensor) -> torch.Tensor:
    """Reference reading of the specialization ratio: distinct units that are some sample's
    strongest responder, divided by N; ``(R, N, M) -> (R,)`` float64. protoreg streams it
    (``protoreg.evaluation.evaluate.stream_responses``); this is the brute force it must equal."""
    r, n, m = hidden.shape
    hit = torch.zeros(r, m, dtype=torch.bool, device=hidden.device)
    hit.scatter_(1, hidden.argmax(dim=-1), True)
    return hit.sum(-1).double().cpu() / n


def expected_check(run_dir: Path | str) -> tuple[int, str]:
    """What ``protoreg check`` must say of a finished run, from the run's own metrics.json:
    exit 1 and ``expulsion:`` when any prototype is outside the hull, else exit 0 and ``ok:``."""
    m = json.loads((Path(run_dir) / "metrics.json").read_text())
    return (1, "expulsion:") if m["outside_hull_frac"] > 0 else (0, "ok:")
