"""WarmRunLauncher with a real instance, a real code location (loaded by Dagster's own workspace machinery) and
real processes: each run's worker is a fork of the warm server, and what Dagster's default launcher gives (a crash
fails the run at once, terminate cancels it, a code change is picked up) still holds. The default launcher is the
control: its worker imports the code itself."""

import importlib.util
import os
import shutil
import tempfile
import time
from pathlib import Path

import dagster as dg
import pytest
from dagster._core.workspace.context import WorkspaceProcessContext
from dagster._core.workspace.load_target import ModuleTarget

from t2m_pipeline.launcher.warm_launcher import ELSEWHERE, EXITED, GONE, RUNNING, WORKER_TAG, WarmRunLauncher, worker_state, worker_tag_value

LOCATION = Path(__file__).with_name("tiny_location.py")
pytestmark = pytest.mark.e2e  # real runs in real processes, launched as the daemon would

WARM = {"module": "t2m_pipeline.launcher", "class": "WarmRunLauncher"}
DEFAULT = {"module": "dagster._core.launcher", "class": "DefaultRunLauncher"}


class Location:
    """A copy of tiny_location.py in a folder of its own (its mtime is the test's to change), loaded as a workspace."""

    def __init__(self, instance: dg.DagsterInstance, folder: Path):
        self.instance, self.folder = instance, folder / "code"  # the runs' reports go beside it: a new file in the
        self.folder.mkdir()  # location's own folder is a code change to the warm server
        self.source = self.folder / "tiny_location.py"
        shutil.copy(LOCATION, self.source)
        spec = importlib.util.spec_from_file_location("tiny_location", self.source)  # the test's own copy
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        self.job_def = module.tiny_job

    def __enter__(self):
        target = ModuleTarget(module_name="tiny_location", attribute=None, working_directory=str(self.folder), location_name="tiny")
        self._context = WorkspaceProcessContext(self.instance, target)
        self.workspace = self._context.create_request_context()
        location = self.workspace.get_code_location("tiny")
        self.remote_job = location.get_repository("__repository__").get_full_job("tiny_job")
        return self

    def __exit__(self, *exc):
        self._context.__exit__(*exc)

    def launch(self, action: str, report: Path) -> str:
        run = self.instance.create_run_for_job(
            job_def=self.job_def,
            tags={"tiny/tag": "seen"},
            run_config={"ops": {"act": {"config": {"action": action, "report_to": str(report)}}}},
            remote_job_origin=self.remote_job.get_remote_origin(),
            job_code_origin=self.remote_job.get_python_origin(),
        )
        self.instance.launch_run(run.run_id, self.workspace)
        return run.run_id

    def wait(self, run_id: str, timeout: float = 60) -> dg.DagsterRun:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            run = self.instance.get_run_by_id(run_id)
            if run.is_finished:
                return run
            time.sleep(0.1)
        raise AssertionError(f"run {run_id} still {run.status} after {timeout} s")

    def engine_messages(self, run_id: str) -> list[str]:
        return [e.message or "" for e in self.instance.all_logs(run_id)]


def pid_running(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0] not in ("Z", "X")
    except OSError:
        return False


def wait_for(path: Path, timeout: float = 30) -> list[int]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() and path.read_text().endswith("\n"):
            return [int(x) for x in path.read_text().split()]
        time.sleep(0.05)
    raise AssertionError(f"{path} never written")


@pytest.fixture
def location(tmp_path):
    with dg.instance_for_test(overrides={"run_launcher": WARM}) as instance:
        assert isinstance(instance.run_launcher, WarmRunLauncher)
        with Location(instance, tmp_path) as loc:
            yield loc


def test_a_run_is_a_fork_of_the_warm_server_and_succeeds(location, tmp_path):
    first, second = location.launch("report", tmp_path / "a"), location.launch("report", tmp_path / "b")
    for run_id in (first, second):
        assert location.wait(run_id).status == dg.DagsterRunStatus.SUCCESS, location.engine_messages(run_id)
    (pid_a, parent_a, imported_a), (pid_b, parent_b, imported_b) = wait_for(tmp_path / "a"), wait_for(tmp_path / "b")
    assert imported_a == parent_a == imported_b == parent_b  # both forked from one server, which imported the code
    assert pid_a != pid_b and imported_a not in (pid_a, pid_b)
    run = location.instance.get_run_by_id(first)
    state, tagged_pid = worker_state(run.tags[WORKER_TAG])
    assert tagged_pid == pid_a and state in (EXITED, GONE)  # it ran, and it has ended (reaped by its server, or about to be)
    assert any(f"Started process for run (pid: {pid_a})" in m for m in location.engine_messages(first))


def test_the_server_prepares_its_workers_once_before_it_forks_and_each_run_in_its_worker(location, tmp_path):
    """The code location's `prepare_run_workers` runs in the warm server (t2m_pipeline.definitions loads boto3 and
    S3's models there), so every fork starts past it; its `prepare_run` in each worker, with the run's job name and
    tags, before the run starts (a scenes run's warm renderer)."""
    run_id = location.launch("report", tmp_path / "a")
    assert location.wait(run_id).status == dg.DagsterRunStatus.SUCCESS, location.engine_messages(run_id)
    worker, server, imported = wait_for(tmp_path / "a")
    assert wait_for(tmp_path / "a.prepared") == [server] == [imported]
    assert (tmp_path / "a.run").read_text() == f"tiny_job seen {worker}"  # prepare_run, in the worker, with its tags
    assert wait_for(tmp_path / "a.finished") == [worker]  # finish_run, in the worker, after its run (os._exit skips atexit)


def test_control_the_default_launcher_starts_a_worker_that_imports_the_code_itself(tmp_path):
    with dg.instance_for_test(overrides={"run_launcher": DEFAULT}) as instance, Location(instance, tmp_path) as loc:
        run_id = loc.launch("report", tmp_path / "a")
        assert loc.wait(run_id).status == dg.DagsterRunStatus.SUCCESS
        pid, _, imported = wait_for(tmp_path / "a")
        assert imported == pid
        assert wait_for(tmp_path / "a.prepared") == [0]  # nothing prepared it: it loads what it needs itself
        assert (tmp_path / "a.run").read_text() == ""


def test_a_worker_killed_mid_run_fails_its_run_at_once_with_the_signal_named(location, tmp_path):
    run_id = location.launch("die", tmp_path / "a")
    run = location.wait(run_id, timeout=20)  # run monitoring is off here: only the server can have noticed
    assert run.status == dg.DagsterRunStatus.FAILURE
    assert any("signal 9 (SIGKILL)" in m for m in location.engine_messages(run_id)), location.engine_messages(run_id)


def test_terminate_cancels_the_run_and_health_follows_the_worker(location, tmp_path):
    launcher = location.instance.run_launcher
    run_id = location.launch("sleep", tmp_path / "a")
    pid, _, _ = wait_for(tmp_path / "a")
    run = location.instance.get_run_by_id(run_id)
    assert launcher.check_run_worker_health(run).status == dg._core.launcher.WorkerStatus.RUNNING
    assert launcher.terminate(run_id)
    assert location.wait(run_id).status == dg.DagsterRunStatus.CANCELED
    deadline = time.monotonic() + 10
    while worker_state(run.tags[WORKER_TAG])[0] != GONE and time.monotonic() < deadline:
        time.sleep(0.1)  # exited, then reaped by its server: until then the server, not monitoring, reports it
    assert not pid_running(pid)
    assert launcher.check_run_worker_health(run).status == dg._core.launcher.WorkerStatus.FAILED


def test_a_code_change_starts_a_fresh_server_and_the_old_one_ends_after_its_runs(location, tmp_path):
    sleeping = location.launch("sleep", tmp_path / "a")
    _, old_server, _ = wait_for(tmp_path / "a")
    stat = location.source.stat()
    os.utime(location.source, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    after = location.launch("report", tmp_path / "b")
    assert location.wait(after).status == dg.DagsterRunStatus.SUCCESS
    _, new_server, imported = wait_for(tmp_path / "b")
    assert new_server != old_server and imported == new_server
    assert pid_running(old_server)  # still reaping the sleeping run's worker
    location.instance.run_launcher.terminate(sleeping)
    assert location.wait(sleeping).status == dg.DagsterRunStatus.CANCELED
    deadline = time.monotonic() + 10
    while pid_running(old_server) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not pid_running(old_server)


def test_a_malformed_request_gets_an_error_and_the_server_goes_on(location, tmp_path):
    import socket

    from t2m_pipeline.launcher.warm_server import read_message, send_message

    assert location.wait(location.launch("report", tmp_path / "a")).status == dg.DagsterRunStatus.SUCCESS
    [server] = location.instance.run_launcher._servers.values()
    for request in ({"execute_run_args": "not a serialized ExecuteRunArgs"}, {"something": "else"}):
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
            conn.connect(server.socket_path)
            send_message(conn, request)
            answer = read_message(conn)
        assert set(answer) == {"error"} and "\n" not in answer["error"], answer
    assert location.wait(location.launch("report", tmp_path / "b")).status == dg.DagsterRunStatus.SUCCESS
    assert wait_for(tmp_path / "b")[1] == server.process.pid  # the same server served it


def test_a_run_of_another_interpreter_goes_to_dagsters_default_launcher(location, tmp_path):
    """The warm server imports the code with this interpreter: a location that names another one is not its to run."""
    run = location.instance.create_run_for_job(
        job_def=location.job_def,
        run_config={"ops": {"act": {"config": {"action": "report", "report_to": str(tmp_path / "a")}}}},
        remote_job_origin=location.remote_job.get_remote_origin(),
        job_code_origin=location.remote_job.get_python_origin()._replace(
            repository_origin=location.remote_job.get_python_origin().repository_origin._replace(executable_path="/elsewhere/python")
        ),
    )
    location.instance.launch_run(run.run_id, location.workspace)
    assert location.wait(run.run_id).status == dg.DagsterRunStatus.SUCCESS
    tags = location.instance.get_run_by_id(run.run_id).tags
    assert WORKER_TAG not in tags and ".dagster/grpc_info" in tags  # launched by the code server, as before
    assert not location.instance.run_launcher._servers  # no warm server was started for it


def test_a_worker_tag_names_one_process_not_a_pid_that_comes_back():
    """host:pid:start time: a process that later gets the worker's pid is not the worker (terminate would signal it,
    monitoring would think the run alive); another host's worker is not this host's to judge."""
    tag = worker_tag_value(os.getpid())
    assert worker_state(tag) == (RUNNING, os.getpid())
    host, pid, started = tag.rsplit(":", 2)
    assert worker_state(f"{host}:{pid}:{int(started) + 1}") == (GONE, os.getpid())  # the pid, another process
    assert worker_state(f"another-host:{pid}:{started}")[0] == ELSEWHERE
    assert worker_state(None)[0] == ELSEWHERE


def connect_as(uid: int, path: str) -> str:
    """Connect to a Unix socket as `uid` (a fork that drops root): 'connected' or the error's name."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(read)
        import socket

        try:
            os.setgroups([])
            os.setgid(uid)
            os.setuid(uid)
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
                conn.connect(path)
            answer = "connected"
        except OSError as exc:
            answer = type(exc).__name__
        os.write(write, answer.encode())
        os._exit(0)
    os.close(write)
    os.waitpid(pid, 0)
    with os.fdopen(read) as pipe:
        return pipe.read()


@pytest.mark.skipif(os.geteuid() != 0, reason="dropping to another uid needs root (CI runs as root)")
def test_only_the_daemons_user_can_ask_the_server_for_a_run(location, tmp_path):
    """What a render's unprivileged uid (or any other local user) gets from the warm server: nothing. The control: the
    same uid reaches a socket whose folder and mode let it."""
    import socket

    from t2m_pipeline.render.sandbox import fresh_uid

    assert location.wait(location.launch("report", tmp_path / "a")).status == dg.DagsterRunStatus.SUCCESS
    [server] = location.instance.run_launcher._servers.values()
    stranger = fresh_uid()
    assert connect_as(stranger, server.socket_path) == "PermissionError"
    open_folder = Path(tempfile.mkdtemp(prefix="t2m-open-socket-", dir="/var/tmp"))  # /var/tmp: others may pass
    os.chmod(open_folder, 0o755)
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as listener:
            listener.bind(str(open_folder / "s.sock"))
            os.chmod(open_folder / "s.sock", 0o777)
            listener.listen(1)
            assert connect_as(stranger, str(open_folder / "s.sock")) == "connected"
    finally:
        shutil.rmtree(open_folder, ignore_errors=True)
