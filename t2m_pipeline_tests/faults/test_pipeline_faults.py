"""A pipeline job end to end (a job row inserted with plain SQL -> sensors -> plan_job, render_scene, combine_scenes
in process) with every S3 request going through the FaultProxy at 20% mixed faults: the job completes, every
`file_metadata` row points at a version holding exactly its checksum's bytes, and after the duplicate sweep each key
holds only its recorded versions. With retries off (`T2M_S3_MAX_ATTEMPTS=1`) the same faults get through to the
steps (Dagster's RetryPolicy then usually completes the job: a second layer, not the one tested here).

With retries off, a write that fails in the storage layer after its request landed, then rewritten by a Dagster step
retry, leaves an unrecorded version with its own write-id: once old enough, `remove_duplicate_versions` removes it
when it holds a recorded version's bytes (a re-render with other bytes is an orphan the objects audit reports).

The pipeline reads its settings from the environment (`S3StorageResource`), so the tests point `AWS_ENDPOINT_URL` at
the proxy in front of this module's private moto server (`fault_settings`).
"""

import hashlib
from datetime import timedelta

import dagster as dg
import pytest

from t2m_pipeline.devtools.fault_proxy import FaultKind, FaultPlan, FaultProxy
from t2m_pipeline.storage import layout
from t2m_pipeline.storage.s3 import S3Storage, make_s3_client
from t2m_pipeline_tests.defs.scenes.support import (  # noqa: F401 - fixtures
    drive_job,
    file_rows,
    insert_job,
    instance,
    job_row,
    pipeline_db_url,
    pipeline_defs,
    pipeline_engine,
    resources,
)

RATE = 0.2
SEED = 39  # its first PutObjects get a late write and a reset after the write: answers lost, writes landed
HELD_SECONDS = 1.0  # a delayed answer / late write is held this long (the pipeline's client waits up to 60 s)
SCENES = 2


def mixed_plan() -> FaultPlan:
    return FaultPlan(rate=RATE, kinds=tuple(FaultKind), seed=SEED, delay_seconds=HELD_SECONDS)


def expected_objects(settings, user_id, job_id, scenes):
    """Every object the layout says a finished job has: (bucket, key)."""
    objects = [(settings.bucket("code"), layout.job_plan_key(user_id, job_id, "scene_outline.json"))]
    for n in range(1, scenes + 1):
        objects += [
            (settings.bucket("code"), layout.scene_code_key(user_id, job_id, n)),
            (settings.bucket("videos"), layout.scene_video_key(user_id, job_id, n)),
            (settings.bucket("thumbnails"), layout.thumbnail_key(user_id, job_id, n)),
        ]
    objects.append((settings.bucket("videos"), layout.combined_video_key(user_id, job_id)))
    return objects


def step_troubles(outcomes):
    """Step attempts that failed (retried by Dagster or final): the faults that got past the storage layer."""
    kinds = {dg.DagsterEventType.STEP_RESTARTED, dg.DagsterEventType.STEP_FAILURE, dg.DagsterEventType.STEP_UP_FOR_RETRY}
    return [e for outcome in outcomes for e in outcome.all_events if e.event_type in kinds]


@pytest.fixture
def through_proxy(fault_settings, monkeypatch):
    """A FaultProxy at 20% mixed faults in front of the private moto server; the pipeline's S3 goes through it."""
    with FaultProxy(fault_settings.endpoint_url, mixed_plan()) as proxy:
        monkeypatch.setenv("AWS_ENDPOINT_URL", proxy.url)
        yield proxy


@pytest.mark.slow
def test_a_job_completes_under_mixed_s3_faults_and_every_row_points_at_its_bytes(
    through_proxy, fault_settings, instance, resources, pipeline_engine
):
    proxy = through_proxy
    user_id, job_id = insert_job(pipeline_engine, configuration={"scene_count": SCENES, "quality": "low"})
    outcomes = drive_job(pipeline_defs(resources), instance, resources)
    assert proxy.wait_idle(HELD_SECONDS + 60)

    # the faults were there, on writes and on other operations
    stats = proxy.stats
    assert stats.injected_total() >= 5, dict(stats.injected)
    landed = stats.injected_total("PutObject", FaultKind.RESET_AFTER) + stats.injected_total("PutObject", FaultKind.LATE_WRITE)
    assert landed >= 1, dict(stats.injected)  # a write landed whose answer was lost: a duplicate to prevent or remove
    # ... and none got past the storage layer: no step attempt failed, every run succeeded, the job is complete
    assert [o.success for o in outcomes] == [True] * (2 + SCENES)
    assert step_troubles(outcomes) == []
    job = job_row(pipeline_engine, job_id)
    assert (job["status"], float(job["progress_percentage"]), job["error_info"]) == ("completed", 100.0, None)

    # every row points at an existing version whose bytes are the row's checksum and size (read directly, no proxy)
    oracle = make_s3_client(fault_settings)
    rows = file_rows(pipeline_engine, job_id)
    assert {(r["s3_bucket"], r["s3_key"]) for r in rows} == set(expected_objects(fault_settings, user_id, job_id, SCENES))
    for row in rows:
        body = oracle.get_object(Bucket=row["s3_bucket"], Key=row["s3_key"], VersionId=row["version_id"])["Body"].read()
        assert (hashlib.sha256(body).hexdigest(), len(body)) == (row["checksum"], row["file_size"]), row["s3_key"]

    # the duplicate sweep (maintenance, run directly) leaves each key exactly its recorded versions
    sweeper = S3Storage(fault_settings, pipeline_engine)
    for bucket, key in sorted({(r["s3_bucket"], r["s3_key"]) for r in rows}):
        sweeper.remove_duplicate_versions(bucket, key)
        versions = [v for v in oracle.list_object_versions(Bucket=bucket, Prefix=key).get("Versions", []) if v["Key"] == key]
        recorded = {r["version_id"] for r in rows if (r["s3_bucket"], r["s3_key"]) == (bucket, key)}
        assert {v["VersionId"] for v in versions} == recorded, key
        contents = [
            hashlib.sha256(oracle.get_object(Bucket=bucket, Key=key, VersionId=v["VersionId"])["Body"].read()).hexdigest()
            for v in versions
        ]
        assert len(contents) == len(set(contents)), f"{key}: identical versions left"
        latest = next(v for v in versions if v["IsLatest"])
        newest_row = max((r for r in rows if (r["s3_bucket"], r["s3_key"]) == (bucket, key)), key=lambda r: r["created_at"])
        assert latest["VersionId"] == newest_row["version_id"], key


@pytest.mark.slow
def test_with_s3_retries_off_the_same_faults_get_through(
    through_proxy, fault_settings, instance, resources, pipeline_engine, monkeypatch
):
    monkeypatch.setenv("T2M_S3_MAX_ATTEMPTS", "1")
    proxy = through_proxy
    _, job_id = insert_job(pipeline_engine, configuration={"scene_count": SCENES, "quality": "low"})
    outcomes = drive_job(pipeline_defs(resources), instance, resources)
    assert proxy.wait_idle(HELD_SECONDS + 60)

    assert proxy.stats.injected_total() >= 1
    troubles = step_troubles(outcomes)
    job = job_row(pipeline_engine, job_id)
    # the fault reached the steps: a step attempt failed on S3 (then Dagster's retry or the job's failure)
    assert troubles or job["status"] == "failed", [o.success for o in outcomes]
    messages = " ".join(str(e.event_specific_data) for e in troubles)
    assert any(word in messages for word in ("Storage", "S3", "SlowDown", "InternalError", "Connection", "timed out")), messages[:2000]

    # the sweep (grace 0: nothing is in flight any more) leaves no unrecorded copy of a recorded version's bytes
    oracle, sweeper = make_s3_client(fault_settings), S3Storage(fault_settings, pipeline_engine)
    rows = file_rows(pipeline_engine, job_id)
    for bucket, key in sorted({(r["s3_bucket"], r["s3_key"]) for r in rows}):
        sweeper.remove_duplicate_versions(bucket, key, grace=timedelta(0))
        recorded = {r["version_id"]: r["checksum"] for r in rows if (r["s3_bucket"], r["s3_key"]) == (bucket, key)}
        for version in oracle.list_object_versions(Bucket=bucket, Prefix=key).get("Versions", []):
            if version["Key"] == key and version["VersionId"] not in recorded:
                body = oracle.get_object(Bucket=bucket, Key=key, VersionId=version["VersionId"])["Body"].read()
                assert hashlib.sha256(body).hexdigest() not in recorded.values(), f"{key}: an identical extra version left"
