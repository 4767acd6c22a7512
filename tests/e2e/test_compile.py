"""``train.compile``: opt-in torch.compile of the step; where it is unavailable, one warning and
the eager step, with the eager step's results."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import protoreg
from protoreg.training.module import CompileWarning


def _no_compiler(*args: object, **kwargs: object) -> object:
    def compiled(*a: object, **k: object) -> object:
        raise RuntimeError("InductorError: no working C++ compiler found\nsecond line")

    return compiled


def test_compile_falls_back_to_the_eager_step_with_one_warning(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, no_autoload: None, fast: list[str]) -> None:
    eager = protoreg.fit(*fast, out=tmp_path / "eager")
    monkeypatch.setattr(torch, "compile", _no_compiler)
    with pytest.warns(CompileWarning) as caught:
        compiled = protoreg.fit(*fast, "train.compile=true", out=tmp_path / "compiled")
    msgs = [str(w.message) for w in caught if issubclass(w.category, CompileWarning)]
    assert len(msgs) == 1 and msgs[0].startswith("train.compile:") and "training eagerly" in msgs[0] and "\n" not in msgs[0]
    assert compiled.status == "completed"
    for key in ("fit_mse", "recon_error", "specialization_ratio"):
        assert compiled.metrics[key] == eager.metrics[key], key
    assert compiled.config.train.compile is True


def test_a_faulty_plugin_is_reported_as_itself_not_as_a_compiler_problem(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, no_autoload: None, fast: list[str]) -> None:
    calls = {"n": 0}

    class LateFailure(protoreg.StructuralLoss):
        name = "late_failure"
        vectorized = True

        def __call__(self, ctx: protoreg.LossContext) -> torch.Tensor:
            calls["n"] += 1
            if calls["n"] > 2:
                raise ValueError("broken on purpose")
            return ctx.prototypes.sum(dim=(1, 2)) * 0.0

    class Plugin:
        @protoreg.hookimpl
        def protoreg_register_losses(self, register):  # type: ignore[no-untyped-def]
            register(LateFailure())

    monkeypatch.setattr(torch, "compile", lambda fn, **kw: fn)  # "compiles" to the eager function
    run = protoreg.fit(*fast, "train.compile=true", "losses.late_failure.weight=0.1", out=tmp_path / "run", plugins=[Plugin()])
    assert run.status == "failed" and "late_failure" in run.reason and "broken on purpose" in run.reason
