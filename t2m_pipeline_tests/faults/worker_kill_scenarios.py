"""A run worker killed with SIGKILL mid-render, under the real `dagster-daemon`: the run is failed as a crash and
retried from failure, and the job completes; with retries off for the run nothing brings it back, the job stays
`processing`, and the stuck-job audit is what ends that row.

Who notices the dead worker. The instance uses the project's WarmRunLauncher (t2m_pipeline/launcher): the run
worker is a fork of the warm server, which reaps its workers every 0.5 s and reports a run whose worker is gone as
failed ("Run execution process for <id> was terminated by signal 9 (SIGKILL)", Dagster's own wording, as its code
server says it) with no failure reason, so `run_retries` (which skips only step failures) re-executes it. If the
server were lost with the worker, run monitoring's health check (the worker's pid, in the run's `t2m/run_worker` tag)
fails the run at its next poll; on ECS the EcsRunLauncher checks the task. Dagster's retry daemon can read the failure
before the run is marked failed and then never retries it; the `missed_run_retries` sensor has it read again
(t2m_pipeline/launcher/retries.py; a CI run once lost the retry that way).

The scenario starts its own daemon on a DAGSTER_HOME holding the project's dagster.yaml with shorter intervals,
inserts jobs with plain SQL, waits until a `render_scenes` run's worker has manim running (the worker's pid is in the
run's own event log, "Started process for run (pid: N)"; its children are read from /proc) and SIGKILLs the worker
(manim, under bubblewrap's --die-with-parent, dies with it). The control's run is first tagged `dagster/max_retries=0`
(run retries off for it alone), so both share one daemon and one wait.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import signal
import subprocess
import tempfile
import sys
import time
import uuid
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path

import yaml
from sqlalchemy import Engine, text

from t2m_pipeline.audits.policy import AuditPolicy
from t2m_pipeline.pipeline.run_labels import WILL_RETRY_TAG
from t2m_pipeline.audits.stuck_jobs import JobAuditStats, job_findings
from t2m_pipeline.config import Settings
from t2m_pipeline.storage.s3 import make_s3_client
from devtools.dagster_daemon import daemon_databases, stop_process_group
from t2m_pipeline_tests.defs.scenes.support import file_rows, insert_job, job_row

REPO = Path(__file__).resolve().parents[2]
JOB_ID_TAG = "t2m/job_id"
RENDER_JOB = "render_scenes"
FAILURE_SENSOR = "pipeline_run_failures"
ROOT_RUN_TAG = "dagster/root_run_id"
MAX_RETRIES_TAG = "dagster/max_retries"
RETRY_NUMBER_TAG = "dagster/retry_number"
_STARTED_PROCESS = re.compile(r"Started process for run \(pid: (\d+)\)")
# How the killed run's failure is reported: by the warm server that reaps its worker (the exit, in Dagster's own
# words), or, when run monitoring's health check gets there first (a loaded machine), by that check.
_CRASH = re.compile(r"Run execution process for \S+ (was terminated by signal .*|unexpectedly exited .*)|Detected run worker status FAILED: .*is gone.*")
# Shorter intervals than the project's instance so a scenario takes seconds: run monitoring's poll, the run queue,
# the daemon that launches retries (DAGSTER_EVENT_LOG_CONSUMER_DAEMON_INTERVAL_SECONDS, 5 s by default), and the
# time after a run ended when monitoring frees the `manim_render` pool slot it still holds: a killed worker never
# gives its slot back (the project's 300 s would hold a retry behind two killed renders for five minutes).
POLL_INTERVAL_S = 2
DEQUEUE_INTERVAL_S = 1
RETRY_DAEMON_INTERVAL_S = 1
FREE_SLOTS_AFTER_S = 5


def write_instance_config(home: Path) -> Path:
    """The project's dagster.yaml with only the polling intervals shortened."""
    config = yaml.safe_load((REPO / "dagster.yaml").read_text())
    config["run_monitoring"]["poll_interval_seconds"] = POLL_INTERVAL_S
    config["run_monitoring"]["free_slots_after_run_end_seconds"] = FREE_SLOTS_AFTER_S
    config["run_coordinator"].setdefault("config", {})["dequeue_interval_seconds"] = DEQUEUE_INTERVAL_S
    home.mkdir(parents=True, exist_ok=True)
    path = home / "dagster.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


@contextmanager
def running_daemon(home: Path, env: dict[str, str], log_path: Path):
    """`dagster-daemon run` on the project's workspace (it starts the code server that runs the workers)."""
    with open(log_path, "wb") as log:
        daemon = subprocess.Popen(
            [str(Path(sys.executable).parent / "dagster-daemon"), "run", "-w", str(REPO / "workspace.yaml")],
            cwd=REPO, env={**env, "DAGSTER_HOME": str(home)}, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )
    try:
        yield daemon
    finally:
        stop_process_group(daemon)  # and whatever is left of its process group


def dagster_instance(home: Path, dagster_url: str):
    """The daemon's instance, opened in this process (the config names its storage URL by environment variable)."""
    from dagster import DagsterInstance

    previous = os.environ.get("T2M_DAGSTER_PG_URL")
    os.environ["T2M_DAGSTER_PG_URL"] = dagster_url
    try:
        return DagsterInstance.from_config(str(home))
    finally:
        if previous is None:
            os.environ.pop("T2M_DAGSTER_PG_URL", None)
        else:
            os.environ["T2M_DAGSTER_PG_URL"] = previous


# -- processes ------------------------------------------------------------------------------------------------------


def _cmdline(pid: int) -> str:
    """Its command line, then its name: a warm renderer's manim is a fork named `manim` (`render/entrypoint.py`)."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
        return f"{cmdline} [{Path(f'/proc/{pid}/comm').read_text().strip()}]"
    except OSError:
        return ""


def _stats() -> dict[int, list[str]]:
    """pid -> the fields of /proc/<pid>/stat after the command name (state, ppid, pgrp, ...); the name may hold
    spaces and parentheses, so split after the last ')'."""
    stats: dict[int, list[str]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stats[int(entry.name)] = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
    return stats


def _children() -> dict[int, list[int]]:
    tree: dict[int, list[int]] = {}
    for pid, fields in _stats().items():
        tree.setdefault(int(fields[1]), []).append(pid)
    return tree


def descendants(pid: int) -> list[int]:
    tree, found, todo = _children(), [], [pid]
    while todo:
        for child in tree.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def alive(pid: int) -> bool:
    """Running (not a zombie waiting for its parent to reap it)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


# -- runs -----------------------------------------------------------------------------------------------------------


def worker_pid(instance, run_id: str) -> int | None:
    """The run worker's pid, as the worker itself reported it in the run's event log."""
    from dagster import DagsterEventType

    for entry in instance.all_logs(run_id, of_type=DagsterEventType.ENGINE_EVENT):
        match = _STARTED_PROCESS.search(entry.message or "")
        if match:
            return int(match.group(1))
    return None


def crash_message(instance, run_id: str) -> str | None:
    from dagster import DagsterEventType

    for entry in instance.all_logs(run_id, of_type={DagsterEventType.ENGINE_EVENT, DagsterEventType.RUN_FAILURE}):
        match = _CRASH.search(entry.message or "")
        if match:
            return match.group(0)
    return None


def job_runs(instance, job_id: str):
    from dagster._core.storage.dagster_run import RunsFilter

    return list(reversed(instance.get_runs(RunsFilter(tags={JOB_ID_TAG: job_id}))))  # oldest first


def _sensor_states(instance, name: str):
    from dagster._core.scheduler.instigation import InstigatorType

    return [s for s in instance.all_instigator_state(instigator_type=InstigatorType.SENSOR) if s.name == name]


def pause_sensor(instance, name: str, timeout: float = 60) -> None:
    """Stop a sensor that runs by default, once the daemon has evaluated it (so its cursor is set and a later resume
    sees what happened meanwhile): its stored state set to STOPPED, and checked again after a tick in flight could
    have written its own copy back."""
    from dagster._core.scheduler.instigation import InstigatorStatus

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        states = [s for s in _sensor_states(instance, name) if s.instigator_data and s.instigator_data.cursor]
        if states and all(s.status == InstigatorStatus.STOPPED for s in states):
            time.sleep(3)
            if all(s.status == InstigatorStatus.STOPPED for s in _sensor_states(instance, name)):
                return
            continue
        for state in states:
            if state.status != InstigatorStatus.STOPPED:
                instance.update_instigator_state(state.with_status(InstigatorStatus.STOPPED))
        time.sleep(0.5)
    raise TimeoutError(f"sensor {name} could not be stopped in {timeout:g} s")


def resume_sensor_until_past(instance, name: str, storage_id: int, timeout: float = 90) -> None:
    """Start a paused run-status sensor again and wait until its cursor has passed the event `storage_id`: by then
    the tick that evaluated that event has written whatever it writes."""
    from dagster._core.definitions.run_status_sensor_definition import RunStatusSensorCursor
    from dagster._core.scheduler.instigation import InstigatorStatus

    for state in _sensor_states(instance, name):
        instance.update_instigator_state(state.with_status(InstigatorStatus.RUNNING))
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        cursors = [s.instigator_data.cursor for s in _sensor_states(instance, name) if s.instigator_data]
        if any(c and RunStatusSensorCursor.from_json(c).record_id >= storage_id for c in cursors):
            return
        time.sleep(0.5)
    raise TimeoutError(f"sensor {name} did not get past event {storage_id} in {timeout:g} s")


def slot_holders(instance) -> set[str]:
    """Runs holding (or waiting for) a pool slot."""
    return set(instance.event_log_storage.get_concurrency_run_ids())


def _finished(runs, run_id: str) -> bool:
    return any(r.run_id == run_id and r.is_finished for r in runs)


def failure_storage_id(instance, run_id: str) -> int:
    from dagster import DagsterEventType

    return instance.get_records_for_run(run_id, of_type=DagsterEventType.RUN_FAILURE).records[-1].storage_id


def scenario_databases():
    """Databases of the scenario's own (the sensors claim every queued job they see)."""
    return daemon_databases("t2m_kill")


# -- the scenario ---------------------------------------------------------------------------------------------------


WRITE_BACK_MODES = ("on", "late", "off")


@dataclass
class KilledWorker:
    run_id: str
    pid: int
    scene: str  # the run's partition
    manim_pids: list[int]


@dataclass
class JobOutcome:
    """One job of the scenario, what happened to its killed run and where its row ended at each point."""

    job_id: str
    retried: bool  # False: its killed run was tagged dagster/max_retries=0 first (run retries off for that run)
    killed: KilledWorker | None = None
    crash_message: str | None = None  # how the killed run's failure was reported
    slot_held_after_failure: bool | None = None  # the killed run still held its `manim_render` slot once failed
    slot_held_at_end: bool | None = None  # ... and still at the end (run monitoring frees it; the worker could not)
    will_retry: str | None = None  # the killed run's dagster/will_retry tag
    retry_runs: list[dict] = field(default_factory=list)  # runs re-executing the killed run
    runs: list[dict] = field(default_factory=list)  # every run of the job
    statuses_seen: list[str] = field(default_factory=list)  # the job's status, each change in order, during the wait
    status_at_end: str = ""  # when the wait ended
    stuck_action: str | None = None  # what the stuck-job audit did right after the wait (None: nothing to do)
    status_after_audit: str = ""
    error_info_after_audit: dict | None = None
    status_after_write_back: str | None = None  # `late`: once the failure sensor has evaluated the killed run
    error_info_after_write_back: dict | None = None
    queue_status: str = ""  # at the very end
    file_types: list[str] = field(default_factory=list)
    object_problems: list[str] = field(default_factory=list)  # file_metadata rows whose version is missing or differs


@dataclass
class WorkerKillReport:
    write_back: str = ""
    jobs: list[JobOutcome] = field(default_factory=list)
    leftover_render_dirs: int = 0  # render directories the killed workers could not remove
    seconds: float = 0.0
    daemon_log: str = ""

    def job(self, retried: bool) -> JobOutcome:
        return next(j for j in self.jobs if j.retried == retried)


def _run_summary(run) -> dict:
    return {
        "run_id": run.run_id, "job": run.job_name, "status": run.status.value, "partition": run.tags.get("dagster/partition"),
        "parent": run.parent_run_id, "retry_number": run.tags.get(RETRY_NUMBER_TAG), "will_retry": run.tags.get(WILL_RETRY_TAG),
    }


def _check_objects(settings: Settings, rows) -> list[str]:
    """Every row's version exists and holds the bytes of its checksum."""
    client, problems = make_s3_client(settings), []
    for row in rows:
        try:
            body = client.get_object(Bucket=row["s3_bucket"], Key=row["s3_key"], VersionId=row["version_id"])["Body"].read()
        except Exception as exc:  # noqa: BLE001 - reported
            problems.append(f"{row['s3_key']}@{row['version_id']}: {type(exc).__name__}")
            continue
        if hashlib.sha256(body).hexdigest() != row["checksum"]:
            problems.append(f"{row['s3_key']}@{row['version_id']}: sha256 differs from the row")
    return problems


def manim_running() -> bool:
    """Any manim process on the machine: a /proc scan, far cheaper than asking Dagster about every run."""
    return any("manim" in _cmdline(int(entry.name)) for entry in Path("/proc").iterdir() if entry.name.isdigit())


def _try_kill(instance, run, outcome: JobOutcome, pids: dict[str, int]) -> bool:
    """SIGKILL the run's worker if manim is rendering under it now (first tagging the run not to be retried, for a
    job without retries: the tag is read when the failure is recorded). `pids` caches each run's worker pid."""
    pid = pids.get(run.run_id) or worker_pid(instance, run.run_id)
    if pid is not None:
        pids[run.run_id] = pid
    if pid is None or not alive(pid):
        return False
    manim = [p for p in descendants(pid) if "manim" in _cmdline(p)]
    if not manim:
        return False
    if not outcome.retried:
        instance.add_run_tags(run.run_id, {MAX_RETRIES_TAG: "0"})
    os.kill(pid, signal.SIGKILL)
    outcome.killed = KilledWorker(run.run_id, pid, run.tags.get("dagster/partition", ""), manim)
    return True


def _row_state(engine: Engine, job_id: str) -> tuple[str, dict | None]:
    row = job_row(engine, job_id)
    return row["status"], row["error_info"]


def run_worker_kill_scenario(
    engine: Engine,
    settings: Settings,
    metadata_url: str,
    dagster_url: str,
    env: dict[str, str],
    workdir: Path,
    *,
    retried_jobs: int = 1,
    unretried_jobs: int = 1,
    scenes: int = 1,
    write_back: str = "late",
    settle_seconds: float = 15.0,
    deadline_seconds: float = 300.0,
) -> WorkerKillReport:
    """Jobs of `scenes` scenes under one real daemon; in each, the first render_scenes run to get manim going loses
    its worker to SIGKILL. `retried_jobs` are left to run retries (the project's setting); in `unretried_jobs` the
    run is tagged `dagster/max_retries=0` before the kill (the control). The wait ends when every retried job has
    completed and every other job has had nothing in progress for `settle_seconds`; then the stuck-job audit runs
    over the jobs (as if its limit had passed).

    `write_back` is what the run-failure sensor (`pipeline_run_failures`) does: `on` as deployed (it races the
    retries); `late` paused from before the kills until after the audit, then resumed until it has evaluated every
    killed run (the order a slow or restarted sensor daemon gives: the killed run's failure written back after its
    retry); `off` stopped throughout (nothing but the audit can end a `processing` row). `metadata_url` and
    `dagster_url` must be databases of the scenario's own (`scenario_databases`): the sensors claim every queued job.
    """
    from dagster._core.storage.dagster_run import DagsterRunStatus

    if write_back not in WRITE_BACK_MODES:
        raise ValueError(f"write_back {write_back!r}: expected one of {'|'.join(WRITE_BACK_MODES)}")
    started = time.monotonic()
    report = WorkerKillReport(write_back=write_back)
    home = workdir / "dagster_home"
    # render slots land here, so what a killed worker leaves behind can be counted; outside pytest's 0700 tree,
    # where the renders' unprivileged uids can reach their slots (the sandbox refuses a work root they cannot)
    tmp = Path(tempfile.mkdtemp(prefix="t2m-kill-renders-", dir="/var/tmp"))
    os.chmod(tmp, 0o755)
    write_instance_config(home)
    daemon_env = {
        **os.environ,
        **env,
        "T2M_DATABASE_URL": metadata_url,
        "T2M_DAGSTER_PG_URL": dagster_url,
        "TMPDIR": str(tmp),
        "DAGSTER_EVENT_LOG_CONSUMER_DAEMON_INTERVAL_SECONDS": str(RETRY_DAEMON_INTERVAL_S),
    }
    report.daemon_log = str(workdir / "daemon.log")
    instance = dagster_instance(home, dagster_url)
    try:
        with running_daemon(home, daemon_env, Path(report.daemon_log)) as daemon:
            for retried in [True] * retried_jobs + [False] * unretried_jobs:
                _, job_id = insert_job(engine, topic="Worker kill", configuration={"scene_count": scenes, "quality": "low"})
                report.jobs.append(JobOutcome(job_id, retried))
            if write_back != "on":
                pause_sensor(instance, FAILURE_SENSOR)  # long before any render starts: planning comes first
            quiet_since: dict[str, float] = {}
            worker_pids: dict[str, int] = {}  # run id -> its worker's pid, once the worker has said it
            deadline = time.monotonic() + deadline_seconds
            while time.monotonic() < deadline and daemon.poll() is None:
                done = 0
                for job in report.jobs:
                    status, _ = _row_state(engine, job.job_id)
                    if not job.statuses_seen or job.statuses_seen[-1] != status:
                        job.statuses_seen.append(status)
                    if job.killed is None:
                        # A warm worker renders a scene in about a second: look at Dagster only while manim runs
                        if manim_running():
                            for run in job_runs(instance, job.job_id):
                                if (
                                    run.job_name == RENDER_JOB
                                    and run.status == DagsterRunStatus.STARTED
                                    and run.parent_run_id is None
                                    and _try_kill(instance, run, job, worker_pids)
                                ):
                                    break
                        continue
                    runs = job_runs(instance, job.job_id)
                    if job.slot_held_after_failure is None and _finished(runs, job.killed.run_id):
                        job.slot_held_after_failure = job.killed.run_id in slot_holders(instance)
                    if job.retried:
                        done += status == "completed"
                    elif runs and all(r.is_finished for r in runs):
                        quiet_since.setdefault(job.job_id, time.monotonic())
                        done += time.monotonic() - quiet_since[job.job_id] >= settle_seconds
                    else:
                        quiet_since.pop(job.job_id, None)
                if done == len(report.jobs):
                    break
                # a render lasts about a second and a half: look often until every job has had its kill
                time.sleep(0.02 if any(j.killed is None for j in report.jobs) else 0.5)
            job_ids = [uuid.UUID(j.job_id) for j in report.jobs]
            for job in report.jobs:
                job.status_at_end = _row_state(engine, job.job_id)[0]
            policy = AuditPolicy()
            later = datetime.now(timezone.utc) + timedelta(seconds=policy.stuck_after_s + 60)
            actions = {
                f.subject: f.detail.get("action")
                for f in job_findings(engine, policy, JobAuditStats(), now=later, job_ids=job_ids)
                if f.check_name == "stuck_job"
            }
            for job in report.jobs:
                job.stuck_action = actions.get(f"job/{job.job_id}")
                job.status_after_audit, job.error_info_after_audit = _row_state(engine, job.job_id)
            killed = [j for j in report.jobs if j.killed]
            if write_back == "late" and killed:
                last = max(failure_storage_id(instance, j.killed.run_id) for j in killed)
                resume_sensor_until_past(instance, FAILURE_SENSOR, last)
                for job in killed:
                    job.status_after_write_back, job.error_info_after_write_back = _row_state(engine, job.job_id)
            holders = slot_holders(instance)
            for job in report.jobs:
                runs = job_runs(instance, job.job_id)
                job.runs = [_run_summary(r) for r in runs]
                if job.killed:
                    job.slot_held_at_end = job.killed.run_id in holders
                    job.crash_message = crash_message(instance, job.killed.run_id)
                    job.will_retry = next(r["will_retry"] for r in job.runs if r["run_id"] == job.killed.run_id)
                    job.retry_runs = [_run_summary(r) for r in runs if r.tags.get(ROOT_RUN_TAG) == job.killed.run_id]
    finally:
        instance.dispose()
    for job in report.jobs:
        with engine.connect() as conn:
            job.queue_status = conn.execute(text("SELECT status FROM job_queue WHERE job_id = :j"), {"j": job.job_id}).scalar_one()
        rows = file_rows(engine, job.job_id)
        job.file_types = sorted(r["file_type"] for r in rows)
        job.object_problems = _check_objects(settings, rows)
    report.leftover_render_dirs = len(list(tmp.glob("t2m-render-*")))
    remove_render_slots(tmp)
    report.seconds = round(time.monotonic() - started, 1)
    return report


def remove_render_slots(root: Path) -> None:
    """A killed worker leaves its render slot, its tmpfs still mounted (nothing runs in it: the sandbox died with
    the worker): unmount and remove them, then the root."""
    import ctypes

    from t2m_pipeline.render import sandbox

    libc = ctypes.CDLL(None, use_errno=True)
    own, mounts = sandbox._proc_cgroups(), sandbox._cgroup_mounts()  # noqa: SLF001
    for slot in root.glob("t2m-render-*"):
        libc.umount2(str(slot / "work").encode(), 2)  # MNT_DETACH; fails harmlessly where nothing is mounted
        for controller in ("memory", "pids", "freezer"):  # its cgroup, empty now
            if controller in mounts and controller in own:
                try:
                    Path(mounts[controller] + own[controller], slot.name).rmdir()
                except OSError:
                    pass
    shutil.rmtree(root, ignore_errors=True)


_ROUTINE = re.compile(r"Checking for new runs for sensor|Sensor \S+ skipped|No new runs for sensor")


def explain(report: WorkerKillReport) -> str:
    """The report and the daemon log's last lines, without the sensors' routine ticks (they crowd out the rest)."""
    log = Path(report.daemon_log)
    lines = log.read_text(errors="replace").splitlines() if log.exists() else []
    tail = "\n".join(line for line in lines if not _ROUTINE.search(line))[-6000:]
    return f"{report}\ndaemon log tail:\n{tail}"
