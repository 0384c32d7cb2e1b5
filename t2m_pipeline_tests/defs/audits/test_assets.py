"""The audit assets and checks, materialized in-process with the real resources against their own buckets."""

import random
import uuid

import dagster as dg
import pytest
from sqlalchemy import text

from t2m_pipeline.config import load_settings
from t2m_pipeline.db.engine import in_transaction
from t2m_pipeline.db.job_state import transition
from t2m_pipeline.db.jobs import submit_job
from t2m_pipeline.defs.audits.assets import AUDIT_ASSETS
from t2m_pipeline.defs.audits.schedules import storage_audit, storage_audit_job
from t2m_pipeline.defs.resources import default_resources
from t2m_pipeline.partition_keys import encode_job_key
from t2m_pipeline.storage.bootstrap import bootstrap_bucket
from t2m_pipeline.storage.bucket_settings import declared_buckets
from t2m_pipeline.storage.s3 import make_s3_client

RUN_CONFIG = {
    "ops": {
        "storage_reconciliation": {"config": {"settle_minutes": 0}},
        # The database is shared with every other test: leave their queue rows as they are.
        "stuck_jobs_audit": {"config": {"fix_queue": False}},
    }
}


@pytest.fixture
def own_account(service_env, monkeypatch):
    """The resources read settings from the environment: point them at buckets of another account."""
    account = "2" + "".join(random.choice("0123456789") for _ in range(11))
    monkeypatch.setenv("AWS_ACCOUNT_ID", account)
    settings = load_settings()
    client = make_s3_client(settings)
    for spec in declared_buckets(settings):
        bootstrap_bucket(client, spec, settings.region)
    return settings, client


def run_audits(instance):
    defs = dg.Definitions(assets=AUDIT_ASSETS, jobs=[storage_audit_job], schedules=[storage_audit], resources=default_resources())
    result = defs.resolve_job_def("storage_audit_job").execute_in_process(instance=instance, run_config=RUN_CONFIG)
    assert result.success
    checks = {e.check_name: e for e in result.get_asset_check_evaluations()}
    materialized = {m.asset_key.to_user_string(): m for m in result.get_asset_materialization_events()}
    return checks, {k: v.materialization.metadata for k, v in materialized.items()}


def test_audit_assets_find_drift_fail_their_checks_and_pass_after_the_fix(own_account, engine):
    settings, client = own_account
    videos, code = settings.bucket("videos"), settings.bucket("code")
    client.put_bucket_versioning(Bucket=videos, VersioningConfiguration={"Status": "Suspended"})
    orphan = client.put_object(Bucket=code, Key="users/x/not-recorded.txt", Body=b"orphan")["VersionId"]

    job_id = submit_job(engine, clerk_user_id=f"user_{uuid.uuid4().hex[:8]}", email="a@b.c", topic="Stuck", context="c")
    transition(engine, job_id, "processing")
    in_transaction(engine, lambda c: c.execute(text("UPDATE jobs SET updated_at = now() - interval '5 hours' WHERE id = :j"), {"j": job_id}))
    in_transaction(engine, lambda c: c.execute(text("UPDATE job_queue SET processing_started_at = now() - interval '5 hours' WHERE job_id = :j"), {"j": job_id}))
    with engine.connect() as conn:
        user_id = conn.execute(text("SELECT user_id FROM jobs WHERE id = :j"), {"j": job_id}).scalar_one()
    in_transaction(engine, lambda c: c.execute(text("UPDATE jobs SET is_deleted = true WHERE id = :j"), {"j": job_id}))

    with dg.DagsterInstance.ephemeral() as instance:
        instance.add_dynamic_partitions("jobs", [encode_job_key(user_id, job_id)])
        checks, meta = run_audits(instance)

        drift_check = checks["bucket_settings_as_declared"]
        assert not drift_check.passed and drift_check.severity == dg.AssetCheckSeverity.ERROR
        drift = drift_check.metadata["drift"].value
        assert drift == {videos: {"versioning": {"declared": "Enabled", "live": "Suspended"}}}
        assert not checks["no_unrecorded_objects"].passed
        assert checks["no_unrecorded_objects"].metadata["unrecorded_versions"].value == 1
        # the findings as a table per check and severity (the orphan among them)
        findings = {(r.data["check"], r.data["severity"]): r.data["findings"] for r in meta["storage_reconciliation"]["findings"].value.records}
        assert findings[("orphan_object", "WARNING")] >= 1
        assert checks["no_missing_or_mismatched_objects"].passed
        assert checks["temp_expiry_enforced"].passed
        assert checks["no_stuck_jobs"].passed  # the stuck job was fixed (failed) by policy
        assert "job_queue_consistent" in checks  # its outcome depends on other tests' rows in the shared database
        assert meta["stuck_jobs_audit"]["fixed"].value >= 1
        assert meta["partition_retention"]["fixed"].value >= 1
        assert not instance.has_dynamic_partition("jobs", encode_job_key(user_id, job_id))
        with engine.connect() as conn:
            status, error_info = conn.execute(text("SELECT status, error_info FROM jobs WHERE id = :j"), {"j": job_id}).one()
        assert status == "failed" and error_info["reason"] == "stuck"

        for spec in declared_buckets(settings):
            bootstrap_bucket(client, spec, settings.region)
        client.delete_object(Bucket=code, Key="users/x/not-recorded.txt", VersionId=orphan)
        checks, meta = run_audits(instance)
        assert checks["bucket_settings_as_declared"].passed and "drift" not in checks["bucket_settings_as_declared"].metadata
        assert checks["no_unrecorded_objects"].passed
        assert meta["bucket_settings_audit"]["resolved"].value == 1
        assert meta["storage_reconciliation"]["resolved"].value == 1

    with engine.connect() as conn:
        counts = conn.execute(
            text("SELECT count(*), count(resolved_at) FROM audit_findings WHERE subject IN (:a, :b)"),
            {"a": f"s3://{videos}#versioning", "b": f"s3://{code}/users/x/not-recorded.txt?versionId={orphan}"},
        ).one()
    assert tuple(counts) == (2, 2)


def test_lifecycle_drift_alone_fails_its_check_as_a_warning_like_its_finding(own_account, engine):
    """The finding is a WARNING (drift costs money, loses nothing), so the check fails at WARN, not ERROR; drift in
    anything else (the control, in the test above) fails it at ERROR."""
    settings, client = own_account
    client.delete_bucket_lifecycle(Bucket=settings.bucket("temp"))
    with dg.DagsterInstance.ephemeral() as instance:
        checks, _ = run_audits(instance)
    drift_check = checks["bucket_settings_as_declared"]
    assert not drift_check.passed and drift_check.severity == dg.AssetCheckSeverity.WARN
    assert list(drift_check.metadata["drift"].value[settings.bucket("temp")]) == ["lifecycle_rules"]
    with engine.connect() as conn:
        severities = conn.execute(
            text("SELECT DISTINCT severity FROM audit_findings WHERE subject LIKE :s AND resolved_at IS NULL"),
            {"s": f"s3://{settings.bucket('temp')}#%"},
        ).scalars().all()
    assert severities == ["WARNING"]


def test_every_audit_check_says_what_it_checks():
    specs = [spec for a in AUDIT_ASSETS for spec in a.check_specs]
    assert len(specs) == 7
    assert all(spec.description and len(spec.description) > 40 for spec in specs)
