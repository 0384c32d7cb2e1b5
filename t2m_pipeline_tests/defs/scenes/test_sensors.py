"""The sensors against the real database: order, bounds, hostile rows, no double launch, failure write-back."""

import json

import pytest

import dagster as dg
from sqlalchemy import text

from t2m_pipeline.db.job_state import transition
from t2m_pipeline.defs.scenes import handoff, sensors
from t2m_pipeline.defs.scenes.sensors import combine_ready_jobs, new_jobs, pipeline_run_failures, scene_runs
from t2m_pipeline.partition_keys import decode_job_key, encode_job_key
from t2m_pipeline.pipeline.dispatch import QUEUED_JOBS_SQL
from t2m_pipeline_tests.defs.scenes.support import (
    apply_partition_requests,
    insert_job,
    job_row,
    pipeline_defs,
    queue_row,
    run_requested,
    sensor_result,
)


def failure_sensor_sees(result, instance, resources) -> None:
    """The run-failure sensor evaluated on a failed run, as the daemon would."""
    failure = next(e for e in result.all_events if e.event_type == dg.DagsterEventType.RUN_FAILURE)
    with dg.build_run_status_sensor_context(
        sensor_name="pipeline_run_failures", dagster_event=failure, dagster_instance=instance,
        dagster_run=result.dagster_run, resources=resources,
    ) as context:
        pipeline_run_failures(context.for_run_failure())


def launched_jobs(result):
    return [decode_job_key(r.partition_key).job_id for r in result.run_requests]


def test_highest_priority_first_then_queue_order_and_never_twice(instance, resources, pipeline_engine):
    low = insert_job(pipeline_engine, priority="low")[1]
    normal_1 = insert_job(pipeline_engine, priority="normal")[1]
    urgent = insert_job(pipeline_engine, priority="urgent")[1]
    high = insert_job(pipeline_engine, priority="high")[1]
    normal_2 = insert_job(pipeline_engine, priority="normal")[1]

    tick = sensor_result(new_jobs, instance, resources)
    assert launched_jobs(tick) == [urgent, high, normal_1, normal_2, low]
    assert [k for r in tick.dynamic_partitions_requests for k in r.partition_keys] == [r.partition_key for r in tick.run_requests]
    for job_id in (low, urgent):
        row, queue = job_row(pipeline_engine, job_id), queue_row(pipeline_engine, job_id)
        assert (row["status"], row["current_stage"], queue["status"]) == ("processing", "planning", "processing")
    assert json.loads(tick.cursor)["launched_total"] == 5

    again = sensor_result(new_jobs, instance, resources, tick.cursor)
    assert not again.run_requests and json.loads(again.cursor)["launched_total"] == 5


def test_each_tick_is_bounded_and_the_backlog_drains(instance, resources, pipeline_engine, monkeypatch):
    monkeypatch.setattr(sensors, "MAX_JOBS_PER_TICK", 7)
    jobs = [insert_job(pipeline_engine, clerk_id="user_bulk")[1] for _ in range(10)]
    first = sensor_result(new_jobs, instance, resources)
    second = sensor_result(new_jobs, instance, resources, first.cursor)
    assert launched_jobs(first) == jobs[:7] and launched_jobs(second) == jobs[7:]
    assert not sensor_result(new_jobs, instance, resources, second.cursor).run_requests


def test_hostile_rows_fail_with_a_reason_and_do_not_stall_the_others(instance, resources, pipeline_engine):
    bad = {
        "string_config": insert_job(pipeline_engine, priority="urgent", raw_configuration_sql="'\"just a string\"'::jsonb")[1],
        "array_config": insert_job(pipeline_engine, priority="urgent", configuration=[1, 2, 3])[1],
        "bad_count": insert_job(pipeline_engine, priority="urgent", configuration={"scene_count": "DROP TABLE jobs"})[1],
        "bad_quality": insert_job(pipeline_engine, priority="urgent", configuration={"quality": {"$gt": ""}})[1],
        "empty_topic": insert_job(pipeline_engine, priority="urgent", topic="   ")[1],
    }
    ignored = {
        "deleted": insert_job(pipeline_engine, is_deleted=True)[1],
        "other_type": insert_job(pipeline_engine, job_type="file_processing")[1],
        "no_queue_row_is_not_a_dispatch": insert_job(pipeline_engine, queue=False)[1],
    }
    good = insert_job(pipeline_engine, priority="low", topic="Entropy ünïcode \U0001f525", configuration={"scene_count": 2})[1]

    tick = sensor_result(new_jobs, instance, resources)
    assert launched_jobs(tick) == [good]
    for name, job_id in bad.items():
        row = job_row(pipeline_engine, job_id)
        assert row["status"] == "failed", name
        assert row["error_info"]["stage"] == "planning" and row["error_info"]["message"].startswith("job row rejected"), name
        assert queue_row(pipeline_engine, job_id)["status"] == "failed"
    for name, job_id in ignored.items():
        assert job_row(pipeline_engine, job_id)["status"] == "queued", name
    assert json.loads(tick.cursor)["rejected_total"] == len(bad)
    assert not sensor_result(new_jobs, instance, resources, tick.cursor).run_requests


def queued_at(engine, job_id, value_sql):
    with engine.begin() as conn:
        conn.execute(text(f"UPDATE job_queue SET queued_at = {value_sql} WHERE job_id = :j"), {"j": job_id})


@pytest.mark.parametrize("read_first", [False, True], ids=["sensor", "sensor-after-a-driver-read"])
def test_rows_the_driver_cannot_even_decode_fail_one_by_one_and_the_tick_goes_on(instance, resources, pipeline_engine, read_first):
    """A 3,000-deep configuration, a 5,000-digit number, 1e999, queued_at 'infinity' or past year 9999: each raised
    while fetching in the old single query and stalled every tick. Now each is its own failed job with a one-line
    reason, and the valid jobs around them (one with a megabyte of description) launch."""
    deep = "[" * 3000 + "]" * 3000
    bad = {
        "deep": (insert_job(pipeline_engine, priority="urgent", raw_configuration_sql=f"CAST('{{\"a\": {deep}}}' AS jsonb)")[1], "nested 3001 levels"),
        "long_number": (insert_job(pipeline_engine, priority="urgent", raw_configuration_sql="CAST('{\"scene_count\": " + "9" * 5000 + "}' AS jsonb)")[1], "5000-digit number"),
        "huge_float": (insert_job(pipeline_engine, priority="urgent", raw_configuration_sql="CAST('{\"x\": 1e999}' AS jsonb)")[1], "digit number"),
        "big": (insert_job(pipeline_engine, priority="urgent", configuration={"pad": "x" * 100_000})[1], "bytes: expected at most"),
        "infinity": (insert_job(pipeline_engine, priority="urgent")[1], "'infinity'"),
        "year_99999": (insert_job(pipeline_engine, priority="urgent")[1], "expected a finite time"),
        "wrong_type": (insert_job(pipeline_engine, priority="urgent", configuration={"scene_count": True})[1], "scene_count"),
    }
    queued_at(pipeline_engine, bad["infinity"][0], "'infinity'")
    queued_at(pipeline_engine, bad["year_99999"][0], "'99999-01-01 00:00+00'")
    good = [insert_job(pipeline_engine, priority="urgent", configuration={"scene_count": 1})[1] for _ in range(2)]
    good.append(insert_job(pipeline_engine, priority="urgent", description="d" * 1_000_000)[1])  # cut in SQL, then planned
    if read_first:  # what the old query did: hand every column to the driver (the control: it raises on these rows)
        from sqlalchemy.exc import SQLAlchemyError

        with pipeline_engine.connect() as conn:
            with pytest.raises((RecursionError, ValueError, SQLAlchemyError)):
                conn.execute(text("SELECT j.configuration, q.queued_at FROM jobs j JOIN job_queue q ON q.job_id = j.id")).all()
    tick = sensor_result(new_jobs, instance, resources)
    assert sorted(launched_jobs(tick)) == sorted(good)
    for name, (job_id, reason) in bad.items():
        with pipeline_engine.connect() as conn:
            queue_status = conn.execute(text("SELECT status FROM job_queue WHERE job_id = :j"), {"j": job_id}).scalar_one()
            message = conn.execute(text("SELECT error_info->>'message' FROM jobs WHERE id = :j"), {"j": job_id}).scalar_one()
        assert queue_status == "failed", name
        assert message.startswith("job row rejected:") and reason in message and "\n" not in message and len(message) < 400, (name, message)
    assert json.loads(tick.cursor)["rejected_total"] == len(bad) and json.loads(tick.cursor)["skipped"] == []


def test_a_row_that_cannot_be_marked_is_skipped_and_remembered(instance, resources, pipeline_engine):
    stuck = insert_job(pipeline_engine, priority="urgent")[1]
    good = insert_job(pipeline_engine)[1]
    # Another system holds a bad queue row: its status check passes but the job row was moved on without it.
    with pipeline_engine.begin() as conn:
        conn.execute(text("ALTER TABLE jobs ADD CONSTRAINT ck_test_block CHECK (id <> CAST(:j AS uuid) OR status = 'queued') NOT VALID".replace(":j", f"'{stuck}'")))
    try:
        tick = sensor_result(new_jobs, instance, resources)
        assert launched_jobs(tick) == [good]
        assert json.loads(tick.cursor)["skipped"] == [stuck]
        assert job_row(pipeline_engine, stuck)["status"] == "queued"
        assert not sensor_result(new_jobs, instance, resources, tick.cursor).run_requests
    finally:
        with pipeline_engine.begin() as conn:
            conn.execute(text("ALTER TABLE jobs DROP CONSTRAINT ck_test_block"))


def test_a_requeued_job_gets_a_new_run_key(instance, resources, pipeline_engine):
    job_id = insert_job(pipeline_engine)[1]
    first = sensor_result(new_jobs, instance, resources).run_requests[0]
    transition(pipeline_engine, job_id, "queued")  # the stuck-job audit's re-queue policy
    second = sensor_result(new_jobs, instance, resources).run_requests[0]
    assert first.partition_key == second.partition_key and first.run_key != second.run_key


def test_dispatch_query_walks_the_partial_index(pipeline_engine):
    with pipeline_engine.begin() as conn:
        conn.execute(text("SET LOCAL enable_seqscan = off"))
        conn.execute(text("SET LOCAL enable_sort = off"))
        plan = "\n".join(r[0] for r in conn.execute(text(f"EXPLAIN {QUEUED_JOBS_SQL.text}"), {"limit": 100, "exclude": []}))
    assert "ix_job_queue_dispatch" in plan, plan
    assert "Sort Key" not in plan, plan


def test_scene_runs_are_bounded_per_tick_and_skip_malformed_outlines(instance, resources, pipeline_engine, monkeypatch):
    monkeypatch.setattr(sensors, "MAX_RUNS_PER_TICK", 2)
    defs = pipeline_defs(resources)
    for _ in range(3):
        insert_job(pipeline_engine, configuration={"scene_count": 3})
    tick = sensor_result(new_jobs, instance, resources)
    apply_partition_requests(instance, tick)
    for request in tick.run_requests:
        assert run_requested(defs, instance, "plan_job", request).success
    first = sensor_result(scene_runs, instance, resources)
    assert len(first.run_requests) == 2  # one run per outline (its scenes' range), at most 2 a tick
    second = sensor_result(scene_runs, instance, resources, first.cursor)
    assert len(second.run_requests) == 1
    starts = [r.tags["dagster/asset_partition_range_start"] for r in first.run_requests + second.run_requests]
    assert len(set(starts)) == 3 and all(s.endswith("/001") for s in starts)
    assert not sensor_result(scene_runs, instance, resources, second.cursor).run_requests


def test_run_failure_sensor_fails_the_job_when_the_step_could_not(instance, resources, pipeline_engine):
    """A run that died without writing back (say the database was down at that moment) still fails its job."""
    user_id, job_id = insert_job(pipeline_engine, configuration={"scene_count": 1})
    key = encode_job_key(user_id, job_id)
    tick = sensor_result(new_jobs, instance, resources)
    apply_partition_requests(instance, tick)

    @dg.op(name="scene_outline")
    def crash():
        raise RuntimeError("worker lost")

    crash_job = dg.GraphDefinition(name="plan_job", node_defs=[crash]).to_job(name="plan_job")
    result = crash_job.execute_in_process(instance=instance, tags={"dagster/partition": key}, raise_on_error=False)
    assert not result.success and job_row(pipeline_engine, job_id)["status"] == "processing"
    failure_sensor_sees(result, instance, resources)
    row = job_row(pipeline_engine, job_id)
    assert row["status"] == "failed" and row["error_info"]["stage"] == "planning"
    assert result.run_id in row["error_info"]["message"] and row["error_info"]["log_key"] is None


def test_run_failure_sensor_ignores_other_domains_runs(instance, resources, pipeline_engine):
    user_id, job_id = insert_job(pipeline_engine)
    sensor_result(new_jobs, instance, resources)

    @dg.op(name="legacy_files")
    def other():
        raise RuntimeError("not ours")

    result = dg.GraphDefinition(name="legacy", node_defs=[other]).to_job(name="legacy").execute_in_process(
        instance=instance, tags={"dagster/partition": encode_job_key(user_id, job_id)}, raise_on_error=False
    )
    failure_sensor_sees(result, instance, resources)
    assert job_row(pipeline_engine, job_id)["status"] == "processing"


def test_combine_sensor_requests_only_complete_healthy_jobs(instance, resources, pipeline_engine):
    from t2m_pipeline.db.files import FileRecord, record_file
    from t2m_pipeline.partition_keys import encode_scene_key
    from t2m_pipeline.pipeline import status
    from t2m_pipeline.storage import layout
    from t2m_pipeline.vocabulary import FileType

    def planned_with_one_scene_done():
        user_id, job_id = insert_job(pipeline_engine)
        transition(pipeline_engine, job_id, "processing")
        keys = [(layout.job_plan_key(user_id, job_id, "scene_outline.json"), FileType.SCENE_OUTLINE, {"scene_count": 1}),
                (layout.scene_video_key(user_id, job_id, 1), FileType.SCENE_VIDEO, {"scene_number": 1}),
                (layout.thumbnail_key(user_id, job_id, 1), FileType.THUMBNAIL, {"scene_number": 1})]
        with pipeline_engine.begin() as conn:
            for key, file_type, extra in keys:
                record_file(conn, FileRecord(user_id, file_type, "b", key, "v1", 1, "0" * 64, "x/y", job_id=job_id, extra=extra))
        instance.report_runless_asset_event(dg.AssetMaterialization("thumbnail", partition=encode_scene_key(user_id, job_id, 1)))
        return user_id, job_id

    ready = planned_with_one_scene_done()
    failed = planned_with_one_scene_done()
    status.step_failed(pipeline_engine, failed[1], stage="rendering", message="x", scene=1)
    cancelled = planned_with_one_scene_done()
    transition(pipeline_engine, cancelled[1], "cancelled")
    instance.report_runless_asset_event(dg.AssetMaterialization("thumbnail", partition="not/a/scene"))

    tick = sensor_result(combine_ready_jobs, instance, resources)
    assert [r.partition_key for r in tick.run_requests] == [encode_job_key(*ready)]
    assert not sensor_result(combine_ready_jobs, instance, resources, tick.cursor).run_requests


def test_the_sensors_ask_for_the_very_runs_a_handoff_queues(instance, resources, pipeline_engine):
    """Dagster launches no second run under a sensor's run key, so the runs a plan run queues (handoff.py) and the
    requests of the sensor reacting after it must agree: the scene runs' keys name the outline's run. The combine
    sensor asks for nothing for videos the scenes run combined itself (its video names them), and for a combine
    when a scene's video changes afterwards (a new version, a new key)."""
    from t2m_pipeline.db.files import FileRecord, record_file
    from t2m_pipeline.defs.scenes.partitions import COMBINED_VIDEO
    from t2m_pipeline.pipeline import status
    from t2m_pipeline.storage import layout
    from t2m_pipeline.vocabulary import FileType

    defs = pipeline_defs(resources)
    user_id, job_id = insert_job(pipeline_engine, configuration={"scene_count": 2})
    job_key = encode_job_key(user_id, job_id)
    tick = sensor_result(new_jobs, instance, resources)
    apply_partition_requests(instance, tick)
    plan = run_requested(defs, instance, "plan_job", tick.run_requests[0])
    assert plan.success
    scenes = sensor_result(scene_runs, instance, resources)
    with pipeline_engine.connect() as conn:
        handed = [r.request() for r in handoff.scene_runs_after_outline(conn, instance, job_key, 2, plan.run_id)]
        replanned = handoff.scene_runs_after_outline(conn, instance, job_key, 2, "a-later-plan-run")
    assert [(r.run_key, r.partition_key, dict(r.tags)) for r in scenes.run_requests] == [(r.run_key, r.partition_key, dict(r.tags)) for r in handed]
    assert not {r.run_key for r in replanned} & {r.run_key for r in handed}  # a new plan renders its scenes again
    with pipeline_engine.connect() as conn:
        assert handoff.combine_run_when_ready(conn, instance, job_key) is None  # nothing rendered yet
    for request in scenes.run_requests:
        assert run_requested(defs, instance, "render_scenes", request).success
    with pipeline_engine.connect() as conn:
        key_now = handoff.combine_run_key(job_key, status.job_objects(conn, job_id))
        assert handoff.combine_run_when_ready(conn, instance, job_key) is None
    [record] = instance.fetch_materializations(dg.AssetRecordsFilter(asset_key=COMBINED_VIDEO, asset_partitions=[job_key]), limit=5).records
    assert record.asset_materialization.metadata[handoff.COMBINED_FROM].value == key_now
    assert not sensor_result(combine_ready_jobs, instance, resources).run_requests

    # scene 2's video changes (a new version): the combined video no longer holds it
    with pipeline_engine.begin() as conn:
        record_file(conn, FileRecord(user_id, FileType.SCENE_VIDEO, "b", layout.scene_video_key(user_id, job_id, 2), "v-new", 1,
                                     "0" * 64, "video/mp4", job_id=job_id, extra={"scene_number": 2}))
    combine = sensor_result(combine_ready_jobs, instance, resources)
    with pipeline_engine.connect() as conn:
        ready = handoff.combine_run_when_ready(conn, instance, job_key)
    assert ready is not None and ready.run_key != key_now
    assert [(r.run_key, r.partition_key, dict(r.tags)) for r in combine.run_requests] == [(ready.run_key, job_key, ready.tags)]


@pytest.mark.parametrize("rule", ["on", "off"], ids=["last-thumbnail-rule", "control-rows-alone"])
def test_the_combine_sensor_waits_for_the_last_thumbnail_materialization(instance, resources, pipeline_engine, monkeypatch, rule):
    """A job's rows are complete a moment before its last thumbnail's materialization is stored: its run is
    combining the videos then (combine_in_step). A sensor tick at that moment, reacting to an earlier scene's
    thumbnail, must not ask for a combine run, or the job is combined twice. Here the daemon ticks (one
    materialization a tick) while the scenes step combines; the control judges by the rows alone and asks."""
    from t2m_pipeline.pipeline import steps

    monkeypatch.setattr(sensors, "MAX_RECORDS_PER_TICK", 1)
    if rule == "off":
        monkeypatch.setattr(sensors, "_thumbnails_recorded", lambda context, keys, upto: True)
    defs = pipeline_defs(resources)
    insert_job(pipeline_engine, configuration={"scene_count": 2})
    tick = sensor_result(new_jobs, instance, resources)
    apply_partition_requests(instance, tick)
    assert run_requested(defs, instance, "plan_job", tick.run_requests[0]).success
    scenes = sensor_result(scene_runs, instance, resources)
    apply_partition_requests(instance, scenes)

    ticks = []
    combine = steps.combine

    def combine_while_the_daemon_ticks(p, key):
        ticks.append(sensor_result(combine_ready_jobs, instance, resources))
        return combine(p, key)

    monkeypatch.setattr(steps, "combine", combine_while_the_daemon_ticks)
    for request in scenes.run_requests:
        assert run_requested(defs, instance, "render_scenes", request).success
    ticks.append(sensor_result(combine_ready_jobs, instance, resources, ticks[0].cursor))
    assert len(ticks) == 2 and not ticks[1].run_requests  # after the run: the job's video is made, nothing to ask
    if rule == "on":
        assert not ticks[0].run_requests
    else:
        assert len(ticks[0].run_requests) == 1  # a second combine of the job the step was combining


def test_a_sensor_stopped_in_the_ui_gets_nothing_queued_on_its_behalf(instance):
    """Stopping scene_runs pauses the renders: the plan run's handoff asks the same question the daemon does."""
    from dagster._core.remote_origin import RegisteredCodeLocationOrigin, RemoteInstigatorOrigin, RemoteRepositoryOrigin
    from dagster._core.scheduler.instigation import InstigatorState, InstigatorStatus, InstigatorType

    ours = RemoteRepositoryOrigin(RegisteredCodeLocationOrigin("t2m_pipeline"), "__repository__")
    other = RemoteRepositoryOrigin(RegisteredCodeLocationOrigin("another_location"), "__repository__")
    assert not handoff._stopped(instance, handoff.SCENE_RUNS_SENSOR, ours)  # no state: running, as declared in code
    instance.add_instigator_state(
        InstigatorState(RemoteInstigatorOrigin(ours, handoff.SCENE_RUNS_SENSOR), InstigatorType.SENSOR, InstigatorStatus.STOPPED)
    )
    assert handoff._stopped(instance, handoff.SCENE_RUNS_SENSOR, ours)
    assert not handoff._stopped(instance, handoff.COMBINE_SENSOR, ours)  # the other sensor still runs
    assert not handoff._stopped(instance, handoff.SCENE_RUNS_SENSOR, other)  # another location's sensor of that name


# -- new_jobs waits for the queue's notification ----------------------------------------------------------------------


def _tick_while_a_job_is_queued(instance, resources, engine, wait_ms: int, after_s: float):
    """A tick on an empty queue while another thread queues a job `after_s` later: (the tick, its seconds, the job)."""
    import threading
    import time

    from t2m_pipeline.defs.scenes.resources import JobQueueResource

    queued = {}
    writer = threading.Timer(after_s, lambda: queued.update(job=insert_job(engine)[1]))
    started = time.monotonic()
    writer.start()
    try:
        tick = sensor_result(new_jobs, instance, {**resources, "job_queue": JobQueueResource(wait_ms=wait_ms)})
    finally:
        writer.join()
    return tick, time.monotonic() - started, queued["job"]


def test_a_tick_on_an_empty_queue_claims_a_job_committed_while_it_waits(instance, resources, pipeline_engine):
    tick, seconds, job_id = _tick_while_a_job_is_queued(instance, resources, pipeline_engine, wait_ms=4_000, after_s=0.5)
    assert launched_jobs(tick) == [job_id]
    assert seconds < 3.0, f"the tick returned {seconds:.2f} s after it began: it did not wake on the notification"
    # control: a tick that does not wait leaves the job to the next pass
    control, _, late = _tick_while_a_job_is_queued(instance, resources, pipeline_engine, wait_ms=0, after_s=0.5)
    assert not control.run_requests
    assert launched_jobs(sensor_result(new_jobs, instance, resources, control.cursor)) == [late]


def test_the_queue_notifies_when_a_queued_row_commits_and_not_before(pipeline_engine):
    import importlib

    from t2m_pipeline.pipeline import dispatch

    migration = importlib.import_module("t2m_pipeline.db.migrations.versions.0011_job_queue_notify")
    assert migration.CHANNEL == dispatch.QUEUE_CHANNEL
    with dispatch.queue_notifications(pipeline_engine) as wait:
        insert_job(pipeline_engine, status="completed")  # a row that is not queued says nothing
        assert not wait(0.3)
        _, job_id = insert_job(pipeline_engine)
        assert wait(2.0)
        with pipeline_engine.begin() as conn:  # re-queued in a transaction: heard at its commit, not before
            conn.execute(text("UPDATE job_queue SET status = 'queued', queued_at = now() WHERE job_id = :j"), {"j": job_id})
            assert not wait(0.3)
        assert wait(2.0)


def test_a_scene_range_that_would_hold_another_jobs_scene_becomes_one_run_per_scene(instance, pipeline_engine):
    """A range run renders every partition Dagster reads between its ends: when another job's scene was added among
    this job's (two plans at once), the job gets one run per scene, never a range over the other user's scene."""
    from t2m_pipeline.partition_keys import encode_scene_key

    (mine_user, mine), (other_user, other) = insert_job(pipeline_engine), insert_job(pipeline_engine)
    mine_keys = [encode_scene_key(mine_user, mine, n) for n in (1, 2, 3)]
    other_keys = [encode_scene_key(other_user, other, n) for n in (1, 2)]
    instance.add_dynamic_partitions("scenes", [mine_keys[0], other_keys[0], mine_keys[1], mine_keys[2], other_keys[1]])
    with pipeline_engine.connect() as conn:
        runs = handoff.scene_runs_after_outline(conn, instance, encode_job_key(mine_user, mine), 3, "outline-run")
    assert [(r.partition_key, r.last_partition_key) for r in runs] == [(k, None) for k in mine_keys]
    assert all(r.request().partition_key in mine_keys for r in runs)
    # control: a job whose scenes were added together gets one run over exactly its own range
    third_user, third = insert_job(pipeline_engine)
    third_keys = [encode_scene_key(third_user, third, n) for n in (1, 2)]
    handoff.register_scenes(instance, encode_job_key(third_user, third), 2)
    with pipeline_engine.connect() as conn:
        (ranged,) = handoff.scene_runs_after_outline(conn, instance, encode_job_key(third_user, third), 2, "outline-run")
    assert (ranged.partition_key, ranged.last_partition_key) == tuple(third_keys)
    assert ranged.request().partition_key_range == dg.PartitionKeyRange(*third_keys)


def test_run_failure_sensor_fails_the_job_of_a_scenes_range_run_that_crashed(instance, resources, pipeline_engine):
    """A range run whose worker was lost wrote nothing back: the sensor fails the job its range holds (which scene
    it was on is unknown; the UI shows the partitions the run did not make as failed)."""
    from t2m_pipeline.partition_keys import encode_scene_key

    user_id, job_id = insert_job(pipeline_engine, configuration={"scene_count": 2})
    sensor_result(new_jobs, instance, resources)
    first, last = (encode_scene_key(user_id, job_id, n) for n in (1, 2))
    handoff.register_scenes(instance, encode_job_key(user_id, job_id), 2)

    @dg.op(name="scenes")
    def crash():
        raise RuntimeError("worker lost")

    crash_job = dg.GraphDefinition(name="render_scenes", node_defs=[crash]).to_job(name="render_scenes")
    range_tags = {"dagster/asset_partition_range_start": first, "dagster/asset_partition_range_end": last}
    result = crash_job.execute_in_process(instance=instance, tags=range_tags, raise_on_error=False)
    assert not result.success and job_row(pipeline_engine, job_id)["status"] == "processing"
    failure_sensor_sees(result, instance, resources)
    row = job_row(pipeline_engine, job_id)
    assert row["status"] == "failed" and row["error_info"]["stage"] == "rendering" and row["error_info"]["scene"] is None
    assert result.run_id in row["error_info"]["message"]


def test_scene_runs_asks_for_nothing_when_the_plan_run_queued_its_scenes_itself(instance, resources, pipeline_engine):
    """The sensor could read the scenes' range differently by now (another plan's partitions committed among them)
    and ask for runs under other keys, which Dagster would launch a second time: a handed-off run settles it."""
    defs = pipeline_defs(resources)
    insert_job(pipeline_engine, configuration={"scene_count": 2})
    tick = sensor_result(new_jobs, instance, resources)
    plan = run_requested(defs, instance, "plan_job", tick.run_requests[0])
    assert plan.success
    assert len(sensor_result(scene_runs, instance, resources).run_requests) == 1  # control: nothing handed off yet
    instance.create_run_for_job(
        defs.resolve_job_def("render_scenes"), run_config={},
        tags={"t2m/handed_off_by": plan.run_id, "dagster/sensor_name": "scene_runs"},
    )
    assert sensor_result(scene_runs, instance, resources).run_requests == []
