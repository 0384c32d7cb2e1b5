"""The pipeline's status write-back reaches the legacy Redis during cut-over, and never depends on it."""

import json
import time
import uuid

import pytest
import redis

from t2m_pipeline.config import Settings
from t2m_pipeline.db.jobs import submit_job
from t2m_pipeline.migration import mirror
from t2m_pipeline.pipeline.status import step_started


@pytest.fixture
def job_id(engine):
    mirror._pending.clear()
    yield submit_job(engine, clerk_user_id=f"user_{uuid.uuid4().hex[:8]}", email="a@b.c", topic="Mirrors", context="c")
    mirror.enable_mirror(Settings())  # off again for the next test in this process
    mirror._pending.clear()


def mirror_on(redis_url: str) -> None:
    """As a run's `legacy_mirror` resource does when the deployment turns the mirror on."""
    from t2m_pipeline.defs.resources import LegacyMirrorResource

    LegacyMirrorResource(legacy_redis_mirror="1", redis_url=redis_url).setup_for_execution(None)


def test_a_status_change_is_mirrored_in_the_legacy_shape(engine, job_id, redis_db):  # noqa: F811
    mirror_on(redis_db)
    state = step_started(engine, job_id, None)
    assert state.status == "processing"
    record = json.loads(redis.Redis.from_url(redis_db).get(f"jobs:{job_id}"))
    assert record["id"] == str(job_id) and record["status"] == "processing"


def test_an_unavailable_redis_never_blocks_or_fails_the_step(engine, job_id):
    mirror_on("redis://127.0.0.1:9/0")
    started = time.monotonic()
    state = step_started(engine, job_id, None)
    assert state.status == "processing"
    assert time.monotonic() - started < 10
    assert str(job_id) in mirror._pending  # kept for a later retry


def test_control_with_the_mirror_off_a_status_change_stays_out_of_redis(engine, job_id, redis_db):  # noqa: F811
    from t2m_pipeline.defs.resources import LegacyMirrorResource

    LegacyMirrorResource(legacy_redis_mirror="0", redis_url=redis_db).setup_for_execution(None)
    assert step_started(engine, job_id, None).status == "processing"
    assert redis.Redis.from_url(redis_db).get(f"jobs:{job_id}") is None
