"""The dataset contract (protoreg.Dataset): the documented example, the shared rules, a plugin's
own check before anything is written, bad registrations, and the built-ins through it."""

from __future__ import annotations

import re
import types
from pathlib import Path

import numpy as np
import pytest

import protoreg
from protoreg.datasets.rules import data_problems
from protoreg.errors import DataError, PluginError
from protoreg.plugins.registry import Registry, collect_datasets, get_plugin_manager

DOCS = Path(__file__).resolve().parents[2] / "docs" / "plugins.md"


def ring_plugin() -> types.ModuleType:
    """The dataset plugin of docs/plugins.md, executed as written."""
    text = DOCS.read_text()
    section = text[text.index("## Dataset plugins") :]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)  # type: ignore[union-attr]
    mod = types.ModuleType("ring_plugin")
    exec(compile(code, str(DOCS), "exec"), mod.__dict__)
    return mod


@pytest.mark.slow  # a real fit or sweep
@pytest.mark.filterwarnings("ignore::protoreg.ExpulsionWarning")
def test_the_documented_dataset_trains_and_its_rules_run_before_anything_is_written(tmp_path: Path, no_autoload: None) -> None:
    ring = ring_plugin()
    run = protoreg.fit("data.name=ring", "data.n=12", "train.steps=20", "trainer.accelerator=cpu", out=tmp_path / "r", plugins=[ring], progress=False)
    x = np.load(run.dir / "data.npz")["x"]
    assert x.shape == (12, 2) and np.allclose(np.linalg.norm(x, axis=1), 1.0, atol=0.3)
    with pytest.raises(protoreg.ConfigError, match=r"^data.n: the ring dataset needs at least 3 points, got 2$"):
        protoreg.fit("data.name=ring", "data.n=2", out=tmp_path / "bad", plugins=[ring])
    with pytest.raises(protoreg.ConfigError, match=r"data.classes: the 'ring' dataset has no classes \(only 'digits' and 'mnist' do\)"):
        protoreg.fit("data.name=ring", "data.n=5", "data.classes=[1]", out=tmp_path / "bad", plugins=[ring])
    assert not (tmp_path / "bad").exists()


@pytest.mark.slow  # a real fit or sweep
def test_a_sweep_checks_every_run_with_the_dataset_before_training(tmp_path: Path, no_autoload: None) -> None:
    with pytest.raises(protoreg.ConfigError, match=r"data.n: the ring dataset needs at least 3 points, got 2"):
        protoreg.sweep("sweep.grid={data.n: [5, 2]}", "data.name=ring", out=tmp_path / "sw", plugins=[ring_plugin()])
    assert not (tmp_path / "sw").exists()


class Broken(protoreg.Dataset):
    name = "broken"

    def check(self, data):  # type: ignore[no-untyped-def]
        raise KeyError("n")

    def load(self, data, seed):  # type: ignore[no-untyped-def]
        return np.zeros((3, 1)), np.zeros(3)


def test_a_check_that_raises_is_one_problem_line() -> None:
    problems = data_problems({"name": "broken", "n": 5, "seed": None}, {"broken": Broken()})
    assert problems == ["data.name: the 'broken' dataset's check failed: KeyError: 'n'"]


class NoLoad(protoreg.Dataset):
    name = "noload"


class BadTargets(Broken):
    name = "badtargets"
    targets = ["a"]  # type: ignore[assignment]  # a list, not a tuple: refused


@pytest.mark.parametrize(
    "registered, needle",
    [
        (Broken, "register an instance, not the class Broken"),
        (NoLoad(), "implements no load(data, seed)"),
        (BadTargets(), "targets must be a tuple of names"),
        (object(), "expected a protoreg.Dataset instance"),
    ],
)
def test_bad_registrations_name_the_dataset(registered: object, needle: str, no_autoload: None) -> None:
    mod = types.ModuleType("bad_datasets")

    @protoreg.hookimpl
    def protoreg_register_datasets(register):  # type: ignore[no-untyped-def]
        register(registered)

    mod.protoreg_register_datasets = protoreg_register_datasets  # type: ignore[attr-defined]
    with pytest.raises(PluginError, match=re.escape(needle)):
        collect_datasets(get_plugin_manager(autoload=False, extra=[mod]))


@pytest.mark.slow  # a real fit or sweep
def test_a_plain_loader_function_still_registers_and_is_checked(tmp_path: Path, no_autoload: None) -> None:
    mod = types.ModuleType("old_style")

    @protoreg.hookimpl
    def protoreg_register_datasets(register):  # type: ignore[no-untyped-def]
        register("line", lambda data, seed: (np.linspace(0, 1, int(data["n"]))[:, None], np.zeros(int(data["n"]))))

    mod.protoreg_register_datasets = protoreg_register_datasets  # type: ignore[attr-defined]
    reg = Registry.load(get_plugin_manager(autoload=False, extra=[mod]))
    ds, _ = reg.datasets["line"]
    assert isinstance(ds, protoreg.Dataset) and ds.name == "line"
    with pytest.raises(protoreg.ConfigError, match="data.noise: must be >= 0"):
        protoreg.fit("data.name=line", "data.noise=-1", out=tmp_path / "r", reg=reg)
    run = protoreg.fit("data.name=line", "data.n=6", "train.steps=10", "trainer.accelerator=cpu", out=tmp_path / "r", reg=reg, progress=False)
    assert run.metrics["status"] == "completed"


@pytest.mark.parametrize(
    "name, data, needle",
    [
        ("uniform", {"n": 5, "target": "onehot"}, "data.target: expected 'random' or 'sin' for dataset 'uniform', got 'onehot'"),
        ("moons", {"n": 5, "noise": -1.0}, "data.noise: must be >= 0 or null, got -1.0"),
        ("moons", {"n": None}, "data.n: null: the 'moons' dataset needs a number of points"),
        ("digits", {"n": 5, "classes": [3, 3]}, "data.classes: lists 3 more than once"),
        ("digits", {"n": 400, "classes": [0, 1]}, "data.n: 400 is more than the 360 images 'digits' has of digits [0, 1]"),
    ],
)
def test_a_builtin_loader_called_directly_refuses_what_validation_refuses(name: str, data: dict, needle: str) -> None:
    reg = Registry.load(get_plugin_manager(autoload=False))
    ds, _ = reg.datasets[name]
    full = {"name": name, "dim": 1, "low": 0.0, "high": 1.0, "target": None, "classes": None, "noise": None, "path": None, "targets": None, "seed": None, **data}
    with pytest.raises(DataError, match=re.escape(needle)):
        ds.load(full, 0)


def test_builtins_declare_what_the_docs_say() -> None:
    reg = Registry.load(get_plugin_manager(autoload=False))
    sets = {name: ds for name, (ds, _) in reg.datasets.items()}
    assert list(sets) == ["uniform", "digits", "mnist", "moons", "circles", "blobs", "file"]
    assert {n: ds.dim for n, ds in sets.items()} == {"uniform": None, "digits": 64, "mnist": 784, "moons": 2, "circles": 2, "blobs": 2, "file": None}
    assert {n for n, ds in sets.items() if ds.size} == {"digits", "mnist"} and sets["digits"].size == 1797
    assert {n: ds.defaults["noise"] for n, ds in sets.items() if "noise" in ds.defaults} == {"moons": 0.1, "circles": 0.05, "blobs": 1.0}
    assert all(ds.description for ds in sets.values())
