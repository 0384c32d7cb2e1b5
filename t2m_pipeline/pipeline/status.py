"""Status write-back: a job's status, stage, progress, error and metrics as its assets run.

Every change goes through `db.job_state.apply_transition` (the one job-state function), inside a transaction that
first locks the job row, so concurrent scene runs never lose each other's updates.

Progress and stage are derived from what exists, not counted by hand: the objects of the job recorded in
`file_metadata` (the outline, and per scene its code, video and thumbnail). Planning is worth 10 %, the scene
objects 80 % together, the combined video the last 10 %.

Failed scenes are remembered in `error_info.failed_scenes`: a failed scene fails the job, other scenes keep
running and keep their objects, and the job leaves `failed` only when a re-run of its failed partitions starts
(when no other scene is still failed) or succeeds.
"""

from __future__ import annotations

import functools
import logging
import uuid
from dataclasses import dataclass, field
from collections.abc import Callable
from typing import Any

from sqlalchemy import Engine, select, text
from sqlalchemy.engine import Connection

from t2m_pipeline.db.engine import in_transaction
from t2m_pipeline.db.job_state import JobState, apply_transition
from t2m_pipeline.db.models import FileMetadata, Job
from t2m_pipeline.vocabulary import FileType, JobStatus, Stage, scene_numbers

PLANNING_SHARE, SCENES_SHARE = 10.0, 80.0



@dataclass
class JobObjects:
    """What a job has in S3 (by its `file_metadata` rows): scene numbers per kind, newest version per key."""

    scene_count: int | None = None
    code: set[int] = field(default_factory=set)
    video: set[int] = field(default_factory=set)
    thumbnail: set[int] = field(default_factory=set)
    combined: bool = False
    bytes_written: int = 0
    video_versions: dict[int, str | None] = field(default_factory=dict)

    @property
    def expected_scenes(self) -> int:
        return self.scene_count or max(self.code | self.video | self.thumbnail, default=0)

    def scenes_complete(self) -> bool:
        """Every scene of the outline has a video and a thumbnail."""
        n = self.scene_count
        return bool(n) and all(s in self.video and s in self.thumbnail for s in scene_numbers(n))


_KIND_OF_TYPE = {FileType.SCENE_CODE: "code", FileType.SCENE_VIDEO: "video", FileType.THUMBNAIL: "thumbnail"}


def job_objects(conn: Connection, job_id: uuid.UUID | str) -> JobObjects:
    """Read from the rows: each carries its file type and, for a scene's object, `metadata.scene_number`."""
    rows = conn.execute(
        select(FileMetadata.file_type, FileMetadata.version_id, FileMetadata.file_size, FileMetadata.extra.label("extra"))
        .where(FileMetadata.job_id == uuid.UUID(str(job_id)))
        .order_by(FileMetadata.created_at)
    ).all()
    objects = JobObjects()
    for row in rows:
        objects.bytes_written += row.file_size or 0
        extra = row.extra if isinstance(row.extra, dict) else {}
        kind, number = _KIND_OF_TYPE.get(row.file_type), extra.get("scene_number")
        if kind and isinstance(number, int) and number > 0:
            getattr(objects, kind).add(number)
            if kind == "video":
                objects.video_versions[number] = row.version_id  # rows come oldest first: the newest wins
        elif row.file_type == FileType.COMBINED_VIDEO:
            objects.combined = True
        elif row.file_type == FileType.SCENE_OUTLINE:
            count = extra.get("scene_count")
            if isinstance(count, int) and count > 0:
                objects.scene_count = count
    return objects


def progress_of(objects: JobObjects, *, completed: bool = False) -> float:
    if completed:
        return 100.0
    n = objects.expected_scenes
    if not n:
        return 0.0
    done = sum(len({s for s in kind if s <= n}) for kind in (objects.code, objects.video, objects.thumbnail))
    return round(PLANNING_SHARE + SCENES_SHARE * done / (3 * n), 2)


def stage_of(objects: JobObjects) -> str:
    """The stage the job is in: the earliest kind of scene object some scene still lacks."""
    n = objects.expected_scenes
    if not n:
        return Stage.PLANNING
    scenes = set(scene_numbers(n))
    if not scenes <= objects.code:
        return Stage.CODE_GENERATION
    if not scenes <= objects.video:
        return Stage.RENDERING
    if not scenes <= objects.thumbnail:
        return Stage.THUMBNAILS
    return Stage.COMBINING


def _locked_job(conn: Connection, job_id: uuid.UUID | str):
    return conn.execute(
        select(Job.status, Job.error_info, Job.metrics).where(Job.id == uuid.UUID(str(job_id))).with_for_update()
    ).one_or_none()


def failed_scenes(error_info: Any) -> set[int]:
    if not isinstance(error_info, dict):
        return set()
    return {s for s in error_info.get("failed_scenes") or [] if isinstance(s, int)}


def _added_seconds(metrics: Any, stage: str, seconds: float) -> dict:
    stage_seconds = (metrics or {}).get("stage_seconds") if isinstance(metrics, dict) else None
    previous = stage_seconds.get(stage, 0) if isinstance(stage_seconds, dict) else 0
    previous = previous if isinstance(previous, (int, float)) else 0
    return {stage: round(previous + seconds, 3)}


def launch(conn: Connection, job_id: uuid.UUID | str) -> JobState:
    """The sensor launched the job's first run: queued -> processing, stage planning."""
    return apply_transition(conn, job_id, JobStatus.PROCESSING, stage=Stage.PLANNING, progress=0, allow_same=False)


def reject(conn: Connection, job_id: uuid.UUID | str, message: str) -> JobState:
    """A queued job whose row cannot be run (hostile or malformed content): queued -> processing -> failed."""
    apply_transition(conn, job_id, JobStatus.PROCESSING, stage=Stage.PLANNING, progress=0)
    return apply_transition(
        conn, job_id, JobStatus.FAILED, error_info={"stage": Stage.PLANNING, "scene": None, "message": message, "log_key": None, "failed_scenes": []}
    )


def _ours(error_info: Any) -> bool:
    """error_info written by this pipeline (a legacy job's error_info has another shape and is left alone)."""
    return isinstance(error_info, dict) and "failed_scenes" in error_info


def _manages(objects: JobObjects, scene: int | None) -> bool:
    """Scene steps drive the status of jobs this pipeline planned (it stored their outline); a scene step on
    another job (say, a thumbnail backfilled for a migrated legacy video) records its metrics and nothing else."""
    return scene is None or objects.scene_count is not None


StatusListener = Callable[[JobState], None]
_listeners: list[StatusListener] = []


def after_status_write(listener: StatusListener) -> StatusListener:
    """Call `listener` with the job's state after each status write commits (the cut-over's legacy mirror registers
    itself here, so this module knows nothing of it). A listener's error is logged, never raised into the step."""
    if listener not in _listeners:
        _listeners.append(listener)
    return listener


def _announced(step):
    @functools.wraps(step)
    def wrapper(*args, **kwargs):
        state = step(*args, **kwargs)
        if state is not None:
            for listener in list(_listeners):
                try:
                    listener(state)
                except Exception as exc:  # noqa: BLE001 - a listener (the legacy mirror) must never fail a step
                    logging.getLogger(__name__).warning("status listener %s failed: %s", listener.__name__, type(exc).__name__)
        return state

    return wrapper


@_announced
def step_started(engine: Engine, job_id: uuid.UUID | str, scene: int | None, *, reopens: bool = True) -> JobState | None:
    """A step begins. A finished job re-opens (a re-run, unless `reopens` is False); a failed job re-opens
    when this step re-runs its only failed part (the failed scene, or a job-level step when no scene failed)."""

    def work(conn: Connection) -> JobState | None:
        row = _locked_job(conn, job_id)
        if row is None or not _manages(job_objects(conn, job_id), scene):
            return None
        if row.status == JobStatus.QUEUED and reopens:
            return apply_transition(conn, job_id, JobStatus.PROCESSING)
        if row.status == JobStatus.COMPLETED and reopens:
            return apply_transition(conn, job_id, JobStatus.PROCESSING)
        if row.status == JobStatus.FAILED and _ours(row.error_info):
            failed = failed_scenes(row.error_info)
            if failed <= ({scene} if scene else set()) and (reopens or scene in failed):
                return apply_transition(conn, job_id, JobStatus.PROCESSING)
        return None

    return in_transaction(engine, work)


@_announced
def step_succeeded(engine: Engine, job_id: uuid.UUID | str, *, stage: str, seconds: float, scene: int | None = None) -> JobState | None:
    """A step finished: its seconds are added to `metrics.stage_seconds`; progress, stage and bytes recomputed.
    A failed scene that now succeeded leaves `failed_scenes`; when none is left the job is processing again."""

    def work(conn: Connection) -> JobState | None:
        row = _locked_job(conn, job_id)
        if row is None:
            return None
        objects = job_objects(conn, job_id)
        metrics = {"stage_seconds": _added_seconds(row.metrics, stage, seconds), "bytes_written": objects.bytes_written}
        progress = {"stage": stage_of(objects), "progress": progress_of(objects)}
        if not _manages(objects, scene):
            return apply_transition(conn, job_id, metrics=metrics)
        if row.status == JobStatus.PROCESSING:
            return apply_transition(conn, job_id, metrics=metrics, **progress)
        if row.status == JobStatus.FAILED and _ours(row.error_info):
            failed = failed_scenes(row.error_info)
            remaining = failed - ({scene} if scene else set())
            if not remaining and scene in failed:
                return apply_transition(conn, job_id, JobStatus.PROCESSING, metrics=metrics, **progress)
            error_info = {**row.error_info, "failed_scenes": sorted(remaining)}
            return apply_transition(conn, job_id, metrics=metrics, error_info=error_info, progress=progress["progress"])
        return apply_transition(conn, job_id, metrics=metrics)  # completed, queued, cancelled, another's failure

    return in_transaction(engine, work)


@_announced
def step_failed(
    engine: Engine,
    job_id: uuid.UUID | str,
    *,
    stage: str,
    message: str,
    scene: int | None = None,
    log_key: str | None = None,
    only_if_unrecorded: bool = False,
) -> JobState | None:
    """A step failed: the job becomes `failed` with error_info {stage, scene, message, log_key, failed_scenes}.

    `only_if_unrecorded` (the run-failure sensor) leaves alone a failure the step itself already wrote back.
    """

    def work(conn: Connection) -> JobState | None:
        row = _locked_job(conn, job_id)
        if row is None or row.status in (JobStatus.CANCELLED, JobStatus.HELD):  # a held job is not running: a step on it fails alone
            return None
        objects = job_objects(conn, job_id)
        if not _manages(objects, scene):
            return None
        already = failed_scenes(row.error_info) if _ours(row.error_info) else set()
        if only_if_unrecorded and row.status == JobStatus.FAILED and (scene in already if scene else True):
            return None
        if row.status in (JobStatus.QUEUED, JobStatus.COMPLETED):
            apply_transition(conn, job_id, JobStatus.PROCESSING)
        scenes = already | ({scene} if scene else set())
        error_info = {"stage": stage, "scene": scene, "message": message[:2000], "log_key": log_key, "failed_scenes": sorted(scenes)}
        return apply_transition(conn, job_id, JobStatus.FAILED, stage=stage, error_info=error_info, metrics={"bytes_written": objects.bytes_written})

    return in_transaction(engine, work)


@_announced
def job_completed(engine: Engine, job_id: uuid.UUID | str) -> JobState | None:
    """The combined video is stored: the job completes, unless a scene failed meanwhile (then it stays failed)."""

    def work(conn: Connection) -> JobState | None:
        row = _locked_job(conn, job_id)
        if row is None:
            return None
        objects = job_objects(conn, job_id)
        metrics = {"bytes_written": objects.bytes_written}
        if row.status == JobStatus.CANCELLED or (row.status == JobStatus.FAILED and failed_scenes(row.error_info)):
            return apply_transition(conn, job_id, metrics=metrics)
        if row.status != JobStatus.PROCESSING:
            apply_transition(conn, job_id, JobStatus.PROCESSING)
        return apply_transition(conn, job_id, JobStatus.COMPLETED, stage=Stage.COMPLETED, progress=100, metrics=metrics)

    return in_transaction(engine, work)


def job_status(engine: Engine, job_id: uuid.UUID | str) -> tuple[str, Any] | None:
    with engine.connect() as conn:
        row = conn.execute(text("SELECT status, error_info FROM jobs WHERE id = :j"), {"j": uuid.UUID(str(job_id))}).one_or_none()
    return (row.status, row.error_info) if row else None
