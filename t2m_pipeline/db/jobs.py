"""Reading and submitting jobs (the same rows the T2M web app writes with plain SQL)."""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import Engine, select, text
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.engine import Connection
from sqlalchemy.orm import Session

from t2m_pipeline.db.engine import in_transaction
from t2m_pipeline.db.models import PRIORITIES, FileMetadata, Job, JobQueue
from t2m_pipeline.db.users import ensure_user
from t2m_pipeline.render.outline import MAX_CONFIGURATION_BYTES, JobSpecError, decode_bounded_json

QUALITIES = ("low", "medium", "high", "ultra")


def submit_job(
    engine: Engine,
    *,
    clerk_user_id: str,
    email: str,
    topic: str,
    context: str,
    quality: str = "low",
    priority: str = "normal",
    scene_count: int | None = None,
) -> uuid.UUID:
    if not 1 <= len(topic) <= 500:
        raise ValueError("topic must be 1 to 500 characters")
    if quality not in QUALITIES:
        raise ValueError(f"quality {quality!r}: expected one of {'|'.join(QUALITIES)}")
    if priority not in PRIORITIES:
        raise ValueError(f"priority {priority!r}: expected one of {'|'.join(PRIORITIES)}")
    configuration: dict[str, Any] = {"topic": topic, "context": context, "quality": quality}
    if scene_count is not None:
        configuration["scene_count"] = scene_count

    def work(conn: Connection) -> uuid.UUID:
        user_id = ensure_user(conn, clerk_user_id, email)
        job_id = conn.execute(
            insert(Job)
            .values(user_id=user_id, topic=topic, description=context, configuration=configuration, priority=priority)
            .returning(Job.id)
        ).scalar_one()
        conn.execute(insert(JobQueue).values(job_id=job_id, priority=priority))
        return job_id

    return in_transaction(engine, work)


SUMMARY_SQL = text(
    """
    SELECT CAST(j.id AS text) AS id, CAST(j.user_id AS text) AS user_id, u.clerk_user_id, j.status, j.priority,
           left(j.topic, 500) AS topic, CAST(j.progress_percentage AS float) AS progress_percentage, j.current_stage,
           left(CAST(j.created_at AS text), 40) AS created_at, left(CAST(j.started_at AS text), 40) AS started_at,
           left(CAST(j.completed_at AS text), 40) AS completed_at,
           octet_length(CAST(j.error_info AS text)) AS error_info_bytes,
           CASE WHEN octet_length(CAST(j.error_info AS text)) <= :max_json THEN CAST(j.error_info AS text) END AS error_info,
           octet_length(CAST(j.metrics AS text)) AS metrics_bytes,
           CASE WHEN octet_length(CAST(j.metrics AS text)) <= :max_json THEN CAST(j.metrics AS text) END AS metrics
    FROM jobs j JOIN users u ON u.id = j.user_id
    WHERE j.id = :job_id
    """
)


def _bounded(raw: str | None, what: str, size: int | None) -> Any:
    """A JSON column written by us or by others: decoded within limits, else one line saying why not."""
    try:
        return decode_bounded_json(raw, what, size)
    except JobSpecError as exc:
        return {"unreadable": str(exc)}


def job_summary(engine: Engine, job_id: uuid.UUID | str) -> dict | None:
    """Status, progress, stage, times and objects of one job, as plain JSON-able values.

    Read so that no row content can break it (jobs are written by other systems too): times and JSON arrive as
    text, JSON is decoded within limits, and nothing else of the row (its configuration) is read at all."""
    job_id = uuid.UUID(str(job_id))
    with engine.connect() as conn:
        row = conn.execute(SUMMARY_SQL, {"job_id": job_id, "max_json": MAX_CONFIGURATION_BYTES}).mappings().one_or_none()
    if row is None:
        return None
    with Session(engine) as session:
        files = session.scalars(
            select(FileMetadata).where(FileMetadata.job_id == job_id).order_by(FileMetadata.s3_key, FileMetadata.created_at)
        ).all()
    return {
        **{k: row[k] for k in ("id", "user_id", "clerk_user_id", "status", "priority", "topic", "current_stage", "created_at", "started_at", "completed_at")},
        "progress_percentage": row["progress_percentage"],
        "error_info": _bounded(row["error_info"], "error_info", row["error_info_bytes"]),
        "metrics": _bounded(row["metrics"], "metrics", row["metrics_bytes"]),
        "objects": [
            {
                "bucket": f.s3_bucket,
                "key": f.s3_key,
                "version_id": f.version_id,
                "size": f.file_size,
                "sha256": f.checksum,
                "file_type": f.file_type,
            }
            for f in files
        ],
    }
