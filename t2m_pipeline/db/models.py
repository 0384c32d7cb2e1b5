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
    Identity,
    Index,
    Integer,
    LargeBinary,
    Sequence,
    Numeric,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB, UUID
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from t2m_pipeline.vocabulary import (
    JOB_TYPES,
    LEGACY_FOLDER_SQL,
    LEGACY_NON_ASCII_TOPIC_SQL,
    PRIORITIES,
    JobStatus,
    priority_order_sql,
    sql_list,
)

# The vocabulary is `t2m_pipeline.vocabulary`'s; the constraints below hold the database to it.
JOB_STATUSES = tuple(JobStatus)


def _in(column: str, values: tuple[str, ...]) -> str:
    return f"{column} IN ({sql_list(values)})"


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
        Index("ix_jobs_updated_at_id", "updated_at", "id"),
        Index("ix_jobs_queued_created_at", "created_at", postgresql_where=text("status = 'queued'")),
        # a files migration's wave reads the legacy jobs of its topic folders (migration/attribution.py)
        Index("ix_jobs_legacy_folder", text(LEGACY_FOLDER_SQL), postgresql_where=text("configuration ? 'legacy'")),
        Index("ix_jobs_legacy_non_ascii_topic", text(f"({LEGACY_NON_ASCII_TOPIC_SQL})"), postgresql_where=text("configuration ? 'legacy'")),
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
        # Every object the legacy migration wrote for one legacy file (its original and its copies), found by path.
        Index(
            "ix_file_metadata_legacy_path",
            text("(metadata->>'legacy_path')"),
            postgresql_where=text("metadata ? 'legacy_path'"),
        ),
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
            text(priority_order_sql("priority")),
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


MIGRATION_OUTCOMES = ("migrated", "skipped", "unsafe", "failed")
SEVERITIES = ("INFO", "WARNING", "ERROR")


class MigrationBatch(Base):
    """One run of a migration (Redis or files): what rollback undoes, and what the report counts."""

    __tablename__ = "migration_batches"

    id: Mapped[uuid.UUID] = _uuid_pk()
    source: Mapped[str] = mapped_column(String(20), nullable=False)
    status: Mapped[str] = mapped_column(String(20), nullable=False, server_default=text("'running'"))
    legacy_root: Mapped[str | None] = mapped_column(Text)
    counts: Mapped[dict | None] = mapped_column(JSONB)
    started_at: Mapped[datetime] = _now()
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    rolled_back_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class MigrationBatchRows(Base):
    """What a batch created or changed, for exact rollback: one list's items (ids, row images) from one write
    transaction of the batch, in the order written (`migration.batches.created_rows` reads them back)."""

    __tablename__ = "migration_batch_rows"
    __table_args__ = (Index("ix_migration_batch_rows_batch", "batch_id", "id"),)

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    batch_id: Mapped[uuid.UUID] = mapped_column(
        UUID(as_uuid=True), ForeignKey("migration_batches.id", ondelete="CASCADE"), nullable=False
    )
    list: Mapped[str] = mapped_column(Text, nullable=False)
    items: Mapped[list] = mapped_column(JSONB, nullable=False)


class MigrationQuarantine(Base):
    """A legacy record that could not be migrated as it is: kept verbatim with the reason, never dropped."""

    __tablename__ = "migration_quarantine"
    __table_args__ = (UniqueConstraint("source", "source_key", "reason", name="uq_migration_quarantine_record"),)

    id: Mapped[uuid.UUID] = _uuid_pk()
    source: Mapped[str] = mapped_column(String(20), nullable=False)
    source_key: Mapped[str] = mapped_column(Text, nullable=False)
    raw_payload: Mapped[bytes | None] = mapped_column(LargeBinary)
    reason: Mapped[str] = mapped_column(Text, nullable=False)
    batch_id: Mapped[uuid.UUID | None] = mapped_column(UUID(as_uuid=True), ForeignKey("migration_batches.id", ondelete="SET NULL"))
    quarantined_at: Mapped[datetime] = _now()


class LegacyUploadShards(Base):
    """How many `uploads/{type}/{n}` partitions a legacy upload type folder has: decided once, by its file count
    (`migration.upload_shards`), so a file never changes partition."""

    __tablename__ = "legacy_upload_shards"
    __table_args__ = (CheckConstraint("shards BETWEEN 1 AND 999", name="ck_legacy_upload_shards_range"),)

    file_type: Mapped[str] = mapped_column(Text, primary_key=True)
    shards: Mapped[int] = mapped_column(Integer, nullable=False)
    files_counted: Mapped[int | None] = mapped_column(Integer)
    decided_at: Mapped[datetime] = _now()


class MigrationLedger(Base):
    """Exactly one row per discovered legacy file: what became of it and where it went."""

    __tablename__ = "migration_ledger"
    __table_args__ = (
        CheckConstraint(_in("outcome", MIGRATION_OUTCOMES), name="ck_migration_ledger_outcome"),
        Index("ix_migration_ledger_batch_id", "batch_id"),
        Index("ix_migration_ledger_partition", "partition_key"),
    )

    id: Mapped[uuid.UUID] = _uuid_pk()
    legacy_path: Mapped[str] = mapped_column(Text, nullable=False, unique=True)
    partition_key: Mapped[str | None] = mapped_column(String(255))
    size: Mapped[int | None] = mapped_column(BigInteger)
    sha256: Mapped[str | None] = mapped_column(String(64))
    outcome: Mapped[str] = mapped_column(String(20), nullable=False)
    reason: Mapped[str | None] = mapped_column(Text)
    bucket: Mapped[str | None] = mapped_column(String(255))
    key: Mapped[str | None] = mapped_column(String(1024))
    version_id: Mapped[str | None] = mapped_column(String(255))
    file_metadata_id: Mapped[uuid.UUID | None] = mapped_column(
        UUID(as_uuid=True), ForeignKey("file_metadata.id", ondelete="SET NULL")
    )
    batch_id: Mapped[uuid.UUID | None] = mapped_column(UUID(as_uuid=True), ForeignKey("migration_batches.id", ondelete="SET NULL"))
    # The write id (S3 `write-id`) the upload under this row's intent carries: the version it names is this file's.
    write_id: Mapped[str | None] = mapped_column(String(64))
    # The file as the walk saw it when its bytes were hashed: with `size`, a rerun's "unchanged without reading".
    mtime_ns: Mapped[int | None] = mapped_column(BigInteger)
    inode: Mapped[int | None] = mapped_column(BigInteger)
    created_at: Mapped[datetime] = _now()
    updated_at: Mapped[datetime] = _now()


class MigrationLegacyRecord(Base):
    """A durable legacy Redis record with no table of its own (`files:*`, `videos:job_*`, `batch:*`, the per-user
    sets), kept verbatim as JSON so nothing is lost when Redis is retired; the file migration reads `files:{id}`
    and `user_files:*` from here."""

    __tablename__ = "migration_legacy_records"
    __table_args__ = (Index("ix_migration_legacy_records_kind", "kind"),)

    source_key: Mapped[str] = mapped_column(Text, primary_key=True)
    kind: Mapped[str] = mapped_column(String(20), nullable=False)
    payload: Mapped[dict | list | None] = mapped_column(JSONB)
    batch_id: Mapped[uuid.UUID | None] = mapped_column(UUID(as_uuid=True), ForeignKey("migration_batches.id", ondelete="SET NULL"))
    migrated_at: Mapped[datetime] = _now()


class AuditFinding(Base):
    """One finding of an audit check; seen again it is refreshed, not duplicated; no longer seen it is resolved."""

    __tablename__ = "audit_findings"
    __table_args__ = (
        CheckConstraint(_in("severity", SEVERITIES), name="ck_audit_findings_severity"),
        Index("uq_audit_findings_open", "check_name", "subject", unique=True, postgresql_where=text("resolved_at IS NULL")),
    )

    id: Mapped[uuid.UUID] = _uuid_pk()
    check_name: Mapped[str] = mapped_column(String(100), nullable=False)
    severity: Mapped[str] = mapped_column(String(10), nullable=False)
    subject: Mapped[str] = mapped_column(Text, nullable=False)
    detail: Mapped[dict | None] = mapped_column(JSONB)
    first_seen_at: Mapped[datetime] = _now()
    last_seen_at: Mapped[datetime] = _now()
    resolved_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
