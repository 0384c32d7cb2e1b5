"""The maintenance jobs, run in-process with the real resources against a metadata database and buckets of their own,
and the checks the sensor launches after each: a check fails (at its severity) on what is wrong and passes once the
maintenance, or a human, has put it right."""

import dataclasses
import random
import uuid
from datetime import datetime, timedelta

import dagster as dg
import pytest
from sqlalchemy import text

from devtools.dagster_daemon import daemon_databases
from t2m_pipeline.audits import temp_cleanup
from t2m_pipeline.config import load_settings
from t2m_pipeline.db.engine import in_transaction, shared_engine
from t2m_pipeline.db.job_state import transition
from t2m_pipeline.db.jobs import submit_job
from t2m_pipeline.db.users import ensure_user
from t2m_pipeline.defs.audits.checks import AUDIT_CHECKS, audit_checks_job
from t2m_pipeline.defs.audits.maintenance import MAINTENANCE_JOBS
from t2m_pipeline.defs.audits.sensors import MAINTENANCE_RUN_TAG, checks_after_maintenance
from t2m_pipeline.defs.resources import resources_for
from t2m_pipeline.defs.storage.assets import (
    JOBS_PARTITION_SET,
    JOBS_TABLE,
    S3_BUCKETS,
    SCENES_PARTITION_SET,
    STORED_OBJECTS,
    TEMP_BUCKET,
)
from t2m_pipeline.partition_keys import encode_job_key, encode_scene_key
from t2m_pipeline.storage import layout
from t2m_pipeline.storage.bootstrap import bootstrap_bucket
from t2m_pipeline.storage.bucket_settings import declared_buckets
from t2m_pipeline.storage.s3 import ObjectOwner, S3Storage, make_s3_client

WARN, ERROR = dg.AssetCheckSeverity.WARN, dg.AssetCheckSeverity.ERROR


@pytest.fixture
def metadata_db(service_env):
    """A metadata database of its own: the jobs checks judge every row, and the shared one has other tests' jobs."""
    with daemon_databases("t2m_audits") as (engine, url, _):
        yield engine, url
        shared_engine(url).dispose()


@pytest.fixture
def engine(metadata_db):
    return metadata_db[0]


@pytest.fixture
def s3(service_env):
    """The session's settings on buckets of another account (the resources are built from them)."""
    account = "3" + "".join(random.choice("0123456789") for _ in range(11))
    settings = dataclasses.replace(load_settings(), account_id=account)
    client = make_s3_client(settings)
    for spec in declared_buckets(settings):
        bootstrap_bucket(client, spec, settings.region)
    return settings, client


@pytest.fixture
def defs(metadata_db, s3):
    resources = resources_for(dataclasses.replace(s3[0], database_url=metadata_db[1]))
    return dg.Definitions(
        assets=[S3_BUCKETS, STORED_OBJECTS, TEMP_BUCKET, JOBS_TABLE, JOBS_PARTITION_SET, SCENES_PARTITION_SET],
        asset_checks=AUDIT_CHECKS,
        jobs=[audit_checks_job, *MAINTENANCE_JOBS],
        sensors=[checks_after_maintenance],
        resources=resources,
    )


@pytest.fixture
def instance():
    with dg.instance_for_test() as instance:
        yield instance


def maintain(defs, instance, job_name, config=None) -> dg.ExecuteInProcessResult:
    result = defs.resolve_job_def(job_name).execute_in_process(instance=instance, run_config=config or {})
    assert result.success
    return result


def run_checks(defs, instance, check_keys) -> dict[str, dg.AssetCheckEvaluation]:
    job = defs.resolve_job_def("audit_checks").get_subset(asset_check_selection=set(check_keys))
    result = job.execute_in_process(instance=instance)
    return {f"{e.asset_key.to_user_string()}:{e.check_name}": e for e in result.get_asset_check_evaluations()}


def checks_after(defs, instance, result) -> dict[str, dg.AssetCheckEvaluation]:
    """The checks the sensor launches after this maintenance run, run as the daemon would launch them."""
    with dg.build_run_status_sensor_context(
        sensor_name="checks_after_maintenance", dagster_event=result.get_run_success_event(),
        dagster_instance=instance, dagster_run=result.dagster_run,
    ) as context:
        request = checks_after_maintenance(context)
    assert request.run_key == result.run_id and request.tags[MAINTENANCE_RUN_TAG] == result.run_id
    return run_checks(defs, instance, request.asset_check_keys)


def observed(instance, spec) -> dict:
    [record] = instance.fetch_observations(spec.key, limit=1).records
    return record.asset_observation.metadata


def new_job(engine, status="queued") -> tuple[uuid.UUID, uuid.UUID]:
    job_id = submit_job(engine, clerk_user_id=f"user_{uuid.uuid4().hex[:8]}", email="a@b.c", topic="Audit", context="c")
    if status == "processing":
        transition(engine, job_id, "processing", stage="rendering", progress=40)
    with engine.connect() as conn:
        user_id = conn.execute(text("SELECT user_id FROM jobs WHERE id = :j"), {"j": job_id}).scalar_one()
    return user_id, job_id


def sql(engine, statement: str, **params) -> None:
    in_transaction(engine, lambda c: c.execute(text(statement), params))


def job_state(engine, job_id) -> tuple:
    with engine.connect() as conn:
        return tuple(conn.execute(
            text("SELECT j.status, j.error_info ->> 'reason', q.status FROM jobs j JOIN job_queue q ON q.job_id = j.id WHERE j.id = :j"),
            {"j": job_id},
        ).one())


def test_stuck_jobs_repair_fails_the_stuck_job_resyncs_the_queue_and_its_checks_then_pass(defs, instance, engine):
    _, stuck = new_job(engine, "processing")
    sql(engine, "UPDATE jobs SET updated_at = now() - interval '5 hours' WHERE id = :j", j=stuck)
    sql(engine, "UPDATE job_queue SET processing_started_at = now() - interval '5 hours' WHERE job_id = :j", j=stuck)
    _, mismatched = new_job(engine)
    sql(engine, "UPDATE job_queue SET status = 'processing' WHERE job_id = :j", j=mismatched)

    # Report only: the job stays stuck and the queue row wrong, and the checks (which judge the data) say so.
    report_only = {"ops": {"settle_stuck_jobs": {"config": {"stuck_policy": "report", "fix_queue": False}}}}
    checks = checks_after(defs, instance, maintain(defs, instance, "stuck_jobs_repair", report_only))
    assert set(checks) == {"jobs_table:no_stuck_jobs", "jobs_table:job_queue_consistent"}
    for check, count in (("no_stuck_jobs", "stuck_jobs"), ("job_queue_consistent", "inconsistent_queue_rows")):
        evaluation = checks[f"jobs_table:{check}"]
        assert not evaluation.passed and evaluation.severity == WARN and evaluation.metadata[count].value == 1
    assert job_state(engine, stuck) == ("processing", None, "processing")

    result = maintain(defs, instance, "stuck_jobs_repair")
    assert job_state(engine, stuck) == ("failed", "stuck", "failed")
    assert job_state(engine, mismatched) == ("queued", None, "queued")
    assert observed(instance, JOBS_TABLE)["fixed"].value == 2
    [output] = [e for e in result.all_events if e.event_type == dg.DagsterEventType.STEP_OUTPUT]
    assert output.event_specific_data.metadata["fixed"].value == 2
    checks = checks_after(defs, instance, result)
    assert all(evaluation.passed for evaluation in checks.values()) and len(checks) == 2


def test_partition_retention_removes_a_deleted_jobs_partitions_and_bad_keys_fail_their_checks(defs, instance, engine):
    deleted, (owner, job_id) = new_job(engine), new_job(engine)
    sql(engine, "UPDATE jobs SET is_deleted = true WHERE id = :j", j=deleted[1])
    instance.add_dynamic_partitions("jobs", [encode_job_key(*deleted), encode_job_key(owner, job_id)])
    instance.add_dynamic_partitions("scenes", [encode_scene_key(*deleted, 1), encode_scene_key(owner, job_id, 1)])
    stranger = encode_job_key(uuid.uuid4(), job_id)
    instance.add_dynamic_partitions("jobs", [stranger])
    instance.add_dynamic_partitions("scenes", ["not-a-scene-key"])

    checks = checks_after(defs, instance, maintain(defs, instance, "partition_retention"))
    assert set(instance.get_dynamic_partitions("jobs")) == {encode_job_key(owner, job_id), stranger}
    assert set(instance.get_dynamic_partitions("scenes")) == {encode_scene_key(owner, job_id, 1), "not-a-scene-key"}
    jobs_keys, scenes_keys = checks["jobs_partition_set:partition_keys_valid"], checks["scenes_partition_set:partition_keys_valid"]
    assert not jobs_keys.passed and jobs_keys.severity == WARN and jobs_keys.metadata["sample"].value == [f"partition/jobs/{stranger}"]
    assert not scenes_keys.passed and scenes_keys.severity == WARN and scenes_keys.metadata["invalid_keys"].value == 1

    instance.delete_dynamic_partition("jobs", stranger)
    instance.delete_dynamic_partition("scenes", "not-a-scene-key")
    checks = checks_after(defs, instance, maintain(defs, instance, "partition_retention"))
    assert all(evaluation.passed for evaluation in checks.values()) and len(checks) == 2
    assert checks["jobs_partition_set:partition_keys_valid"].metadata["partitions"].value == 1


@pytest.fixture
def ten_days_on(monkeypatch):
    """moto cannot backdate an object, so the temp audit's clock moves forward instead: past 7 days and the grace."""

    class Later(datetime):
        @classmethod
        def now(cls, tz=None):
            return datetime.now(tz) + timedelta(days=10)

    monkeypatch.setattr(temp_cleanup, "datetime", Later)


def test_temp_bucket_cleanup_deletes_expired_scratch_and_nothing_else(defs, instance, s3, ten_days_on):
    settings, client = s3
    temp, code = settings.bucket("temp"), settings.bucket("code")
    client.put_object(Bucket=temp, Key="temp/session/1/scratch.txt", Body=b"scratch")
    kept = client.put_object(Bucket=code, Key="users/x/keep.txt", Body=b"not scratch")["VersionId"]

    before = run_checks(defs, instance, [dg.AssetCheckKey(TEMP_BUCKET.key, "temp_expiry_enforced")])
    evaluation = before["temp_bucket:temp_expiry_enforced"]
    assert not evaluation.passed and evaluation.severity == WARN and evaluation.metadata["overdue_versions"].value == 1

    checks = checks_after(defs, instance, maintain(defs, instance, "temp_bucket_cleanup"))
    assert client.list_object_versions(Bucket=temp).get("Versions", []) == []
    assert [v["VersionId"] for v in client.list_object_versions(Bucket=code)["Versions"]] == [kept]
    assert observed(instance, TEMP_BUCKET)["fixed"].value == 1
    assert list(checks) == ["temp_bucket:temp_expiry_enforced"] and checks["temp_bucket:temp_expiry_enforced"].passed


def test_storage_reconciliation_records_what_is_wrong_and_the_object_checks_judge_it(defs, instance, engine, s3):
    settings, client = s3
    code = settings.bucket("code")
    user_id = in_transaction(engine, lambda c: ensure_user(c, f"user_{uuid.uuid4().hex[:8]}", "a@b.c"))
    key = layout.scene_code_key(user_id, uuid.uuid4(), 1)
    stored = S3Storage(settings, engine, client).put_bytes(
        code, key, b"print('lost')", owner=ObjectOwner(user_id, "code"), content_type="text/x-python"
    )
    client.delete_object(Bucket=code, Key=key, VersionId=stored.version_id)  # the row's version is gone
    orphan = client.put_object(Bucket=code, Key="users/x/not-recorded.txt", Body=b"orphan")["VersionId"]
    config = {"ops": {"reconcile_storage": {"config": {"settle_minutes": 0}}}}

    result = maintain(defs, instance, "storage_reconciliation", config)
    checks = checks_after(defs, instance, result)
    missing, unrecorded = checks["stored_objects:no_missing_or_mismatched_objects"], checks["stored_objects:no_unrecorded_objects"]
    assert not missing.passed and missing.severity == ERROR and missing.metadata["by_check"].value == {"missing_object": 1}
    assert missing.metadata["reconciled_by_run"].value == result.run_id
    assert not unrecorded.passed and unrecorded.severity == WARN and unrecorded.metadata["unrecorded_versions"].value == 1
    assert checks["s3_buckets:bucket_settings_as_declared"].passed
    table = observed(instance, STORED_OBJECTS)["findings"].value.records
    assert {(r.data["check"], r.data["severity"]) for r in table} >= {("missing_object", "ERROR"), ("orphan_object", "WARNING")}

    # A human decides: the lost version's row goes, the unrecorded version too; the next reconciliation finds both right.
    sql(engine, "DELETE FROM file_metadata WHERE s3_key = :k", k=key)
    client.delete_object(Bucket=code, Key="users/x/not-recorded.txt", VersionId=orphan)
    checks = checks_after(defs, instance, maintain(defs, instance, "storage_reconciliation", config))
    assert all(evaluation.passed for evaluation in checks.values()) and len(checks) == 3


def test_bucket_drift_fails_its_check_at_the_severity_of_its_worst_finding(defs, instance, engine, s3):
    """Lifecycle drift alone is a WARNING finding (costs money, loses nothing), so the check fails at WARN; drift in
    anything else fails it at ERROR; put right, it passes and its findings are resolved."""
    settings, client = s3
    check = [dg.AssetCheckKey(S3_BUCKETS.key, "bucket_settings_as_declared")]
    client.delete_bucket_lifecycle(Bucket=settings.bucket("temp"))
    evaluation = run_checks(defs, instance, check)["s3_buckets:bucket_settings_as_declared"]
    assert not evaluation.passed and evaluation.severity == WARN
    assert list(evaluation.metadata["drift"].value[settings.bucket("temp")]) == ["lifecycle_rules"]

    client.put_bucket_versioning(Bucket=settings.bucket("videos"), VersioningConfiguration={"Status": "Suspended"})
    evaluation = run_checks(defs, instance, check)["s3_buckets:bucket_settings_as_declared"]
    assert not evaluation.passed and evaluation.severity == ERROR
    assert evaluation.metadata["drift"].value[settings.bucket("videos")] == {"versioning": {"declared": "Enabled", "live": "Suspended"}}

    for spec in declared_buckets(settings):
        bootstrap_bucket(client, spec, settings.region)
    assert run_checks(defs, instance, check)["s3_buckets:bucket_settings_as_declared"].passed
    with engine.connect() as conn:
        counts = conn.execute(text("SELECT count(*), count(resolved_at) FROM audit_findings WHERE check_name = 'bucket_settings'")).one()
    assert tuple(counts) == (2, 2)
