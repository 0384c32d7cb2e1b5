"""The work of each asset, as plain functions over the storage layer: plan, generate, render, thumbnail, combine.

Inputs are read from S3 at their layout keys (never from a run's local state), so any step can be re-run alone,
and scenes migrated from the legacy system can be picked up half-way (a thumbnail for a migrated video).
A failure the step understands (a hostile job row, code that does not check, a render error) raises `StepFailed`
with the S3 key of its log; anything else propagates for the caller's retry policy.
"""

from __future__ import annotations

import tempfile
import threading
import time
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from sqlalchemy import Engine, text

from t2m_pipeline.config import Settings
from t2m_pipeline.partition_keys import JobKey, SceneKey
from t2m_pipeline.render.codegen import (
    CodeGenerationError,
    CodeGenerator,
    GeneratedCode,
    GeneratedCodeError,
    check_scene_code,
    scene_class_name,
)
from t2m_pipeline.render.backends import RenderBackend, RenderError, RenderRequest, SandboxUnavailableError
from t2m_pipeline.render.media import MediaError, Thumbnail, VideoInfo, concat_videos, extract_thumbnail
from t2m_pipeline.render.outline import JobSpecError, SceneOutline, job_spec_from_row, plan_outline
from t2m_pipeline.storage import layout
from t2m_pipeline.storage.s3 import ObjectOwner, S3Storage, StoredObject
from t2m_pipeline.vocabulary import FileType, Stage, scene_numbers

OUTLINE_NAME = "scene_outline.json"


class StepFailed(RuntimeError):
    """A failure retrying cannot fix; `log_key` is the S3 key (code bucket) of its log, when one was stored."""

    def __init__(self, stage: str, message: str, *, scene: int | None = None, log_key: str | None = None):
        super().__init__(message)
        self.stage = str(stage)  # plain text: it goes into Dagster metadata, which serializes no foreign enum
        self.scene = scene
        self.log_key = log_key


@dataclass(frozen=True)
class Pipeline:
    """What every step needs: settings, the metadata database and the storage layer."""

    settings: Settings
    engine: Engine
    storage: S3Storage

    def bucket(self, kind: str) -> str:
        return self.settings.bucket(kind)


def _stamp() -> str:
    return datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S%fZ")


def store_log(p: Pipeline, key: SceneKey, name: str, content: str) -> str:
    """A failure's log in the code bucket at `.../code/scene_NNN/logs/{name}-{time}.log`; returns its key."""
    log_key = layout.scene_log_key(key.user_id, key.job_id, key.scene_number, f"{name}-{_stamp()}.log")
    owner = ObjectOwner(key.user_id, FileType.RENDER_LOG, job_id=key.job_id, scene_number=key.scene_number)
    p.storage.put_bytes(p.bucket("code"), log_key, content.encode("utf-8", "replace"), owner=owner, content_type="text/plain; charset=utf-8")
    return log_key


# -- scene_outline ------------------------------------------------------------------------------------------------


def load_job_row(engine: Engine, job_id: str):
    with engine.connect() as conn:
        row = conn.execute(
            text("SELECT user_id, topic, description, configuration FROM jobs WHERE id = :j"), {"j": uuid.UUID(job_id)}
        ).one_or_none()
    if row is None:
        raise StepFailed(Stage.PLANNING, f"job {job_id} does not exist")
    return row


def plan_job(p: Pipeline, key: JobKey) -> tuple[SceneOutline, StoredObject]:
    """The job's outline, stored as JSON; returns it and its object (the scene_runs sensor makes its scenes
    partitions)."""
    row = load_job_row(p.engine, key.job_id)
    if str(row.user_id) != key.user_id:
        raise StepFailed(Stage.PLANNING, f"partition {key.encode()} names user {key.user_id}, the job belongs to {row.user_id}")
    try:
        outline = plan_outline(job_spec_from_row(row.topic, row.description, row.configuration))
    except JobSpecError as exc:
        raise StepFailed(Stage.PLANNING, f"job row cannot be planned: {exc}") from exc
    owner = ObjectOwner(key.user_id, FileType.SCENE_OUTLINE, job_id=key.job_id, extra={"scene_count": outline.scene_count})
    stored = p.storage.put_bytes(
        p.bucket("code"),
        layout.job_plan_key(key.user_id, key.job_id, OUTLINE_NAME),
        outline.to_json(),
        owner=owner,
        content_type="application/json",
    )
    return outline, stored


def load_outline(p: Pipeline, key: JobKey) -> SceneOutline:
    raw = p.storage.get_bytes(p.bucket("code"), layout.job_plan_key(key.user_id, key.job_id, OUTLINE_NAME))
    return SceneOutline.from_json(raw)


# -- scene_code ---------------------------------------------------------------------------------------------------


def generate_code(p: Pipeline, key: SceneKey, generator: CodeGenerator) -> tuple[GeneratedCode, StoredObject]:
    outline = load_outline(p, key.job)
    try:
        scene = outline.scene(key.scene_number)
    except KeyError as exc:
        raise StepFailed(Stage.CODE_GENERATION, str(exc.args[0]), scene=key.scene_number) from exc
    try:
        generated = generator.generate(outline, scene)
    except GeneratedCodeError as exc:
        log_key = store_log(p, key, "codegen", f"{generator.name} generator produced code that fails the check:\n{exc}\n")
        raise StepFailed(Stage.CODE_GENERATION, f"generated code rejected: {exc}", scene=key.scene_number, log_key=log_key) from exc
    except CodeGenerationError as exc:
        if exc.transient:
            raise
        log_key = store_log(p, key, "codegen", f"{generator.name} generator failed:\n{exc}\n")
        raise StepFailed(Stage.CODE_GENERATION, f"code generation failed: {exc}", scene=key.scene_number, log_key=log_key) from exc
    owner = ObjectOwner(
        key.user_id, FileType.SCENE_CODE, job_id=key.job_id, scene_number=key.scene_number, extra={"generator": generated.generator}
    )
    stored = p.storage.put_bytes(
        p.bucket("code"),
        layout.scene_code_key(key.user_id, key.job_id, key.scene_number),
        generated.code.encode("utf-8"),
        owner=owner,
        content_type="text/x-python; charset=utf-8",
    )
    return generated, stored


# -- rendered_video -----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RenderedVideo:
    stored: StoredObject
    info: VideoInfo
    render_seconds: float
    quality: str
    backend: str = ""
    usage: str = ""


def render_video(
    p: Pipeline, key: SceneKey, backend: RenderBackend, context, *, timeout_s: float, quality: str | None = None,
    stop: threading.Event | None = None,
) -> RenderedVideo:
    """Render the scene's stored code through the render backend (never in this process); the checked video goes
    to its layout key, a failure's log (the worker's header, then the render's own output, capped) to S3."""
    code_key = layout.scene_code_key(key.user_id, key.job_id, key.scene_number)
    code = p.storage.get_bytes(p.bucket("code"), code_key).decode("utf-8", "replace")
    class_name = scene_class_name(key.scene_number)
    try:
        check_scene_code(code, class_name)
    except GeneratedCodeError as exc:
        log_key = store_log(p, key, "render", f"stored code at {code_key} fails the check: {exc}\n")
        raise StepFailed(Stage.RENDERING, f"stored code rejected: {exc}", scene=key.scene_number, log_key=log_key) from exc
    quality = quality or load_outline(p, key.job).quality
    request = RenderRequest(code, class_name, quality, float(timeout_s), label=key.encode(), stop=stop)
    header = f"scene: {key.encode()}\ncode: s3://{p.bucket('code')}/{code_key}\nquality: {quality}\n"
    try:
        with backend.render(context, request) as output:
            output.raise_for_failure()
            owner = ObjectOwner(
                key.user_id, FileType.SCENE_VIDEO, job_id=key.job_id, scene_number=key.scene_number,
                extra={"duration_s": output.info.duration_s, "resolution": output.info.resolution, "quality": quality, "render_backend": output.backend},
            )
            stored = p.storage.put_file(
                p.bucket("videos"),
                layout.scene_video_key(key.user_id, key.job_id, key.scene_number),
                output.video,
                owner=owner,
                content_type="video/mp4",
            )
            usage = output.usage.describe() if output.usage else ""
            return RenderedVideo(stored, output.info, output.seconds, quality, output.backend, usage)
    except RenderError as exc:
        log_key = store_log(p, key, "render", f"{exc}\n{header}{exc.log}")
        raise StepFailed(Stage.RENDERING, str(exc), scene=key.scene_number, log_key=log_key) from exc
    except SandboxUnavailableError as exc:
        log_key = store_log(p, key, "render", f"{exc}\n{header}")
        raise StepFailed(Stage.RENDERING, str(exc), scene=key.scene_number, log_key=log_key) from exc


# -- thumbnail ----------------------------------------------------------------------------------------------------


def make_thumbnail(p: Pipeline, key: SceneKey) -> tuple[Thumbnail, StoredObject]:
    video_key = layout.scene_video_key(key.user_id, key.job_id, key.scene_number)
    with tempfile.TemporaryDirectory(prefix="t2m-thumb-") as tmp:
        path = Path(tmp) / "video.mp4"
        p.storage.download_file(p.bucket("videos"), video_key, path)
        try:
            thumb = extract_thumbnail(path)
        except MediaError as exc:
            log_key = store_log(p, key, "thumbnail", f"{exc}\nvideo: s3://{p.bucket('videos')}/{video_key}\n")
            raise StepFailed(Stage.THUMBNAILS, str(exc), scene=key.scene_number, log_key=log_key) from exc
    owner = ObjectOwner(
        key.user_id, FileType.THUMBNAIL, job_id=key.job_id, scene_number=key.scene_number,
        extra={"width": thumb.width, "height": thumb.height, "at_seconds": thumb.at_seconds},
    )
    stored = p.storage.put_bytes(
        p.bucket("thumbnails"),
        layout.thumbnail_key(key.user_id, key.job_id, key.scene_number),
        thumb.jpeg,
        owner=owner,
        content_type="image/jpeg",
    )
    return thumb, stored


# -- combined_video -----------------------------------------------------------------------------------------------


def combine(p: Pipeline, key: JobKey) -> tuple[VideoInfo, StoredObject, int]:
    """The scene videos (newest versions), concatenated in scene order, stored at `videos/combined/output.mp4`."""
    outline = load_outline(p, key)
    with tempfile.TemporaryDirectory(prefix="t2m-combine-") as tmp:
        paths = []
        for number in scene_numbers(outline.scene_count):
            path = Path(tmp) / f"scene_{number:03d}.mp4"
            p.storage.download_file(p.bucket("videos"), layout.scene_video_key(key.user_id, key.job_id, number), path)
            paths.append(path)
        out = Path(tmp) / "combined.mp4"
        try:
            info = concat_videos(paths, out)
        except MediaError as exc:
            raise StepFailed(Stage.COMBINING, str(exc)) from exc
        owner = ObjectOwner(
            key.user_id, FileType.COMBINED_VIDEO, job_id=key.job_id,
            extra={"duration_s": info.duration_s, "resolution": info.resolution, "scenes": outline.scene_count},
        )
        stored = p.storage.put_file(
            p.bucket("videos"), layout.combined_video_key(key.user_id, key.job_id), out, owner=owner, content_type="video/mp4"
        )
    return info, stored, outline.scene_count


def timed(fn, *args, **kwargs):
    """(result, seconds) of one call."""
    started = time.monotonic()
    result = fn(*args, **kwargs)
    return result, time.monotonic() - started
