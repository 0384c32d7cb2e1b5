"""Legacy migration: batches, quarantine and the per-file ledger.

Revision ID: 0002_migration
Revises: 0001_foundation
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB, UUID

revision = "0002_migration"
down_revision = "0001_foundation"
branch_labels = None
depends_on = None


def _uuid_pk() -> sa.Column:
    return sa.Column("id", UUID(as_uuid=True), primary_key=True, server_default=sa.text("gen_random_uuid()"))


def _ts(name: str, nullable: bool = False) -> sa.Column:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable, server_default=None if nullable else sa.text("now()"))


def _batch_fk() -> sa.Column:
    return sa.Column("batch_id", UUID(as_uuid=True), sa.ForeignKey("migration_batches.id", ondelete="SET NULL"))


def upgrade() -> None:
    op.create_table(
        "migration_batches",
        _uuid_pk(),
        sa.Column("source", sa.String(20), nullable=False),
        sa.Column("status", sa.String(20), nullable=False, server_default=sa.text("'running'")),
        sa.Column("legacy_root", sa.Text),
        sa.Column("counts", JSONB),
        sa.Column("created_rows", JSONB),
        _ts("started_at"),
        _ts("finished_at", nullable=True),
        _ts("rolled_back_at", nullable=True),
    )
    op.create_table(
        "migration_quarantine",
        _uuid_pk(),
        sa.Column("source", sa.String(20), nullable=False),
        sa.Column("source_key", sa.Text, nullable=False),
        sa.Column("raw_payload", sa.LargeBinary),
        sa.Column("reason", sa.Text, nullable=False),
        _batch_fk(),
        _ts("quarantined_at"),
        sa.UniqueConstraint("source", "source_key", "reason", name="uq_migration_quarantine_record"),
    )
    op.create_table(
        "migration_ledger",
        _uuid_pk(),
        sa.Column("legacy_path", sa.Text, nullable=False, unique=True),
        sa.Column("partition_key", sa.String(255)),
        sa.Column("size", sa.BigInteger),
        sa.Column("sha256", sa.String(64)),
        sa.Column("outcome", sa.String(20), nullable=False),
        sa.Column("reason", sa.Text),
        sa.Column("bucket", sa.String(255)),
        sa.Column("key", sa.String(1024)),
        sa.Column("version_id", sa.String(255)),
        sa.Column("file_metadata_id", UUID(as_uuid=True), sa.ForeignKey("file_metadata.id", ondelete="SET NULL")),
        _batch_fk(),
        _ts("created_at"),
        _ts("updated_at"),
        sa.CheckConstraint("outcome IN ('migrated', 'skipped', 'unsafe', 'failed')", name="ck_migration_ledger_outcome"),
    )
    op.create_index("ix_migration_ledger_batch_id", "migration_ledger", ["batch_id"])
    op.create_index("ix_migration_ledger_partition", "migration_ledger", ["partition_key"])
    op.create_table(
        "migration_legacy_records",
        sa.Column("source_key", sa.Text, primary_key=True),
        sa.Column("kind", sa.String(20), nullable=False),
        sa.Column("payload", JSONB),
        _batch_fk(),
        _ts("migrated_at"),
    )
    op.create_index("ix_migration_legacy_records_kind", "migration_legacy_records", ["kind"])


def downgrade() -> None:
    op.drop_table("migration_legacy_records")
    op.drop_table("migration_ledger")
    op.drop_table("migration_quarantine")
    op.drop_table("migration_batches")
