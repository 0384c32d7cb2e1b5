"""The storage layer against the moto server over HTTP: integrity, versions, metadata rows, presigned URLs."""

import hashlib
import io
import os
import uuid
from datetime import datetime, timezone

import pytest
import requests
from sqlalchemy import select
from sqlalchemy.orm import Session

from t2m_pipeline.db.models import FileMetadata
from t2m_pipeline.storage import layout
from t2m_pipeline.storage.errors import NotOwnerError
from t2m_pipeline.storage.s3 import ObjectOwner


def rows_for(engine, bucket, key):
    with Session(engine) as session:
        return session.scalars(select(FileMetadata).where(FileMetadata.s3_bucket == bucket, FileMetadata.s3_key == key)).all()


def test_upload_round_trip_with_sse_versioning_checksum_and_row(storage, engine, buckets, make_user):
    user_id, _ = make_user()
    key = layout.job_plan_key(user_id, uuid.uuid4(), "outline.txt")
    data = b"<SCENE_OUTLINE>hello</SCENE_OUTLINE>"
    owner = ObjectOwner(user_id=user_id, file_type="plan")
    stored = storage.put_bytes(buckets["code"], key, data, owner=owner, content_type="text/plain", original_name="Outline ü.txt")

    assert stored.sha256 == hashlib.sha256(data).hexdigest() and stored.size == len(data)
    assert stored.version_id  # the bucket is versioned
    head = storage.client.head_object(Bucket=buckets["code"], Key=key, ChecksumMode="ENABLED")
    assert head["ServerSideEncryption"] == "AES256"
    assert head["Metadata"]["sha256"] == stored.sha256
    assert head["Metadata"]["user-id"] == str(user_id)
    assert head["Metadata"]["original-name"] == "Outline%20%C3%BC.txt"
    assert head["ContentType"] == "text/plain"
    assert storage.get_bytes(buckets["code"], key) == data

    (row,) = rows_for(engine, buckets["code"], key)
    assert (row.version_id, row.checksum, row.file_size, row.user_id) == (stored.version_id, stored.sha256, len(data), user_id)
    assert row.id == stored.file_id


def test_second_version_of_a_key_gets_its_own_row(storage, engine, buckets, make_user):
    user_id, _ = make_user()
    key = layout.scene_code_key(user_id, uuid.uuid4(), 1)
    owner = ObjectOwner(user_id=user_id, file_type="code", scene_number=1)
    first = storage.put_bytes(buckets["code"], key, b"v1", owner=owner, content_type="text/x-python")
    second = storage.put_bytes(buckets["code"], key, b"v2", owner=owner, content_type="text/x-python")
    assert first.version_id != second.version_id
    rows = rows_for(engine, buckets["code"], key)
    assert sorted(r.version_id for r in rows) == sorted([first.version_id, second.version_id])
    assert storage.get_bytes(buckets["code"], key, first.version_id) == b"v1"
    # recording the same version again is an idempotent upsert
    storage._record(buckets["code"], key, first.version_id, 2, first.sha256, owner, "text/x-python", None)
    assert len(rows_for(engine, buckets["code"], key)) == 2


def test_multipart_file_and_stream_uploads(storage, engine, buckets, make_user, tmp_path):
    user_id, _ = make_user()
    job = uuid.uuid4()
    data = os.urandom(storage.transfer_config.multipart_threshold + 3 * 1024 * 1024)
    path = tmp_path / "big.mp4"
    path.write_bytes(data)
    owner = ObjectOwner(user_id=user_id, file_type="video", scene_number=1)
    by_file = storage.put_file(buckets["videos"], layout.scene_video_key(user_id, job, 1), path, owner=owner, content_type="video/mp4")
    by_stream = storage.put_stream(
        buckets["videos"], layout.scene_video_key(user_id, job, 2), io.BytesIO(data), owner=owner, content_type="video/mp4"
    )
    small = storage.put_stream(
        buckets["videos"], layout.scene_video_key(user_id, job, 3), io.BytesIO(b"tiny"), owner=owner, content_type="video/mp4"
    )
    expected = hashlib.sha256(data).hexdigest()
    for stored in (by_file, by_stream):
        assert stored.sha256 == expected and stored.size == len(data)
        assert hashlib.sha256(storage.get_bytes(stored.bucket, stored.key)).hexdigest() == expected
        assert rows_for(engine, stored.bucket, stored.key)[0].checksum == expected
    assert small.size == 4
    assert storage.download_file(by_file.bucket, by_file.key, tmp_path / "back.mp4") == expected


def test_the_sha256_checksum_travels_with_the_body(storage, buckets, make_user):
    """S3 verifies `ChecksumSHA256` against the body; moto stores it without verifying, so we check it arrived."""
    import base64

    user_id, _ = make_user()
    data = os.urandom(1000)
    stored = storage.put_bytes(
        buckets["temp"], layout.temp_key("s1", datetime.now(timezone.utc), "x.bin"),
        data, owner=ObjectOwner(user_id, "temp"), content_type="application/octet-stream",
    )
    head = storage.client.head_object(Bucket=stored.bucket, Key=stored.key, ChecksumMode="ENABLED")
    assert head["ChecksumSHA256"] == base64.b64encode(hashlib.sha256(data).digest()).decode()


def test_delete_a_specific_version(storage, buckets, make_user):
    user_id, _ = make_user()
    key = layout.scene_code_key(user_id, uuid.uuid4(), 2)
    owner = ObjectOwner(user_id=user_id, file_type="code")
    v1 = storage.put_bytes(buckets["code"], key, b"one", owner=owner, content_type="text/plain")
    v2 = storage.put_bytes(buckets["code"], key, b"two", owner=owner, content_type="text/plain")
    storage.delete_version(buckets["code"], key, v2.version_id)
    assert storage.get_bytes(buckets["code"], key) == b"one"
    versions = storage.client.list_object_versions(Bucket=buckets["code"], Prefix=key)["Versions"]
    assert [v["VersionId"] for v in versions] == [v1.version_id]


def test_presigned_url_only_for_the_owner(storage, buckets, make_user):
    owner_id, _ = make_user()
    other_id, _ = make_user()
    key = layout.scene_video_key(owner_id, uuid.uuid4(), 1)
    data = b"\x00\x00\x00\x18ftypmp42 fake video bytes"
    storage.put_bytes(buckets["videos"], key, data, owner=ObjectOwner(owner_id, "video"), content_type="video/mp4")

    url = storage.url_for_owner(owner_id, buckets["videos"], key)
    assert "X-Amz-Expires=7200" in url  # videos stream for two hours
    response = requests.get(url, timeout=10)
    assert response.status_code == 200 and response.content == data

    signed = []
    storage.client.meta.events.register("before-sign.s3.GetObject", lambda **kw: signed.append(1))
    with pytest.raises(NotOwnerError):
        storage.url_for_owner(other_id, buckets["videos"], key)
    assert signed == []
    with pytest.raises(ValueError):
        storage.url_for_owner(owner_id, buckets["videos"], key, expires=8 * 24 * 3600)
    assert "X-Amz-Expires=60" in storage.url_for_owner(owner_id, buckets["videos"], key, expires=60)


def test_the_client_waits_as_long_as_configured_for_an_answer(service_env):
    from t2m_pipeline.config import load_settings
    from t2m_pipeline.storage.s3 import make_s3_client

    assert make_s3_client(load_settings(service_env)).meta.config.read_timeout == 60
    configured = load_settings({**service_env, "T2M_S3_READ_TIMEOUT_S": "7"})
    assert make_s3_client(configured).meta.config.read_timeout == 7
    assert make_s3_client(configured, read_timeout=2.5).meta.config.read_timeout == 2.5


def test_clients_share_one_parsed_s3_model_and_each_works(service_env, buckets):
    """Each client has a session of its own, and every session reads S3's models through one loader: parsed once per
    process (a warm run server parses them before it forks), its search path not growing by a folder per client."""
    from t2m_pipeline.config import load_settings
    from t2m_pipeline.storage.s3 import _service_models, make_s3_client

    settings = load_settings(service_env)
    first, second = make_s3_client(settings), make_s3_client(settings)
    assert first._loader is second._loader is _service_models()
    paths = list(_service_models().search_paths)
    make_s3_client(settings)
    assert _service_models().search_paths == paths
    for client in (first, second):  # a working client, with boto3's transfer methods
        assert client.head_bucket(Bucket=buckets["code"])["ResponseMetadata"]["HTTPStatusCode"] == 200
        assert hasattr(client, "upload_fileobj")


def test_the_versions_of_a_write_are_those_carrying_its_write_id_and_nothing_else(storage, buckets, make_user, tmp_path):
    """The caller chooses the write id; `versions_of_write` finds exactly the versions carrying it, oldest first and
    the current one last. The control: a version with the same bytes and the same original name written under
    another write id is not the write's (a rule by sha256 and name would take it)."""
    from t2m_pipeline.storage.s3 import WRITE_ID_METADATA, new_write_id
    from t2m_pipeline.storage.versions import key_versions

    user_id, _ = make_user()
    bucket, key = buckets["code"], layout.scene_code_key(user_id, uuid.uuid4(), 1)
    owner = ObjectOwner(user_id, "code", scene_number=1)
    args = dict(owner=owner, content_type="text/x-python", original_name="output/t/scene1/code/t_scene1_v1.py")
    ours, other = new_write_id(), new_write_id()
    first = storage.put_bytes(bucket, key, b"print(1)", write_id=ours, **args)
    twin = storage.put_bytes(bucket, key, b"print(1)", write_id=other, **args)  # same bytes, same name: another write
    path = tmp_path / "again.py"
    path.write_bytes(b"print(1)")
    second = storage.put_file(bucket, key, path, write_id=ours, **args)  # the same write once more (a rerun)
    fresh = storage.put_bytes(bucket, key, b"print(1)", **args)  # no write id given: a fresh one

    assert storage.head(bucket, key, first.version_id)["Metadata"][WRITE_ID_METADATA] == ours
    assert storage.head(bucket, key, fresh.version_id)["Metadata"][WRITE_ID_METADATA] not in (ours, other)
    assert storage.versions_of_write(bucket, key, ours) == [first.version_id, second.version_id]
    assert storage.versions_of_write(bucket, key, other) == [twin.version_id]
    assert storage.versions_of_write(bucket, key, new_write_id()) == []
    assert storage.versions_of_write(bucket, key, ours, size=len(b"print(2)") + 1) == []  # size narrows
    # what the caller listed already (S3's order, newest first) is all that is looked at
    listed = [v["VersionId"] for v in key_versions(storage.client, bucket, key)]
    assert listed == [fresh.version_id, second.version_id, twin.version_id, first.version_id]
    assert storage.versions_of_write(bucket, key, ours, listed=listed) == [first.version_id, second.version_id]
    assert storage.versions_of_write(bucket, key, ours, listed=[v for v in listed if v != first.version_id]) == [second.version_id]
    # asked about several writes of the key with one `heads`, each version is read once (the migration's adoption
    # asks once per file of the key); without it, every question reads every version again
    heads_asked: list[str] = []
    real_head = storage.client.head_object

    def counting_head(**kwargs):
        heads_asked.append(kwargs["VersionId"])
        return real_head(**kwargs)

    storage.client.head_object = counting_head
    try:
        heads: dict = {}
        assert storage.versions_of_write(bucket, key, ours, listed=listed, heads=heads) == [first.version_id, second.version_id]
        assert storage.versions_of_write(bucket, key, other, listed=listed, heads=heads) == [twin.version_id]
        assert sorted(heads_asked) == sorted(listed) and heads[first.version_id]["Metadata"][WRITE_ID_METADATA] == ours
        heads_asked.clear()
        storage.versions_of_write(bucket, key, ours, listed=listed)
        storage.versions_of_write(bucket, key, other, listed=listed)
        assert len(heads_asked) == 2 * len(listed)  # the control
    finally:
        del storage.client.head_object
    # a copy carries the write id it is given too
    copy_key = layout.scene_code_key(user_id, uuid.uuid4(), 1)
    copied = storage.copy_version((bucket, key, first.version_id), bucket, copy_key, sha256=first.sha256, size=first.size,
                                  write_id=ours, **args)
    assert storage.versions_of_write(bucket, copy_key, ours) == [copied.version_id]
    with pytest.raises(TypeError):
        storage.versions_of_write(bucket, key, ours, listed=listed, size=8)
    for bad in ("", "has space", "x" * 65, "é"):
        with pytest.raises(ValueError):
            storage.put_bytes(bucket, key, b"print(1)", write_id=bad, **args)
