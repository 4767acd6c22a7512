"""Documentation keeps up with the code: every config key, hook, command, metric and tag."""

from __future__ import annotations

import dataclasses
import re
import inspect
from pathlib import Path

import pytest

from protoreg import config
from protoreg.plugins import hookspecs
from protoreg.frontend.cli import COMMANDS
from protoreg.evaluation.evaluate import IMAGE_METRIC_NAMES, METRIC_NAMES

DOCS = Path(__file__).resolve().parents[1] / "docs"


def text(name: str) -> str:
    return (DOCS / name).read_text()


def config_keys(cls: type = config.Config, prefix: str = "") -> list[str]:
    """Every leaf key of the structured config below the sections (nested sections recursed)."""
    keys = []
    for f in dataclasses.fields(cls):
        value = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default  # type: ignore[misc]
        if dataclasses.is_dataclass(value):
            keys += config_keys(type(value), f"{prefix}{f.name}.")
        elif prefix:
            keys.append(f"{prefix}{f.name}")
    return keys


def test_config_keys_include_nested_sections():
    assert "sweep.ray.address" in config_keys() and "train.steps" in config_keys()


@pytest.mark.parametrize("key", config_keys())
def test_every_config_key_is_documented(key):
    assert f"`{key}`" in text("index.md"), key


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


@pytest.mark.parametrize("metric", METRIC_NAMES + IMAGE_METRIC_NAMES)
def test_every_metric_is_documented(metric):
    assert f"`{metric}`" in text("index.md")


def test_tensorboard_tags_documented():
    guide = text("index.md")
    for tag in ("loss/fit", "loss/total", "metric/recon_error", "geometry/outside_hull_frac", "geometry/prototype_positions", "images/reconstructions"):
        assert tag in guide


def _builtin_losses() -> list[tuple[str, str, object]]:
    from protoreg.plugins.registry import collect_losses, get_plugin_manager

    losses = collect_losses(get_plugin_manager(autoload=False))
    return [(name, key, default) for name, e in losses.items() if "built-in" in e.source for key, default in e.loss.defaults.items()] + [
        (name, "", None) for name, e in losses.items() if "built-in" in e.source and not e.loss.defaults
    ]


@pytest.mark.parametrize("loss,param,default", _builtin_losses())
def test_every_builtin_loss_and_parameter_is_documented(loss, param, default):
    """docs/losses.md has a row per built-in loss naming each parameter with its default."""
    rows = [line for line in text("losses.md").splitlines() if line.startswith(f"| `{loss}` |")]
    assert rows, f"no row for loss {loss!r} in docs/losses.md"
    if param:
        assert f"`{param}` ({default})" in rows[0], (loss, param, default)


def test_every_builtin_study_is_documented():
    from protoreg.plugins.registry import collect_studies, get_plugin_manager

    studies = collect_studies(get_plugin_manager(autoload=False))
    assert studies
    for name in studies:
        assert f"`{name}`" in text("plugins.md") and f"`{name}`" in text("replication.md"), name


@pytest.mark.slow
def test_the_api_example_runs(tmp_path, monkeypatch):
    """The Python block of docs/api.md runs as written (from a folder with the configs)."""
    import re
    import warnings

    code = re.search(r"```python\n(.*?)```", text("api.md"), re.S).group(1)  # type: ignore[union-attr]
    (tmp_path / "configs").symlink_to(DOCS.parent / "configs")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PROTOREG_DISABLE_PLUGIN_AUTOLOAD", "1")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        exec(compile(code, "docs/api.md", "exec"), {})
    assert (tmp_path / "runs" / "api-demo" / "metrics.json").is_file()
    assert (tmp_path / "sweeps" / "api-demo" / "claims.json").is_file()


def _architecture_tree() -> dict[str, str]:
    """docs/index.md's architecture diagram: top-level entry (``api.py``, ``training/``) -> its text."""
    section = text("index.md").split("## Architecture", 1)[1]
    block = section.split("```", 2)[1]
    tree: dict[str, str] = {}
    current = None
    for line in block.splitlines()[2:]:  # after "protoreg/"
        if line.startswith("  ") and not line.startswith("   "):
            current = line.split()[0]
            tree[current] = line
        elif current is not None:
            tree[current] += "\n" + line
    return tree


PACKAGE = Path(__file__).resolve().parents[1] / "protoreg"
MODULES = sorted(str(p.relative_to(PACKAGE)) for p in PACKAGE.rglob("*.py") if "__pycache__" not in p.parts)


def _words(body: str) -> list[str]:
    for ch in ",;:()":
        body = body.replace(ch, " ")
    return body.split()


@pytest.mark.parametrize("module", MODULES)
def test_the_architecture_diagram_names_every_module(module: str) -> None:
    tree = _architecture_tree()
    parts = module.split("/")
    if len(parts) == 1:
        assert parts[0] in tree or any(parts[0] in _words(body) for body in tree.values()), f"{module} is not in docs/index.md's diagram"
        return
    package, name = f"{parts[0]}/", parts[-1]
    assert package in tree, f"package {package} is not in docs/index.md's diagram"
    if name == "__init__.py":
        return
    words = _words(tree[package])
    assert name in words or name[:-3] in words, f"{module} is not named under {package} in docs/index.md's diagram"


def test_every_test_the_docs_cite_exists() -> None:
    root = DOCS.parent
    cited = set()
    for page in [*DOCS.rglob("*.md"), root / "README.md"]:
        cited |= set(re.findall(r"tests/[\w/]+\.py(?:::\w+)?", page.read_text()))
    assert cited
    for ref in sorted(cited):
        path, _, name = ref.partition("::")
        assert (root / path).is_file(), f"{ref}: no such test file"
        assert not name or f"def {name}(" in (root / path).read_text(), f"{ref}: no such test"
