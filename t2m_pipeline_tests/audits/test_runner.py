import hashlib
import time
import uuid
from datetime import datetime, timezone

import dagster as dg
import pytest

from t2m_pipeline.audits.policy import AuditPolicy
from t2m_pipeline.audits.reconcile import object_subject
from t2m_pipeline.audits.runner import AUDITS, run_audits
from t2m_pipeline.storage import layout
from t2m_pipeline.storage.s3 import WRITE_ID_METADATA, object_metadata
from t2m_pipeline_tests.audits.conftest import findings_rows


def test_every_audit_runs_in_order_and_reports_what_it_judged(env):
    env.client.put_bucket_versioning(Bucket=env.settings.bucket("code"), VersioningConfiguration={"Status": "Suspended"})
    with dg.DagsterInstance.ephemeral() as instance:
        # Report-only for jobs: this audit sees every job in the shared database and must not change them.
        policy = AuditPolicy(settle_s=0, stuck_policy="report", fix_queue=False, retention_days=None)
        reports = run_audits(env.settings, env.engine, env.client, policy, instance=instance)
    assert [r.audit for r in reports] == list(AUDITS) and all(r.skipped is None for r in reports)
    by_name = {r.audit: r for r in reports}
    assert by_name["buckets"].open_errors == 1
    assert set(by_name["objects"].stats["buckets"]) == {env.settings.bucket(k) for k in ("videos", "code", "thumbnails")}
    assert by_name["temp"].stats["bucket"] == env.settings.bucket("temp")
    assert by_name["buckets"].as_dict()["drift"][env.settings.bucket("code")]["versioning"]["live"] == "Suspended"


def test_partitions_need_a_dagster_instance_and_unknown_audits_are_refused(env):
    [report] = run_audits(env.settings, env.engine, env.client, AuditPolicy(), audits=("partitions",))
    assert report.skipped and report.summary is None
    with pytest.raises(ValueError, match="unknown audit 'everything'"):
        run_audits(env.settings, env.engine, env.client, AuditPolicy(), audits=("everything",))


def test_a_missing_bucket_is_an_error_and_the_temp_audit_skips_it(env):
    temp = env.settings.bucket("temp")
    env.client.delete_bucket_lifecycle(Bucket=temp)
    env.client.delete_bucket_policy(Bucket=temp)
    env.client.delete_bucket(Bucket=temp)
    reports = run_audits(env.settings, env.engine, env.client, AuditPolicy(), audits=("buckets", "temp"))
    assert reports[0].open_errors == 1 and reports[0].extra["unreadable"][temp]
    assert reports[1].skipped == f"bucket {temp} does not exist"


def test_the_objects_audit_removes_identical_versions_our_failed_writes_left_and_nothing_else(env):
    """A write that failed after its request landed (own write-id, no row) then written again by a retry: the audit's
    sweep removes that copy and records the finding fixed; an identical copy written around the storage layer (no
    write-id) and a copy with other bytes stay open for a human."""
    code = env.settings.bucket("code")
    key = layout.scene_code_key(env.user_id, uuid.uuid4(), 1)
    owner, body = env.owner(), b"print('twice')"

    def raw_put(data: bytes, with_write_id: bool) -> str:
        meta = object_metadata(owner, hashlib.sha256(data).hexdigest(), None, datetime.now(timezone.utc))
        meta = {**meta, WRITE_ID_METADATA: uuid.uuid4().hex} if with_write_id else {"sha256": meta["sha256"]}
        time.sleep(0.01)  # moto orders versions by millisecond timestamps
        return env.client.put_object(Bucket=code, Key=key, Body=data, Metadata=meta)["VersionId"]

    landed = raw_put(body, with_write_id=True)
    around = raw_put(body, with_write_id=False)
    other = raw_put(b"print('other')", with_write_id=True)
    recorded = env.storage.put_bytes(code, key, body, owner=owner, content_type="text/x-python")
    subjects = {v: object_subject(code, key, v) for v in (landed, around, other)}

    keep = AuditPolicy(settle_s=0, duplicate_grace_s=0, remove_duplicates=False)
    report = run_audits(env.settings, env.engine, env.client, keep, audits=("objects",))[0]
    assert report.stats.get("duplicates_removed", 0) == 0
    assert [r["resolved_at"] for r in findings_rows(env.engine, subjects[landed])] == [None]

    sweep = AuditPolicy(settle_s=0, duplicate_grace_s=0)
    report = run_audits(env.settings, env.engine, env.client, sweep, audits=("objects",))[0]
    assert report.stats["duplicates_removed"] == 1
    versions = {v["VersionId"] for v in env.client.list_object_versions(Bucket=code, Prefix=key)["Versions"]}
    assert versions == {around, other, recorded.version_id}
    [landed_row] = findings_rows(env.engine, subjects[landed])
    assert landed_row["resolved_at"] is not None and landed_row["detail"]["removed"]
    for version in (around, other):
        [row] = findings_rows(env.engine, subjects[version])
        assert row["resolved_at"] is None
    assert findings_rows(env.engine, subjects[around])[0]["severity"] == "INFO"  # identical, but not ours to delete
    assert findings_rows(env.engine, subjects[other])[0]["severity"] == "WARNING"

    run_audits(env.settings, env.engine, env.client, sweep, audits=("objects",))
    assert all(len(findings_rows(env.engine, s)) == 1 for s in subjects.values())
