"""The job vocabulary, in one place: statuses, stages, file types, job types, priorities (and their SQL order), which
asset is which stage, and a job's scene numbers.

`StrEnum`s: a member is its own string, so rows written by other systems with plain SQL compare equal to them and
they go into SQL and JSON as they are. Nothing here imports the rest of the package.
"""

from __future__ import annotations

from enum import StrEnum


class JobStatus(StrEnum):
    QUEUED = "queued"
    PROCESSING = "processing"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"
    # Ours, not the legacy platform's: a migrated job that was queued or processing there waits, untouched by the
    # `new_jobs` sensor, until an operator requeues it (`db.job_state` owns the rules).
    HELD = "held"


LEGACY_JOB_STATUSES = tuple(s for s in JobStatus if s is not JobStatus.HELD)


class Stage(StrEnum):
    """Where a job is, in pipeline order (`jobs.current_stage`, `error_info.stage`)."""

    PLANNING = "planning"
    CODE_GENERATION = "code_generation"
    RENDERING = "rendering"
    THUMBNAILS = "thumbnails"
    COMBINING = "combining"
    COMPLETED = "completed"


class FileType(StrEnum):
    """`file_metadata.file_type`: what an object is, for the pipeline's writes and the migrated legacy files alike
    (a row's `metadata.scene_number` says which scene, when it is a scene's). An upload's row has the upload's own
    type instead (`UPLOAD_TYPES`)."""

    JOB_PLAN = "job_plan"  # a migrated scene outline (the legacy `.txt`)
    SCENE_OUTLINE = "scene_outline"  # the pipeline's outline (JSON, with `metadata.scene_count`)
    SCENE_PLAN = "scene_plan"
    SCENE_CODE = "scene_code"
    RENDER_LOG = "render_log"
    SCENE_VIDEO = "scene_video"
    SUBTITLES = "subtitles"
    COMBINED_VIDEO = "combined_video"
    THUMBNAIL = "thumbnail"
    RAG_CACHE = "rag_cache"
    LEGACY_OTHER = "legacy_other"
    LEGACY_UNATTRIBUTED = "legacy_unattributed"


UPLOAD_TYPES = ("image", "video", "audio", "document", "archive")


class JobType(StrEnum):
    VIDEO_GENERATION = "video_generation"
    BATCH_VIDEO_GENERATION = "batch_video_generation"
    FILE_PROCESSING = "file_processing"


JOB_TYPES = tuple(JobType)
PIPELINE_JOB_TYPES = (JobType.VIDEO_GENERATION, JobType.BATCH_VIDEO_GENERATION)


class Priority(StrEnum):
    """Declared lowest first; dispatch takes the highest first."""

    LOW = "low"
    NORMAL = "normal"
    HIGH = "high"
    URGENT = "urgent"


PRIORITIES = tuple(Priority)


def priority_order_sql(column: str = "priority") -> str:
    """The SQL expression dispatch orders by (0 = most urgent). The partial index `ix_job_queue_dispatch` is built on
    exactly this text, and the query must repeat it verbatim for PostgreSQL to walk the index."""
    ranked = list(reversed(Priority))[:-1]
    whens = " ".join(f"WHEN '{p.value}' THEN {rank}" for rank, p in enumerate(ranked))
    return f"(CASE {column} {whens} ELSE {len(ranked)} END)"


def sql_list(values) -> str:
    """`'a', 'b'` for an IN (...) of enum members (their values are plain identifiers, never user text)."""
    return ", ".join(f"'{v}'" for v in values)


# The pipeline's assets by the stage each one is (what a failed step's stage is).
STAGE_OF_ASSET: dict[str, Stage] = {
    "scene_outline": Stage.PLANNING,
    "scene_code": Stage.CODE_GENERATION,
    "rendered_video": Stage.RENDERING,
    "thumbnail": Stage.THUMBNAILS,
    "combined_video": Stage.COMBINING,
}


def scene_numbers(scene_count: int) -> range:
    """A job's scenes: 1-based, as the outline numbers them and the keys pad them."""
    return range(1, int(scene_count) + 1)


# The legacy system's topic folder rule (its `slugify`) in SQL over a job row, exact for ASCII topics: C collation
# lowers only A-Z, as Python's `str.lower` does on ASCII. Rows whose topic is not ASCII are always read (Python's
# rule then decides). Indexed (db/models.py, migration 0012): the expressions must stay verbatim.
LEGACY_TOPIC_SQL = "coalesce(configuration->>'topic', topic)"
LEGACY_FOLDER_SQL = f"""regexp_replace(lower({LEGACY_TOPIC_SQL} COLLATE "C"), '[^a-z0-9_]+', '_', 'g')"""
LEGACY_NON_ASCII_TOPIC_SQL = f"octet_length({LEGACY_TOPIC_SQL}) <> char_length({LEGACY_TOPIC_SQL})"
