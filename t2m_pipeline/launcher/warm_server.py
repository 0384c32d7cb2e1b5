"""A warm `dagster api execute_run`: a process that imports one code location once, then forks a run worker per run.

`WarmRunLauncher` (warm_launcher.py) starts one per code location. A run worker started by Dagster's own launcher
is a fresh interpreter that imports dagster and the code location before its first step (measured: 3 to 6 s of a
2-core machine's CPU per run, against about 2 s for a scene's render). A fork of this process has both imported
already. What runs in the fork is the same entry point every Dagster launcher runs (`dagster api execute_run`, with
the same arguments), so a run behaves as it would in a fresh process.

The loop is single-threaded on purpose: a fork copies only the forking thread, and nothing here holds a lock or a
connection when it forks (the crash report below opens its instance and closes it again). It also reaps its
workers, as Dagster's code server does: a worker that dies before its run ends (killed, out of memory) fails the
run at once, with the exit explained, so run retries can take it.

It stops serving when a source file it loaded (or a folder it loaded one from) changes: the launcher then starts a
fresh one for new runs, and this one exits once its last worker has.

Usage (by the launcher only): python -m t2m_pipeline.launcher.warm_server SOCKET_PATH SERIALIZED_REPOSITORY_ORIGIN
"""

from __future__ import annotations

import json
import os
import select
import signal
import socket
import sys
import traceback
from dataclasses import dataclass
from pathlib import Path

REAP_INTERVAL_S = 0.5
PREPARE_HOOK = "prepare_run_workers"  # a code location module's function, called once before the forks
RUN_HOOK = "prepare_run"  # one called in each fork first, with the run's job name and tags
FINISH_HOOK = "finish_run"  # one called in each fork after its run, before it exits (os._exit skips atexit)
_run_hook = None
_finish_hook = None
MAX_REQUEST_BYTES = 1 << 20
STALE = "stale"


@dataclass(frozen=True)
class Worker:
    run_id: str
    instance_ref: object  # dagster InstanceRef


def warm_up(origin) -> None:
    """Import the code location (a RepositoryPythonOrigin) and build its definitions, as a run worker would, so each
    fork starts past it; then call the code location module's `PREPARE_HOOK`, if it has one: what every run of its
    would otherwise load for itself. Its `RUN_HOOK`, if any, is called in each fork before the run starts: what that
    run will need, started while Dagster opens the run (a worker spends about a second there)."""
    import importlib

    import dagster._cli.api  # noqa: F401 - the entry point each fork runs
    from dagster._core.definitions.reconstruct import ReconstructableRepository

    repository = ReconstructableRepository(origin.code_pointer, executable_path=origin.executable_path).get_definition()
    for job in repository.get_all_jobs():
        job.get_job_snapshot()  # what core_execute_run builds before the first step; cached on the definition
    global _run_hook, _finish_hook
    module = getattr(origin.code_pointer, "module", None)
    location = importlib.import_module(module) if module else None
    prepare = getattr(location, PREPARE_HOOK, None)
    if callable(prepare):
        prepare()
    _run_hook = getattr(location, RUN_HOOK, None)
    _finish_hook = getattr(location, FINISH_HOOK, None)


def source_stamps(root: str | None) -> dict[str, int]:
    """mtime of every source file this process loaded from under `root` (the code location's working directory,
    never site-packages), and of the folders they came from (a new module in them changes the folder's mtime)."""
    base = Path(root or os.getcwd()).resolve()
    stamps: dict[str, int] = {}
    for module in list(sys.modules.values()):
        path = getattr(module, "__file__", None)
        if not path:
            continue
        file = Path(path).resolve()
        if base not in file.parents or "site-packages" in file.parts:
            continue
        for item in (file, file.parent):
            try:
                stamps[str(item)] = item.stat().st_mtime_ns
            except OSError:
                stamps[str(item)] = -1
    return stamps


def changed(stamps: dict[str, int]) -> list[str]:
    found = []
    for path, mtime in stamps.items():
        try:
            now = os.stat(path).st_mtime_ns
        except OSError:
            now = -1
        if now != mtime:
            found.append(path)
    return found


def execute_run(serialized_args: str) -> int:
    """In the fork: `dagster api execute_run` with the launcher's arguments; its exit code."""
    from dagster._cli.api import execute_run_command

    try:
        execute_run_command.callback(input_json=serialized_args, compressed_input_json=None)
        return 0
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else 1
    except BaseException:  # noqa: BLE001 - the run's own failures are in its event log; this is the rest
        traceback.print_exc()
        return 1
    finally:
        sys.stdout.flush()
        sys.stderr.flush()


def report_crash(worker: Worker, exit_code: int) -> None:
    """A worker gone before its run ended: fail the run with the exit explained (as the code server does)."""
    from dagster import DagsterInstance
    from dagster._utils import get_run_crash_explanation

    try:
        with DagsterInstance.from_ref(worker.instance_ref) as instance:
            run = instance.get_run_by_id(worker.run_id)
            if run is None or run.is_finished:
                return
            message = get_run_crash_explanation(prefix=f"Run execution process for {run.run_id}", exit_code=exit_code)
            instance.report_engine_event(message, run)
            instance.report_run_failed(run)
    except Exception:  # noqa: BLE001 - run monitoring's health check fails the run later
        traceback.print_exc()


def reap(workers: dict[int, Worker]) -> None:
    while workers:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            workers.clear()
            return
        if pid == 0:
            return
        worker = workers.pop(pid, None)
        if worker is not None:
            report_crash(worker, os.waitstatus_to_exitcode(status))


def fork_worker(listener: socket.socket, conn: socket.socket, serialized_args: str, run: dict | None = None) -> int:
    sys.stdout.flush()  # or every fork would print again what this process had buffered
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:  # the run worker: nothing of the server's but what it imported
        listener.close()
        conn.close()
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        prepare_run(run or {})
        code = execute_run(serialized_args)
        finish_run()
        os._exit(code)
    return pid


def prepare_run(run: dict) -> None:
    """The code location's `RUN_HOOK` for this run; whatever it raises is printed, and the run goes on without it."""
    if not callable(_run_hook) or not isinstance(run.get("job_name"), str):
        return
    try:
        _run_hook(run["job_name"], dict(run.get("tags") or {}))
    except Exception:  # noqa: BLE001 - a head start, never a reason for the run to fail
        traceback.print_exc()


def finish_run() -> None:
    """The code location's `FINISH_HOOK`, after the run; whatever it raises is printed."""
    if not callable(_finish_hook):
        return
    try:
        _finish_hook()
    except Exception:  # noqa: BLE001 - the run is over; this only tidies up
        traceback.print_exc()
    finally:
        sys.stdout.flush()
        sys.stderr.flush()


def handle(listener: socket.socket, conn: socket.socket, stamps: dict[str, int], workers: dict[int, Worker]) -> bool:
    """Answer one launch request; False when this server must stop serving (its code changed)."""
    from dagster._grpc.types import ExecuteRunArgs
    from dagster._serdes import deserialize_value

    stale = changed(stamps)
    try:
        message = read_message(conn) or {}
        serialized_args, run = message["execute_run_args"], message.get("run")
        args = deserialize_value(serialized_args, ExecuteRunArgs)
    except Exception as exc:  # noqa: BLE001 - a bad request is answered, never the end of the server
        send_message(conn, {"error": f"{type(exc).__name__}: {exc}"})
        return True
    if stale:
        send_message(conn, {STALE: stale[:5]})
        return False
    pid = fork_worker(listener, conn, serialized_args, run if isinstance(run, dict) else None)
    workers[pid] = Worker(args.run_id, args.instance_ref)
    send_message(conn, {"pid": pid})
    return True


def serve(socket_path: str, serialized_origin: str) -> None:
    from dagster._core.origin import RepositoryPythonOrigin
    from dagster._serdes import deserialize_value

    origin = deserialize_value(serialized_origin, RepositoryPythonOrigin)
    warm_up(origin)
    stamps = source_stamps(origin.code_pointer.working_directory)
    serving = True

    def stop(signum, frame):  # noqa: ARG001
        nonlocal serving
        serving = False

    signal.signal(signal.SIGTERM, stop)
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    binding = f"{socket_path}.binding"
    listener.bind(binding)  # in the launcher's folder, mode 0700: only this user can ask for runs
    listener.listen(64)
    os.rename(binding, socket_path)  # the launcher waits for this name: it appears listening
    launcher = os.getppid()
    workers: dict[int, Worker] = {}
    while serving:
        ready, _, _ = select.select([listener], [], [], REAP_INTERVAL_S)
        reap(workers)
        if os.getppid() != launcher:
            break  # the launching process died without stopping this one: serve no more, and end with the workers
        if ready and serving:
            conn, _ = listener.accept()
            with conn:
                conn.settimeout(30)
                try:
                    serving = handle(listener, conn, stamps, workers)
                except OSError as exc:  # the launcher gave up on this answer: its run is failed, this server goes on
                    print(f"warm run server: a launch request failed: {exc}", file=sys.stderr, flush=True)
    listener.close()
    Path(socket_path).unlink(missing_ok=True)  # the launcher may have removed its folder already
    while workers:  # serve no more, but still fail the runs of workers that crash
        reap(workers)
        select.select([], [], [], REAP_INTERVAL_S)


def send_message(conn: socket.socket, message: dict) -> None:
    """One JSON object on one line: the protocol between the launcher and this server, both ways."""
    conn.sendall((json.dumps(message) + "\n").encode())


def read_message(conn: socket.socket) -> dict | None:
    """The next line's JSON object; None if the other side closed without one."""
    data = b""
    while not data.endswith(b"\n"):
        chunk = conn.recv(65536)
        if not chunk:
            break
        data += chunk
        if len(data) > MAX_REQUEST_BYTES:
            raise ValueError("message too large")
    return json.loads(data) if data.strip() else None


if __name__ == "__main__":
    serve(sys.argv[1], sys.argv[2])
