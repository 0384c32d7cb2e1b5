"""The cut-over mirror against real Redis servers: legacy shape, both forms, never raising, retried later."""

import dataclasses
import json
import shutil
import socket
import subprocess
import time
import uuid
from datetime import datetime, timezone
from decimal import Decimal

import pytest
import redis

from t2m_pipeline.migration import mirror
from t2m_pipeline.migration.records import decode_job_hash, normalise_job


def row(job_id, **changes):
    base = dict(
        id=job_id, status="processing", progress_percentage=Decimal("42.50"), current_stage="rendering",
        updated_at=datetime(2025, 3, 1, 12, 0, 0, 250000, tzinfo=timezone.utc),
        started_at=datetime(2025, 3, 1, 11, 59, 0, tzinfo=timezone.utc), completed_at=None, error_info=None,
        created_at=datetime(2025, 3, 1, 11, 0, tzinfo=timezone.utc), priority="normal", job_type="video_generation",
        configuration={"topic": "Waves", "context": "c", "legacy": {"redis_key": "x"}}, is_deleted=False,
    )
    base.update(changes)
    return base


@pytest.fixture
def mirror_settings(settings, redis_db):
    mirror._pending.clear()
    yield dataclasses.replace(settings, legacy_redis_mirror=True, redis_url=redis_db)
    mirror._pending.clear()


def test_off_by_default_writes_nothing(settings, redis_db):
    job_id = str(uuid.uuid4())
    assert mirror.mirror_job_status(dataclasses.replace(settings, redis_url=redis_db), row(job_id)) is False
    assert redis.Redis.from_url(redis_db).exists(f"jobs:{job_id}") == 0


def test_json_form_is_updated_in_the_legacy_shape_keeping_other_fields(mirror_settings, redis_db):
    r = redis.Redis.from_url(redis_db)
    job_id = str(uuid.uuid4())
    legacy = {"id": job_id, "user_id": "user_legacy1", "status": "queued", "priority": "high", "job_type": "video_generation",
              "configuration": {"topic": "Waves", "context": "legacy context"}, "created_at": "2025-03-01 11:00:00",
              "updated_at": "2025-03-01 11:00:00", "is_deleted": False,
              "progress": {"percentage": 0, "current_stage": None, "stages_completed": ["queued"]}}
    r.set(f"jobs:{job_id}", json.dumps(legacy))
    assert mirror.mirror_job_status(mirror_settings, row(job_id)) is True
    written = json.loads(r.get(f"jobs:{job_id}"))
    assert written["status"] == "processing" and written["updated_at"] == "2025-03-01 12:00:00.250000"
    assert written["started_at"] == "2025-03-01 11:59:00"  # no microseconds when they are 0, like the legacy code
    assert written["progress"] == {"percentage": 42.5, "current_stage": "rendering", "stages_completed": ["queued"],
                                   "estimated_completion": None}
    assert written["priority"] == "high" and written["configuration"]["context"] == "legacy context"
    assert written["user_id"] == "user_legacy1"
    # what the legacy code (and our importer) reads back
    read_back = normalise_job(job_id, written)
    assert read_back.configuration["legacy"]["status"] == "processing" and read_back.status == "held"

    # a held row (a migrated job nobody requeued yet) shows the legacy system the status it wrote there
    held_id = str(uuid.uuid4())
    r.set(f"jobs:{held_id}", json.dumps({**legacy, "id": held_id}))
    held = row(held_id, status="held", configuration={"topic": "Waves", "legacy": {"redis_key": "x", "status": "queued"}})
    assert mirror.mirror_job_status(mirror_settings, held) is True
    assert json.loads(r.get(f"jobs:{held_id}"))["status"] == "queued"

    failed = row(job_id, status="failed", error_info={"stage": "rendering", "message": "manim exited 1", "scene": 2})
    mirror.mirror_job_status(mirror_settings, failed)
    error = json.loads(r.get(f"jobs:{job_id}"))["error"]
    assert error["error_message"] == "manim exited 1" and error["error_details"]["scene"] == 2


def test_hash_form_gets_json_encoded_fields_and_a_missing_record_is_created(mirror_settings, redis_db):
    r = redis.Redis.from_url(redis_db)
    job_id = str(uuid.uuid4())
    r.hset(f"jobs:{job_id}", mapping={"id": json.dumps(job_id), "user_id": json.dumps("user_h"), "status": json.dumps("queued"),
                                       "configuration": json.dumps({"topic": "Hash"}), "created_at": json.dumps("2025-01-01 00:00:00")})
    mirror.mirror_job_status(mirror_settings, row(job_id, status="completed", progress_percentage=Decimal("100")))
    fields = decode_job_hash(r.hgetall(f"jobs:{job_id}"))
    assert fields["status"] == "completed" and fields["progress"]["percentage"] == 100.0
    assert fields["configuration"] == {"topic": "Hash"} and fields["user_id"] == "user_h"
    assert r.type(f"jobs:{job_id}") == b"hash"

    fresh = str(uuid.uuid4())
    mirror.mirror_job_status(mirror_settings, row(fresh), clerk_user_id="user_new1")
    created = json.loads(r.get(f"jobs:{fresh}"))
    assert created["user_id"] == "user_new1" and created["configuration"] == {"topic": "Waves", "context": "c"}
    assert normalise_job(fresh, created).progress_percentage == Decimal("42.50")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_an_unreachable_redis_never_raises_and_the_write_is_retried_later(settings, tmp_path):
    mirror._pending.clear()
    port = free_port()
    down = dataclasses.replace(settings, legacy_redis_mirror=True, redis_url=f"redis://127.0.0.1:{port}/0")
    job_id = str(uuid.uuid4())
    started = time.monotonic()
    assert mirror.mirror_job_status(down, row(job_id, progress_percentage=Decimal("10"))) is False
    assert mirror.mirror_job_status(down, row(job_id, progress_percentage=Decimal("20"))) is False
    assert time.monotonic() - started < 10 and mirror.pending_count() == 1  # only the latest state is kept
    server = subprocess.Popen([shutil.which("redis-server"), "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                               "--appendonly", "no", "--dir", str(tmp_path)], stdout=subprocess.DEVNULL)
    try:
        client = redis.Redis(port=port)
        for _ in range(100):
            try:
                client.ping()
                break
            except redis.ConnectionError:
                time.sleep(0.05)
        assert mirror.flush_pending() == 0
        assert json.loads(client.get(f"jobs:{job_id}"))["progress"]["percentage"] == 20.0
    finally:
        server.terminate()
        server.wait(10)
        mirror._pending.clear()


def test_the_job_state_returned_by_transition_is_accepted(mirror_settings, redis_db):
    from t2m_pipeline.db.job_state import JobState

    job_id = uuid.uuid4()
    assert mirror.mirror_job_status(mirror_settings, JobState(job_id, "processing", Decimal("12.5"), "rendering"), "user_js")
    written = json.loads(redis.Redis.from_url(redis_db).get(f"jobs:{job_id}"))
    assert (written["status"], written["progress"]["percentage"], written["user_id"]) == ("processing", 12.5, "user_js")
    assert normalise_job(str(job_id), {**written, "configuration": {"topic": "t"}, "created_at": written["updated_at"]})



@pytest.mark.parametrize("form", ["json-encoded", "bare"])
def test_a_newer_hash_record_is_left_alone_whatever_the_form_of_its_time(mirror_settings, redis_db, form):
    from datetime import datetime, timezone

    from t2m_pipeline.db.job_state import JobState

    job_id, client = uuid.uuid4(), redis.Redis.from_url(redis_db)
    later = "2999-01-01 00:00:00"
    client.hset(f"jobs:{job_id}", mapping={"status": json.dumps("cancelled"),
                                           "updated_at": json.dumps(later) if form == "json-encoded" else later})
    state = JobState(job_id, "processing", Decimal("10"), "planning", datetime.now(timezone.utc))
    assert mirror.mirror_job_status(mirror_settings, state, "user_h") is False  # kept: the legacy record is newer
    assert client.hget(f"jobs:{job_id}", "status") == json.dumps("cancelled").encode()
    client.hset(f"jobs:{job_id}", "updated_at", json.dumps("2000-01-01 00:00:00"))  # older than the row: written
    assert mirror.mirror_job_status(mirror_settings, state, "user_h") is True
    assert client.hget(f"jobs:{job_id}", "status") == json.dumps("processing").encode()
