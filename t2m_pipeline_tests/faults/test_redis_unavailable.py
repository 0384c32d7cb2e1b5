"""Redis unavailable while the legacy mirror is on: a pipeline job runs end to end (sensors -> plan_job,
render_scenes, which combines, in process) with its legacy Redis stopped. The job completes, no step fails; the
mirror's writes wait; once Redis is back, the `legacy_mirror_resync` sensor writes the job's final state. Control:
the in-process retry queue alone (its run worker gone, so its queue gone) never gets the final state there.
"""

import dataclasses
import json

import pytest
import redis
from sqlalchemy import text

from devtools.private_redis import PrivateRedis
from t2m_pipeline.config import Settings
from t2m_pipeline.migration import mirror
from t2m_pipeline_tests.defs.scenes.support import (  # noqa: F401 - fixtures
    apply_partition_requests,
    insert_job,
    instance,
    pipeline_db_url,
    pipeline_defs,
    pipeline_engine,
    resources,
    run_requested,
    sensor_result,
)
from t2m_pipeline_tests.faults.pipeline_scenarios import resync_tick, run_redis_outage_scenario

SCENES = 2


@pytest.fixture
def legacy_redis():
    """A private Redis as the legacy one; the in-process retry queue starts empty."""
    mirror._pending.clear()
    mirror._clients.clear()
    with PrivateRedis() as server:
        yield server
    mirror.enable_mirror(Settings())  # off again for the next test in this process
    mirror._pending.clear()
    mirror._clients.clear()


@pytest.fixture
def mirror_settings(settings, resources, legacy_redis):
    """The pipeline's settings with the mirror on, into `legacy_redis`."""
    return dataclasses.replace(settings, database_url=resources["database"].database_url, legacy_redis_mirror=True, redis_url=legacy_redis.url(0))


@pytest.fixture
def mirror_resources(mirror_settings):
    from t2m_pipeline.defs.scenes.resources import pipeline_resources_for

    return pipeline_resources_for(mirror_settings)


def legacy_record(server: PrivateRedis, job_id: str) -> dict | None:
    raw = redis.Redis.from_url(server.url(0)).get(f"jobs:{job_id}")
    return json.loads(raw) if raw else None


@pytest.mark.slow
def test_a_job_completes_with_redis_down_and_its_final_state_reaches_redis_once_it_is_back(
    settings, resources, pipeline_engine
):
    report = run_redis_outage_scenario(dataclasses.replace(settings, database_url=resources["database"].database_url), jobs=1, scenes=SCENES)
    assert (report.completed, report.runs_failed, report.steps_failed) == (1, 0, 0)
    assert report.pending_after_runs == 1  # the failed write waited for a retry ...
    assert report.run_seconds < 120  # ... and never held the runs for long (2 s socket timeouts)
    assert report.cursor_held  # Redis still down: the sensor did not move past the job
    assert report.mirrored >= 1 and report.records_right == 1  # back: the final state written from the database


def test_control_without_the_resync_the_final_state_never_reaches_redis(legacy_redis, mirror_settings, pipeline_engine):
    from t2m_pipeline.pipeline.status import step_started

    mirror.enable_mirror(mirror_settings)  # as the run's `legacy_mirror` resource does

    _, job_id = insert_job(pipeline_engine)
    legacy_redis.stop()
    assert step_started(pipeline_engine, job_id, None).status == "processing"
    mirror._pending.clear()  # the run worker ends, and its queue with it
    legacy_redis.start()
    mirror.flush_pending(mirror_settings)
    assert legacy_record(legacy_redis, job_id) is None


def test_a_legacy_record_newer_than_the_row_is_left_alone(legacy_redis, instance, mirror_resources, pipeline_engine):
    resources = mirror_resources
    _, cursor = resync_tick(instance, resources, None)
    _, job_id = insert_job(pipeline_engine)
    newer = {"id": str(job_id), "status": "cancelled", "updated_at": "2999-01-01 00:00:00", "progress": {"percentage": 0}}
    redis.Redis.from_url(legacy_redis.url(0)).set(f"jobs:{job_id}", json.dumps(newer))
    result, _ = resync_tick(instance, resources, cursor)
    (event,) = result.asset_events  # a tick that decided something is a materialization of the mirror, not a skip
    assert (event.metadata["written"].value, event.metadata["kept_newer"].value) == (0, 1)
    assert legacy_record(legacy_redis, job_id) == newer


def test_a_row_that_cannot_be_written_in_the_legacy_shape_holds_back_no_other(legacy_redis, instance, mirror_resources, pipeline_engine):
    resources = mirror_resources
    _, cursor = resync_tick(instance, resources, None)
    _, bad = insert_job(pipeline_engine)
    with pipeline_engine.begin() as conn:  # written by another system: an error the legacy shape cannot hold
        conn.execute(text("UPDATE jobs SET error_info = CAST(:e AS jsonb) WHERE id = :j"),
                     {"e": json.dumps({"retry_count": "three"}), "j": bad})
    _, good = insert_job(pipeline_engine)
    result, _ = resync_tick(instance, resources, cursor)
    (event,) = result.asset_events
    assert event.description.startswith("1 job row(s) mirrored, 0 newer in the legacy Redis kept, 1 skipped")
    assert legacy_record(legacy_redis, good)["status"] == "queued" and legacy_record(legacy_redis, bad) is None


def test_the_cursor_stays_behind_recent_rows_so_a_late_commit_is_not_passed_over(legacy_redis, mirror_settings, pipeline_engine):
    from datetime import datetime, timedelta, timezone

    from t2m_pipeline.migration.mirror import RESYNC_LAG, resync_cursor, resync_jobs

    now = datetime.now(timezone.utc)
    start = resync_cursor(now - timedelta(hours=1))
    _, first = insert_job(pipeline_engine)
    result = resync_jobs(mirror_settings, pipeline_engine, start, now=now)
    assert result.written == 1 and result.cursor == resync_cursor(now - RESYNC_LAG)
    _, late = insert_job(pipeline_engine)  # committed after the pass, stamped a minute before it
    with pipeline_engine.begin() as conn:
        conn.execute(text("UPDATE jobs SET updated_at = :t WHERE id = :j"), {"t": now - timedelta(minutes=1), "j": late})
    again = resync_jobs(mirror_settings, pipeline_engine, result.cursor, now=now)
    assert again.written == 2 and legacy_record(legacy_redis, late)["status"] == "queued"


@pytest.mark.parametrize("mirror_on", [True, False], ids=["mirror-on", "control-mirror-off"])
def test_a_run_takes_the_mirror_switch_from_its_own_resources(legacy_redis, mirror_settings, instance, pipeline_engine, mirror_on):
    """A fresh run worker has the mirror off until its `database` resource is set up: the run's resources alone turn
    it on (control: the same run with the deployment's mirror off writes nothing to the legacy Redis)."""
    from t2m_pipeline.defs.scenes.resources import pipeline_resources_for
    from t2m_pipeline.defs.scenes.sensors import new_jobs

    resources = pipeline_resources_for(dataclasses.replace(mirror_settings, legacy_redis_mirror=mirror_on))
    _, job_id = insert_job(pipeline_engine, configuration={"scene_count": 1, "quality": "low"})
    tick = sensor_result(new_jobs, instance, resources)
    apply_partition_requests(instance, tick)
    mirror.enable_mirror(Settings())  # as in a fresh run worker: nothing has turned it on
    redis.Redis.from_url(legacy_redis.url(0)).flushdb()
    assert run_requested(pipeline_defs(resources), instance, "plan_job", tick.run_requests[0]).success
    record = legacy_record(legacy_redis, str(job_id))
    assert (record is not None and record["status"] == "processing") is mirror_on
