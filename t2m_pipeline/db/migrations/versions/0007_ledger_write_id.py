"""The files migration's intent names the write it is about to make: `migration_ledger.write_id`.

The upload under an intent carries this id in its S3 user metadata (`write-id`), so a rerun after a crash adopts
the version that very write produced, and a rollback finds it, instead of any version with the same sha256 and
legacy path. Rows written before this revision have none: a rerun uploads such a file again (nothing is lost).

Revision ID: 0007_ledger_write_id
Revises: 0006_file_types
"""

import sqlalchemy as sa
from alembic import op

revision = "0007_ledger_write_id"
down_revision = "0006_file_types"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("migration_ledger", sa.Column("write_id", sa.String(64), nullable=True))


def downgrade() -> None:
    op.drop_column("migration_ledger", "write_id")
