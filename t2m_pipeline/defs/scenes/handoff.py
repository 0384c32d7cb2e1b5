"""A job's next step, taken by the run that makes it possible instead of waiting for its sensor.

A sensor sees a new materialization on the sensor daemon's next pass, and Dagster passes every 5 s at best (its fixed
`MIN_INTERVAL_LOOP_TIME`): two such waits per job (outline -> scene runs, last thumbnail -> combine run) were 5 to 7 s
of a 3-scene job's 18 s (BENCHMARKS.md). So the plan run queues its scenes' run itself, and the scenes step of the
job's last thumbnail combines the job's videos itself (`assets.combine_in_step`), just before it reports that
thumbnail: no third run to queue, start and load (about a second of a job's wall time).

The queued run is what the sensor would have asked for (the same job, partition, tags) and carries the sensor's name
and the run key it would have given, so the sensor, reacting to the materialization a moment later, finds the run
there and launches nothing (Dagster's run-key rule). A combined video names the scene videos it holds
(COMBINED_FROM, the combine run's key), and the combine sensor asks for nothing when the newest one holds these.
The sensors stay the guarantee: a handoff that cannot queue (a run executed in process, a database error), or a
combine in step that fails, is logged and left to them.

Races, and who settles them. The sensor reacts to a materialization, which Dagster stores only after its run's
handoff; but a job's rows can be complete before the last thumbnail's materialization exists (its run is still
between writing the row and combining), so `combine_ready_jobs` combines a job only once every scene's thumbnail
materialization is recorded, up to the one it reacts to: by then the last run's combined video is recorded, and the
sensor sees it (a test shows the sensor asking for a second combine otherwise). Two scenes' last thumbnails written
at the same instant each see the job complete: an advisory lock per job (per run key, for queued runs) makes them
take turns, and the second finds the first's video (or run).
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Callable
from dataclasses import dataclass

import dagster as dg
from dagster._core.origin import JobPythonOrigin
from dagster._core.remote_origin import RemoteJobOrigin
from dagster._core.storage.tags import ASSET_PARTITION_RANGE_END_TAG, ASSET_PARTITION_RANGE_START_TAG, RUN_KEY_TAG, SENSOR_NAME_TAG
from sqlalchemy import text

from t2m_pipeline.defs.scenes.jobs import RUN_CONFIG, combine_job, render_scenes_job
from t2m_pipeline.defs.scenes.partitions import COMBINED_VIDEO, scene_keys_in_range, scene_partitions
from t2m_pipeline.partition_keys import decode_job_key, encode_scene_key
from t2m_pipeline.pipeline import status
from t2m_pipeline.pipeline.run_labels import HANDED_OFF_BY_TAG, LAUNCHED_BY_TAG, fallback_labels, job_labels, launched_by
from t2m_pipeline.vocabulary import JobStatus, scene_numbers

SCENE_RUNS_SENSOR = "scene_runs"
COMBINE_SENSOR = "combine_ready_jobs"
COMBINED_FROM = "combined_from"  # a combined video's metadata: the run key of the videos it holds


@dataclass(frozen=True)
class NextRun:
    """One run a sensor would request: its job, partition (or first and last partition of a range), run key, tags."""

    job_name: str
    partition_key: str
    run_key: str
    tags: dict[str, str]
    last_partition_key: str | None = None  # a range run: partition_key .. last_partition_key

    def request(self) -> dg.RunRequest:
        if self.last_partition_key is None:
            return dg.RunRequest(run_key=self.run_key, partition_key=self.partition_key, tags=self.tags)
        bounds = {ASSET_PARTITION_RANGE_START_TAG: self.partition_key, ASSET_PARTITION_RANGE_END_TAG: self.last_partition_key}
        return dg.RunRequest(run_key=self.run_key, tags={**self.tags, **bounds}, run_config=RUN_CONFIG)


def run_tags(conn, sensor: str, wanted: list[tuple[str, str, int | None]]) -> list[dict[str, str]]:
    """Tags for each (user id, job id, scene) a sensor launches: ids, topic, user email, scene, and the sensor."""
    labels = job_labels(conn, [job_id for _, job_id, _ in wanted])
    return [
        {**labels.get(str(job_id), fallback_labels(job_id, user_id)).tags(scene), LAUNCHED_BY_TAG: f"sensor {sensor}"}
        for user_id, job_id, scene in wanted
    ]


# -- what comes next ----------------------------------------------------------------------------------------------


def scene_run_key(scenes: str, outline_run_id: str) -> str:
    """One render per scene per outline (`scenes`: a scene key, or `first..last` of a range): a new plan (a re-run
    of the plan) renders its scenes again."""
    return f"{scenes}@{outline_run_id}"


def scene_runs_after_outline(conn, instance, job_key: str, scene_count: int, outline_run_id: str) -> list[NextRun]:
    """One run for all of the job's scenes (their partition range), or, when the range would hold any other
    partition, one run per scene.

    A dynamic partition range is "every key added between the first and the last": a job's scenes are added in one
    request, but another job's can interleave (two plans at once, or scenes added again by a re-plan), and a range
    over them would render another user's scenes in this job's run. So the range is used only when Dagster's own
    reading of it is exactly this job's scenes, and the scenes must exist as partitions already (`register_scenes`)."""
    job = decode_job_key(job_key)
    numbers = list(scene_numbers(scene_count))
    keys = [encode_scene_key(job.user_id, job.job_id, n) for n in numbers]
    if len(keys) > 1 and scene_keys_in_range(instance, keys[0], keys[-1]) == keys:
        [tags] = run_tags(conn, SCENE_RUNS_SENSOR, [(job.user_id, job.job_id, None)])
        return [NextRun(render_scenes_job.name, keys[0], scene_run_key(f"{keys[0]}..{keys[-1]}", outline_run_id), tags, keys[-1])]
    tags = run_tags(conn, SCENE_RUNS_SENSOR, [(job.user_id, job.job_id, n) for n in numbers])
    return [NextRun(render_scenes_job.name, key, scene_run_key(key, outline_run_id), tag) for key, tag in zip(keys, tags, strict=True)]


def handed_off(instance, outline_run_id: str) -> bool:
    """Whether the plan run `outline_run_id` queued its scenes' run(s) itself. The sensor then asks for nothing: it
    could read the scenes' range differently by now (another plan's partitions committed among them) and ask for
    runs under other keys, which Dagster would launch a second time."""
    tags = {HANDED_OFF_BY_TAG: outline_run_id, SENSOR_NAME_TAG: SCENE_RUNS_SENSOR}
    return bool(instance.get_run_ids(filters=dg.RunsFilter(tags=tags), limit=1))


def register_scenes(instance, job_key: str, scene_count: int) -> None:
    """The job's scenes as `scenes` partitions, in order, in one request (adding a known key changes nothing)."""
    job = decode_job_key(job_key)
    instance.add_dynamic_partitions(scene_partitions.name, [encode_scene_key(job.user_id, job.job_id, n) for n in scene_numbers(scene_count)])


def combine_run_key(job_key: str, objects: status.JobObjects) -> str:
    """Keyed by the scene videos' versions: the same videos never combine twice, a re-rendered scene does."""
    versions = json.dumps(sorted((n, v or "") for n, v in objects.video_versions.items()))
    return f"{job_key}@{hashlib.sha256(versions.encode()).hexdigest()[:16]}"


def combined_already(instance: dg.DagsterInstance, job_key: str, run_key: str) -> bool:
    """Whether the job's newest combined video holds the videos `run_key` names (its materialization says which,
    under COMBINED_FROM), wherever it was made: the scenes run that combined it in step, or a combine run."""
    [*records] = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=COMBINED_VIDEO, asset_partitions=[job_key]), limit=1
    ).records
    made = records[0].asset_materialization if records else None
    value = made.metadata.get(COMBINED_FROM) if made else None
    return value is not None and value.value == run_key


def combine_run_when_ready(
    conn, instance: dg.DagsterInstance, job_key: str, recorded: Callable[[list[str]], bool] | None = None
) -> NextRun | None:
    """The combine run of a job whose every scene has a video and a thumbnail (and that is neither cancelled nor
    failed in a scene) and whose videos are not combined already, and, if given, `recorded(its scene keys)`; None
    until then."""
    job = decode_job_key(job_key)
    state = conn.execute(text("SELECT status, error_info FROM jobs WHERE id = :j"), {"j": uuid.UUID(job.job_id)}).one_or_none()
    if state is None or state.status == JobStatus.CANCELLED or status.failed_scenes(state.error_info):
        return None
    objects = status.job_objects(conn, job.job_id)
    if not objects.scenes_complete():
        return None
    run_key = combine_run_key(job_key, objects)
    if combined_already(instance, job_key, run_key):
        return None
    if recorded is not None and not recorded([encode_scene_key(job.user_id, job.job_id, n) for n in scene_numbers(objects.scene_count)]):
        return None
    [tags] = run_tags(conn, COMBINE_SENSOR, [(job.user_id, job.job_id, None)])
    return NextRun(combine_job.name, job_key, run_key, tags)


# -- queueing them from a run -------------------------------------------------------------------------------------


def hand_off_scene_runs(context: dg.AssetExecutionContext, engine, scene_count: int) -> list[str]:
    """From the plan run: its scenes as partitions, and their render run. Never raises (the sensor does it then)."""
    def runs():
        register_scenes(context.instance, context.partition_key, scene_count)
        with engine.connect() as conn:
            return scene_runs_after_outline(conn, context.instance, context.partition_key, scene_count, context.run_id)

    return _queue_for_sensor(context, engine, SCENE_RUNS_SENSOR, runs)


def _queue_for_sensor(context: dg.AssetExecutionContext, engine, sensor: str, runs) -> list[str]:
    """Queue the runs `runs()` gives as `sensor` would, from inside a run; the ids queued."""
    parent = context.run
    if parent.remote_job_origin is None or parent.job_code_origin is None:
        return []  # executed in process (tests, `dagster asset materialize`): nothing to queue from, the sensor will
    queued = []
    try:
        if _stopped(context.instance, sensor, parent.remote_job_origin.repository_origin):
            context.log.info(f"sensor {sensor} is stopped: nothing queued on its behalf")
            return []
        for run in runs():
            run_id = _queue_one(context, engine, sensor, run)
            if run_id:
                queued.append(run_id)
    except Exception as exc:  # noqa: BLE001 - the sensor launches whatever was not queued
        context.log.warning(f"could not queue the next runs, sensor {sensor} will: {type(exc).__name__}: {exc}")
    if queued:
        context.log.info(f"queued {len(queued)} run(s) for sensor {sensor}: {', '.join(queued)}")
    return queued


def _stopped(instance: dg.DagsterInstance, sensor: str, repository_origin) -> bool:
    """Whether someone stopped the sensor in the UI: then its work waits, handed off or not."""
    from dagster._core.scheduler.instigation import InstigatorStatus, InstigatorType

    states = instance.all_instigator_state(instigator_type=InstigatorType.SENSOR, instigator_statuses={InstigatorStatus.STOPPED})
    selector = repository_origin.get_selector()
    return any(s.instigator_name == sensor and s.origin.repository_origin.get_selector() == selector for s in states)


def take_turns(conn, key: str) -> None:
    """Wait, in `conn`'s transaction, until no other transaction holds `key` (a PostgreSQL advisory lock, released
    at commit or rollback); a holder stuck for 30 s fails this wait, never the run."""
    conn.execute(text("SET LOCAL lock_timeout = '30s'"))
    conn.execute(text("SELECT pg_advisory_xact_lock(hashtextextended(:k, 0))"), {"k": key})


def _queue_one(context: dg.AssetExecutionContext, engine, sensor: str, run: NextRun) -> str | None:
    instance, parent = context.instance, context.run
    job_def = context.repository_def.get_job(run.job_name)
    with engine.begin() as conn:  # one queuer per run key at a time (see the module's note)
        take_turns(conn, f"handoff:{run.run_key}")
        if instance.get_run_ids(filters=dg.RunsFilter(tags={RUN_KEY_TAG: run.run_key, SENSOR_NAME_TAG: sensor}), limit=1):
            return None
        # Dagster's own resolution of a sensor's request: the partition's tags and run config (the job's config,
        # its console log level among them), as the sensor daemon would have them; a range request carries its own
        # (the daemon resolves nothing for one)
        request = run.request()
        if run.last_partition_key is None:
            request = request.with_resolved_tags_and_config(job_def, [], instance)
        tags = {
            **job_def.run_tags,
            **(request.tags or {}),
            RUN_KEY_TAG: run.run_key,
            SENSOR_NAME_TAG: sensor,
            HANDED_OFF_BY_TAG: parent.run_id,
        }
        created = instance.create_run_for_job(
            job_def=job_def,
            run_config=request.run_config,
            tags={**tags, LAUNCHED_BY_TAG: launched_by(tags)},
            remote_job_origin=RemoteJobOrigin(parent.remote_job_origin.repository_origin, run.job_name),
            job_code_origin=JobPythonOrigin(run.job_name, parent.job_code_origin.repository_origin),
        )
        instance.submit_run(created.run_id, workspace=None)
    return created.run_id
