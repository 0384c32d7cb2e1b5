import hashlib
from dataclasses import replace
from datetime import datetime, timezone

import pytest
from hypothesis import given, settings as hsettings, strategies as st
from sqlalchemy import text

from t2m_pipeline.audits import reconcile
from t2m_pipeline.audits.findings import record_findings
from t2m_pipeline.audits.policy import AuditPolicy
from t2m_pipeline.audits.reconcile import (
    ListingOrderError,
    ReconcileStats,
    RowVersion,
    S3Version,
    merge_by_key,
    object_subject,
    reconcile_findings,
    reconcile_scope,
    reconciled_buckets,
)
from t2m_pipeline.db.engine import in_transaction
from t2m_pipeline.db.files import FileRecord, record_file
from t2m_pipeline.storage import layout
from t2m_pipeline_tests.audits.conftest import findings_rows

POLICY = AuditPolicy(settle_s=0)
NOW = datetime(2026, 1, 1, tzinfo=timezone.utc)


def audit(env, policy=POLICY):
    stats = ReconcileStats()
    buckets = reconciled_buckets(env.settings)
    findings = list(reconcile_findings(env.client, env.engine, buckets, policy, stats))
    summary = record_findings(env.engine, reconcile_scope(buckets, policy.verify_checksums), findings)
    return {f.subject: f for f in findings}, summary, stats


def raw_put(env, bucket, key, data: bytes, sha256: str | None = None):
    meta = {"sha256": sha256} if sha256 else {}
    return env.client.put_object(Bucket=bucket, Key=key, Body=data, Metadata=meta).get("VersionId")


def keys(env, n):
    job = "00000000-0000-4000-8000-%012d" % n
    return layout.scene_code_key(env.user_id, job, 1)


def test_each_kind_of_drift_is_found_fixed_by_a_human_and_resolved(env):
    code, videos, thumbs = (env.settings.bucket(k) for k in ("code", "videos", "thumbnails"))
    owner = env.owner()
    healthy = env.storage.put_bytes(code, keys(env, 1), b"print('ok')", owner=owner, content_type="text/x-python")

    orphan_version = raw_put(env, code, keys(env, 2), b"nobody recorded me")
    orphan = object_subject(code, keys(env, 2), orphan_version)

    lost = env.storage.put_bytes(code, keys(env, 3), b"soon gone", owner=owner, content_type="text/x-python")
    env.storage.delete_version(code, lost.key, lost.version_id)
    missing = object_subject(code, lost.key, lost.version_id)

    recorded = env.storage.put_bytes(videos, keys(env, 4), b"first", owner=owner, content_type="video/mp4")
    changed_version = raw_put(env, videos, keys(env, 4), b"overwritten around the storage layer")
    changed = object_subject(videos, keys(env, 4), changed_version)

    twin_of = env.storage.put_bytes(videos, keys(env, 5), b"same bytes", owner=owner, content_type="video/mp4")
    twin_version = raw_put(env, videos, keys(env, 5), b"same bytes", hashlib.sha256(b"same bytes").hexdigest())
    twin = object_subject(videos, keys(env, 5), twin_version)

    # Versioning suspended: an overwrite replaces the "null" version the row describes.
    env.client.put_bucket_versioning(Bucket=thumbs, VersioningConfiguration={"Status": "Suspended"})
    sized = env.storage.put_bytes(thumbs, keys(env, 6), b"12345", owner=owner, content_type="image/jpeg")
    raw_put(env, thumbs, keys(env, 6), b"123456789")
    summed = env.storage.put_bytes(thumbs, keys(env, 7), b"abcde", owner=owner, content_type="image/jpeg")
    raw_put(env, thumbs, keys(env, 7), b"vwxyz", hashlib.sha256(b"vwxyz").hexdigest())
    assert sized.version_id is None and summed.version_id is None
    size_subject, sum_subject = object_subject(thumbs, sized.key, None), object_subject(thumbs, summed.key, None)

    found, summary, stats = audit(env)
    expected = {
        orphan: ("orphan_object", "WARNING"),
        missing: ("missing_object", "ERROR"),
        changed: ("changed_object", "WARNING"),
        twin: ("changed_object", "INFO"),
        size_subject: ("object_size_mismatch", "ERROR"),
        sum_subject: ("object_checksum_mismatch", "ERROR"),
    }
    assert {s: (f.check_name, f.severity) for s, f in found.items()} == expected
    assert found[twin].detail["identical_to_version"] == twin_of.version_id
    assert found[size_subject].detail["s3_size"] == 9 and found[size_subject].detail["row_size"] == 5
    assert found[sum_subject].detail["s3_metadata_sha256"] == hashlib.sha256(b"vwxyz").hexdigest()
    assert found[missing].detail["row_id"] and found[missing].detail["other_versions"] == 0
    assert summary.open_errors == 3 and stats.counts["checksums_verified"] >= 2
    assert object_subject(code, healthy.key, healthy.version_id) not in found

    audit(env)  # the same drift, a second run: refreshed, not duplicated
    for subject in expected:
        rows = findings_rows(env.engine, subject)
        assert len(rows) == 1 and rows[0]["resolved_at"] is None, subject

    # The fixes a human makes: remove the orphan, drop the stale row, record the new version, re-upload.
    env.client.delete_object(Bucket=code, Key=keys(env, 2), VersionId=orphan_version)
    in_transaction(env.engine, lambda c: c.execute(text("DELETE FROM file_metadata WHERE id = :i"), {"i": lost.file_id}))
    for key, version, data in ((keys(env, 4), changed_version, b"overwritten around the storage layer"), (keys(env, 5), twin_version, b"same bytes")):
        record = FileRecord(env.user_id, "video", videos, key, version, len(data), hashlib.sha256(data).hexdigest(), "video/mp4")
        in_transaction(env.engine, lambda c, r=record: record_file(c, r))
    env.storage.put_bytes(thumbs, keys(env, 6), b"123456789", owner=owner, content_type="image/jpeg")
    env.storage.put_bytes(thumbs, keys(env, 7), b"vwxyz", owner=owner, content_type="image/jpeg")

    found, summary, _ = audit(env)
    assert found == {} and summary.resolved == len(expected) and summary.open_errors == 0
    for subject in expected:
        [row] = findings_rows(env.engine, subject)
        assert row["resolved_at"] is not None, subject
    audit(env)
    assert all(len(findings_rows(env.engine, s)) == 1 for s in expected)
    assert recorded.version_id  # the recorded first version is still there and still fine


def test_keys_are_merged_in_byte_order_across_page_and_fetch_boundaries(env):
    """Case, punctuation and many versions per key: Postgres' default collation would order these differently."""
    code = env.settings.bucket("code")
    names = ["A", "a-b", "a.b", "aB", "a_b", "ab", "b", "Z_", "z"]
    for name in names:
        key = layout.job_plan_key(env.user_id, "00000000-0000-4000-8000-000000000001", name)
        for n in range(3):
            env.storage.put_bytes(code, key, f"{name}-{n}".encode(), owner=env.owner(), content_type="text/plain")
    raw_put(env, code, layout.job_plan_key(env.user_id, "00000000-0000-4000-8000-000000000001", "a-c"), b"orphan")
    small = replace(POLICY, list_page_size=2, db_fetch_size=2)
    found_small, _, stats_small = audit(env, small)
    found_default, _, stats_default = audit(env)
    assert {f.check_name for f in found_small.values()} == {"orphan_object"} and len(found_small) == 1
    assert found_small.keys() == found_default.keys()
    assert stats_small.counts["matched"] == stats_default.counts["matched"] == 27


def test_size_only_mode_makes_no_requests_per_object_and_leaves_checksum_findings_alone(env, monkeypatch):
    thumbs = env.settings.bucket("thumbnails")
    env.client.put_bucket_versioning(Bucket=thumbs, VersioningConfiguration={"Status": "Suspended"})
    stored = env.storage.put_bytes(thumbs, keys(env, 8), b"abcde", owner=env.owner(), content_type="image/jpeg")
    raw_put(env, thumbs, keys(env, 8), b"vwxyz", hashlib.sha256(b"vwxyz").hexdigest())
    audit(env)
    subject = object_subject(thumbs, stored.key, None)
    assert findings_rows(env.engine, subject)[0]["check_name"] == "object_checksum_mismatch"

    def no_head(*args, **kwargs):
        raise AssertionError("size-only mode must not HEAD objects")

    monkeypatch.setattr(reconcile, "_head", no_head)
    found, _, _ = audit(env, replace(POLICY, verify_checksums=False))
    assert subject not in found
    assert findings_rows(env.engine, subject)[0]["resolved_at"] is None  # not judged, so not resolved


def test_objects_younger_than_the_settle_time_are_not_judged(env):
    code = env.settings.bucket("code")
    version = raw_put(env, code, keys(env, 9), b"being written right now")
    found, _, stats = audit(env, AuditPolicy(settle_s=3600))
    assert object_subject(code, keys(env, 9), version) not in found and stats.counts["too_recent_to_judge"] >= 1


def _v(key, vid="v1", latest=True):
    return S3Version(key, vid, 1, latest, NOW)


def _r(key, vid="v1"):
    return RowVersion(1, key, vid, 1, None, NOW)


@hsettings(max_examples=60, deadline=None)
@given(st.sets(st.text(min_size=1, max_size=4)), st.sets(st.text(min_size=1, max_size=4)))
def test_merge_pairs_every_key_of_either_side_exactly_once(s3_keys, row_keys):
    merged = list(merge_by_key(iter([_v(k) for k in sorted(s3_keys)]), iter([_r(k) for k in sorted(row_keys)])))
    assert [key for key, _, _ in merged] == sorted(s3_keys | row_keys)
    for key, versions, rows in merged:
        assert bool(versions) == (key in s3_keys) and bool(rows) == (key in row_keys)


def test_a_stream_out_of_order_stops_the_audit_instead_of_inventing_findings():
    with pytest.raises(ListingOrderError, match="not in key order"):
        list(merge_by_key(iter([_v("b"), _v("a")]), iter([])))


def test_a_platform_report_is_no_orphan_and_anything_else_unrecorded_is(env):
    code = env.settings.bucket("code")
    report = env.storage.put_report(layout.report_key("migration", "00000000-0000-4000-8000-000000000001", "files.csv"), b"a,b\n")
    # the control: the same bytes under a key outside reports/, written around the storage layer, are an orphan
    stray_version = raw_put(env, code, "users/stray/report.csv", b"a,b\n")
    found, _, _ = audit(env)
    assert object_subject(code, report.key, report.version_id) not in found
    assert found[object_subject(code, "users/stray/report.csv", stray_version)].check_name == "orphan_object"
    with pytest.raises(Exception, match="reports go under reports/"):
        env.storage.put_report("users/x/files.csv", b"")
