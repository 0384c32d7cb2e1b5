"""Uploads through S3Storage under 20% injected S3 faults (each kind, and mixed) finish correctly; with the
protection off, the same faults get through. Each for both ways a one-request PUT is sent: the boto3 client, and
`direct_puts.DirectPuts` (the migration's: the CRT's signer, http.client), whose retries are its own and counted.

Sizes here are small; `make reliability` (`t2m_pipeline_tests/faults/reliability_report.py`) runs the same scenarios larger and writes RELIABILITY.md.
"""

import hashlib
import os
import uuid
from datetime import datetime, timedelta, timezone

import pytest
from sqlalchemy import text

from devtools.fault_proxy import FaultKind, FaultPlan, FaultProxy
from t2m_pipeline.storage import layout
from t2m_pipeline.storage.errors import StorageError
from t2m_pipeline.storage.s3 import WRITE_ID_METADATA, ObjectOwner, S3Storage, make_s3_client, object_metadata
from t2m_pipeline_tests.faults.scenarios import (
    HELD_SECONDS,
    TRANSPORTS,
    check_writes,
    faulted_storage,
    run_upload_scenario,
)

RATE = 0.2
SEED = 10  # its first decisions fault PutObject, UploadPart, Create- and CompleteMultipartUpload
LANDING = (FaultKind.RESET_AFTER, FaultKind.DELAY, FaultKind.LATE_WRITE)  # the write happened, the answer was lost
SCENARIOS = [(kind,) for kind in FaultKind] + [tuple(FaultKind)]
KEYS, MULTIPARTS = 24, 2  # 32 single uploads (every third key written twice) and 2 two-part uploads per scenario
CONTROL_KEYS = 15  # 20 single uploads for the runs with a protection off


def plan(kinds, rate=RATE, **kw) -> FaultPlan:
    return FaultPlan(rate=rate, kinds=kinds, seed=SEED, delay_seconds=HELD_SECONDS, **kw)


def label(kinds) -> str:
    return "mixed" if len(kinds) > 1 else kinds[0].value


@pytest.mark.slow
@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize("kinds", SCENARIOS, ids=label)
def test_uploads_finish_correctly_under_faults(fault_settings, engine, tmp_path, kinds, transport):
    report = run_upload_scenario(
        fault_settings, engine, plan(kinds), tmp_path, keys=KEYS, multiparts=MULTIPARTS, transport=transport
    )

    assert report.failed == 0, report.failures
    assert report.problems == []
    # the faults were there, on single and on multipart uploads
    assert report.faults_on({"PutObject"}) >= 3
    assert report.faults_on({"UploadPart"}) >= 1
    assert report.faults_on({"CreateMultipartUpload", "CompleteMultipartUpload"}) >= 1
    # every lost answer of a PutObject left an extra version, and all of them were removed (inline, or by the
    # sweep when it landed after its retry): `problems` would list any left; a client timeout of our own may add some
    landed = report.faults_on({"PutObject"}, [k for k in kinds if k in LANDING])
    assert report.removed_inline + report.removed_by_sweep >= landed
    if set(kinds) & set(LANDING):
        assert landed > 0
    if FaultKind.LATE_WRITE not in kinds:
        assert report.duplicates_before_sweep == 0 and report.removed_by_sweep == 0


@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize("kind", list(FaultKind), ids=lambda k: k.value)
def test_without_retries_the_fault_reaches_the_caller(fault_settings, engine, tmp_path, kind, transport):
    report = run_upload_scenario(
        fault_settings, engine, plan((kind,)), tmp_path, keys=CONTROL_KEYS, multiparts=0, max_attempts=1, sweep=False,
        transport=transport,
    )
    # every injected fault failed its write (a slow moment of the machine may fail one more)
    assert report.failed >= report.faults_on({"PutObject"}) > 0
    assert all("StorageError" in f for f in report.failures), report.failures
    if kind in LANDING:
        # the failed write landed all the same: an orphan version no row records
        assert any("no write recorded" in p for p in report.problems)


@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize("kind", LANDING, ids=lambda k: k.value)
def test_without_duplicate_cleanup_lost_answers_leave_extra_versions(fault_settings, engine, tmp_path, kind, transport):
    report = run_upload_scenario(
        fault_settings, engine, plan((kind,)), tmp_path, keys=CONTROL_KEYS, multiparts=0, remove_duplicates=False,
        sweep=False, transport=transport,
    )
    assert report.failed == 0
    assert report.duplicates_before_sweep >= report.faults_on({"PutObject"}) > 0
    assert any("no write recorded" in p for p in report.problems)


def test_a_failed_multipart_upload_leaves_no_partial_object(fault_settings, engine, tmp_path, make_user):
    """Retries off and every part refused: the upload fails, and nothing (no object, no row, no open upload) stays."""
    user_id, _ = make_user()
    key = layout.scene_video_key(user_id, uuid.uuid4(), 1)
    path = tmp_path / "video.mp4"
    path.write_bytes(os.urandom(9 * 1024 * 1024))
    faults = FaultPlan(rate=1.0, kinds=(FaultKind.SLOWDOWN,), operations=frozenset({"UploadPart"}), seed=SEED)
    videos = fault_settings.bucket("videos")
    with FaultProxy(fault_settings.endpoint_url, faults) as proxy:
        storage = faulted_storage(fault_settings, engine, proxy, max_attempts=1)
        with pytest.raises(StorageError, match="SlowDown"):
            storage.put_file(videos, key, path, owner=ObjectOwner(user_id, "video"), content_type="video/mp4")
    assert proxy.stats.requests["AbortMultipartUpload"] == 1
    oracle = make_s3_client(fault_settings)
    assert oracle.list_object_versions(Bucket=videos, Prefix=key).get("Versions", []) == []
    assert oracle.list_multipart_uploads(Bucket=videos, Prefix=key).get("Uploads", []) == []
    with engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM file_metadata WHERE s3_key = :k"), {"k": key}).scalar() == 0


def test_the_sweep_removes_only_unrecorded_twins_of_a_write(settings, engine, buckets, make_user):
    """`remove_duplicate_versions` deletes a version only when another version carries its write-id and it has no
    row (or, when none of them has one, once all are older than the grace period and it is not the oldest: a write
    in progress chooses for itself); identical bytes from another write, and objects without a write-id, are never
    touched."""
    user_id, _ = make_user()
    bucket, key = buckets["code"], layout.scene_code_key(user_id, uuid.uuid4(), 1)
    storage = S3Storage(settings, engine)
    owner = ObjectOwner(user_id, "code")
    recorded = storage.put_bytes(bucket, key, b"print(1)", owner=owner, content_type="text/x-python")
    head = storage.head(bucket, key, recorded.version_id)

    def raw_put(body: bytes, metadata: dict) -> str:
        return storage.client.put_object(Bucket=bucket, Key=key, Body=body, Metadata=metadata)["VersionId"]

    twin = raw_put(b"print(1)", head["Metadata"])  # the same write landing again (late)
    again = storage.put_bytes(bucket, key, b"print(1)", owner=owner, content_type="text/x-python")  # a new write
    legacy_a = raw_put(b"legacy", {})
    legacy_b = raw_put(b"legacy", {})
    orphan_meta = {**head["Metadata"], WRITE_ID_METADATA: uuid.uuid4().hex}
    orphan_old, orphan_new = raw_put(b"print(2)", orphan_meta), raw_put(b"print(2)", orphan_meta)

    assert storage.duplicate_versions(bucket, key) == [twin]  # orphan_*: maybe a write still in progress
    assert storage.remove_duplicate_versions(bucket, key) == [twin]
    assert storage.remove_duplicate_versions(bucket, key, grace=timedelta(0)) == [orphan_new]
    left = {v["VersionId"] for v in storage.client.list_object_versions(Bucket=bucket, Prefix=key)["Versions"]}
    assert left == {recorded.version_id, again.version_id, legacy_a, legacy_b, orphan_old}
    assert storage.remove_duplicate_versions(bucket, key, grace=timedelta(0)) == []  # print(2) claims print(1)'s sha256


def test_the_sweep_removes_the_landed_copy_of_a_failed_write_once_it_is_old_enough(settings, engine, buckets, make_user):
    """A write that failed in the storage layer after its request landed leaves one version with a write-id of its
    own and no row; the step's retry then writes (and records) the same bytes. After the grace period the sweep
    removes that copy, but only while a recorded version holding its bytes is still there, and never the current
    version, so what the key serves does not change."""
    user_id, _ = make_user()
    bucket, key = buckets["code"], layout.scene_code_key(user_id, uuid.uuid4(), 1)
    storage = S3Storage(settings, engine)
    owner = ObjectOwner(user_id, "code")

    def landed_copy(body: bytes) -> str:  # the failed write: its own write-id, metadata as the storage layer writes it
        meta = {**object_metadata(owner, hashlib.sha256(body).hexdigest(), None, datetime.now(timezone.utc)),
                WRITE_ID_METADATA: uuid.uuid4().hex}
        return storage.client.put_object(Bucket=bucket, Key=key, Body=body, Metadata=meta)["VersionId"]

    def put(body: bytes):
        return storage.put_bytes(bucket, key, body, owner=owner, content_type="text/x-python")

    failed_first = landed_copy(b"print(1)")
    recorded_first = put(b"print(1)")
    never_recorded = landed_copy(b"print(3)")  # no recorded version holds these bytes: kept
    recorded_last = put(b"print(2)")
    on_top = landed_copy(b"print(2)")  # the current version: never taken by this rule
    assert storage.duplicate_versions(bucket, key) == []  # too recent under the default grace
    assert storage.remove_duplicate_versions(bucket, key, grace=timedelta(0)) == [failed_first]
    listed = storage.client.list_object_versions(Bucket=bucket, Prefix=key)["Versions"]
    assert {v["VersionId"] for v in listed} == {recorded_first.version_id, never_recorded, recorded_last.version_id, on_top}
    assert next(v for v in listed if v["IsLatest"])["VersionId"] == on_top

    only_copy = landed_copy(b"print(1)")
    put(b"print(4)")
    storage.delete_version(bucket, key, recorded_first.version_id)  # the recorded print(1) is lost ...
    assert S3Storage(settings).duplicate_versions(bucket, key, grace=timedelta(0)) == []  # without rows: rule 1 only
    # ... so its copy is what is left of it and stays; on_top, no longer current, goes (recorded_last holds its bytes)
    assert storage.remove_duplicate_versions(bucket, key, grace=timedelta(0)) == [on_top]
    assert only_copy in {v["VersionId"] for v in storage.client.list_object_versions(Bucket=bucket, Prefix=key)["Versions"]}


def test_every_write_carries_its_own_write_id(storage, buckets, make_user):
    user_id, _ = make_user()
    key = layout.scene_code_key(user_id, uuid.uuid4(), 1)
    owner = ObjectOwner(user_id, "code")
    first = storage.put_bytes(buckets["code"], key, b"same", owner=owner, content_type="text/plain")
    second = storage.put_bytes(buckets["code"], key, b"same", owner=owner, content_type="text/plain")
    ids = {storage.head(buckets["code"], key, v)["Metadata"][WRITE_ID_METADATA] for v in (first.version_id, second.version_id)}
    assert len(ids) == 2 and all(len(i) == 32 for i in ids)
    assert hashlib.sha256(storage.get_bytes(buckets["code"], key)).hexdigest() == second.sha256


def test_the_oracle_sees_a_wrong_version(settings, engine, buckets, make_user):
    """The checker itself can fail: a row pointing at another write's version, and an unrecorded version."""
    from t2m_pipeline_tests.faults.scenarios import Intended, Written

    user_id, _ = make_user()
    key = layout.scene_code_key(user_id, uuid.uuid4(), 2)
    storage = S3Storage(settings, engine)
    owner = ObjectOwner(user_id, "code")
    a = storage.put_bytes(buckets["code"], key, b"a", owner=owner, content_type="text/plain")
    storage.client.put_object(Bucket=buckets["code"], Key=key, Body=b"b")  # a version nobody recorded
    wrong = Written(Intended(buckets["code"], key, hashlib.sha256(b"zzz").hexdigest(), 3), stored=a)
    problems = check_writes(settings, engine, [wrong]).problems
    assert any("does not hold the bytes written" in p for p in problems)
    assert any("no write recorded" in p for p in problems)
    assert any("latest version is not the last write's" in p for p in problems)
