"""Executors: where the groups of a sweep train.

The runner (the *driver*) owns the sweep directory; an executor only trains. It receives the
groups as :class:`GroupJob` objects and yields a :class:`GroupResult` for each one as it
finishes, in any order; the driver writes everything.

- ``local`` (:class:`LocalExecutor`) trains the groups in this process, one after the other,
  through the training engine; TensorBoard events go straight to ``tb/batch_<i>/``.
- ``ray`` (:class:`RayExecutor`) runs each group as a Ray task (``sweep.ray.*``). The task builds
  its group from what it is sent (run specs: configs and data; the loss registry, pickled with
  Ray's cloudpickle), trains it with TensorBoard in a temporary directory of the worker, and
  returns the run outcomes and the event files' bytes. A task whose worker dies is retried
  ``sweep.ray.max_retries`` times; a group that still fails comes back as failed with the reason.
  SIGINT/SIGTERM on the driver cancels the outstanding tasks; groups that already finished are
  still handed over.

Every executor is used inside its :meth:`Executor.session`, entered before the sweep directory
is created: Ray joins (or starts) its cluster there and proves, within a bounded wait, that the
cluster can run a task of the sweep's size, so an unreachable address, workers that die at
start or a cluster that can never schedule the task are one :class:`ConfigError` naming the key,
with nothing written.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import signal
import socket
import tempfile
import threading
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType, ModuleType
from typing import Any, Callable, Iterator, Mapping, Protocol, Sequence

from omegaconf import DictConfig

from protoreg.errors import ConfigError, PluginError, first_line
from protoreg.plugins.registry import Registry
from protoreg.training import GroupOutcome, RunOutcome, RunSpec, build_group, geometry_callback
from protoreg.sweeps.grid import SweepRun
from protoreg.sweeps.plan import Plan
from protoreg.sweeps.store import TB

Echo = Callable[[str], None]
#: The training engine's signature (:func:`protoreg.training.train_group`).
Engine = Callable[..., GroupOutcome]
HParams = list[tuple[str, Mapping[str, Any]]]

#: The one line shown when ``sweep.executor=ray`` is asked for without Ray installed.
RAY_MISSING = 'sweep.executor: ray needs Ray, which is not installed: pip install "protoreg[ray]"'
#: Seconds between two looks at the Ray tasks (and at a pending SIGINT/SIGTERM).
POLL_SECONDS = 0.2
#: Seconds to reach the address of ``sweep.ray.address`` (a TCP connection) before Ray is asked.
RAY_CONNECT_SECONDS = 10.0
#: Seconds the cluster has to run a first (empty) task of the sweep's size before the sweep is
#: refused: workers that die at start, or resources that never free up, end here.
RAY_START_SECONDS = 120.0


@dataclass
class GroupJob:
    """One group of runs to train together."""

    index: int  #: the batch index: ``tb/batch_<index>/`` and the ``batch`` column
    runs: list[SweepRun]
    specs: list[RunSpec]  #: the runs' validated specs (config, data, loss settings)
    hparams: HParams  #: per run, its TensorBoard HParams session: ``(name, hyper-parameters)``


@dataclass
class GroupResult:
    """How a group ended: trained (``outcomes``, one per run), failed as a whole (``error``), or
    interrupted (nothing to record)."""

    job: GroupJob
    outcomes: list[RunOutcome] = field(default_factory=list)
    seconds: float = 0.0  #: wall-clock training time of the group
    interrupted: bool = False
    error: str = ""  #: why the group failed as a whole ('' when it trained)
    #: TensorBoard files to write under ``tb/batch_<index>/`` (relative path -> bytes); empty
    #: when the engine wrote them in place
    tb_files: dict[str, bytes] = field(default_factory=dict)
    check_seconds: float = 0.0  #: the part of ``seconds`` spent in the geometry checks


class Executor(Protocol):
    """Trains groups; the driver records what it yields."""

    def session(self) -> contextlib.AbstractContextManager[None]:
        """Where the executor's resources are held (a Ray connection); entered before the sweep
        directory is created, so a refusal there writes nothing."""
        ...

    def run(self, jobs: Sequence[GroupJob]) -> Iterator[GroupResult]:
        """Train ``jobs`` (inside :meth:`session`); yield each group's result as it finishes (any
        order). A group cut short by SIGINT/SIGTERM is yielded with ``interrupted`` set; after
        SIGINT/SIGTERM of this process no further group starts."""
        ...


def train_specs(specs: Sequence[RunSpec], hparams: HParams, reg: Registry, engine: Engine, *, log_dir: Path, tb_name: str) -> GroupOutcome:
    """Build one group from ``specs`` and train it with ``engine``; TensorBoard in
    ``log_dir/tb_name`` (``loss/*`` and ``geometry/*`` over the group's runs, an HParams session
    per run)."""
    group = build_group(specs, reg, fail_fast=False)
    union: list[str] = []
    for spec in specs:
        union.extend(a for a in spec.active if a not in union)
    # expulsion is data in a sweep: it is summarised once at the end, not warned per group
    geometry = geometry_callback(specs[0].cfg, union, reg.losses, on_expulsion="ignore", figures=False)
    return engine(group, geometry, log_dir=log_dir, tb_name=tb_name, hparams=hparams)


def make_executor(plan: Plan, reg: Registry, out: Path | None, *, engine: Engine, echo: Echo) -> Executor:
    """The executor named by ``sweep.executor``, checked before anything is written: ``ray``
    raises :class:`ConfigError` (one line) when Ray is not installed or a loss of the sweep
    cannot be sent to workers. Nothing is started yet."""
    if str(plan.base.sweep.executor) == "ray":
        names = dict.fromkeys(name for spec in plan.specs.values() for name in spec.settings)
        return RayExecutor(plan.base.sweep.ray, Registry({n: reg.losses[n] for n in names}, {}, {}), engine=engine, echo=echo)
    return LocalExecutor(reg, out, engine=engine)


# --------------------------------------------------------------------- local
class LocalExecutor:
    """Trains the groups in this process, one after the other; TensorBoard straight into
    ``out/tb/batch_<i>/``. SIGINT/SIGTERM stop the current group after its current step."""

    def __init__(self, reg: Registry, out: Path | None, *, engine: Engine) -> None:
        self.reg, self.out, self.engine = reg, out, engine

    def session(self) -> contextlib.AbstractContextManager[None]:
        return contextlib.nullcontext()

    def run(self, jobs: Sequence[GroupJob]) -> Iterator[GroupResult]:
        assert self.out is not None
        for job in jobs:
            outcome = train_specs(job.specs, job.hparams, self.reg, self.engine, log_dir=self.out, tb_name=f"{TB}/batch_{job.index:03d}")
            yield GroupResult(job, outcome.runs, outcome.seconds, outcome.interrupted, check_seconds=outcome.geometry.check_seconds)
            if outcome.interrupted:
                return


# ----------------------------------------------------------------------- ray
def import_ray() -> ModuleType:
    """The ``ray`` module, or a :class:`ConfigError` naming the extra to install."""
    try:
        import ray
    except ImportError:
        raise ConfigError(RAY_MISSING) from None
    return ray


@dataclass
class _TaskResult:
    """What a Ray task sends back: no module, no trainer, only numbers and files."""

    outcomes: list[RunOutcome]
    seconds: float
    interrupted: bool
    tb_files: dict[str, bytes]
    check_seconds: float = 0.0


def _train_task(specs: list[RunSpec], hparams: HParams, reg: Registry, engine: Engine) -> _TaskResult:
    """The body of a Ray task: train one group with TensorBoard in a temporary directory of the
    worker, and return the outcomes with the event files' bytes."""
    with tempfile.TemporaryDirectory(prefix="protoreg-group-") as tmp:
        outcome = train_specs(specs, hparams, reg, engine, log_dir=Path(tmp), tb_name="tb")
        root = Path(tmp) / "tb"
        files = {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}
    return _TaskResult(outcome.runs, outcome.seconds, outcome.interrupted, files, outcome.geometry.check_seconds)


class _StopFlag:
    """While active (in the main thread), SIGINT/SIGTERM are recorded instead of raising, so a
    group being recorded is never cut in half; the previous handlers come back afterwards."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self) -> None:
        self.signum: int | None = None
        self._old: dict[int, Any] = {}

    def __enter__(self) -> "_StopFlag":
        if threading.current_thread() is threading.main_thread():
            for sig in self.SIGNALS:
                self._old[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        self.signum = signum

    def __exit__(self, *exc: object) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)
        self._old.clear()


def _probe_task() -> int:
    """The body of the probe task: proves a worker started."""
    return os.getpid()


def _reachable(address: str) -> None:
    """A :class:`ConfigError` unless ``address`` (``HOST:PORT``, ``ray://HOST:PORT``; ``auto`` is
    left to Ray) accepts a TCP connection within :data:`RAY_CONNECT_SECONDS`: Ray itself would
    retry an unreachable address without end."""
    m = re.fullmatch(r"(?:ray://)?\[?([^\]]+?)\]?:(\d+)", address.strip())
    if m is None:
        return
    host, port = m.group(1), int(m.group(2))
    try:
        with socket.create_connection((host, port), timeout=RAY_CONNECT_SECONDS):
            pass
    except OSError as exc:
        why = "no answer" if isinstance(exc, TimeoutError) else (exc.strerror or type(exc).__name__)
        raise ConfigError(
            f"sweep.ray.address: no Ray cluster answers at {address!r} ({why} within {RAY_CONNECT_SECONDS:g}s); "
            "start one (ray start --head), give the address it prints, or set sweep.ray.address=null for a local instance"
        ) from None


def _ray_said(exc: BaseException) -> str:
    """Ray's message on one line, without its advice about command-line flags protoreg does not have."""
    line = _first_line(exc)
    parts = [p for p in re.split(r"(?<=[.;])\s+", line) if "--address" not in p and "RAY_ADDRESS" not in p]
    said = " ".join(parts).strip() or type(exc).__name__
    if "--address" in line or "RAY_ADDRESS" in line:
        said += " (set sweep.ray.address to the cluster's address, or null for a local instance)"
    return said


def _session_logs(ray: ModuleType) -> str:
    with contextlib.suppress(Exception):
        return f": {ray._private.worker._global_node.get_session_dir_path()}/logs"  # noqa: SLF001 - where Ray keeps them
    return ""


def _first_line(exc: BaseException, limit: int = 300) -> str:
    """The first line of an exception's message (Ray appends tracebacks), at most ``limit`` long."""
    line = " ".join(first_line(exc).split())
    return line if len(line) <= limit else line[: limit - 3] + "..."


class RayExecutor:
    """Runs each group as a Ray task with ``num_cpus``/``num_gpus`` from ``sweep.ray``.

    Joins ``sweep.ray.address`` (or starts a local Ray instance without dashboard when it is null;
    an already initialised Ray session in this process is used as it is) when the first job is
    submitted, and disconnects at the end if it connected. Tasks are submitted all at once; the
    cluster's scheduler runs as many at a time as the resources allow.
    """

    def __init__(self, cfg: DictConfig, reg: Registry, *, engine: Engine, echo: Echo) -> None:
        """``reg``: the losses the sweep uses (sent to every task); ``cfg``: ``sweep.ray``."""
        self.ray = import_ray()
        self.cfg, self.reg, self.engine, self.echo = cfg, reg, engine, echo
        from ray import cloudpickle

        for name, entry in reg.losses.items():
            try:
                cloudpickle.dumps(entry)
            except Exception as exc:  # noqa: BLE001 - whatever the loss object holds
                raise ConfigError(
                    f"losses.{name}: the loss from {entry.source} cannot be sent to Ray workers ({type(exc).__name__}: {_first_line(exc, 120)}); "
                    "install it as a plugin distribution (entry point) on every node, or use sweep.executor=local"
                ) from None

    @contextlib.contextmanager
    def session(self) -> Iterator[None]:
        """Join (or start) Ray, check that the cluster can ever hold a task of ``sweep.ray``'s
        size and that it runs one within :data:`RAY_START_SECONDS`; disconnect at the end if
        this executor connected. Each failure is one :class:`ConfigError` naming the key."""
        connected = self._connect()
        try:
            self._check_resources()
            self._probe()
            yield
        finally:
            if connected:
                self.ray.shutdown()

    def run(self, jobs: Sequence[GroupJob]) -> Iterator[GroupResult]:
        if not jobs:
            return
        yield from self._run(jobs)

    def _connect(self) -> bool:
        """Join (or start) Ray unless this process already has a session; True when it did."""
        ray = self.ray
        if ray.is_initialized():
            return False
        address = self.cfg.address
        if address is not None:
            _reachable(str(address))
        try:
            if address is None:  # a private instance: its set-up notices are of no interest here
                ray.init(address="local", include_dashboard=False, log_to_driver=False, logging_level=logging.ERROR)
            else:
                ray.init(address=str(address), log_to_driver=False, logging_level=logging.WARNING)
        except Exception as exc:  # noqa: BLE001 - Ray's own connection errors, shown on one line
            where = "start a local Ray instance" if address is None else f"connect to Ray at {address!r}"
            raise ConfigError(f"sweep.ray.address: could not {where}: {type(exc).__name__}: {_ray_said(exc)}") from None
        return True

    def _check_resources(self) -> None:
        """Refuse a task size that no alive node of the cluster has (it would wait forever)."""
        nodes = [n.get("Resources", {}) for n in self.ray.nodes() if n.get("Alive")]
        if not nodes:
            return  # an autoscaling cluster with no worker yet: the probe decides
        for key, name in (("num_cpus_per_task", "CPU"), ("num_gpus_per_task", "GPU")):
            want = float(self.cfg[key])
            have = max(float(n.get(name, 0.0)) for n in nodes)
            if want > have:
                raise ConfigError(
                    f"sweep.ray.{key}: each task reserves {want:g} {name}(s), but the largest node of the Ray cluster has {have:g}; "
                    f"no task could ever start (lower sweep.ray.{key}, or add a node that has them)"
                )

    def _probe(self) -> None:
        """One empty task of the sweep's size must run within :data:`RAY_START_SECONDS`."""
        ray = self.ray
        probe = ray.remote(_probe_task).options(num_cpus=float(self.cfg.num_cpus_per_task), num_gpus=float(self.cfg.num_gpus_per_task), max_retries=0)
        ref = probe.remote()
        try:
            ready, _ = ray.wait([ref], num_returns=1, timeout=RAY_START_SECONDS)
            if not ready:
                raise ConfigError(
                    f"sweep.executor: the Ray cluster ran no task of {float(self.cfg.num_cpus_per_task):g} CPU, "
                    f"{float(self.cfg.num_gpus_per_task):g} GPU within {RAY_START_SECONDS:g}s: its workers do not start "
                    f"(see the Ray session's logs{_session_logs(ray)}) or its resources never free up; nothing was written"
                )
            ray.get(ref)
        except ConfigError:
            with contextlib.suppress(Exception):
                ray.cancel(ref, force=True)
            raise
        except self.ray.exceptions.RayError as exc:
            raise ConfigError(f"sweep.executor: a Ray worker failed to run a first task: {type(exc).__name__}: {_ray_said(exc)}") from None

    def _run(self, jobs: Sequence[GroupJob]) -> Iterator[GroupResult]:
        ray = self.ray
        resources = ray.cluster_resources()
        self.echo(
            f"  ray: {len(jobs)} task(s) of {self.cfg.num_cpus_per_task:g} CPU, {self.cfg.num_gpus_per_task:g} GPU on a cluster of "
            f"{resources.get('CPU', 0):g} CPU(s), {resources.get('GPU', 0):g} GPU(s)"
        )
        task = ray.remote(_train_task).options(
            num_cpus=float(self.cfg.num_cpus_per_task), num_gpus=float(self.cfg.num_gpus_per_task), max_retries=int(self.cfg.max_retries)
        )
        reg_ref = ray.put(self.reg)  # once into the object store; each task reads it
        pending: dict[Any, GroupJob] = {}
        try:
            with _StopFlag() as stop:
                for job in jobs:
                    pending[task.remote(job.specs, job.hparams, reg_ref, self.engine)] = job
                while pending and stop.signum is None:
                    ready, _ = ray.wait(list(pending), num_returns=1, timeout=POLL_SECONDS)
                    for ref in ready:
                        yield self._result(pending.pop(ref), ref)
                if pending:  # interrupted: keep what finished, cancel the rest
                    ready, _ = ray.wait(list(pending), num_returns=len(pending), timeout=0)
                    for ref in ready:
                        yield self._result(pending.pop(ref), ref)
                    self._cancel(pending)
                    for job in sorted(pending.values(), key=lambda j: j.index):
                        yield GroupResult(job, interrupted=True)
                    pending.clear()
        finally:
            self._cancel(pending)  # the consumer stopped early (an error while recording)

    def _cancel(self, pending: Mapping[Any, GroupJob]) -> None:
        for ref in pending:
            self.ray.cancel(ref, force=True)

    def _result(self, job: GroupJob, ref: Any) -> GroupResult:
        """The finished task's result, or the group failed as a whole with the reason. A worker
        that cannot even load the task (another protoreg or plugin there) stops the sweep."""
        errors = self.ray.exceptions
        try:
            res: _TaskResult = self.ray.get(ref)
        except errors.RayTaskError as exc:  # the task raised: not retried
            cause = exc.cause if isinstance(exc.cause, BaseException) else exc
            if isinstance(cause, errors.RaySystemError):
                raise PluginError(
                    f"sweep.executor: a Ray worker could not load its task ({_first_line(cause)}); "
                    "every node needs the same protoreg and plugins as this one"
                ) from None
            return GroupResult(job, error=f"the Ray task raised {type(cause).__name__}: {_first_line(cause)}")
        except errors.RayError as exc:  # the worker or its node died, retries exhausted
            return GroupResult(job, error=f"the Ray task failed after {int(self.cfg.max_retries)} retries: {type(exc).__name__}: {_first_line(exc)}")
        return GroupResult(job, res.outcomes, res.seconds, res.interrupted, tb_files=res.tb_files, check_seconds=res.check_seconds)
