"""No side effects: migrating Redis launches no run (the real `new_jobs` sensor, evaluated on the migrated database);
an operator's requeue (library, CLI, Dagster job) does, and only for the jobs it names."""

import json

import dagster as dg
import pytest
import redis
from sqlalchemy import text

from t2m_pipeline.cli import main
from t2m_pipeline.defs.scenes.sensors import new_jobs
from t2m_pipeline.defs.migration.requeue import legacy_jobs_requeue_job
from t2m_pipeline.defs.resources import PostgresResource
from t2m_pipeline.defs.scenes.resources import JobQueueResource
from t2m_pipeline.migration.redis_import import migrate_redis
from t2m_pipeline.migration.requeue import RequeueError, requeue_held_jobs
from t2m_pipeline.partition_keys import decode_job_key


def tick(database: PostgresResource, instance, cursor=None) -> dg.SensorResult:
    with dg.build_sensor_context(instance=instance, resources={"database": database, "job_queue": JobQueueResource(wait_ms=0)}, cursor=cursor) as context:
        return new_jobs(context)


def statuses(engine, job_ids) -> dict:
    with engine.connect() as conn:
        rows = conn.execute(
            text("SELECT j.id, j.status, q.status AS queue FROM jobs j LEFT JOIN job_queue q ON q.job_id = j.id WHERE j.id = ANY(:i)"),
            {"i": list(job_ids)},
        ).all()
    return {str(r.id): (r.status, r.queue) for r in rows}


@pytest.fixture
def migrated(world, migration_db):
    settings, engine = migration_db
    migrate_redis(engine, redis.Redis.from_url(world.redis_url))
    return settings, engine, PostgresResource(database_url=settings.database_url)


def test_migrating_redis_launches_no_run_and_requeue_launches_exactly_the_named_jobs(world, migrated):
    settings, engine, database = migrated
    j = world.jobs
    held = [j["queued"], j["processing"], j["unlisted"]]  # queued or processing in the legacy system
    assert set(statuses(engine, held).values()) == {("held", "held")}
    with dg.instance_for_test() as instance:
        first = tick(database, instance)
        assert first.run_requests == [] and first.skip_reason.skip_message == "no queued jobs"
        assert set(statuses(engine, held).values()) == {("held", "held")}  # the sensor claimed nothing

        # control: the same rows made `queued` (what the import did before) are launched by the same sensor at once
        with engine.begin() as conn:
            conn.execute(text("UPDATE jobs SET status = 'queued' WHERE id = :i"), {"i": j["unlisted"]})
            conn.execute(text("UPDATE job_queue SET status = 'queued' WHERE job_id = :i"), {"i": j["unlisted"]})
        control = tick(database, instance, first.cursor)
        assert [decode_job_key(r.partition_key).job_id for r in control.run_requests] == [j["unlisted"]]

        report = requeue_held_jobs(engine, [j["queued"], j["deleted"], j["old"]])
        assert report.requeued == [j["queued"]]
        assert dict(report.skipped) == {j["deleted"]: "deleted in the legacy system", j["old"]: "not held (status completed)"}
        assert statuses(engine, [j["queued"]])[j["queued"]] == ("queued", "queued")
        launched = tick(database, instance, control.cursor)
        assert [decode_job_key(r.partition_key).job_id for r in launched.run_requests] == [j["queued"]]
        assert statuses(engine, [j["processing"]])[j["processing"]] == ("held", "held")  # not named: still held


def test_a_deleted_job_is_never_requeued_and_bad_requests_are_one_line(world, migrated):
    settings, engine, database = migrated
    report = requeue_held_jobs(engine, [world.jobs["deleted"]])
    assert report.requeued == [] and report.skipped == [(world.jobs["deleted"], "deleted in the legacy system")]
    with pytest.raises(RequeueError, match="is not a UUID"):
        requeue_held_jobs(engine, ["nope"])
    with pytest.raises(RequeueError, match="no job to requeue"):
        requeue_held_jobs(engine, [])


def run_cli(capsys, *args) -> tuple[int, str]:
    with pytest.raises(SystemExit) as exit_info:
        main(list(args))
    out, err = capsys.readouterr()
    return exit_info.value.code, out + err


def test_cli_requeue_all_then_the_sensor_launches_them(world, migrated, monkeypatch, capsys):
    settings, engine, database = migrated
    monkeypatch.setenv("T2M_DATABASE_URL", settings.database_url)
    code, output = run_cli(capsys, "migrate", "requeue")
    assert code == 2 and "--job ID" in output
    code, output = run_cli(capsys, "migrate", "requeue", "--all", "--json")
    assert code == 0, output
    requeued = json.loads(output)["requeued"]
    assert sorted(requeued) == sorted([world.jobs["queued"], world.jobs["processing"], world.jobs["unlisted"]])
    with dg.instance_for_test() as instance:
        launched = tick(database, instance)
    assert sorted(decode_job_key(r.partition_key).job_id for r in launched.run_requests) == sorted(requeued)
    code, output = run_cli(capsys, "migrate", "requeue", "--job", world.jobs["queued"])
    assert code == 1 and "not held" in output  # it is processing now: named, not queued


def requeued(result: dg.ExecuteInProcessResult) -> int:
    [output] = [e for e in result.all_events if e.event_type == dg.DagsterEventType.STEP_OUTPUT]
    return output.event_specific_data.metadata["requeued"].value


def test_the_requeue_job_queues_only_what_its_config_names(world, migrated):
    settings, engine, database = migrated
    with dg.instance_for_test() as instance:
        nothing = legacy_jobs_requeue_job.execute_in_process(instance=instance, resources={"database": database})
        assert nothing.success and requeued(nothing) == 0
        assert set(statuses(engine, [world.jobs["queued"]]).values()) == {("held", "held")}
        named = legacy_jobs_requeue_job.execute_in_process(
            instance=instance, resources={"database": database},
            run_config={"ops": {"queue_held_legacy_jobs": {"config": {"job_ids": [world.jobs["unlisted"]]}}}},
        )
        assert named.success and requeued(named) == 1
        [observation] = instance.fetch_observations(dg.AssetKey("jobs_table"), limit=5).records
        assert observation.asset_observation.metadata["requeued"].value == 1
        launched = tick(database, instance)
    assert [decode_job_key(r.partition_key).job_id for r in launched.run_requests] == [world.jobs["unlisted"]]
