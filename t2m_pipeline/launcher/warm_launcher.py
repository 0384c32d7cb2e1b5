"""A run launcher that forks each run worker from a warm process instead of starting an interpreter per run.

Configured in dagster.yaml (`run_launcher: t2m_pipeline.launcher / WarmRunLauncher`) and used by whatever launches
runs: the daemon's run queue. Per code location it keeps one `warm_server` process, which has imported the location;
each run is a fork of it running `dagster api execute_run`. Measured by `benchmarks/latency_bench.py`: process
start and code load per run went from seconds to a fork (BENCHMARKS.md).

What Dagster's DefaultRunLauncher gives, this keeps:
- a worker that dies before its run ends fails the run at once, with its exit explained (the server reaps it);
- `terminate` stops the run gracefully (SIGTERM, which `dagster api execute_run` turns into an interrupt);
- run monitoring can ask whether the worker is alive (`t2m/run_worker` tag: host and pid);
- a code change is picked up: a server whose loaded source changed refuses new runs and a fresh one takes them.

And one thing Dagster's own launch leaves to chance: the pools a run's steps claim get their limit before the worker
starts (`ensure_pool_limits`).

A run it cannot serve warm (another interpreter's code location, a run without a Python origin) goes to Dagster's
DefaultRunLauncher, as before.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field

from dagster import Field, IntSource
from dagster import _check as check
from dagster._core.launcher import (
    CheckRunHealthResult,
    DefaultRunLauncher,
    LaunchRunContext,
    RunLauncher,
    WorkerStatus,
)
from dagster._grpc.types import ExecuteRunArgs
from dagster._serdes import ConfigurableClass, ConfigurableClassData, serialize_value

from t2m_pipeline.launcher import warm_server
from t2m_pipeline.launcher.pools import ensure_pool_limits_or_report
from t2m_pipeline.launcher.warm_server import read_message, send_message

WORKER_TAG = "t2m/run_worker"  # "<host>:<pid>" of the run's worker
SERVER_MODULE = warm_server.__name__


class WarmServerError(RuntimeError):
    """The warm server could not start or answer; the run is failed with this message."""


@dataclass
class WarmServer:
    """One `warm_server` process and the socket it listens on."""

    origin_key: str
    folder: str
    process: subprocess.Popen
    socket_path: str = field(init=False)

    def __post_init__(self) -> None:
        self.socket_path = os.path.join(self.folder, "server.sock")

    @classmethod
    def start(cls, serialized_origin: str, working_directory: str | None, timeout_s: float) -> WarmServer:
        folder = tempfile.mkdtemp(prefix="t2m-warm-runs-")  # mode 0700: the socket is this user's alone
        process = subprocess.Popen(
            [sys.executable, "-m", SERVER_MODULE, os.path.join(folder, "server.sock"), serialized_origin],
            cwd=working_directory or None,
        )
        server = cls(serialized_origin, folder, process)
        server.wait_ready(timeout_s)
        return server

    def wait_ready(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise WarmServerError(f"the warm run server exited with code {self.process.returncode} while loading the code")
            if os.path.exists(self.socket_path):
                return
            time.sleep(0.05)
        self.stop()
        raise WarmServerError(f"the warm run server did not load the code within {timeout_s:.0f} s")

    def ask(self, serialized_args: str, run: dict | None = None) -> dict:
        """Start a run's worker; `run` (its job name and tags) goes to the code location's `prepare_run` hook."""
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
            conn.settimeout(60)
            conn.connect(self.socket_path)
            send_message(conn, {"execute_run_args": serialized_args, "run": run or {}})
            answer = read_message(conn)
        if answer is None:
            raise WarmServerError("the warm run server closed the connection without an answer")
        return answer

    def alive(self) -> bool:
        return self.process.poll() is None

    def stop(self) -> None:
        """SIGTERM: it serves no more and exits once its workers have (they are not stopped)."""
        if self.alive():
            self.process.send_signal(signal.SIGTERM)
        shutil.rmtree(self.folder, ignore_errors=True)


def _proc_stat(pid: int) -> list[str] | None:
    """/proc/<pid>/stat's fields after the command name (state first), or None."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rpartition(")")[2].split()
    except OSError:
        return None


def worker_tag_value(pid: int) -> str:
    """host:pid:start time (clock ticks since boot): a later process that reuses the pid is not the worker."""
    fields = _proc_stat(pid)
    return f"{socket.gethostname()}:{pid}:{fields[19] if fields and len(fields) > 19 else '?'}"


ELSEWHERE, RUNNING, EXITED, GONE = "elsewhere", "running", "exited", "gone"


def worker_state(tag: str | None) -> tuple[str, int | None]:
    """(where the tagged worker is, its pid): ELSEWHERE (no tag of this host: not ours to judge), RUNNING (this very
    process, alive), EXITED (dead, not yet reaped: its server is about to report how it ended), GONE (reaped, or its
    pid now another process's)."""
    parts = (tag or "").rsplit(":", 2)
    if len(parts) != 3 or parts[0] != socket.gethostname() or not parts[1].isdigit():
        return ELSEWHERE, None
    pid = int(parts[1])
    fields = _proc_stat(pid)
    if not fields or len(fields) <= 19 or fields[19] != parts[2]:
        return GONE, pid
    return (EXITED if fields[0] in ("Z", "X") else RUNNING), pid


class WarmRunLauncher(RunLauncher, ConfigurableClass):
    def __init__(self, start_timeout_seconds: int = 180, inst_data: ConfigurableClassData | None = None):
        self._inst_data = inst_data
        self._start_timeout_s = check.int_param(start_timeout_seconds, "start_timeout_seconds")
        self._servers: dict[str, WarmServer] = {}
        self._retired: list[WarmServer] = []
        self._fallback: DefaultRunLauncher | None = None
        self._lock = threading.Lock()  # one launch at a time talks to (or starts) a server
        super().__init__()

    @property
    def inst_data(self) -> ConfigurableClassData | None:
        return self._inst_data

    @classmethod
    def config_type(cls) -> dict:
        return {
            "start_timeout_seconds": Field(
                IntSource, is_required=False, default_value=180,
                description="How long a warm server may take to load a code location before the run fails.",
            )
        }

    @classmethod
    def from_config_value(cls, inst_data: ConfigurableClassData, config_value: dict) -> WarmRunLauncher:
        return cls(inst_data=inst_data, **config_value)

    # -- launching ------------------------------------------------------------------------------------------------

    def fallback(self) -> DefaultRunLauncher:
        if self._fallback is None:
            self._fallback = DefaultRunLauncher()
            self._fallback.register_instance(self._instance)
        return self._fallback

    def serves(self, context: LaunchRunContext) -> bool:
        origin = context.dagster_run.job_code_origin
        return origin is not None and origin.repository_origin.executable_path == sys.executable

    def launch_run(self, context: LaunchRunContext) -> None:
        with self._lock:
            ensure_pool_limits_or_report(self._instance, context.dagster_run, self.__class__)
        if not self.serves(context):
            self.fallback().launch_run(context)
            return
        run = context.dagster_run
        origin = check.not_none(run.job_code_origin)
        args = serialize_value(
            ExecuteRunArgs(job_origin=origin, run_id=run.run_id, instance_ref=self._instance.get_ref(), set_exit_code_on_failure=True)
        )
        repository = origin.repository_origin
        key, folder = serialize_value(repository), repository.code_pointer.working_directory
        described = {"job_name": run.job_name, "tags": dict(run.tags)}
        with self._lock:
            try:
                answer = self._server_for(key, folder).ask(args, described)
            except OSError:  # alive but unreachable (its socket removed, wedged): a fresh server takes the run
                self._retire(key)
                answer = {"stale": "unreachable"}
            if "stale" in answer:  # its code changed: it serves no more; a fresh server loads the new code
                self._retire(key)
                answer = self._server_for(key, folder).ask(args, described)
        if "pid" not in answer:
            raise WarmServerError(f"the warm run server did not start the run: {answer.get('error') or answer}")
        try:
            self._instance.add_run_tags(run.run_id, {WORKER_TAG: worker_tag_value(int(answer["pid"]))})
        except Exception as exc:  # noqa: BLE001 - the run is running: failing its launch now would run it twice
            self._instance.report_engine_event(f"could not tag the run's worker (pid {answer['pid']}): {exc}", run, cls=self.__class__)

    def _server_for(self, origin_key: str, working_directory: str | None) -> WarmServer:
        self._retired = [s for s in self._retired if s.alive()]  # reaps the ones that ended
        server = self._servers.get(origin_key)
        if server is not None and not server.alive():
            self._retire(origin_key)
            server = None
        if server is None:
            server = WarmServer.start(origin_key, working_directory, self._start_timeout_s)
            self._servers[origin_key] = server
        return server

    def _retire(self, origin_key: str) -> None:
        server = self._servers.pop(origin_key, None)
        if server is not None:
            server.stop()
            self._retired.append(server)

    # -- after the launch -----------------------------------------------------------------------------------------

    def terminate(self, run_id: str) -> bool:
        run = self._instance.get_run_by_id(run_id)
        if not run or run.is_finished:
            return False
        if WORKER_TAG not in run.tags:
            return self.fallback().terminate(run_id)
        state, pid = worker_state(run.tags.get(WORKER_TAG))
        self._instance.report_run_canceling(run)
        if state != RUNNING:
            self._instance.report_engine_event(f"The run's worker is {state}: nothing to stop here.", run, cls=self.__class__)
            return False
        os.kill(pid, signal.SIGTERM)
        return True

    @property
    def supports_check_run_worker_health(self) -> bool:
        return True

    def check_run_worker_health(self, run) -> CheckRunHealthResult:
        # Run monitoring fails a STARTED run on any answer but RUNNING or SUCCESS, UNKNOWN included: a worker this
        # host cannot see (launched by the fallback, tagged an instant after it started, on another host) is RUNNING.
        tag = run.tags.get(WORKER_TAG)
        if tag is None:
            return CheckRunHealthResult(WorkerStatus.RUNNING, "no warm worker tag: not checked here")
        state, _ = worker_state(tag)
        if state == ELSEWHERE:
            return CheckRunHealthResult(WorkerStatus.RUNNING, f"worker {tag} is on another host: not checked here")
        if state == RUNNING:
            return CheckRunHealthResult(WorkerStatus.RUNNING, run_worker_id=tag)
        if state == EXITED:  # its server reaps it within a second and fails the run with the exit explained
            return CheckRunHealthResult(WorkerStatus.RUNNING, f"run worker {tag} exited; its server reports how", run_worker_id=tag)
        return CheckRunHealthResult(WorkerStatus.FAILED, f"run worker {tag} is gone", run_worker_id=tag)

    def dispose(self) -> None:
        for key in list(self._servers):
            self._retire(key)
        if self._fallback is not None:
            self._fallback.dispose()
