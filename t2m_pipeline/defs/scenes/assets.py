"""The pipeline's assets: scene_outline [job] -> scene_code -> rendered_video -> thumbnail [scene] -> combined_video [job].

Each asset fetches its partition's inputs from S3, calls one function of `t2m_pipeline.pipeline.steps`, writes the
job's status back through `pipeline.status`, and reports its object (S3 URI, size, sha256, version id, and video or
image facts) as materialization metadata. Every S3 write goes through the storage layer, which records the
`file_metadata` row.

Each scene asset then reads its object back and reports its checks (`checks.py`): the row exists, object and row
agree by sha256, and the object is what it claims to be; images and videos carry a small preview image inline
and every object a link (the S3 console on AWS, the local endpoint in development).

Failures: a failure the step understands (`StepFailed`) is written back with its log key and not retried, and its
failure metadata links the log and shows its last lines; a transient S3 or database error is retried by the
retry policy (exponential backoff with jitter) and written back only when the retries are used up.
"""


import time
from collections.abc import Callable
from typing import TypeVar

import dagster as dg

from t2m_pipeline.defs.resources import PostgresResource, S3StorageResource
from t2m_pipeline.defs.scenes import checks, handoff
from t2m_pipeline.defs.scenes.partitions import (
    COMBINED_VIDEO,
    RENDERED_VIDEO,
    SCENE_CODE,
    SCENE_OUTLINE,
    THUMBNAIL,
    job_partitions,
    scene_partitions,
)
from t2m_pipeline.defs.scenes.resources import CodeGeneratorResource, RenderBackendResource
from t2m_pipeline.partition_keys import decode_job_key, decode_scene_key
from t2m_pipeline.pipeline import status, steps
from t2m_pipeline.pipeline.retry import is_transient
from t2m_pipeline.pipeline.run_labels import LAUNCHED_BY_TAG, fallback_labels, job_labels, launched_by
from t2m_pipeline.render.codegen import scene_class_name
from t2m_pipeline.storage.links import object_url
from t2m_pipeline.storage.s3 import StoredObject
from t2m_pipeline.vocabulary import Stage

T = TypeVar("T")

RETRY_POLICY = dg.RetryPolicy(max_retries=3, delay=2, backoff=dg.Backoff.EXPONENTIAL, jitter=dg.Jitter.PLUS_MINUS)
RENDER_POOL = "manim_render"
GROUP = "scenes"
MAX_CODE_PREVIEW = 20_000
LOG_TAIL_LINES = 40


def pipeline_of(database: PostgresResource, storage: S3StorageResource) -> steps.Pipeline:
    store = storage.get()
    return steps.Pipeline(store.settings, database.engine, store)


def object_metadata(stored: StoredObject) -> dict:
    return {
        "s3_uri": dg.MetadataValue.path(stored.uri),
        "size_bytes": dg.MetadataValue.int(stored.size),
        "sha256": dg.MetadataValue.text(stored.sha256),
        "version_id": dg.MetadataValue.text(stored.version_id or ""),
        "content_type": dg.MetadataValue.text(stored.content_type),
    }


def label_run(context: dg.AssetExecutionContext, p: steps.Pipeline, user_id: str, job_id: str, scene: int | None) -> dict:
    """Tag the run with the job's topic, user and scene and with who really launched it (a run from the UI or a
    backfill has none of the sensors' tags; a re-execution carries its parent's), and return the same facts as
    materialization metadata. Labels are a courtesy: a database error here never fails the step."""
    try:
        with p.engine.connect() as conn:
            labels = job_labels(conn, [job_id]).get(job_id) or fallback_labels(job_id, user_id)
    except Exception as exc:  # noqa: BLE001 - the step itself reports a database that is really down
        context.log.warning(f"run labels unavailable: {exc}")
        labels = fallback_labels(job_id, user_id)
    current = context.run.tags
    wanted = {**labels.tags(scene), LAUNCHED_BY_TAG: launched_by(current)}
    missing = {k: v for k, v in wanted.items() if current.get(k) != v}
    if missing:
        context.instance.add_run_tags(context.run_id, missing)
    return {key: dg.MetadataValue.text(value) for key, value in labels.metadata().items()}


def run_step(
    context: dg.AssetExecutionContext,
    p: steps.Pipeline,
    *,
    job_id: str,
    scene: int | None,
    stage: str,
    work: Callable[[], T],
    reopens: bool = True,
) -> tuple[T, float]:
    """Run one step with status write-back; returns (result, seconds)."""
    started = time.monotonic()
    try:
        status.step_started(p.engine, job_id, scene, reopens=reopens)
        result = work()
    except steps.StepFailed as exc:
        _write_failure(context, p, job_id, exc.stage, str(exc), exc.scene, exc.log_key)
        metadata = {"stage": exc.stage, **log_metadata(p, exc.log_key)}
        # `from None`: the clear message and the log are the story; the step's own traceback adds nothing to it.
        raise dg.Failure(description=f"{exc.stage} failed: {exc}", metadata=metadata, allow_retries=False) from None
    except Exception as exc:
        transient = is_transient(exc)
        if transient and context.retry_number < RETRY_POLICY.max_retries:
            context.log.warning(f"transient failure, will retry ({context.retry_number + 1}/{RETRY_POLICY.max_retries}): {exc}")
            raise
        _write_failure(context, p, job_id, stage, f"{type(exc).__name__}: {exc}", scene, None)
        if transient:
            raise
        raise dg.Failure(description=f"{stage} failed: {type(exc).__name__}: {exc}", allow_retries=False) from exc
    seconds = time.monotonic() - started
    status.step_succeeded(p.engine, job_id, stage=stage, seconds=seconds, scene=scene)
    return result, seconds


def log_metadata(p: steps.Pipeline, log_key: str | None) -> dict:
    """A failure's log: its key, a link to it and its last lines as a code block (when it can be read)."""
    if not log_key:
        return {}
    bucket = p.bucket("code")
    metadata = {
        "log_key": dg.MetadataValue.text(log_key),
        "log": dg.MetadataValue.path(f"s3://{bucket}/{log_key}"),
        "log_url": dg.MetadataValue.url(object_url(p.settings, bucket, log_key)),
    }
    try:
        lines = p.storage.get_bytes(bucket, log_key).decode("utf-8", "replace").rstrip().splitlines()
    except Exception:  # noqa: BLE001 - the link and key still say where the log is
        return metadata
    fence = "`" * 3
    tail = "\n".join(lines[-LOG_TAIL_LINES:]).replace(fence, "` ` `")
    shown = min(len(lines), LOG_TAIL_LINES)
    metadata["log_tail"] = dg.MetadataValue.md(f"Last {shown} of {len(lines)} lines:\n\n{fence}\n{tail}\n{fence}")
    return metadata


def _write_failure(context, p: steps.Pipeline, job_id: str, stage: str, message: str, scene: int | None, log_key: str | None) -> None:
    try:
        status.step_failed(p.engine, job_id, stage=stage, message=message, scene=scene, log_key=log_key)
    except Exception as exc:  # noqa: BLE001 - the run-failure sensor writes it back later
        context.log.error(f"could not write the failure back to job {job_id}: {exc}")


@dg.asset(
    key=SCENE_OUTLINE,
    partitions_def=job_partitions,
    retry_policy=RETRY_POLICY,
    group_name=GROUP,
    kinds={"s3", "json"},
    description="The job's scene plan (3 to 7 scenes, or configuration.scene_count) in the code bucket. Its "
    "scenes become `scenes` partitions ({user}/{job}/NNN) with a render_scene run each, queued by this run as it "
    "ends (or by the scene_runs sensor, if it could not).",
)
def scene_outline(context: dg.AssetExecutionContext, database: PostgresResource, storage: S3StorageResource) -> dg.MaterializeResult:
    key = decode_job_key(context.partition_key)
    p = pipeline_of(database, storage)
    labels = label_run(context, p, key.user_id, key.job_id, None)
    (outline, stored), seconds = run_step(
        context, p, job_id=key.job_id, scene=None, stage=Stage.PLANNING, work=lambda: steps.plan_job(p, key)
    )
    handoff.hand_off_scene_runs(context, p.engine, outline.scene_count)  # last: before the materialization exists
    return dg.MaterializeResult(
        metadata={
            **labels,
            **object_metadata(stored),
            "scene_count": dg.MetadataValue.int(outline.scene_count),
            "quality": dg.MetadataValue.text(outline.quality),
            "scene_titles": dg.MetadataValue.json([s.title for s in outline.scenes]),
            "seconds": dg.MetadataValue.float(round(seconds, 3)),
        },
        data_version=dg.DataVersion(stored.sha256),
    )


@dg.asset(
    key=SCENE_CODE,
    partitions_def=scene_partitions,
    retry_policy=RETRY_POLICY,
    group_name=GROUP,
    kinds={"s3", "python"},
    description="A scene's manim source from the code generator, checked before it is stored. Reads the "
    "scene_outline of its job ({user}/{job}/NNN reads {user}/{job}): Dagster cannot map one dynamic partition set "
    "onto another, so the graph draws no edge rather than a false one; the scene_runs sensor launches it after "
    "the outline.",
    check_specs=checks.check_specs(SCENE_CODE, scene_partitions),
)
def scene_code(
    context: dg.AssetExecutionContext,
    database: PostgresResource,
    storage: S3StorageResource,
    code_generator: CodeGeneratorResource,
) -> dg.MaterializeResult:
    key = decode_scene_key(context.partition_key)
    p = pipeline_of(database, storage)
    labels = label_run(context, p, key.user_id, key.job_id, key.scene_number)
    (generated, stored), seconds = run_step(
        context,
        p,
        job_id=key.job_id,
        scene=key.scene_number,
        stage=Stage.CODE_GENERATION,
        work=lambda: steps.generate_code(p, key, code_generator.get()),
    )
    preview = generated.code if len(generated.code) <= MAX_CODE_PREVIEW else generated.code[:MAX_CODE_PREVIEW] + "\n# ..."
    check_results, extra = checks.verify_scene_code(p, stored, scene_class_name(key.scene_number))
    return dg.MaterializeResult(
        check_results=check_results,
        metadata={
            **labels,
            **object_metadata(stored),
            **extra,
            "generator": dg.MetadataValue.text(generated.generator),
            "class_name": dg.MetadataValue.text(generated.class_name),
            "code": dg.MetadataValue.md(f"```python\n{preview}\n```"),
            "seconds": dg.MetadataValue.float(round(seconds, 3)),
        },
        data_version=dg.DataVersion(stored.sha256),
    )


@dg.asset(
    key=RENDERED_VIDEO,
    partitions_def=scene_partitions,
    deps=[SCENE_CODE],
    retry_policy=RETRY_POLICY,
    pool=RENDER_POOL,
    group_name=GROUP,
    kinds={"s3", "manim"},
    description="The scene rendered by manim inside the render boundary (the local sandbox, or its own ECS task), "
    "reached through Dagster Pipes; the video is checked before it is stored; on failure its log is in the code bucket.",
    check_specs=checks.check_specs(RENDERED_VIDEO, scene_partitions),
)
def rendered_video(
    context: dg.AssetExecutionContext, database: PostgresResource, storage: S3StorageResource, render: RenderBackendResource
) -> dg.MaterializeResult:
    key = decode_scene_key(context.partition_key)
    p = pipeline_of(database, storage)
    labels = label_run(context, p, key.user_id, key.job_id, key.scene_number)
    backend = render.get(p.storage)
    video, seconds = run_step(
        context, p, job_id=key.job_id, scene=key.scene_number, stage=Stage.RENDERING,
        work=lambda: steps.render_video(p, key, backend, context, timeout_s=render.timeout_s),
    )
    check_results, extra = checks.verify_rendered_video(p, video.stored, video.quality, max_duration_s=render.timeout_s)
    return dg.MaterializeResult(
        check_results=check_results,
        metadata={
            **labels,
            **object_metadata(video.stored),
            **extra,
            "duration_s": dg.MetadataValue.float(video.info.duration_s),
            "resolution": dg.MetadataValue.text(video.info.resolution),
            "fps": dg.MetadataValue.float(video.info.fps),
            "quality": dg.MetadataValue.text(video.quality),
            "render_seconds": dg.MetadataValue.float(round(video.render_seconds, 3)),
            "render_backend": dg.MetadataValue.text(video.backend),
            "render_usage": dg.MetadataValue.text(video.usage),
            "seconds": dg.MetadataValue.float(round(seconds, 3)),
        },
        data_version=dg.DataVersion(video.stored.sha256),
    )


@dg.asset(
    key=THUMBNAIL,
    partitions_def=scene_partitions,
    deps=[RENDERED_VIDEO],
    retry_policy=RETRY_POLICY,
    group_name=GROUP,
    kinds={"s3", "jpeg"},
    description="A real frame of the scene's video (at 5 s, or mid-video when shorter) as JPEG.",
    check_specs=checks.check_specs(THUMBNAIL, scene_partitions),
)
def thumbnail(context: dg.AssetExecutionContext, database: PostgresResource, storage: S3StorageResource) -> dg.MaterializeResult:
    key = decode_scene_key(context.partition_key)
    p = pipeline_of(database, storage)
    labels = label_run(context, p, key.user_id, key.job_id, key.scene_number)
    (thumb, stored), seconds = run_step(
        context,
        p,
        job_id=key.job_id,
        scene=key.scene_number,
        stage=Stage.THUMBNAILS,
        work=lambda: steps.make_thumbnail(p, key),
        reopens=False,  # a thumbnail alone (say, backfilled for a migrated video) does not re-open a job
    )
    check_results, extra = checks.verify_thumbnail(p, stored, thumb.width, thumb.height)
    handoff.hand_off_combine_run(context, p.engine, key.job.encode())  # last: before the materialization exists
    return dg.MaterializeResult(
        check_results=check_results,
        metadata={
            **labels,
            **object_metadata(stored),
            **extra,
            "width": dg.MetadataValue.int(thumb.width),
            "height": dg.MetadataValue.int(thumb.height),
            "at_seconds": dg.MetadataValue.float(thumb.at_seconds),
            "seconds": dg.MetadataValue.float(round(seconds, 3)),
        },
        data_version=dg.DataVersion(stored.sha256),
    )


@dg.asset(
    key=COMBINED_VIDEO,
    partitions_def=job_partitions,
    retry_policy=RETRY_POLICY,
    group_name=GROUP,
    kinds={"s3", "mp4"},
    description="All scene videos of the job concatenated in order; completes the job. Reads the rendered_video "
    "of each of its scenes ({user}/{job} reads {user}/{job}/001...): no edge in the graph (Dagster cannot map the "
    "scene partitions onto the job's), it runs when every scene has a video and a thumbnail, queued by the "
    "run of the job's last thumbnail (or by the combine_ready_jobs sensor, if it could not).",
    check_specs=checks.check_specs(COMBINED_VIDEO, job_partitions),
)
def combined_video(context: dg.AssetExecutionContext, database: PostgresResource, storage: S3StorageResource) -> dg.MaterializeResult:
    key = decode_job_key(context.partition_key)
    p = pipeline_of(database, storage)
    labels = label_run(context, p, key.user_id, key.job_id, None)
    (info, stored, scene_count), seconds = run_step(
        context, p, job_id=key.job_id, scene=None, stage=Stage.COMBINING, work=lambda: steps.combine(p, key)
    )
    state = status.job_completed(p.engine, key.job_id)
    check_results, extra = checks.verify_combined_video(p, stored, key, scene_count)
    return dg.MaterializeResult(
        check_results=check_results,
        metadata={
            **labels,
            **object_metadata(stored),
            **extra,
            "duration_s": dg.MetadataValue.float(info.duration_s),
            "resolution": dg.MetadataValue.text(info.resolution),
            "scenes": dg.MetadataValue.int(scene_count),
            "job_status": dg.MetadataValue.text(state.status if state else "unknown"),
            "seconds": dg.MetadataValue.float(round(seconds, 3)),
        },
        data_version=dg.DataVersion(stored.sha256),
    )


SCENE_ASSETS = [scene_outline, scene_code, rendered_video, thumbnail, combined_video]
