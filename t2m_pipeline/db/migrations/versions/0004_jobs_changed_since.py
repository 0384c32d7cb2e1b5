"""Jobs by (updated_at, id): the legacy mirror's resync reads the rows changed since its cursor in that order.

Revision ID: 0004_jobs_changed_since
Revises: 0003_audits
"""

from alembic import op

revision = "0004_jobs_changed_since"
down_revision = "0003_audits"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_jobs_updated_at_id", "jobs", ["updated_at", "id"])


def downgrade() -> None:
    op.drop_index("ix_jobs_updated_at_id", table_name="jobs")
