"""Sensors that run the pipeline with nobody clicking, and write failures back.

- `new_jobs`: queued job rows -> job partitions + a `plan_job` run each (run_key per queueing), jobs -> processing.
  A tick that finds none listens for the queue's notification for a few seconds (`JobQueueResource`), so a job
  committed meanwhile starts at once rather than at the daemon's next pass.
- `scene_runs`: each new `scene_outline` materialization -> its scenes registered as `scenes` partitions and one
  `render_scenes` run over their range (one per scene when the range would hold another job's partitions).
- `combine_ready_jobs`: each new `thumbnail` materialization -> when every scene of its job has a video and a
  thumbnail, and its newest combined video holds other videos (or there is none), a `combine_scenes` run keyed by
  the scene videos' versions (same videos, same key: one run).

The plan run queues its scenes' run itself, under the same run key, a sensor pass earlier, and the run of a job's
last thumbnail combines the videos itself (`handoff.py`); these two sensors then find the run or the video there
and are what remains if that fails.
- `pipeline_run_failures`: a failed run whose failure the step could not write back (a crash, a lost worker)
  fails its job with error_info, unless Dagster's run retries take the run again (the retry's outcome counts).

Every tick is bounded (jobs, records, run requests), so a tick stays far inside Dagster's 60 s limit however
long the backlog; the cursors carry on where the last tick stopped.
"""


import json

import dagster as dg
from dagster._core.storage.tags import ASSET_PARTITION_RANGE_START_TAG, PARTITION_NAME_TAG

from t2m_pipeline.defs.resources import PostgresResource
from t2m_pipeline.defs.scenes import handoff
from t2m_pipeline.defs.scenes.jobs import combine_job, plan_job, render_scenes_job
from t2m_pipeline.defs.scenes.resources import JobQueueResource
from t2m_pipeline.defs.scenes.partitions import SCENE_OUTLINE, SCENES_STEP, THUMBNAIL, job_partitions
from t2m_pipeline.pipeline.run_labels import PARENT_RUN_TAG, WILL_RETRY_TAG
from t2m_pipeline.partition_keys import PartitionKeyError, decode_job_key, decode_scene_key
from t2m_pipeline.pipeline import dispatch, status
from t2m_pipeline.vocabulary import STAGE_OF_ASSET, Stage

# Below the sensor daemon's own pass (dagster's MIN_INTERVAL_LOOP_TIME, 5 s), so every pass ticks: at 5 s a sensor
# ticked every other pass (measured: a tick every ~10 s, since the next pass comes a hair under 5 s later).
SENSOR_INTERVAL_S = 1
MAX_JOBS_PER_TICK = 100
MAX_RECORDS_PER_TICK = 200
MAX_RUNS_PER_TICK = 200


# -- new_jobs -----------------------------------------------------------------------------------------------------


def _load_cursor(raw: str | None) -> dict:
    try:
        data = json.loads(raw) if raw else {}
    except ValueError:
        data = {}
    return data if isinstance(data, dict) else {}


@dg.sensor(
    name="new_jobs",
    job=plan_job,
    minimum_interval_seconds=SENSOR_INTERVAL_S,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Queued job rows (highest priority first) become job partitions and plan_job runs.",
)
def new_jobs(context: dg.SensorEvaluationContext, database: PostgresResource, job_queue: JobQueueResource) -> dg.SensorResult:
    cursor = _load_cursor(context.cursor)
    skipped = [s for s in cursor.get("skipped", []) if isinstance(s, str)]
    with dispatch.queue_notifications(database.engine) as wait_for_a_job:
        claimed = dispatch.claim_queued_jobs(database.engine, MAX_JOBS_PER_TICK, exclude=skipped)
        if not (claimed.launched or claimed.rejected or claimed.skipped) and wait_for_a_job(job_queue.wait_s):
            claimed = dispatch.claim_queued_jobs(database.engine, MAX_JOBS_PER_TICK, exclude=skipped)
    for job_id, reason in claimed.rejected:
        context.log.warning(f"job {job_id} rejected and marked failed: {reason}")
    for job_id, reason in claimed.skipped:
        context.log.warning(f"job {job_id} skipped: {reason}")
    with database.engine.connect() as conn:
        tags = handoff.run_tags(conn, "new_jobs", [(job.user_id, job.job_id, None) for job in claimed.launched])
    requests = [
        dg.RunRequest(run_key=job.run_key, partition_key=job.partition_key, tags=job_tags)
        for job, job_tags in zip(claimed.launched, tags, strict=True)
    ]
    keys = [job.partition_key for job in claimed.launched]
    skipped = (skipped + [str(job_id) for job_id, _ in claimed.skipped])[-dispatch.MAX_REMEMBERED_SKIPS :]
    new_cursor = {
        "launched_total": int(cursor.get("launched_total", 0) or 0) + len(requests),
        "rejected_total": int(cursor.get("rejected_total", 0) or 0) + len(claimed.rejected),
        "last_launched": str(claimed.launched[-1].job_id) if claimed.launched else cursor.get("last_launched"),
        "skipped": skipped,
    }
    return dg.SensorResult(
        run_requests=requests,
        dynamic_partitions_requests=[job_partitions.build_add_request(keys)] if keys else [],
        cursor=json.dumps(new_cursor),
        skip_reason=None if requests else "no queued jobs",
    )


# -- scene_runs ---------------------------------------------------------------------------------------------------


def _after(raw: str | None) -> int:
    try:
        return max(0, int(raw or 0))
    except ValueError:
        return 0


def _new_materializations(context: dg.SensorEvaluationContext, asset_key: dg.AssetKey) -> tuple[int, list]:
    """(the cursor, the asset's materialization records after it, oldest first, at most MAX_RECORDS_PER_TICK)."""
    after = _after(context.cursor)
    records = context.instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=asset_key, after_storage_id=after), limit=MAX_RECORDS_PER_TICK, ascending=True
    ).records
    return after, list(records)


@dg.sensor(
    name=handoff.SCENE_RUNS_SENSOR,
    job=render_scenes_job,
    minimum_interval_seconds=SENSOR_INTERVAL_S,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Each new scene outline registers its scenes as partitions and launches one render_scenes run for them.",
)
def scene_runs(context: dg.SensorEvaluationContext, database: PostgresResource) -> dg.SensorResult:
    after, records = _new_materializations(context, SCENE_OUTLINE)
    runs: list[handoff.NextRun] = []
    with database.engine.connect() as conn:
        for record in records:
            materialization = record.asset_materialization
            try:
                job_key = decode_job_key(materialization.partition if materialization else None).encode()
                count = int(materialization.metadata["scene_count"].value)
                if record.run_id and handoff.handed_off(context.instance, record.run_id):
                    after = record.storage_id  # the plan run queued its scenes' run(s) itself, whatever their shape
                    continue
                # the scenes become partitions first (in order: a range run needs them), then the run(s) the plan
                # run's handoff would have queued
                handoff.register_scenes(context.instance, job_key, count)
                found = handoff.scene_runs_after_outline(conn, context.instance, job_key, count, record.run_id or str(record.storage_id))
            except (PartitionKeyError, KeyError, TypeError, ValueError) as exc:
                context.log.warning(f"outline materialization {record.storage_id} skipped: {exc}")
                after = record.storage_id
                continue
            if runs and len(runs) + len(found) > MAX_RUNS_PER_TICK:
                break  # the rest next tick
            runs += found
            after = record.storage_id
    return dg.SensorResult(
        run_requests=[run.request() for run in runs],
        cursor=str(after),
        skip_reason=None if runs else "no new outlines",
    )


# -- combine_ready_jobs -------------------------------------------------------------------------------------------


@dg.sensor(
    name=handoff.COMBINE_SENSOR,
    job=combine_job,
    minimum_interval_seconds=SENSOR_INTERVAL_S,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="When every scene of a job has a video and a thumbnail, combine the scenes.",
)
def combine_ready_jobs(context: dg.SensorEvaluationContext, database: PostgresResource) -> dg.SensorResult:
    after, records = _new_materializations(context, THUMBNAIL)
    jobs: dict[str, int] = {}  # job key -> the storage id of its newest thumbnail materialization in this tick
    for record in records:
        materialization = record.asset_materialization
        try:
            jobs[decode_scene_key(materialization.partition if materialization else None).job.encode()] = record.storage_id
        except PartitionKeyError as exc:
            context.log.warning(f"thumbnail materialization {record.storage_id} skipped: {exc}")
        after = record.storage_id
    with database.engine.connect() as conn:
        ready = [
            run for job_key, upto in jobs.items()
            if (run := handoff.combine_run_when_ready(conn, context.instance, job_key, lambda keys, upto=upto: _thumbnails_recorded(context, keys, upto)))
        ]
    requests = [run.request() for run in ready]
    return dg.SensorResult(run_requests=requests, cursor=str(after), skip_reason=None if requests else "no job ready to combine")


def _thumbnails_recorded(context: dg.SensorEvaluationContext, scene_keys: list[str], upto: int) -> bool:
    """Every scene has a thumbnail materialization at or before `upto`: the job's last thumbnail run has handed off
    (handoff.py), so its combine run, if it queued one, is there for Dagster's run-key check to find."""
    return all(
        context.instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=THUMBNAIL, asset_partitions=[key], before_storage_id=upto + 1), limit=1
        ).records
        for key in scene_keys
    )


# -- failure write-back -------------------------------------------------------------------------------------------

# A failed step's stage: each asset's own, and the scenes step's (each scene it failed was written back already; a
# step that failed otherwise most likely failed rendering).
STAGE_OF_STEP = {**STAGE_OF_ASSET, SCENES_STEP: Stage.RENDERING}
STAGE_OF_JOB = {plan_job.name: Stage.PLANNING, render_scenes_job.name: Stage.RENDERING, combine_job.name: Stage.COMBINING}


def failed_partition(partition: str | None) -> tuple[str, int | None] | None:
    """(job id, scene number or None) of a pipeline partition key; None for any other key (other domains' runs)."""
    try:
        scene = decode_scene_key(partition)
        return scene.job_id, scene.scene_number
    except PartitionKeyError:
        pass
    try:
        return decode_job_key(partition).job_id, None
    except PartitionKeyError:
        return None


def failed_targets(run: dg.DagsterRun) -> list[tuple[str, int | None]]:
    """What a failed run held: its partition's (job, scene or None), or, for a scenes range run, (its job, None): a
    range starts at its job's first scene (handoff.py), and a worker lost mid-range leaves no telling which scene it
    was on (the UI shows the partitions the run did not make as failed)."""
    if run.tags.get(PARTITION_NAME_TAG):
        target = failed_partition(run.tags[PARTITION_NAME_TAG])
        return [target] if target else []
    target = failed_partition(run.tags.get(ASSET_PARTITION_RANGE_START_TAG))
    return [(target[0], None)] if target else []


def _retried(instance: dg.DagsterInstance, run_id: str) -> bool:
    """Whether Dagster's run retries take this failed run again: it is tagged so (read now, not from the tick's
    snapshot: the tag lands just after the failure event), or a retry of it exists already."""
    current = instance.get_run_by_id(run_id)
    if current is not None and current.tags.get(WILL_RETRY_TAG) == "true":
        return True
    return bool(instance.get_run_ids(filters=dg.RunsFilter(tags={PARENT_RUN_TAG: run_id}), limit=1))


@dg.run_failure_sensor(
    name="pipeline_run_failures",
    minimum_interval_seconds=SENSOR_INTERVAL_S * 2,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="A failed run of a pipeline partition (sensor-launched, or from the UI or a backfill) whose step "
    "could not write its failure back (a crash, a lost worker) fails its job.",
)
def pipeline_run_failures(context: dg.RunFailureSensorContext, database: PostgresResource) -> None:
    run = context.dagster_run
    if _retried(context.instance, run.run_id):
        return  # run retries re-execute it (a crashed worker): the retry's own outcome is written back
    step_keys = [event.step_key for event in context.get_step_failure_events()]
    stages = [STAGE_OF_STEP[key] for key in step_keys if key in STAGE_OF_STEP]
    if step_keys and not stages:
        return  # another domain's run
    message = f"run {run.run_id} failed: {context.failure_event.message or 'no message'}"
    for job_id, scene in failed_targets(run):
        stage = stages[0] if stages else STAGE_OF_JOB.get(run.job_name, Stage.RENDERING if scene else Stage.PLANNING)
        state = status.step_failed(database.engine, job_id, stage=stage, message=message, scene=scene, only_if_unrecorded=True)
        if state is not None:
            context.log.info(f"job {job_id} marked failed ({stage}) after run {run.run_id}")


PIPELINE_SENSORS = [new_jobs, scene_runs, combine_ready_jobs, pipeline_run_failures]
