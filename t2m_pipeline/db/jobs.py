"""Reading and submitting jobs (the same rows the T2M web app writes with plain SQL)."""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import Engine, select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.engine import Connection
from sqlalchemy.orm import Session

from t2m_pipeline.db.engine import in_transaction
from t2m_pipeline.db.models import PRIORITIES, FileMetadata, Job, JobQueue, User

QUALITIES = ("low", "medium", "high", "ultra")


def ensure_user(conn: Connection, clerk_user_id: str, email: str = "", extra: dict | None = None) -> uuid.UUID:
    """The user's id, creating the row when new (concurrent callers get the same row)."""
    stmt = (
        insert(User)
        .values(clerk_user_id=clerk_user_id, email=email, extra=extra)
        .on_conflict_do_nothing(index_elements=[User.clerk_user_id])
    )
    conn.execute(stmt)
    return conn.execute(select(User.id).where(User.clerk_user_id == clerk_user_id)).scalar_one()


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


def job_summary(engine: Engine, job_id: uuid.UUID | str) -> dict | None:
    """Status, progress, stage, times and objects of one job, as plain JSON-able values."""
    job_id = uuid.UUID(str(job_id))
    with Session(engine) as session:
        job = session.execute(
            select(Job, User.clerk_user_id).join(User, User.id == Job.user_id).where(Job.id == job_id)
        ).one_or_none()
        if job is None:
            return None
        files = session.scalars(
            select(FileMetadata).where(FileMetadata.job_id == job_id).order_by(FileMetadata.s3_key, FileMetadata.created_at)
        ).all()
    j: Job = job[0]

    def iso(value):
        return value.isoformat() if value else None

    return {
        "id": str(j.id),
        "user_id": str(j.user_id),
        "clerk_user_id": job[1],
        "status": j.status,
        "priority": j.priority,
        "topic": j.topic,
        "progress_percentage": float(j.progress_percentage),
        "current_stage": j.current_stage,
        "created_at": iso(j.created_at),
        "started_at": iso(j.started_at),
        "completed_at": iso(j.completed_at),
        "error_info": j.error_info,
        "metrics": j.metrics,
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
