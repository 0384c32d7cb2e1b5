"""The ledger remembers each migrated file's mtime and inode: `migration_ledger.mtime_ns`, `migration_ledger.inode`.

With its size, they let a rerun take a file whose row is `migrated` as unchanged without reading it (as rsync and
rclone do); `t2m migrate files --checksum` reads and hashes every file again. Rows written before this revision
have neither: their files are read once more, and the rerun fills the columns in.

Revision ID: 0008_ledger_file_stat
Revises: 0007_ledger_write_id
"""

import sqlalchemy as sa
from alembic import op

revision = "0008_ledger_file_stat"
down_revision = "0007_ledger_write_id"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("migration_ledger", sa.Column("mtime_ns", sa.BigInteger(), nullable=True))
    op.add_column("migration_ledger", sa.Column("inode", sa.BigInteger(), nullable=True))


def downgrade() -> None:
    op.drop_column("migration_ledger", "inode")
    op.drop_column("migration_ledger", "mtime_ns")
