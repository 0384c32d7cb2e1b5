"""PostgreSQL restarts while a legacy migration and a pipeline job run: shared by
`test_postgres_restart_runs.py` (small) and `make reliability` (`t2m_pipeline_tests/faults/reliability_report.py`) (bigger).

What runs, at once, against a private cluster (`PrivatePostgres`) and a moto server:
- the migration, as real CLI processes: `t2m migrate redis`, then `t2m migrate files` over a legacy tree
  (`legacy_world.build_world`), with `T2M_DATABASE_URL` on the private cluster;
- a pipeline job, in process: a job row inserted with plain SQL, the sensors (`new_jobs`, `scene_runs`,
  `combine_ready_jobs`) and the runs they request (`plan_job`, `render_scenes` for the job's scenes, which combines them, `combine_scenes` if it could not) executed
  with `execute_in_process` on an ephemeral Dagster instance (Dagster's own storage is not on the restarted server).

How a restart is placed: a sleep would often land between two transactions of a run (renders and uploads touch no
database), and then only pre-ping is tested. So before each restart the scenario takes a lock that each run's next
database statement must wait for: the pipeline's job row (every status write locks it first); for the migration a
table lock, `migration_quarantine` during the Redis import (its one transaction, after the users, jobs and records
upserts) and `migration_ledger` during the files migration. When every run still going is blocked on its lock, the
server is stopped with `-m fast` (every session ends, the blocked transactions and the locks with them), kept down
and started again. Each restart thus lands inside an open transaction of each run, whatever the machine's speed.

Restart 1: the Redis import in its write transaction, the pipeline after planning. Restart 2: the files migration
at its first ledger read, the pipeline after the first scene's render. Further restarts: the files migration at its
next ledger statement (`bulk_files` makes more of them), the pipeline after any new object.

The verdict (`_check`, on a fresh connection): `t2m migrate verify` passes; one jobs row per legacy job, one ledger
row per legacy file, one `file_metadata` row per migrated file and per S3 version, no row listed twice in a batch's
`created_rows`; the job `completed` with one row per object whose version holds its bytes, `job_queue` agreeing,
and every status write on the row: each stage's `metrics.stage_seconds` is the sum of the seconds its steps
reported in their materializations (a lost write is missing, a write applied twice is doubled), `bytes_written` the
objects' total.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import dagster as dg
from sqlalchemy import create_engine, text
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.pool import NullPool

from t2m_pipeline.config import Settings
from t2m_pipeline.db import engine as db_engine
from t2m_pipeline.db.engine import shared_engine
from t2m_pipeline.db.migrate import upgrade
from t2m_pipeline.defs.scenes.partitions import COMBINED_VIDEO, RENDERED_VIDEO, SCENE_CODE, SCENE_OUTLINE, THUMBNAIL
from t2m_pipeline.defs.scenes.resources import pipeline_resources_for
from t2m_pipeline.defs.scenes.sensors import combine_ready_jobs, new_jobs, scene_runs
from t2m_pipeline.migration.batches import created_rows
from t2m_pipeline.storage.s3 import make_s3_client
from t2m_pipeline_tests.defs.scenes.support import (
    apply_partition_requests,
    expected_job_objects,
    insert_job,
    pipeline_defs,
    run_requested,
    sensor_result,
)
from t2m_pipeline_tests.migration.legacy_world import World

REPO = Path(__file__).resolve().parents[2]
STAGE_OF_ASSET = {
    SCENE_OUTLINE: "planning",
    SCENE_CODE: "code_generation",
    RENDERED_VIDEO: "rendering",
    THUMBNAIL: "thumbnails",
    COMBINED_VIDEO: "combining",
}
RETRY_MESSAGE = "database unavailable ("  # what `in_transaction` logs before each retry
# The CLI with `in_transaction`'s retry window changed (0: off), for the control: same code, same arguments.
NO_RETRY_CLI = (
    "import sys; from t2m_pipeline.db.engine import in_transaction; "
    "in_transaction.__kwdefaults__['max_seconds'] = float(sys.argv[1]); "
    "from t2m_pipeline.cli import main; main(sys.argv[2:])"
)


@dataclass
class RunsRestartReport:
    restarts: int = 0
    outage_seconds: float = 0.0
    seconds: float = 0.0
    hits: list[str] = field(default_factory=list)  # per restart: the statements each run was blocked in
    pipeline_hit: int = 0  # restarts that landed inside a pipeline transaction
    migration_hit: int = 0  # ... inside a migration transaction
    pipeline_db_retries: int = 0  # transactions `in_transaction` re-ran in the pipeline
    migration_db_retries: int = 0  # ... in the migration processes (their log lines)
    migration_exit_codes: dict[str, list[int]] = field(default_factory=dict)  # command -> exit codes, reruns appended
    migration_errors: list[str] = field(default_factory=list)  # stderr's last line of each non-zero exit
    reruns: list[str] = field(default_factory=list)
    migration_reports: dict[str, dict] = field(default_factory=dict)
    verify: dict | None = None
    verify_exit_code: int | None = None
    runs_succeeded: list[bool] = field(default_factory=list)
    step_troubles: list[str] = field(default_factory=list)  # failed step attempts (retried by Dagster or final)
    pipeline_errors: list[str] = field(default_factory=list)  # raised by a sensor or the driver itself
    job_status: str | None = None
    figures: dict = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)


# -- freezing a run at its next statement ------------------------------------------------------------------------


class _Freeze:
    """A lock held in a transaction of its own; the sessions blocked on it are the run it freezes."""

    def __init__(self, engine, what: str, statement: str, params: dict | None = None):
        self.what = what
        self.conn = engine.connect()
        self.pid = self.conn.execute(text("SELECT pg_backend_pid()")).scalar_one()
        self.conn.execute(text(statement), params or {})

    def close(self) -> None:
        try:
            self.conn.close()
        except Exception:  # noqa: BLE001 - the restart killed it
            pass


def _blocked(monitor, pid: int) -> list[str]:
    """The statements of the sessions waiting for `pid`'s locks."""
    try:
        with monitor.connect() as conn:
            return list(
                conn.execute(
                    text("SELECT left(regexp_replace(query, '\\s+', ' ', 'g'), 90) FROM pg_stat_activity "
                         "WHERE application_name = 't2m_pipeline' AND :p = ANY(pg_blocking_pids(pid))"),
                    {"p": pid},
                ).scalars()
            )
    except SQLAlchemyError:
        return []


def _poll(condition: Callable[[], bool], until: float, interval: float = 0.05) -> bool:
    while time.monotonic() < until:
        if condition():
            return True
        time.sleep(interval)
    return condition()


@contextmanager
def _db_retry_window(seconds: float | None):
    """`in_transaction`'s retry window for every caller in this process (None: the platform's default)."""
    defaults = db_engine.in_transaction.__kwdefaults__
    saved = dict(defaults)
    if seconds is not None:
        defaults["max_seconds"] = seconds
    try:
        yield
    finally:
        defaults.update(saved)


class _CountRetries(logging.Handler):
    def __init__(self):
        super().__init__()
        self.count = 0

    def emit(self, record):
        if RETRY_MESSAGE in record.getMessage():
            self.count += 1


# -- the two runs --------------------------------------------------------------------------------------------------


def _step_troubles(outcomes) -> list[str]:
    kinds = {dg.DagsterEventType.STEP_RESTARTED, dg.DagsterEventType.STEP_FAILURE, dg.DagsterEventType.STEP_UP_FOR_RETRY}
    out = []
    for outcome in outcomes:
        for event in outcome.all_events:
            if event.event_type in kinds:
                error, chain = getattr(event.event_specific_data, "error", None), []
                while error is not None:  # a retry request wraps what the step raised, which wraps its cause
                    chain.append(error)
                    error = error.cause
                raised = [e for e in chain if e.cls_name not in ("RetryRequestedFromPolicy", "DagsterExecutionStepExecutionError")]
                message = " <- ".join(e.cls_name for e in raised) or "no error"
                if raised:
                    message += ": " + raised[0].message.strip().splitlines()[0][:200]
                out.append(f"{event.step_key} {event.event_type.value}: {message}")
    return out


def _stage_seconds(outcomes) -> dict[str, float]:
    """Seconds per stage as the assets reported them in their materializations (what the status writes added)."""
    seconds: Counter = Counter()
    for outcome in outcomes:
        for event in outcome.all_events:
            if event.event_type == dg.DagsterEventType.ASSET_MATERIALIZATION:
                materialization = event.event_specific_data.materialization
                stage = STAGE_OF_ASSET.get(materialization.asset_key)
                if stage:
                    seconds[stage] += materialization.metadata["seconds"].value
    return dict(seconds)


def _drive_pipeline(defs, instance, resources, job_partition: str, report: RunsRestartReport) -> list:
    """What the daemon would do for the job: each sensor's requests for it run in process; stops at a failed run."""
    outcomes: list = []

    def ours(requests, prefix):
        """The requests for the job: its partition, or a range that starts at one of its scenes."""
        return [r for r in requests if (r.partition_key or r.tags.get("dagster/asset_partition_range_start") or "").startswith(prefix)]

    def run_all(name, requests) -> bool:
        for request in requests:
            outcomes.append(run_requested(defs, instance, name, request))
            if not outcomes[-1].success:
                return False
        return True

    try:
        tick = sensor_result(new_jobs, instance, resources)
        apply_partition_requests(instance, tick)
        mine = ours(tick.run_requests, job_partition)
        if len(tick.run_requests) != 1 or len(mine) != 1:
            report.problems.append(f"new_jobs requested {len(tick.run_requests)} run(s), {len(mine)} for the job")
        if run_all("plan_job", mine):
            scenes = ours(sensor_result(scene_runs, instance, resources).run_requests, job_partition)
            if run_all("render_scenes", scenes):
                run_all("combine_scenes", ours(sensor_result(combine_ready_jobs, instance, resources).run_requests, job_partition))
    except Exception as exc:  # noqa: BLE001 - recorded: the protected run must have none
        report.pipeline_errors.append(f"{type(exc).__name__}: {str(exc).splitlines()[0][:300] if str(exc) else ''}")
    return outcomes


def _migration_env(settings: Settings, database_url: str) -> dict:
    env = {**os.environ, "T2M_DATABASE_URL": database_url, "T2M_ENV": settings.env, "AWS_REGION": settings.region,
           "AWS_ACCOUNT_ID": settings.account_id}
    if settings.endpoint_url:
        env["AWS_ENDPOINT_URL"] = settings.endpoint_url
    env.pop("T2M_REDIS_URL", None)
    env.pop("T2M_LEGACY_REDIS_MIRROR", None)
    return env


def _cli(args: list[str], env: dict, db_retry_seconds: float | None, timeout: float) -> subprocess.CompletedProcess:
    if db_retry_seconds is None:
        command = [sys.executable, "-m", "t2m_pipeline.cli", *args]
    else:
        command = [sys.executable, "-c", NO_RETRY_CLI, str(db_retry_seconds), *args]
    return subprocess.run(command, env=env, cwd=REPO, capture_output=True, text=True, timeout=timeout, check=False)


def _last_line(stderr: str) -> str:
    lines = [line for line in stderr.strip().splitlines() if line.strip()]
    return lines[-1][:300] if lines else ""


def _run_migration(
    world: World, env: dict, report: RunsRestartReport, db_retry_seconds: float | None, rerun: bool, timeout: float
) -> None:
    """`t2m migrate redis`, then `t2m migrate files`; a command that exits non-zero is re-run once (with `rerun`)."""
    # the control's retry window is patched into the CLI's own process only: its Redis migration runs in that one
    commands = {
        "redis": ["migrate", "redis", "--redis-url", world.redis_url, "--json", *(["--processes", "1"] if db_retry_seconds is not None else [])],
        "files": ["migrate", "files", "--legacy-root", str(world.root), "--json"],
    }
    for name, args in commands.items():
        attempts = 2 if rerun else 1
        for attempt in range(attempts):
            result = _cli(args, env, db_retry_seconds, timeout)
            report.migration_exit_codes.setdefault(name, []).append(result.returncode)
            report.migration_db_retries += result.stderr.count(RETRY_MESSAGE)
            if result.returncode == 0:
                try:
                    report.migration_reports[name] = json.loads(result.stdout)
                except ValueError:
                    report.problems.append(f"migrate {name}: no JSON report on stdout")
                break
            report.migration_errors.append(f"migrate {name} exited {result.returncode}: {_last_line(result.stderr)}")
            if "Traceback" in result.stderr:
                report.problems.append(f"migrate {name} printed a traceback, not a one-line error")
            if attempt + 1 < attempts:
                report.reruns.append(name)
        else:
            return  # it failed (and its rerun, if any): the files migration needs the Redis import


# -- the scenario ----------------------------------------------------------------------------------------------


def run_restart_during_runs(
    cluster,
    settings: Settings,
    world: World,
    *,
    restarts: int = 2,
    outage_seconds: float = 1.0,
    scenes: int = 2,
    bulk_files: int = 0,
    db_retry: bool = True,
    rerun_failed_migration: bool = True,
    freeze_timeout: float = 90.0,
    run_timeout: float = 600.0,
) -> RunsRestartReport:
    """Restart the server `restarts` times while `t2m migrate redis` + `files` (over `world`) and a `scenes`-scene
    pipeline job run, then check what they left: nothing lost, nothing doubled, every status write reflected.

    `cluster` is a `PrivatePostgres` (a fresh database is created on it); `settings` point at an S3 endpoint with
    the four buckets bootstrapped (empty is best: the checks read every version of the migrated keys). `bulk_files`
    small files are added to the tree first: a longer files migration (500 files a chunk, two ledger writes each)
    for restarts beyond the second. `db_retry=False` is the control: `in_transaction`'s retry window is 0 in this
    process and in the CLI processes, and nothing is re-run.
    """
    report = RunsRestartReport()
    if bulk_files:
        bulk = world.root / "output" / f"bulk_topic_{world.tag}" / "scene1" / "subplans"
        bulk.mkdir(parents=True, exist_ok=True)
        for i in range(bulk_files):
            (bulk / f"note_{i:05d}.txt").write_bytes(f"note {i}\n".encode() * 20)
    retry_seconds = None if db_retry else 0.0
    rerun = rerun_failed_migration and db_retry
    database_url = cluster.url(f"t2m_runs_{uuid.uuid4().hex[:10]}")
    upgrade(database_url)
    monitor = create_engine(database_url, poolclass=NullPool)
    locks = create_engine(database_url, poolclass=NullPool)
    user_id, job_id = insert_job(
        monitor, topic="Pythagorean theorem", configuration={"scene_count": scenes, "quality": "low"},
        clerk_id=f"user_runs_{uuid.uuid4().hex[:10]}",
    )
    job_partition = f"{user_id}/{job_id}"
    env = _migration_env(settings, database_url)
    resources = pipeline_resources_for(dataclasses.replace(settings, database_url=database_url))

    pipeline_done, migration_done = threading.Event(), threading.Event()
    coordinator_errors: list[str] = []

    def job_objects(file_type: str | None = None) -> int:
        try:
            with monitor.connect() as conn:
                return conn.execute(
                    text("SELECT count(*) FROM file_metadata WHERE job_id = :j "
                         "AND (CAST(:t AS text) IS NULL OR file_type = CAST(:t AS text))"),
                    {"j": job_id, "t": file_type},
                ).scalar_one()
        except SQLAlchemyError:
            return 0

    # Restart 1's migration lock is taken before the migration starts: its Redis import then waits at quarantine.
    first_migration_freeze = _Freeze(locks, "migration", "LOCK TABLE migration_quarantine IN ACCESS EXCLUSIVE MODE")

    def migration_progress() -> tuple:
        """Every write transaction of the migration appends to its batch's created rows or finishes the batch
        (read from `migration_batches`, which the scenario never locks: the ledger may be locked right now)."""
        try:
            with monitor.connect() as conn:
                return tuple(conn.execute(
                    text("SELECT b.status, (SELECT count(*) FROM migration_batch_rows r WHERE r.batch_id = b.id) "
                         "FROM migration_batches b ORDER BY b.started_at, b.id")
                ).all())
        except SQLAlchemyError:
            return ()

    def coordinate() -> None:
        seen_objects, seen_migration = 0, ()
        freezes: list[_Freeze] = [first_migration_freeze]
        try:
            for k in range(1, restarts + 1):
                if pipeline_done.is_set() and migration_done.is_set():
                    break
                deadline = time.monotonic() + freeze_timeout
                if k > 2:  # the migration's statement after the one the last restart cut
                    _poll(lambda: migration_done.is_set() or migration_progress() not in ((), seen_migration), deadline)
                if k > 1 and not migration_done.is_set():
                    freezes.append(_Freeze(locks, "migration", "LOCK TABLE migration_ledger IN ACCESS EXCLUSIVE MODE"))
                if k == 1:
                    ready = lambda: job_objects("scene_outline") > 0  # noqa: E731 - planned
                elif k == 2:
                    ready = lambda: job_objects("scene_video") > 0  # noqa: E731 - a scene rendered
                else:
                    ready = lambda: job_objects() > seen_objects  # noqa: E731 - any progress since the last restart
                _poll(lambda: pipeline_done.is_set() or ready(), deadline)
                if not pipeline_done.is_set():
                    freezes.append(_Freeze(locks, "pipeline", "SELECT 1 FROM jobs WHERE id = :j FOR UPDATE", {"j": job_id}))
                done = {"migration": migration_done, "pipeline": pipeline_done}
                blocked: dict[str, list[str]] = {}

                def all_blocked() -> bool:
                    for f in freezes:
                        blocked[f.what] = _blocked(monitor, f.pid)
                    return all(blocked[f.what] or done[f.what].is_set() for f in freezes)

                _poll(all_blocked, deadline)
                hit = {what: statements for what, statements in blocked.items() if statements}
                report.pipeline_hit += "pipeline" in hit
                report.migration_hit += "migration" in hit
                report.hits.append(
                    f"restart {k}: " + "; ".join(f"{what} in {statements[0]!r}" for what, statements in sorted(hit.items()))
                    if hit else f"restart {k}: no run was inside a transaction"
                )
                seen_objects, seen_migration = job_objects(), migration_progress()
                cluster.restart(outage_seconds=outage_seconds)
                report.restarts += 1
                report.outage_seconds += outage_seconds
                for f in freezes:
                    f.close()
                freezes = []
        except Exception as exc:  # noqa: BLE001 - reported; the runs carry on
            coordinator_errors.append(f"{type(exc).__name__}: {exc}")
        finally:
            for f in freezes:  # never leave a run waiting on a lock
                f.close()

    def migrate() -> None:
        try:
            _run_migration(world, env, report, retry_seconds, rerun, run_timeout)
        except Exception as exc:  # noqa: BLE001
            report.problems.append(f"migration harness: {type(exc).__name__}: {exc}")
        finally:
            migration_done.set()

    counter = _CountRetries()
    engine_log = logging.getLogger(db_engine.__name__)
    engine_log.addHandler(counter)
    started = time.monotonic()
    outcomes: list = []
    migration = threading.Thread(target=migrate, name="restart-migration", daemon=True)
    coordinator = threading.Thread(target=coordinate, name="restart-coordinator", daemon=True)
    try:
        with _db_retry_window(retry_seconds), dg.instance_for_test() as instance:
            migration.start()
            coordinator.start()
            try:
                outcomes = _drive_pipeline(pipeline_defs(resources), instance, resources, job_partition, report)
            finally:
                pipeline_done.set()
            coordinator.join(run_timeout)
            migration.join(run_timeout)
            report.seconds = time.monotonic() - started
            report.runs_succeeded = [o.success for o in outcomes]
            report.step_troubles = _step_troubles(outcomes)
            stage_seconds = _stage_seconds(outcomes)
    finally:
        engine_log.removeHandler(counter)
        pipeline_done.set()
        first_migration_freeze.close()
    report.pipeline_db_retries = counter.count
    report.problems += [f"coordinator: {e}" for e in coordinator_errors]
    if migration.is_alive() or coordinator.is_alive():
        report.problems.append("a run or the coordinator did not finish in time")

    try:
        if report.migration_reports.get("files"):
            result = _cli(["migrate", "verify", "--legacy-root", str(world.root), "--json"], env, None, run_timeout)
            report.verify_exit_code = result.returncode
            try:
                report.verify = json.loads(result.stdout)
            except ValueError:
                report.problems.append(f"migrate verify printed no JSON: {_last_line(result.stderr)}")
        _check(report, settings, monitor, world, user_id, job_id, scenes, stage_seconds)
    finally:
        monitor.dispose()
        locks.dispose()
        shared_engine(database_url).dispose()
    return report


# -- the verdict ------------------------------------------------------------------------------------------------


def _check(report: RunsRestartReport, settings: Settings, engine, world: World, user_id: str, job_id: str, scenes: int,
           stage_seconds: dict[str, float]) -> None:
    """Nothing lost, nothing doubled: on a fresh connection, after both runs."""
    problems = report.problems
    legacy_jobs = [uuid.UUID(j) for j in world.jobs.values()]
    with engine.connect() as conn:
        # -- the migration: one jobs row per legacy job, one ledger row per legacy file, each version recorded once
        jobs_total = conn.execute(text("SELECT count(*) FROM jobs")).scalar_one()
        legacy_rows = conn.execute(text("SELECT count(*) FROM jobs WHERE id = ANY(:ids)"), {"ids": legacy_jobs}).scalar_one()
        if report.migration_reports.get("redis") and (legacy_rows, jobs_total) != (len(legacy_jobs), len(legacy_jobs) + 1):
            problems.append(f"{legacy_rows} rows for {len(legacy_jobs)} legacy jobs, {jobs_total} jobs rows in all")
        queue_dupes = conn.execute(text("SELECT count(*) - count(DISTINCT job_id) FROM job_queue")).scalar_one()
        queued_legacy = conn.execute(
            text("SELECT count(*) FROM jobs j WHERE j.id = ANY(:ids) AND j.status = 'held' AND NOT j.is_deleted "
                 "AND NOT EXISTS (SELECT 1 FROM job_queue q WHERE q.job_id = j.id)"),
            {"ids": legacy_jobs},
        ).scalar_one()
        if queue_dupes or queued_legacy:
            problems.append(f"job_queue: {queue_dupes} duplicate rows, {queued_legacy} held legacy jobs without a row")
        ledger = conn.execute(
            text("SELECT count(*) AS n, count(DISTINCT legacy_path) AS paths, count(file_metadata_id) AS fm, "
                 "count(DISTINCT file_metadata_id) AS fm_distinct, count(*) FILTER (WHERE outcome = 'migrated') AS migrated "
                 "FROM migration_ledger")
        ).one()
        legacy_file_rows = conn.execute(text("SELECT count(*) FROM file_metadata WHERE metadata ? 'legacy_path'")).scalar_one()
        version_dupes = conn.execute(
            text("SELECT count(*) - count(DISTINCT (s3_bucket, s3_key, version_id)) FROM file_metadata")
        ).scalar_one()
        batches = [
            (b.source, b.status, created_rows(conn, b.id))
            for b in conn.execute(text("SELECT id, source, status FROM migration_batches ORDER BY started_at")).all()
        ]
        # -- the pipeline job: its row, its queue row, its objects
        job = conn.execute(
            text("SELECT status, progress_percentage, current_stage, error_info, metrics, started_at, completed_at "
                 "FROM jobs WHERE id = :j"), {"j": job_id}
        ).one()
        queue = conn.execute(text("SELECT status, completed_at FROM job_queue WHERE job_id = :j"), {"j": job_id}).one()
        rows = conn.execute(
            text("SELECT s3_bucket, s3_key, version_id, checksum, file_size FROM file_metadata WHERE job_id = :j"), {"j": job_id}
        ).all()

    if report.migration_reports.get("files"):
        files_in_tree = (report.verify or {}).get("files_in_tree")
        rows_due = (files_in_tree or 0) + (report.verify or {}).get("copies_checked", 0)  # a row per file and per copy
        if not (report.verify_exit_code == 0 and (report.verify or {}).get("ok")):
            problems.append(f"migrate verify failed (exit {report.verify_exit_code}): "
                            f"{[p.get('problem') for p in (report.verify or {}).get('problems', [])][:5]}")
        if (ledger.n, ledger.paths) != (rows_due, rows_due):
            problems.append(f"{ledger.n} ledger rows ({ledger.paths} paths) for {files_in_tree} legacy files")
        if ledger.fm != ledger.fm_distinct or ledger.fm != ledger.migrated or legacy_file_rows != ledger.migrated:
            problems.append(f"{ledger.migrated} migrated ledger rows, {ledger.fm} ({ledger.fm_distinct} distinct) "
                            f"file_metadata ids, {legacy_file_rows} legacy file_metadata rows")
        report.figures.update(legacy_files=files_in_tree, migrated_files=ledger.migrated)
    if version_dupes:
        problems.append(f"{version_dupes} duplicate file_metadata rows for one S3 version")
    for source, runs in report.migration_exit_codes.items():
        statuses = [status for batch_source, status, _ in batches if batch_source == source]
        if report.migration_reports.get(source) and statuses != ["failed"] * (len(runs) - 1) + ["succeeded"]:
            problems.append(f"{source} batches ended {statuses} after {len(runs)} run(s)")
    for source, _, created in batches:
        for name, items in (created or {}).items():
            if len({json.dumps(i, sort_keys=True) for i in items}) != len(items):
                problems.append(f"{source} batch: created_rows.{name} lists a row twice")
    report.figures.update(legacy_jobs=len(legacy_jobs), batches=len(batches))

    report.job_status = job.status
    if (job.status, float(job.progress_percentage), job.current_stage, job.error_info) != ("completed", 100.0, "completed", None):
        problems.append(f"job ended {job.status} at {job.progress_percentage}% ({job.current_stage}), error {job.error_info}")
    if (queue.status, queue.completed_at is not None) != (job.status, job.completed_at is not None) or job.started_at is None:
        problems.append(f"job_queue says {queue.status}, jobs says {job.status}")
    expected = expected_job_objects(settings, user_id, job_id, scenes)
    if {(r.s3_bucket, r.s3_key) for r in rows} != expected or len(rows) != len(expected):
        problems.append(f"{len(rows)} file_metadata rows for the job's {len(expected)} objects")
    oracle = make_s3_client(settings)
    for r in rows:
        body = oracle.get_object(Bucket=r.s3_bucket, Key=r.s3_key, VersionId=r.version_id)["Body"].read()
        if (hashlib.sha256(body).hexdigest(), len(body)) != (r.checksum, r.file_size):
            problems.append(f"{r.s3_key}: the recorded version holds other bytes")
    # every status write is on the row: each step's seconds added once to its stage, the bytes of every object
    metrics = job.metrics or {}
    recorded = metrics.get("stage_seconds") or {}
    for stage in sorted(set(stage_seconds) | set(recorded)):
        if abs(recorded.get(stage, 0) - stage_seconds.get(stage, 0)) > 0.01:
            problems.append(f"stage_seconds.{stage} is {recorded.get(stage)}, the steps took {round(stage_seconds.get(stage, 0), 3)}")
    if report.runs_succeeded and all(report.runs_succeeded) and set(stage_seconds) != set(STAGE_OF_ASSET.values()):
        problems.append(f"materializations for stages {sorted(stage_seconds)} only")
    if metrics.get("bytes_written") != sum(r.file_size for r in rows):
        problems.append(f"metrics.bytes_written {metrics.get('bytes_written')}, the objects hold {sum(r.file_size for r in rows)}")
    report.figures.update(job_objects=len(rows), status_writes=_status_writes(scenes))


def _status_writes(scenes: int) -> int:
    """Status transactions of a clean run: launch; started + succeeded per step (1 + 3 per scene + 1); completed."""
    return 1 + 2 * (2 + 3 * scenes) + 1
