"""Redis unavailable while the legacy mirror is on: a pipeline job runs end to end (sensors -> plan_job,
render_scene, combine_scenes, in process) with its legacy Redis stopped. The job completes, no step fails; the
mirror's writes wait; once Redis is back, the `legacy_mirror_resync` sensor writes the job's final state. Control:
the in-process retry queue alone (its run worker gone, so its queue gone) never gets the final state there.
"""

import json

import dagster as dg
import pytest
import redis

from t2m_pipeline.defs.migration.sensors import legacy_mirror_resync
from t2m_pipeline.devtools.private_redis import PrivateRedis
from t2m_pipeline.migration import mirror
from t2m_pipeline_tests.defs.scenes.support import (  # noqa: F401 - fixtures
    insert_job,
    instance,
    pipeline_db_url,
    pipeline_engine,
    resources,
)
from t2m_pipeline_tests.faults.pipeline_scenarios import run_redis_outage_scenario

SCENES = 2


@pytest.fixture
def legacy_redis(monkeypatch):
    """A private Redis as the legacy one, mirror on; the in-process retry queue starts empty."""
    mirror._pending.clear()
    mirror._clients.clear()
    with PrivateRedis() as server:
        monkeypatch.setenv("T2M_LEGACY_REDIS_MIRROR", "1")
        monkeypatch.setenv("T2M_REDIS_URL", server.url(0))
        yield server
    mirror._pending.clear()
    mirror._clients.clear()


def legacy_record(server: PrivateRedis, job_id: str) -> dict | None:
    raw = redis.Redis.from_url(server.url(0)).get(f"jobs:{job_id}")
    return json.loads(raw) if raw else None


def resync_tick(instance, resources, cursor):
    with dg.build_sensor_context(instance=instance, resources=resources, cursor=cursor) as context:
        result = legacy_mirror_resync(context)
        return result, context.cursor


@pytest.mark.slow
def test_a_job_completes_with_redis_down_and_its_final_state_reaches_redis_once_it_is_back(
    settings, resources, pipeline_engine
):
    report = run_redis_outage_scenario(settings, resources, jobs=1, scenes=SCENES)
    assert (report.completed, report.runs_failed, report.steps_failed) == (1, 0, 0)
    assert report.pending_after_runs == 1  # the failed write waited for a retry ...
    assert report.run_seconds < 120  # ... and never held the runs for long (2 s socket timeouts)
    assert report.cursor_held  # Redis still down: the sensor did not move past the job
    assert report.mirrored >= 1 and report.records_right == 1  # back: the final state written from the database


def test_control_without_the_resync_the_final_state_never_reaches_redis(legacy_redis, pipeline_engine):
    from t2m_pipeline.config import load_settings
    from t2m_pipeline.pipeline.status import step_started

    _, job_id = insert_job(pipeline_engine)
    legacy_redis.stop()
    assert step_started(pipeline_engine, job_id, None).status == "processing"
    mirror._pending.clear()  # the run worker ends
    legacy_redis.start()
    assert mirror.flush_pending(load_settings()) == 0
    assert legacy_record(legacy_redis, job_id) is None


def test_a_legacy_record_newer_than_the_row_is_left_alone(legacy_redis, instance, resources, pipeline_engine):
    _, cursor = resync_tick(instance, resources, None)
    _, job_id = insert_job(pipeline_engine)
    newer = {"id": str(job_id), "status": "cancelled", "updated_at": "2999-01-01 00:00:00", "progress": {"percentage": 0}}
    redis.Redis.from_url(legacy_redis.url(0)).set(f"jobs:{job_id}", json.dumps(newer))
    result, _ = resync_tick(instance, resources, cursor)
    assert result.skip_message.startswith("1 job(s) mirrored")
    assert legacy_record(legacy_redis, job_id) == newer
