"""SQLAlchemy 2 models of the metadata schema (the design's tables plus what the pipeline and migration need).

Alembic migrations under `migrations/versions` create exactly this; `test_migrations` checks they agree.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from decimal import Decimal

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    DateTime,
    ForeignKey,
    Index,
    Sequence,
    Numeric,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB, UUID
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

JOB_STATUSES = ("queued", "processing", "completed", "failed", "cancelled")
PRIORITIES = ("low", "normal", "high", "urgent")
JOB_TYPES = ("video_generation", "batch_video_generation", "file_processing")


def _in(column: str, values: tuple[str, ...]) -> str:
    return f"{column} IN ({', '.join(repr(v) for v in values)})"


class Base(DeclarativeBase):
    pass


def _uuid_pk() -> Mapped[uuid.UUID]:
    return mapped_column(UUID(as_uuid=True), primary_key=True, server_default=text("gen_random_uuid()"))


def _now() -> Mapped[datetime]:
    return mapped_column(DateTime(timezone=True), nullable=False, server_default=text("now()"))


class User(Base):
    __tablename__ = "users"

    id: Mapped[uuid.UUID] = _uuid_pk()
    clerk_user_id: Mapped[str] = mapped_column(String(255), unique=True, nullable=False)
    email: Mapped[str] = mapped_column(String(255), nullable=False, server_default=text("''"))
    role: Mapped[str] = mapped_column(String(50), nullable=False, server_default=text("'user'"))
    created_at: Mapped[datetime] = _now()
    updated_at: Mapped[datetime] = _now()
    # `metadata` is reserved on declarative classes: the attribute has another name, the column keeps the design's.
    extra: Mapped[dict | None] = mapped_column("metadata", JSONB)


class Job(Base):
    __tablename__ = "jobs"
    __table_args__ = (
        CheckConstraint(_in("status", JOB_STATUSES), name="ck_jobs_status"),
        CheckConstraint(_in("priority", PRIORITIES), name="ck_jobs_priority"),
        CheckConstraint("progress_percentage >= 0 AND progress_percentage <= 100", name="ck_jobs_progress"),
        Index("ix_jobs_user_id", "user_id"),
        Index("ix_jobs_status_updated_at", "status", "updated_at"),
        Index("ix_jobs_queued_created_at", "created_at", postgresql_where=text("status = 'queued'")),
    )

    id: Mapped[uuid.UUID] = _uuid_pk()
    user_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), ForeignKey("users.id"), nullable=False)
    job_type: Mapped[str] = mapped_column(String(50), nullable=False, server_default=text("'video_generation'"))
    status: Mapped[str] = mapped_column(String(50), nullable=False, server_default=text("'queued'"))
    priority: Mapped[str] = mapped_column(String(20), nullable=False, server_default=text("'normal'"))
    topic: Mapped[str] = mapped_column(String(500), nullable=False)
    description: Mapped[str | None] = mapped_column(Text)
    configuration: Mapped[dict | None] = mapped_column(JSONB)
    progress_percentage: Mapped[Decimal] = mapped_column(Numeric(5, 2), nullable=False, server_default=text("0"))
    current_stage: Mapped[str | None] = mapped_column(String(100))
    error_info: Mapped[dict | None] = mapped_column(JSONB)
    metrics: Mapped[dict | None] = mapped_column(JSONB)
    created_at: Mapped[datetime] = _now()
    updated_at: Mapped[datetime] = _now()
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    completed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    estimated_completion: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    batch_id: Mapped[uuid.UUID | None] = mapped_column(UUID(as_uuid=True))
    is_deleted: Mapped[bool] = mapped_column(Boolean, nullable=False, server_default=text("false"))
    deleted_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class FileMetadata(Base):
    __tablename__ = "file_metadata"
    __table_args__ = (
        UniqueConstraint(
            "s3_bucket", "s3_key", "version_id", name="uq_file_metadata_object_version", postgresql_nulls_not_distinct=True
        ),
        Index("ix_file_metadata_job_id", "job_id"),
        Index("ix_file_metadata_user_id", "user_id"),
        CheckConstraint("checksum IS NULL OR checksum ~ '^[0-9a-f]{64}$'", name="ck_file_metadata_checksum"),
    )

    id: Mapped[uuid.UUID] = _uuid_pk()
    user_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), ForeignKey("users.id"), nullable=False)
    job_id: Mapped[uuid.UUID | None] = mapped_column(UUID(as_uuid=True), ForeignKey("jobs.id"))
    file_type: Mapped[str] = mapped_column(String(50), nullable=False)
    original_filename: Mapped[str | None] = mapped_column(String(1024))
    s3_bucket: Mapped[str] = mapped_column(String(255), nullable=False)
    s3_key: Mapped[str] = mapped_column(String(1024), nullable=False)
    file_size: Mapped[int | None] = mapped_column(BigInteger)
    content_type: Mapped[str | None] = mapped_column(String(255))
    version_id: Mapped[str | None] = mapped_column(String(255))
    checksum: Mapped[str | None] = mapped_column(String(64))
    extra: Mapped[dict | None] = mapped_column("metadata", JSONB)
    created_at: Mapped[datetime] = _now()


QUEUE_POSITION_SEQ = Sequence("job_queue_position_seq", metadata=Base.metadata)


class JobQueue(Base):
    __tablename__ = "job_queue"
    __table_args__ = (
        CheckConstraint(_in("status", JOB_STATUSES), name="ck_job_queue_status"),
        CheckConstraint(_in("priority", PRIORITIES), name="ck_job_queue_priority"),
        Index(
            "ix_job_queue_dispatch",
            text(
                "(CASE priority WHEN 'urgent' THEN 0 WHEN 'high' THEN 1 WHEN 'normal' THEN 2 ELSE 3 END)"
            ),
            "queue_position",
            "queued_at",
            postgresql_where=text("status = 'queued'"),
        ),
    )

    id: Mapped[uuid.UUID] = _uuid_pk()
    job_id: Mapped[uuid.UUID] = mapped_column(
        UUID(as_uuid=True), ForeignKey("jobs.id", ondelete="CASCADE"), nullable=False, unique=True
    )
    priority: Mapped[str] = mapped_column(String(20), nullable=False, server_default=text("'normal'"))
    status: Mapped[str] = mapped_column(String(50), nullable=False, server_default=text("'queued'"))
    # Plain-SQL writers may omit it: the sequence keeps arrival order; the legacy migration sets its list order.
    queue_position: Mapped[int | None] = mapped_column(
        BigInteger, QUEUE_POSITION_SEQ, server_default=QUEUE_POSITION_SEQ.next_value()
    )
    queued_at: Mapped[datetime] = _now()
    processing_started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    completed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
