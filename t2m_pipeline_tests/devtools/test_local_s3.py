"""The local S3 server with `--state-dir`: a restart (clean or kill -9) keeps every answered write exactly as it was.

Each protection has its control: the same steps against the in-memory server lose the objects.
"""

from __future__ import annotations

import dataclasses
import hashlib
import threading
import time
import uuid

import pytest

from devtools.local_s3 import UNREADABLE_STATE_EXIT, LocalS3Error, start_local_s3
from t2m_pipeline.storage.bootstrap import bootstrap_bucket, diff_bucket_settings, read_bucket_settings
from t2m_pipeline.storage.bucket_settings import declared_buckets
from t2m_pipeline.storage.s3 import S3Storage, make_s3_client


def _port(server) -> int:
    return int(server.endpoint.rsplit(":", 1)[1])


def _settings_on(settings, server):
    return dataclasses.replace(settings, endpoint_url=server.endpoint, account_id="222233334444")


def _everything(client, buckets) -> dict:
    """Every version of every bucket with what a client can see of it: version id, size, ETag, time, checksum, SSE."""
    seen = {}
    for bucket in buckets:
        for v in client.list_object_versions(Bucket=bucket).get("Versions", []):
            head = client.head_object(Bucket=bucket, Key=v["Key"], VersionId=v["VersionId"], ChecksumMode="ENABLED")
            body = client.get_object(Bucket=bucket, Key=v["Key"], VersionId=v["VersionId"])["Body"].read()
            seen[(bucket, v["Key"], v["VersionId"])] = (
                v["Size"], v["ETag"], v["LastModified"], v["IsLatest"], head.get("ChecksumSHA256"),
                head.get("ServerSideEncryption"), head.get("ContentType"), hashlib.sha256(body).hexdigest(),
            )
    return seen


def _populate(settings, engine, server, user_id):
    """The four buckets as bootstrap declares them, then objects written the way the pipeline writes them."""
    client = make_s3_client(settings)
    for spec in declared_buckets(settings):
        bootstrap_bucket(client, spec, settings.region)
    storage = S3Storage(settings, engine)
    videos, code = settings.bucket("videos"), settings.bucket("code")
    from t2m_pipeline.storage.s3 import ObjectOwner

    owner = ObjectOwner(str(user_id), "scene_code")
    stored = [storage.put_bytes(code, f"restart/{uuid.uuid4()}/scene.py", f"v{n}".encode(), owner=owner, content_type="text/x-python") for n in range(3)]
    key = f"restart/{uuid.uuid4()}/scene.py"
    stored += [storage.put_bytes(code, key, f"version {n}".encode(), owner=owner, content_type="text/x-python") for n in range(3)]  # three versions
    big = bytes(range(256)) * (6 * 1024 * 1024 // 256)  # above the 5 MiB multipart threshold of the tests
    path = server.log_path.parent / "big.bin"
    path.write_bytes(big)
    stored.append(storage.put_file(videos, f"restart/{uuid.uuid4()}/output.mp4", path, owner=owner, content_type="video/mp4"))
    client.delete_object(Bucket=code, Key=key)  # a delete marker too
    return client, stored


@pytest.mark.slow
def test_a_restart_keeps_objects_versions_and_bucket_settings(settings, engine, make_user, tmp_path):
    server = start_local_s3(tmp_path, state_dir=tmp_path / "s3")
    try:
        local = _settings_on(settings, server)
        client, stored = _populate(local, engine, server, make_user()[0])
        before = _everything(client, local.buckets.values())
        markers = client.list_object_versions(Bucket=local.bucket("code")).get("DeleteMarkers")
        server.stop()
        server = start_local_s3(tmp_path, port=_port(server), state_dir=tmp_path / "s3")
        after = _everything(client, local.buckets.values())
        assert after == before and len(after) == len(stored)
        assert {(s.bucket, s.key, s.version_id) for s in stored} <= set(after)
        assert client.list_object_versions(Bucket=local.bucket("code")).get("DeleteMarkers") == markers
        for spec in declared_buckets(local):  # versioning, encryption, public access block, TLS policy, lifecycle
            assert diff_bucket_settings(spec, read_bucket_settings(client, spec.name)) == {}
        # and it goes on: a new version after the restart is the newest one
        reply = client.put_object(Bucket=stored[0].bucket, Key=stored[0].key, Body=b"after")
        versions = client.list_object_versions(Bucket=stored[0].bucket, Prefix=stored[0].key)["Versions"]
        assert [v["VersionId"] for v in versions if v["IsLatest"]] == [reply["VersionId"]]
    finally:
        server.stop()


def test_control_the_in_memory_server_loses_everything_on_restart(settings, engine, make_user, tmp_path):
    server = start_local_s3(tmp_path)
    try:
        local = _settings_on(settings, server)
        client, stored = _populate(local, engine, server, make_user()[0])
        assert len(_everything(client, local.buckets.values())) == len(stored)
        server.stop()
        server = start_local_s3(tmp_path, port=_port(server))
        assert client.list_buckets()["Buckets"] == []
    finally:
        server.stop()


def _write_until_killed(server, client, bucket, seconds: float) -> dict:
    """Four writers put objects until the server is killed (-9) under them; returns the writes it answered."""
    answered: dict[tuple[str, str], str] = {}
    lock = threading.Lock()
    stop = threading.Event()

    def writer(n: int) -> None:
        i = 0
        while not stop.is_set():
            key, body = f"kill/{n}/{i}", uuid.uuid4().bytes * 64
            try:
                reply = client.put_object(Bucket=bucket, Key=key, Body=body)
            except Exception:  # noqa: BLE001 - the server died under this write: it was never answered
                return
            with lock:
                answered[(key, reply["VersionId"])] = hashlib.sha256(body).hexdigest()
            i += 1

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    time.sleep(seconds)
    server.kill()
    stop.set()
    for t in threads:
        t.join(30)
    return answered


@pytest.mark.slow
@pytest.mark.parametrize("durable", [True, False], ids=["durable", "control-in-memory"])
def test_kill_9_loses_no_answered_write(settings, tmp_path, durable):
    state_dir = tmp_path / "s3" if durable else None
    server = start_local_s3(tmp_path, state_dir=state_dir)
    try:
        local = _settings_on(settings, server)
        client = make_s3_client(local, max_attempts=1)
        bucket = local.bucket("temp")
        client.create_bucket(Bucket=bucket)
        client.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
        answered = _write_until_killed(server, client, bucket, seconds=2.0)
        assert len(answered) > 20
        server = start_local_s3(tmp_path, port=_port(server), state_dir=state_dir)
        if not durable:
            assert client.list_buckets()["Buckets"] == []
            return
        present = {
            (v["Key"], v["VersionId"]): v for v in client.list_object_versions(Bucket=bucket).get("Versions", [])
        }
        lost = [k for k in answered if k not in present]
        assert lost == []
        for key, version_id in list(answered)[:50]:
            body = client.get_object(Bucket=bucket, Key=key, VersionId=version_id)["Body"].read()
            assert hashlib.sha256(body).hexdigest() == answered[(key, version_id)]
    finally:
        server.stop()


def test_a_state_it_cannot_read_stops_the_server_instead_of_starting_empty(settings, tmp_path):
    server = start_local_s3(tmp_path, state_dir=tmp_path / "s3")
    client = make_s3_client(_settings_on(settings, server))
    client.create_bucket(Bucket="kept")
    server.stop()
    (tmp_path / "s3" / "state.pickle").write_bytes(b"not a snapshot")
    with pytest.raises(LocalS3Error) as refused:
        start_local_s3(tmp_path, port=_port(server), state_dir=tmp_path / "s3")
    assert refused.value.returncode == UNREADABLE_STATE_EXIT
    assert "cannot restore the state" in server.log_path.read_text()


def test_two_servers_never_share_a_state_directory(tmp_path):
    first = start_local_s3(tmp_path, state_dir=tmp_path / "s3")
    try:
        with pytest.raises(LocalS3Error) as refused:
            start_local_s3(tmp_path, state_dir=tmp_path / "s3")
        assert refused.value.returncode == UNREADABLE_STATE_EXIT
    finally:
        first.stop()


def test_the_timeline_has_every_request_answered_and_a_server_without_one_writes_none(settings, tmp_path):
    """`--timeline` (the migration benchmark's when-was-the-endpoint-idle): one line per answered request, start
    before end, in the window it was sent. Control: the server started without it writes no file."""
    from devtools.local_s3 import read_timeline

    timeline = tmp_path / "timeline.txt"
    for path in (timeline, None):
        server = start_local_s3(tmp_path, timeline=path)
        try:
            client = make_s3_client(_settings_on(settings, server))
            since = time.time()
            client.create_bucket(Bucket="timeline")
            for n in range(3):
                client.put_object(Bucket="timeline", Key=f"k{n}", Body=b"x" * n)
            client.list_objects_v2(Bucket="timeline")
            until = time.time()
        finally:
            server.stop()
        if path is not None:
            rows = read_timeline(timeline, since, until)
            assert [method for _, _, method in rows] == ["PUT", "PUT", "PUT", "PUT", "GET"]
            assert all(since <= start <= end <= until for start, end, _ in rows)
            timeline.rename(tmp_path / "kept.txt")
    assert not timeline.exists()
