"""Documentation keeps up with the code: every config key, hook, command, metric and tag."""

from __future__ import annotations

import dataclasses
import inspect
from pathlib import Path

import pytest

from protoreg import config, hookspecs
from protoreg.cli import COMMANDS
from protoreg.evaluate import METRIC_NAMES

DOCS = Path(__file__).resolve().parents[1] / "docs"


def text(name: str) -> str:
    return (DOCS / name).read_text()


def config_keys() -> list[str]:
    keys = []
    for f in dataclasses.fields(config.Config):
        if dataclasses.is_dataclass(f.default_factory()):  # type: ignore[misc]
            keys += [f"{f.name}.{g.name}" for g in dataclasses.fields(f.default_factory())]  # type: ignore[misc]
    return keys


@pytest.mark.parametrize("key", config_keys())
def test_every_config_key_is_documented(key):
    section, name = key.split(".")
    guide = text("index.md")
    assert f"`{key}`" in guide or f"`{section}.{name}`," in guide or f"`{key}`," in guide, key


def test_sections_documented():
    guide = text("index.md")
    for key in ("losses.<name>.weight", "losses.<name>.<param>", "trainer.*"):
        assert f"`{key}`" in guide


@pytest.mark.parametrize("hook", [n for n, _ in inspect.getmembers(hookspecs, inspect.isfunction) if n.startswith("protoreg_")])
def test_every_hook_is_documented(hook):
    assert hook in text("plugins.md")
    assert (getattr(hookspecs, hook).__doc__ or "").strip()


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_every_command_is_documented(command):
    assert f"protoreg {command}" in text("cli.md")


@pytest.mark.parametrize("metric", METRIC_NAMES)
def test_every_metric_is_documented(metric):
    assert f"`{metric}`" in text("index.md")


def test_tensorboard_tags_documented():
    guide = text("index.md")
    for tag in ("loss/fit", "loss/total", "metric/recon_error", "geometry/outside_hull_frac", "geometry/prototype_positions"):
        assert tag in guide
