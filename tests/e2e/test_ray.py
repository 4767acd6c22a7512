"""``sweep.executor=ray``: the same results as ``local``, a killed worker retried, a group whose
worker always dies recorded as failed while the others finish, SIGINT on the driver keeping the
finished groups (the rerun equals an uninterrupted sweep), and one clear line without Ray.

One local Ray instance (2 CPUs, no dashboard) serves the whole module. Tests that need it are
marked ``ray`` and skipped when Ray is not installed (``pip install "protoreg[ray]"``)."""

from __future__ import annotations

import csv
import importlib.util
import os
import signal
import sys
from pathlib import Path
from typing import Iterator

import pytest

import protoreg
from helpers import FAST_SWEEP, QUICK, quick, run_quiet
from protoreg.frontend.cli import main
from protoreg.errors import ConfigError
from protoreg.plugins.registry import LossEntry, Registry
from protoreg.sweeps import store

HAVE_RAY = importlib.util.find_spec("ray") is not None
needs_ray = pytest.mark.skipif(not HAVE_RAY, reason='Ray is not installed (pip install "protoreg[ray]")')
#: paper_quick with quick runs in 4 groups of 8 runs (2 per data.n)
SMALL = ("sweep.max_runs_per_batch=8",)


@pytest.fixture(autouse=True)
def _no_plugins(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PROTOREG_DISABLE_PLUGIN_AUTOLOAD", "1")


@pytest.fixture(scope="module")
def ray_session() -> Iterator[None]:
    """One local Ray instance for the module; sweeps in this process use it as it is."""
    import logging

    import ray

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level=logging.ERROR)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def local_small(reg: Registry, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The reference: paper_quick (quick runs, groups of 8) with the local executor."""
    out = tmp_path_factory.mktemp("local") / "sw"
    assert run_quiet(quick(*SMALL), out, reg).exit_code == 0
    return out


def read_csv(path: Path) -> tuple[list[str], list[list[str]]]:
    with path.open(newline="", encoding="utf-8") as fh:
        rows = list(csv.reader(fh))
    return rows[0], rows[1:]


def without(path: Path, *columns: str) -> list[list[str]]:
    """The rows of ``path`` (header first) without ``columns``."""
    header, rows = read_csv(path)
    keep = [i for i, h in enumerate(header) if h not in columns]
    return [[r[i] for i in keep] for r in [header, *rows]]


def tb_layout(out: Path) -> list[str]:
    """The TensorBoard folders that hold event files (file names carry host, pid and time)."""
    return sorted({p.parent.relative_to(out).as_posix() for p in (out / store.TB).rglob("events.out.tfevents.*")})


# ------------------------------------------------------------ without Ray
def test_ray_missing_is_one_line_and_writes_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` fails as if it were not installed
    out = tmp_path / "sw"
    assert main(["sweep", "--config", str(QUICK), "--out", str(out), *FAST_SWEEP, "sweep.executor=ray"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ['protoreg: error: sweep.executor: ray needs Ray, which is not installed: pip install "protoreg[ray]"']
    assert not out.exists()


@pytest.mark.ray
@needs_ray
def test_a_loss_that_cannot_be_sent_to_workers_is_refused_before_writing(reg: Registry, tmp_path: Path) -> None:
    import threading

    class Locked(protoreg.StructuralLoss):
        name = "locked"

        def __init__(self) -> None:
            self.lock = threading.Lock()

        def __call__(self, ctx):  # type: ignore[no-untyped-def]
            return ctx.prototypes.sum(dim=(1, 2)) * 0.0

    reg2 = Registry({**reg.losses, "locked": LossEntry(Locked(), "tests")}, dict(reg.datasets), dict(reg.studies))
    with pytest.raises(ConfigError, match=r"^losses\.locked: the loss from tests cannot be sent to Ray workers .*sweep\.executor=local$"):
        run_quiet(quick("sweep.executor=ray", "losses.locked.weight=1.0"), tmp_path / "sw", reg2)
    assert not (tmp_path / "sw").exists()


@needs_ray
def test_an_unreachable_address_is_refused_at_once_and_writes_nothing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import socket
    import time

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out = tmp_path / "sw"
    t0 = time.monotonic()
    code = main(["sweep", "--config", str(QUICK), "--out", str(out), *FAST_SWEEP, "sweep.executor=ray", f"sweep.ray.address=127.0.0.1:{port}"])
    err = [line for line in capsys.readouterr().err.strip().splitlines() if not line.startswith("protoreg: warning:")]
    assert code == 2 and time.monotonic() - t0 < 30
    assert err == [f"protoreg: error: sweep.ray.address: no Ray cluster answers at '127.0.0.1:{port}' (Connection refused within 10s); "
                   "start one (ray start --head), give the address it prints, or set sweep.ray.address=null for a local instance"]
    assert not out.exists()


def test_rays_hint_about_a_flag_protoreg_does_not_have_is_replaced() -> None:
    from protoreg.sweeps.executors import _ray_said

    said = _ray_said(ConnectionError("Could not find any running Ray instance. Please specify the one to connect to by setting `--address` flag or `RAY_ADDRESS` environment variable."))
    assert "--address" not in said and "RAY_ADDRESS" not in said
    assert said.startswith("Could not find any running Ray instance.") and "set sweep.ray.address" in said


# -------------------------------------------------------------- with Ray
@pytest.mark.ray
@needs_ray
def test_a_task_no_node_can_hold_is_refused_before_writing(ray_session: None, reg: Registry, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"^sweep\.ray\.num_cpus_per_task: each task reserves 64 CPU\(s\), but the largest node of the Ray cluster has 2;"):
        run_quiet(quick("sweep.executor=ray", "sweep.ray.num_cpus_per_task=64"), tmp_path / "sw", reg)
    with pytest.raises(ConfigError, match=r"^sweep\.ray\.num_gpus_per_task: each task reserves 1 GPU\(s\), but the largest node of the Ray cluster has 0;"):
        run_quiet(quick("sweep.executor=ray", "sweep.ray.num_gpus_per_task=1"), tmp_path / "sw", reg)
    assert not (tmp_path / "sw").exists()


@pytest.mark.ray
@needs_ray
def test_a_cluster_that_runs_no_task_is_a_bounded_wait(ray_session: None, reg: Registry, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Workers that never start (e.g. ``mmap failed`` under an address-space limit) look like a
    first task that never finishes: after RAY_START_SECONDS the sweep is refused, nothing written."""
    import time

    from protoreg.sweeps import executors

    def never() -> int:
        time.sleep(60)
        return 0

    monkeypatch.setattr(executors, "_probe_task", never)
    monkeypatch.setattr(executors, "RAY_START_SECONDS", 2.0)
    t0 = time.monotonic()
    with pytest.raises(ConfigError, match=r"^sweep\.executor: the Ray cluster ran no task of 1 CPU, 0 GPU within 2s: its workers do not start"):
        run_quiet(quick("sweep.executor=ray"), tmp_path / "sw", reg)
    assert time.monotonic() - t0 < 30 and not (tmp_path / "sw").exists()


@pytest.mark.ray
@needs_ray
def test_ray_gives_the_results_of_local(ray_session: None, reg: Registry, tmp_path: Path, local_small: Path) -> None:
    out = tmp_path / "sw"
    lines: list[str] = []
    res = run_quiet(quick(*SMALL, "sweep.executor=ray"), out, reg, echo=lines.append)
    assert res.exit_code == 0 and res.trained == 32 and res.finished == 32
    # rows may arrive in any order; the files end in the plan's order, equal to local's
    assert without(out / store.RESULTS, "seconds", "check_seconds") == without(local_small / store.RESULTS, "seconds", "check_seconds")
    assert (out / store.PROTOTYPES).read_text() == (local_small / store.PROTOTYPES).read_text()
    assert tb_layout(out) == tb_layout(local_small)
    assert len(tb_layout(out)) == 4 + 32  # a folder per group, an HParams session per run
    progress = [line for line in lines if line.startswith("  batch ")]
    assert [line.split()[1] for line in progress] == ["1/4", "2/4", "3/4", "4/4"]
    assert all("ETA" in line for line in progress[:-1]) and "ETA" not in progress[-1]


@pytest.mark.ray
@needs_ray
def test_a_killed_worker_is_retried_and_a_group_that_keeps_dying_fails_alone(ray_session: None, reg: Registry, tmp_path: Path) -> None:
    marks = tmp_path / "attempts"
    marks.mkdir()

    class Killer(protoreg.StructuralLoss):
        """Kills its worker on the first call of an attempt: at N = 3 on the first attempt only,
        at N = 5 always. Each attempt leaves a file ``n<N>_<attempt>`` in ``marks``."""

        name = "killer"

        def __init__(self, marks: Path) -> None:
            self.marks, self.seen = marks, set()

        def __call__(self, ctx):  # type: ignore[no-untyped-def]
            n = int(ctx.x.shape[1])
            if (os.getpid(), n) not in self.seen:
                self.seen.add((os.getpid(), n))
                attempt = len(list(self.marks.glob(f"n{n}_*"))) + 1
                (self.marks / f"n{n}_{attempt}").touch()
                if n == 5 or attempt == 1:
                    os._exit(1)
            return ctx.prototypes.sum(dim=(1, 2)) * 0.0

    reg2 = Registry({**reg.losses, "killer": LossEntry(Killer(marks), "tests")}, dict(reg.datasets), dict(reg.studies))
    cfg = quick("sweep.masks=[coverage]", "losses.killer.weight=1.0", "sweep.executor=ray", "sweep.ray.max_retries=1")
    out = tmp_path / "sw"
    res = run_quiet(cfg, out, reg2)
    assert sorted(p.name for p in marks.iterdir()) == ["n3_1", "n3_2", "n5_1", "n5_2"]  # one retry each
    assert res.runs == 8 and res.finished == 8 and res.failed == 4 and res.exit_code == 1
    with (out / store.RESULTS).open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert [r["n"] for r in rows] == ["3"] * 4 + ["5"] * 4  # the plan's order
    for r in rows[:4]:  # retried, then trained
        assert r["status"] == "completed" and r["steps"] == "30" and float(r["fit_mse"]) >= 0
    for r in rows[4:]:
        assert r["status"] == "failed" and r["steps"] == "0" and r["fit_mse"] == "" and r["batch"] == "1"
        assert r["reason"].startswith("the Ray task failed after 1 retries: WorkerCrashedError: ")
    _, protos = read_csv(out / store.PROTOTYPES)
    assert {p[0] for p in protos} == {r["run"] for r in rows[:4]}
    assert tb_layout(out)[0] == "tb/batch_000" and not (out / "tb" / "batch_001").exists()
    assert "## Failed runs" in (out / store.SUMMARY).read_text()
    # failed is finished: the rerun trains nothing and starts no task
    again = run_quiet(cfg, out, reg2)
    assert again.trained == 0 and again.skipped == 8 and len(list(marks.iterdir())) == 4


@pytest.mark.ray
@needs_ray
def test_sigint_keeps_finished_groups_and_the_rerun_equals_an_uninterrupted_sweep(
    ray_session: None, reg: Registry, tmp_path: Path, local_small: Path
) -> None:
    # one task at a time on the 2-CPU instance: when the first group is recorded, others are pending
    over = (*SMALL, "sweep.executor=ray", "sweep.ray.num_cpus_per_task=2")
    out = tmp_path / "sw"
    lines: list[str] = []

    def echo(line: str) -> None:  # Ctrl-C right after the first group is recorded
        lines.append(line)
        if line.startswith("  batch 1/4 "):
            os.kill(os.getpid(), signal.SIGINT)

    handler = signal.getsignal(signal.SIGINT)
    res = run_quiet(quick(*over), out, reg, echo=echo)
    assert res.interrupted and res.exit_code == 130
    header, rows = read_csv(out / store.RESULTS)
    batches = {r[header.index("batch")] for r in rows}
    assert 0 < len(rows) < 32 and len(rows) == 8 * len(batches)  # whole groups only
    assert any("interrupted; their" in line for line in lines)
    assert signal.getsignal(signal.SIGINT) is handler  # the driver's own handler is back

    again = run_quiet(quick(*over), out, reg)  # the same command resumes
    assert again.skipped == len(rows) and again.trained == 32 - len(rows) and again.exit_code == 0
    # equal to an uninterrupted sweep: the same rows in the same order (batch numbers may differ)
    assert without(out / store.RESULTS, "seconds", "check_seconds", "batch") == without(local_small / store.RESULTS, "seconds", "check_seconds", "batch")
    assert (out / store.PROTOTYPES).read_text() == (local_small / store.PROTOTYPES).read_text()
