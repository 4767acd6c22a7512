"""Hostile use, round 2: every input answered with one line naming the culprit (exit 2 from the
CLI, a specific ProtoregError from the API) and nothing written or lost, or a correct result.

As classes, not only the reported examples: unparsable values for every key type, and every
executor setting, in both commands."""

from __future__ import annotations

import json
import shutil
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import protoreg
from helpers import QUICK, cli, error_lines
from protoreg.datasets.files import File

file_dataset = File().load
from protoreg.errors import ConfigError, DataError, PluginError, RunDirError

FAST = ["data.n=8", "train.steps=20", "train.log_every_n_steps=10", "geometry.every_n_steps=10", "trainer.accelerator=cpu"]
SWEEP = ["train.steps=10", "train.log_every_n_steps=10", "geometry.every_n_steps=10", "sweep.grid={data.n: [3]}", "sweep.seeds=1", "trainer.accelerator=cpu"]


def _argv(command: str, out: Path, *overrides: str) -> list[Any]:
    head = ["fit"] if command == "fit" else ["sweep", "--config", QUICK]
    return [*head, "--out", out, *overrides]


# ---------------------------------------------------------------- overrides
#: one key of every type of the schema: int, float, bool, str, optional str, optional list,
#: dict of lists, Any, a free mapping (losses), and the trainer's free section
KEYS_BY_TYPE = ["data.n", "train.lr", "pairing.strict", "geometry.on_expulsion", "data.target", "data.classes", "sweep.grid",
                "sweep.seeds", "losses.coverage.weight", "trainer.precision"]
UNPARSABLE = ["[0,1", "{data.n:[3,5]}", '"open', "*alias", "!tag x", "{a: 1", "%directive", "`tick"]


@pytest.mark.parametrize("command", ["fit", "sweep"])
@pytest.mark.parametrize("key", KEYS_BY_TYPE)
def test_unparsable_values_are_one_line_naming_the_key(command: str, key: str, tmp_path: Path, no_autoload: None, capsys: pytest.CaptureFixture[str]) -> None:
    for value in UNPARSABLE:
        code, out, err = cli(capsys, *_argv(command, tmp_path / "o", f"{key}={value}"))
        lines = error_lines(err)
        assert code == 2 and len(lines) == 1 and "Traceback" not in err, (key, value, err)
        assert lines[0].startswith(f"protoreg: error: {key}: ") and "not valid YAML" in lines[0], lines[0]
        assert not (tmp_path / "o").exists()
    with pytest.raises(ConfigError, match=r"^sweep\.grid: the value '\{data\.n:\[3,5\]\}' is not valid YAML .*space after each colon"):
        protoreg.resolve_config("sweep.grid={data.n:[3,5]}")


EXECUTOR_SETTINGS = [
    ("sweep.executor=rays", "sweep.executor: expected local or ray, got 'rays'"),
    ("sweep.executor=", "sweep.executor: Incompatible value 'None'"),
    ("sweep.ray.num_cpus_per_task=-1", "sweep.ray.num_cpus_per_task: must be > 0, got -1.0"),
    ("sweep.ray.num_cpus_per_task=0", "sweep.ray.num_cpus_per_task: must be > 0"),
    ("sweep.ray.num_cpus_per_task=nan", "sweep.ray.num_cpus_per_task: must be > 0"),
    ("sweep.ray.num_cpus_per_task=many", "sweep.ray.num_cpus_per_task: Value 'many' of type 'str' could not be converted"),
    ("sweep.ray.num_gpus_per_task=-0.5", "sweep.ray.num_gpus_per_task: must be >= 0"),
    ("sweep.ray.num_gpus_per_task=inf", "sweep.ray.num_gpus_per_task: must be >= 0"),
    ("sweep.ray.max_retries=-3", "sweep.ray.max_retries: must be >= 0, got -3"),
    ("sweep.ray.max_retries=1001", "sweep.ray.max_retries: must be <= 1000"),
    ("sweep.ray.max_retries=2.5", "sweep.ray.max_retries: Value '2.5' of type 'float' could not be converted"),
    ("sweep.ray.address=' '", "sweep.ray.address: empty"),
    ("sweep.max_runs=0", "sweep.max_runs: must be >= 1"),
]


@pytest.mark.parametrize("command", ["fit", "sweep"])
@pytest.mark.parametrize(("override", "needle"), EXECUTOR_SETTINGS)
def test_every_executor_setting_is_checked_by_both_commands(
    command: str, override: str, needle: str, tmp_path: Path, no_autoload: None, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = cli(capsys, *_argv(command, tmp_path / "o", override))
    (line,) = error_lines(err)
    assert code == 2 and needle in line, line
    assert not (tmp_path / "o").exists()


# -------------------------------------------------------------------- files
def test_a_csv_header_naming_a_column_twice_is_refused(tmp_path: Path, no_autoload: None, capsys: pytest.CaptureFixture[str]) -> None:
    f = tmp_path / "d.csv"
    f.write_text("x,x,y\n" + "".join(f"{i / 10},{i / 20},{i % 2}\n" for i in range(10)))
    with pytest.raises(DataError, match=r"d\.csv: the header names column\(s\) 'x' more than once"):
        file_dataset({"path": str(f), "targets": ["x"]}, 0)
    code, _, err = cli(capsys, "fit", "--out", tmp_path / "o", f"data.path={f}", "data.targets=[x]", *FAST[1:])
    (line,) = error_lines(err)
    assert code == 2 and str(f) in line and "'x' more than once" in line
    assert not (tmp_path / "o").exists()


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    import os

    os.environ["PROTOREG_DISABLE_PLUGIN_AUTOLOAD"] = "1"
    out = tmp_path_factory.mktemp("run") / "r"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        protoreg.fit(*FAST, "data.dim=2", "model.width=5", out=out)
    return out


def _copy(run: Path, tmp_path: Path) -> Path:
    dst = tmp_path / "copy"
    shutil.copytree(run, dst)
    return dst


def test_run_directories_whose_files_disagree_are_refused_naming_the_file(finished_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert protoreg.load_run(finished_run).prototypes.shape == (5, 2)
    # a truncated prototypes.csv (a unit row lost)
    run = _copy(finished_run, tmp_path / "a")
    lines = (run / "prototypes.csv").read_text().splitlines(keepends=True)
    (run / "prototypes.csv").write_text("".join(lines[:-1]))
    with pytest.raises(RunDirError, match=r"prototypes\.csv: 4 unit row\(s\), but metrics\.json says width 5"):
        protoreg.load_run(run)
    # an edited metrics.json (another width): load_run names prototypes.csv, check the checkpoint
    run = _copy(finished_run, tmp_path / "b")
    m = json.loads((run / "metrics.json").read_text())
    m["width"] = 6
    (run / "metrics.json").write_text(json.dumps(m))
    with pytest.raises(RunDirError, match="the run directory's files disagree"):
        protoreg.load_run(run)
    code, _, err = cli(capsys, "check", run)
    (line,) = error_lines(err)
    assert code == 2 and "last.ckpt: holds a model with width 5, but metrics.json says width 6" in line, line
    # data.npz of another shape
    run = _copy(finished_run, tmp_path / "c")
    np.savez(run / "data.npz", x=np.zeros((3, 2)), y=np.zeros((3, 1)))
    with pytest.raises(RunDirError, match=r"data\.npz: inputs of shape \(3, 2\), but metrics\.json says n=8, dim=2"):
        protoreg.load_run(run)


def test_check_on_a_sweep_directory_says_what_it_is(tmp_path: Path, no_autoload: None, capsys: pytest.CaptureFixture[str]) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sw = protoreg.sweep(*SWEEP, config=QUICK, out=tmp_path / "sw", plots=False)
    code, _, err = cli(capsys, "check", sw.dir)
    (line,) = error_lines(err)
    assert code == 2 and "a sweep directory; protoreg check takes a run directory" in line and "incomplete" not in line


# ------------------------------------------------------------------ studies
class _Study(protoreg.Study):
    name = "hostile"
    description = "returns what it is told to"

    def __init__(self, evaluate: Any = None, plots: Any = None) -> None:
        self._evaluate, self._plots = evaluate, plots

    def evaluate(self, results):  # type: ignore[no-untyped-def]
        return self._evaluate(results)

    def plots(self, results, out):  # type: ignore[no-untyped-def]
        return self._plots(results, out) if self._plots else []


def _plugin(study: protoreg.Study) -> Any:
    class P:
        @protoreg.hookimpl
        def protoreg_register_studies(self, register):  # type: ignore[no-untyped-def]
            register(study)

    return P()


def _sweep(tmp_path: Path, study: protoreg.Study, plots: bool = False) -> protoreg.Sweep:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return protoreg.sweep(*SWEEP, "sweep.study=hostile", config=QUICK, out=tmp_path / "sw", plots=plots, plugins=[_plugin(study)])


def _claim(**numbers: Any) -> list[protoreg.Claim]:
    return [protoreg.Claim("H1", "holds", "PASS", "everywhere", numbers)]


def test_a_study_whose_plots_raise_is_named_and_its_claims_are_kept(tmp_path: Path, no_autoload: None) -> None:
    def explode(results, out):  # type: ignore[no-untyped-def]
        raise RuntimeError("plot backend exploded")

    with pytest.raises(PluginError, match=r"^study 'hostile' \(P \(inline\)\): plots\(\) failed \(RuntimeError: plot backend exploded\); its claims are in"):
        _sweep(tmp_path, _Study(lambda r: _claim(runs=len(r.rows)), explode), plots=True)
    stored = json.loads((tmp_path / "sw" / "claims.json").read_text())
    assert stored["study"] == "hostile" and stored["claims"][0]["numbers"] == {"runs": 8}
    assert "**H1 — PASS**" in (tmp_path / "sw" / "summary.md").read_text()
    assert [c.id for c in protoreg.load_sweep(tmp_path / "sw").claims] == ["H1"]


@pytest.mark.parametrize(
    ("returned", "needle"),
    [
        ({"C1": "PASS"}, "evaluate() returned a dict, expected a list of protoreg.Claim objects"),
        ("PASS", "evaluate() returned a str, expected a list"),
        (None, "evaluate() returned a NoneType, expected a list"),
        ([{"id": "C1"}], "evaluate() returned a list holding dict, expected protoreg.Claim objects"),
        (_claim(curve=np.arange(3)), "claim 'H1': numbers['curve'] is a ndarray, not a JSON value"),
        (_claim(model=object()), "claim 'H1': numbers['model'] is a object, not a JSON value"),
        (_claim(nested={"a": [1, {2}]}), "numbers['nested.a'] is a set, not a JSON value"),
    ],
)
def test_what_a_study_returns_is_checked_at_its_door(returned: Any, needle: str, tmp_path: Path, no_autoload: None) -> None:
    with pytest.raises(PluginError) as info:
        _sweep(tmp_path, _Study(lambda r: returned))
    assert str(info.value).startswith("study 'hostile' (P (inline)): ") and needle in str(info.value), str(info.value)
    assert not (tmp_path / "sw" / "claims.json").exists()


def test_numpy_scalars_in_claim_numbers_become_plain_numbers(tmp_path: Path, no_autoload: None) -> None:
    sw = _sweep(tmp_path, _Study(lambda r: _claim(frac=np.float32(0.5), count=np.int64(3), ok=np.bool_(True), curve=[np.float64(1.5)])))
    assert dict(sw.claims[0].numbers) == {"frac": 0.5, "count": 3, "ok": True, "curve": [1.5]}
    assert json.loads((sw.dir / "claims.json").read_text())["claims"][0]["numbers"] == {"frac": 0.5, "count": 3, "ok": True, "curve": [1.5]}
