from dataclasses import replace
from datetime import datetime, timedelta, timezone

import pytest

from t2m_pipeline.audits.findings import record_findings
from t2m_pipeline.audits.policy import AuditPolicy
from t2m_pipeline.audits.reconcile import object_subject
from t2m_pipeline.audits.temp_cleanup import (
    NotTempBucketError,
    TempCleanupStats,
    assert_temp_bucket,
    overdue_temp_versions,
    temp_findings,
    temp_scope,
)
from t2m_pipeline.storage import layout
from t2m_pipeline_tests.audits.conftest import findings_rows

# moto cannot backdate an object, so the audit's clock moves forward instead.
EIGHT_DAYS_ON = datetime.now(timezone.utc) + timedelta(days=8)


def cleanup(env, now, settings=None, policy=AuditPolicy()):
    settings = settings or env.settings
    stats = TempCleanupStats()
    findings = list(temp_findings(settings, env.client, policy, stats, now))
    return findings, record_findings(env.engine, temp_scope(settings), findings), stats


def versions(env, bucket):
    page = env.client.list_object_versions(Bucket=bucket)
    return [(v["Key"], v["VersionId"]) for v in page.get("Versions", [])]


def test_old_temp_files_are_deleted_reported_and_resolved_and_nothing_else_is_touched(env):
    temp, code = env.settings.bucket("temp"), env.settings.bucket("code")
    key = layout.temp_key("session-1", datetime.now(timezone.utc), "scratch.txt")
    first = env.client.put_object(Bucket=temp, Key=key, Body=b"v1")["VersionId"]
    second = env.client.put_object(Bucket=temp, Key=key, Body=b"v2")["VersionId"]
    env.client.delete_object(Bucket=temp, Key=key)  # a delete marker too
    other = env.client.put_object(Bucket=code, Key="users/x/keep.txt", Body=b"not scratch")["VersionId"]

    findings, summary, stats = cleanup(env, datetime.now(timezone.utc))
    assert findings == [] and stats.counts["versions"] == 3  # a week has not passed: nothing goes

    findings, summary, stats = cleanup(env, EIGHT_DAYS_ON)
    subjects = {object_subject(temp, key, first), object_subject(temp, key, second)}
    assert {f.subject for f in findings} == subjects and all(f.fixed and f.severity == "INFO" for f in findings)
    assert stats.counts["deleted"] == 2 and stats.counts["delete_markers_removed"] == 1 and stats.counts["bytes_deleted"] == 4
    assert summary.fixed == 2 and summary.open_errors == 0
    page = env.client.list_object_versions(Bucket=temp)
    assert page.get("Versions", []) == [] and page.get("DeleteMarkers", []) == []
    assert versions(env, code) == [("users/x/keep.txt", other)]
    for subject in subjects:
        [row] = findings_rows(env.engine, subject)
        assert row["resolved_at"] is not None and row["detail"]["action"] == "deleted" and row["detail"]["age_days"] >= 7

    findings, summary, _ = cleanup(env, EIGHT_DAYS_ON)  # a second run: nothing left, nothing duplicated
    assert findings == [] and all(len(findings_rows(env.engine, s)) == 1 for s in subjects)


def test_deletes_in_batches_without_losing_the_listing_position(env, monkeypatch):
    from t2m_pipeline.audits import temp_cleanup

    monkeypatch.setattr(temp_cleanup, "DELETE_BATCH", 2)
    temp = env.settings.bucket("temp")
    for n in range(7):
        env.client.put_object(Bucket=temp, Key=f"temp/s/{n}/f", Body=b"x")
    findings, _, stats = cleanup(env, EIGHT_DAYS_ON, policy=AuditPolicy(list_page_size=2))
    assert len(findings) == 7 and stats.counts["deleted"] == 7
    assert env.client.list_object_versions(Bucket=temp).get("Versions", []) == []


def test_on_aws_the_lifecycle_rule_expires_temp_objects_and_the_audit_only_reports_late_ones(env):
    temp = env.settings.bucket("temp")
    version = env.client.put_object(Bucket=temp, Key="temp/s/1/old", Body=b"x")["VersionId"]
    aws_like = replace(env.settings, endpoint_url=None)  # same buckets, but "the endpoint enforces lifecycle"
    findings, summary, _ = cleanup(env, EIGHT_DAYS_ON, settings=aws_like)
    assert findings == []  # inside the grace period the rule may simply not have run yet
    findings, summary, stats = cleanup(env, EIGHT_DAYS_ON + timedelta(days=3), settings=aws_like)
    [finding] = findings
    assert finding.subject == object_subject(temp, "temp/s/1/old", version) and not finding.fixed and finding.severity == "WARNING"
    assert versions(env, temp) == [("temp/s/1/old", version)]  # reported, never deleted


def test_overdue_versions_are_found_past_the_limit_and_grace_and_nothing_is_deleted(env):
    """What the check judges with: here every version (the cleanup removes them all), on AWS current objects only;
    nothing is overdue before the limit plus the grace, and the listing deletes nothing."""
    temp = env.settings.bucket("temp")
    old = env.client.put_object(Bucket=temp, Key="temp/s/1/f", Body=b"v1")["VersionId"]
    current = env.client.put_object(Bucket=temp, Key="temp/s/1/f", Body=b"v2")["VersionId"]
    ten_days_on = datetime.now(timezone.utc) + timedelta(days=10)
    assert list(overdue_temp_versions(env.settings, env.client, AuditPolicy(), EIGHT_DAYS_ON)) == []
    found = {v.version_id for v in overdue_temp_versions(env.settings, env.client, AuditPolicy(), ten_days_on)}
    assert found == {old, current}
    aws_like = replace(env.settings, endpoint_url=None)
    assert [v.version_id for v in overdue_temp_versions(aws_like, env.client, AuditPolicy(), ten_days_on)] == [current]
    assert sorted(versions(env, temp)) == sorted([("temp/s/1/f", old), ("temp/s/1/f", current)])


def test_only_the_environments_temp_bucket_may_be_cleaned(env):
    assert_temp_bucket(env.settings, env.settings.bucket("temp"))
    for kind in ("videos", "code", "thumbnails"):
        with pytest.raises(NotTempBucketError, match="refused"):
            assert_temp_bucket(env.settings, env.settings.bucket(kind))
    with pytest.raises(NotTempBucketError):
        assert_temp_bucket(env.settings, "dev-t2m-temp-us-east-1-999999999999")
