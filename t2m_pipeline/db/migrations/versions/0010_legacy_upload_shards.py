"""Upload partitions sized by work: `legacy_upload_shards` keeps each legacy upload type folder's shard count, decided
from its file count when first discovered (it was 8 for every type: 32 partitions for 4 files, and 8 for a million).

Types that already have ledger rows under `uploads/{type}/{n}` keep 8, so no migrated file changes partition.

Revision ID: 0010_legacy_upload_shards
Revises: 0009_migration_batch_rows
"""

import sqlalchemy as sa
from alembic import op

revision = "0010_legacy_upload_shards"
down_revision = "0009_migration_batch_rows"
branch_labels = None
depends_on = None

SHARDS_BEFORE = 8


def upgrade() -> None:
    op.create_table(
        "legacy_upload_shards",
        sa.Column("file_type", sa.Text(), primary_key=True),
        sa.Column("shards", sa.Integer(), nullable=False),
        sa.Column("files_counted", sa.Integer(), nullable=True),
        sa.Column("decided_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
        sa.CheckConstraint("shards BETWEEN 1 AND 999", name="ck_legacy_upload_shards_range"),
    )
    op.execute(
        f"INSERT INTO legacy_upload_shards (file_type, shards) "
        f"SELECT DISTINCT split_part(partition_key, '/', 2), {SHARDS_BEFORE} FROM migration_ledger "
        f"WHERE partition_key ~ '^uploads/[a-z]+/[0-9]+$'"
    )


def downgrade() -> None:
    op.drop_table("legacy_upload_shards")
