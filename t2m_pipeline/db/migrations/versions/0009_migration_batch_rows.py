"""What a migration batch created, in rows of their own: `migration_batch_rows`, one per list per write transaction.

`migration_batches.created_rows` was one JSONB document appended to by every write transaction, so each append rewrote
everything written before it: quadratic in the batch's size (100,000 Redis jobs spent 3 of their 12 s there,
BENCHMARKS.md). A chunk row per append costs what it holds. Existing batches' lists move over as one chunk each.

Revision ID: 0009_migration_batch_rows
Revises: 0008_ledger_file_stat
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB, UUID

revision = "0009_migration_batch_rows"
down_revision = "0008_ledger_file_stat"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "migration_batch_rows",
        sa.Column("id", sa.BigInteger(), sa.Identity(), primary_key=True),
        sa.Column("batch_id", UUID(as_uuid=True), sa.ForeignKey("migration_batches.id", ondelete="CASCADE"), nullable=False),
        sa.Column("list", sa.Text(), nullable=False),
        sa.Column("items", JSONB(), nullable=False),
    )
    op.create_index("ix_migration_batch_rows_batch", "migration_batch_rows", ["batch_id", "id"])
    op.execute(
        "INSERT INTO migration_batch_rows (batch_id, list, items) "
        "SELECT b.id, e.key, e.value FROM migration_batches b, jsonb_each(b.created_rows) e "
        "WHERE jsonb_typeof(b.created_rows) = 'object' ORDER BY b.started_at, b.id, e.key"
    )
    op.drop_column("migration_batches", "created_rows")


def downgrade() -> None:
    op.add_column("migration_batches", sa.Column("created_rows", JSONB(), nullable=True))
    op.execute(
        "UPDATE migration_batches b SET created_rows = coalesce(("
        "  SELECT jsonb_object_agg(list, items) FROM ("
        "    SELECT r.list, jsonb_agg(item ORDER BY r.id, n) AS items "
        "    FROM migration_batch_rows r, jsonb_array_elements(r.items) WITH ORDINALITY AS a(item, n) "
        "    WHERE r.batch_id = b.id GROUP BY r.list) lists), '{}'::jsonb)"
    )
    op.drop_table("migration_batch_rows")
