"""Pipeline jobs end to end under S3 faults, as a plain function: `test_pipeline_faults.py` runs it small,
`make reliability` (`t2m_pipeline_tests/faults/reliability_report.py`) larger.

Each job is inserted with plain SQL and driven the way the daemon would (`new_jobs` -> plan_job, `scene_runs` ->
render_scenes for the job's scenes, which combines them, `combine_ready_jobs` -> combine_scenes if it could not, in process), with the pipeline's S3
(`AWS_ENDPOINT_URL`, read by its resources) behind a FaultProxy. Then, reading S3 directly: every `file_metadata`
row's version must hold its checksum's bytes; the duplicate sweep runs (grace 0: nothing is in flight any more);
afterwards no key may hold an unrecorded copy of a recorded version's bytes below its current version (one on top is
counted in `identical_on_top`: the sweep never changes what a key serves), and each key's current version should be
its newest row's (`stale_latest` lists those that are not).
"""

from __future__ import annotations

import dataclasses
import hashlib
import time
from dataclasses import dataclass, field
from datetime import timedelta

import dagster as dg

from t2m_pipeline.db.engine import make_engine
from t2m_pipeline.defs.scenes.resources import pipeline_resources_for
from devtools.fault_proxy import FaultPlan, FaultProxy
from t2m_pipeline.storage.s3 import S3Storage, make_s3_client
from t2m_pipeline_tests.defs.scenes.support import (
    drive_job,
    expected_job_objects,
    file_rows,
    insert_job,
    job_row,
    pipeline_defs,
)

TROUBLE = {dg.DagsterEventType.STEP_RESTARTED, dg.DagsterEventType.STEP_FAILURE, dg.DagsterEventType.STEP_UP_FOR_RETRY}


@dataclass
class PipelineFaultReport:
    jobs: int
    scenes: int
    completed: int = 0
    runs: int = 0
    runs_failed: int = 0
    step_troubles: list[str] = field(default_factory=list)  # step attempts that failed: faults past the storage layer
    rows: int = 0
    problems: list[str] = field(default_factory=list)  # rows missing or not holding their bytes, identical extras
    unrecorded_left: int = 0  # versions without a row after the sweep (other bytes: a re-render whose write failed)
    identical_on_top: int = 0  # unrecorded copies of recorded bytes left as a key's current version
    removed_by_sweep: int = 0
    stale_latest: list[str] = field(default_factory=list)  # keys whose current version is not the newest row's
    proxy: dict = field(default_factory=dict)
    seconds: float = 0.0


def _error_chain(event) -> str:
    """The messages of a failed step's error and its causes (the storage error is a cause of Dagster's retry)."""
    error, messages = getattr(event.event_specific_data, "error", None), []
    while error is not None:
        messages.append(error.message.strip())
        error = error.cause or error.context
    return " <- ".join(messages)


def run_pipeline_fault_scenario(
    settings, plan: FaultPlan, *, jobs: int = 1, scenes: int = 2, s3_max_attempts: int | None = None
) -> PipelineFaultReport:
    """`settings` name the moto server (buckets bootstrapped) and the pipeline's emptied database; the pipeline's
    resources are built from them with the endpoint moved to the fault proxy."""
    engine = make_engine(settings.database_url)
    report = PipelineFaultReport(jobs, scenes)
    started = time.monotonic()
    made: list[tuple[str, str]] = []
    with FaultProxy(settings.endpoint_url, plan) as proxy:
        faulty = dataclasses.replace(settings, endpoint_url=proxy.url, s3_max_attempts=s3_max_attempts or settings.s3_max_attempts)
        resources = pipeline_resources_for(faulty)
        with dg.instance_for_test() as instance:
            defs = pipeline_defs(resources)
            for _ in range(jobs):
                user_id, job_id = insert_job(engine, configuration={"scene_count": scenes, "quality": "low"})
                made.append((user_id, job_id))
                outcomes = drive_job(defs, instance, resources)
                report.runs += len(outcomes)
                report.runs_failed += sum(not o.success for o in outcomes)
                report.step_troubles += [
                    f"{e.step_key}: {e.event_type_value}: {_error_chain(e)}"
                    for o in outcomes for e in o.all_events if e.event_type in TROUBLE
                ]
        proxy.wait_idle(plan.delay_seconds + 60)
        report.proxy = proxy.stats.as_dict()
    oracle, sweeper = make_s3_client(settings), S3Storage(settings, engine)
    for user_id, job_id in made:
        job = job_row(engine, job_id)
        report.completed += job["status"] == "completed" and float(job["progress_percentage"]) == 100.0
        rows = file_rows(engine, job_id)
        report.rows += len(rows)
        missing = expected_job_objects(settings, user_id, job_id, scenes) - {(r["s3_bucket"], r["s3_key"]) for r in rows}
        if job["status"] == "completed" and missing:
            report.problems.append(f"job {job_id} completed without rows for {sorted(missing)}")
        for row in rows:
            body = oracle.get_object(Bucket=row["s3_bucket"], Key=row["s3_key"], VersionId=row["version_id"])["Body"].read()
            if (hashlib.sha256(body).hexdigest(), len(body)) != (row["checksum"], row["file_size"]):
                report.problems.append(f"{row['s3_key']}?versionId={row['version_id']} does not hold its row's bytes")
        for bucket, key in sorted({(r["s3_bucket"], r["s3_key"]) for r in rows}):
            report.removed_by_sweep += len(sweeper.remove_duplicate_versions(bucket, key, grace=timedelta(0)))
            of_key = [r for r in rows if (r["s3_bucket"], r["s3_key"]) == (bucket, key)]
            recorded = {r["version_id"]: r["checksum"] for r in of_key}
            versions = [v for v in oracle.list_object_versions(Bucket=bucket, Prefix=key).get("Versions", []) if v["Key"] == key]
            for version in versions:
                if version["VersionId"] in recorded:
                    continue
                report.unrecorded_left += 1
                body = oracle.get_object(Bucket=bucket, Key=key, VersionId=version["VersionId"])["Body"].read()
                if hashlib.sha256(body).hexdigest() not in recorded.values():
                    continue
                if version["IsLatest"]:
                    report.identical_on_top += 1  # the sweep never changes what a key serves; the audit reports it
                else:
                    report.problems.append(f"{key}: an identical extra version is left")
            latest = next((v for v in versions if v["IsLatest"]), None)
            newest = max(of_key, key=lambda r: r["created_at"])
            if latest is None or latest["VersionId"] != newest["version_id"]:
                report.stale_latest.append(key)
    engine.dispose()
    report.seconds = time.monotonic() - started
    return report


@dataclass
class RedisOutageReport:
    jobs: int
    scenes: int
    completed: int = 0
    runs_failed: int = 0
    steps_failed: int = 0
    pending_after_runs: int = 0  # mirror writes waiting in the run workers' queue when the runs ended
    cursor_held: bool = False  # the resync sensor did not move past what it could not write
    mirrored: int = 0  # written by the resync sensor once Redis was back
    records_right: int = 0  # legacy records showing the job's final status and progress
    run_seconds: float = 0.0
    seconds: float = 0.0


def resync_tick(instance, resources, cursor):
    """One tick of the `legacy_mirror_resync` sensor: (its result, its cursor after)."""
    from t2m_pipeline.defs.migration.sensors import legacy_mirror_resync

    with dg.build_sensor_context(instance=instance, resources=resources, cursor=cursor) as context:
        result = legacy_mirror_resync(context)
        return result, (result.cursor if isinstance(result, dg.SensorResult) else context.cursor)


def rows_written(result) -> int:
    """What a resync tick wrote: its materialization's count (a skipped tick wrote nothing)."""
    if not isinstance(result, dg.SensorResult):
        return 0
    (event,) = result.asset_events
    return event.metadata["written"].value


def run_redis_outage_scenario(settings, *, jobs: int = 1, scenes: int = 2) -> RedisOutageReport:
    """Pipeline jobs run with the legacy mirror on and its Redis stopped; then Redis comes back (empty) and the
    `legacy_mirror_resync` sensor ticks. The run workers' in-process retry queue is dropped first, as it is when
    their processes end. S3 is `settings`' endpoint, without faults."""
    import json

    import redis

    from devtools.private_redis import PrivateRedis
    from t2m_pipeline.migration import mirror
    from t2m_pipeline.migration.mirror import RESYNC_BATCH

    engine = make_engine(settings.database_url)
    report = RedisOutageReport(jobs, scenes)
    started = time.monotonic()
    mirror._pending.clear()
    mirror._clients.clear()
    made = []
    with PrivateRedis() as server:
        resources = pipeline_resources_for(dataclasses.replace(settings, legacy_redis_mirror=True, redis_url=server.url(0)))
        with dg.instance_for_test() as instance:
            _, cursor = resync_tick(instance, resources, None)
            server.stop()
            defs = pipeline_defs(resources)
            for _ in range(jobs):
                made.append(insert_job(engine, configuration={"scene_count": scenes, "quality": "low"})[1])
                outcomes = drive_job(defs, instance, resources)
                report.runs_failed += sum(not o.success for o in outcomes)
                report.steps_failed += sum(
                    e.event_type == dg.DagsterEventType.STEP_FAILURE for o in outcomes for e in o.all_events
                )
            report.run_seconds = time.monotonic() - started
            report.pending_after_runs = mirror.pending_count()
            _, down_cursor = resync_tick(instance, resources, cursor)
            report.cursor_held = down_cursor == cursor
            mirror._pending.clear()  # the run workers are gone, and their queues with them
            server.start()
            cursor = down_cursor
            while True:  # ticks until one is not full (the sensor's batch bounds each tick)
                result, cursor = resync_tick(instance, resources, cursor)
                written = rows_written(result)
                report.mirrored += written
                if written < RESYNC_BATCH:
                    break
            client = redis.Redis.from_url(server.url(0))
            for job_id in made:
                job = job_row(engine, job_id)
                report.completed += job["status"] == "completed"
                raw = client.get(f"jobs:{job_id}")
                record = json.loads(raw) if raw else {}
                report.records_right += (record.get("status"), (record.get("progress") or {}).get("percentage")) == (
                    job["status"], float(job["progress_percentage"])
                )
    mirror.enable_mirror(dataclasses.replace(settings, legacy_redis_mirror=False))  # this process's next runs: off
    mirror._clients.clear()
    engine.dispose()
    report.seconds = time.monotonic() - started
    return report
