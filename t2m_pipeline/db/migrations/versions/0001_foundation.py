"""Foundation: users, jobs, file_metadata, job_queue.

Revision ID: 0001_foundation
Revises:
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB, UUID

revision = "0001_foundation"
down_revision = None
branch_labels = None
depends_on = None

STATUSES = "'queued', 'processing', 'completed', 'failed', 'cancelled'"
PRIORITIES = "'low', 'normal', 'high', 'urgent'"


def _uuid_pk() -> sa.Column:
    return sa.Column("id", UUID(as_uuid=True), primary_key=True, server_default=sa.text("gen_random_uuid()"))


def _ts(name: str, nullable: bool = False) -> sa.Column:
    default = None if nullable else sa.text("now()")
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable, server_default=default)


def upgrade() -> None:
    op.create_table(
        "users",
        _uuid_pk(),
        sa.Column("clerk_user_id", sa.String(255), nullable=False, unique=True),
        sa.Column("email", sa.String(255), nullable=False, server_default=sa.text("''")),
        sa.Column("role", sa.String(50), nullable=False, server_default=sa.text("'user'")),
        _ts("created_at"),
        _ts("updated_at"),
        sa.Column("metadata", JSONB),
    )
    op.create_table(
        "jobs",
        _uuid_pk(),
        sa.Column("user_id", UUID(as_uuid=True), sa.ForeignKey("users.id"), nullable=False),
        sa.Column("job_type", sa.String(50), nullable=False, server_default=sa.text("'video_generation'")),
        sa.Column("status", sa.String(50), nullable=False, server_default=sa.text("'queued'")),
        sa.Column("priority", sa.String(20), nullable=False, server_default=sa.text("'normal'")),
        sa.Column("topic", sa.String(500), nullable=False),
        sa.Column("description", sa.Text),
        sa.Column("configuration", JSONB),
        sa.Column("progress_percentage", sa.Numeric(5, 2), nullable=False, server_default=sa.text("0")),
        sa.Column("current_stage", sa.String(100)),
        sa.Column("error_info", JSONB),
        sa.Column("metrics", JSONB),
        _ts("created_at"),
        _ts("updated_at"),
        _ts("started_at", nullable=True),
        _ts("completed_at", nullable=True),
        _ts("estimated_completion", nullable=True),
        sa.Column("batch_id", UUID(as_uuid=True)),
        sa.Column("is_deleted", sa.Boolean, nullable=False, server_default=sa.text("false")),
        _ts("deleted_at", nullable=True),
        sa.CheckConstraint(f"status IN ({STATUSES})", name="ck_jobs_status"),
        sa.CheckConstraint(f"priority IN ({PRIORITIES})", name="ck_jobs_priority"),
        sa.CheckConstraint("progress_percentage >= 0 AND progress_percentage <= 100", name="ck_jobs_progress"),
    )
    op.create_index("ix_jobs_user_id", "jobs", ["user_id"])
    op.create_index("ix_jobs_status_updated_at", "jobs", ["status", "updated_at"])
    op.create_index("ix_jobs_queued_created_at", "jobs", ["created_at"], postgresql_where=sa.text("status = 'queued'"))
    op.create_table(
        "file_metadata",
        _uuid_pk(),
        sa.Column("user_id", UUID(as_uuid=True), sa.ForeignKey("users.id"), nullable=False),
        sa.Column("job_id", UUID(as_uuid=True), sa.ForeignKey("jobs.id")),
        sa.Column("file_type", sa.String(50), nullable=False),
        sa.Column("original_filename", sa.String(1024)),
        sa.Column("s3_bucket", sa.String(255), nullable=False),
        sa.Column("s3_key", sa.String(1024), nullable=False),
        sa.Column("file_size", sa.BigInteger),
        sa.Column("content_type", sa.String(255)),
        sa.Column("version_id", sa.String(255)),
        sa.Column("checksum", sa.String(64)),
        sa.Column("metadata", JSONB),
        _ts("created_at"),
        sa.CheckConstraint("checksum IS NULL OR checksum ~ '^[0-9a-f]{64}$'", name="ck_file_metadata_checksum"),
        sa.UniqueConstraint(
            "s3_bucket", "s3_key", "version_id", name="uq_file_metadata_object_version", postgresql_nulls_not_distinct=True
        ),
    )
    op.create_index("ix_file_metadata_job_id", "file_metadata", ["job_id"])
    op.create_index("ix_file_metadata_user_id", "file_metadata", ["user_id"])
    op.execute("CREATE SEQUENCE job_queue_position_seq")
    op.create_table(
        "job_queue",
        _uuid_pk(),
        sa.Column("job_id", UUID(as_uuid=True), sa.ForeignKey("jobs.id", ondelete="CASCADE"), nullable=False, unique=True),
        sa.Column("priority", sa.String(20), nullable=False, server_default=sa.text("'normal'")),
        sa.Column("status", sa.String(50), nullable=False, server_default=sa.text("'queued'")),
        sa.Column("queue_position", sa.BigInteger, server_default=sa.text("nextval('job_queue_position_seq')")),
        _ts("queued_at"),
        _ts("processing_started_at", nullable=True),
        _ts("completed_at", nullable=True),
        sa.CheckConstraint(f"status IN ({STATUSES})", name="ck_job_queue_status"),
        sa.CheckConstraint(f"priority IN ({PRIORITIES})", name="ck_job_queue_priority"),
    )
    op.execute(
        "CREATE INDEX ix_job_queue_dispatch ON job_queue "
        "((CASE priority WHEN 'urgent' THEN 0 WHEN 'high' THEN 1 WHEN 'normal' THEN 2 ELSE 3 END), "
        "queue_position, queued_at) WHERE status = 'queued'"
    )


def downgrade() -> None:
    op.drop_table("job_queue")
    op.execute("DROP SEQUENCE IF EXISTS job_queue_position_seq")
    op.drop_table("file_metadata")
    op.drop_table("jobs")
    op.drop_table("users")
