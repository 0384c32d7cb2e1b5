"""Legacy migration by evidence: the `held` job status, and file_metadata rows found by their legacy path.

- `held`: a migrated job that was queued or processing in the legacy system; the `new_jobs` sensor ignores it until
  an operator requeues it (`t2m migrate requeue`).
- `ix_file_metadata_legacy_path`: every object the migration wrote for one legacy file (the original and the copies
  of the jobs that reused its folder), so a file re-attributed elsewhere leaves no object at its old place.

Revision ID: 0005_migration_attribution
Revises: 0004_jobs_changed_since
"""

from alembic import op

revision = "0005_migration_attribution"
down_revision = "0004_jobs_changed_since"
branch_labels = None
depends_on = None

OLD = "'queued', 'processing', 'completed', 'failed', 'cancelled'"
NEW = OLD + ", 'held'"


def _statuses(values: str) -> None:
    for table, name in (("jobs", "ck_jobs_status"), ("job_queue", "ck_job_queue_status")):
        op.drop_constraint(name, table, type_="check")
        op.create_check_constraint(name, table, f"status IN ({values})")


def upgrade() -> None:
    _statuses(NEW)
    op.execute(
        "CREATE INDEX ix_file_metadata_legacy_path ON file_metadata ((metadata->>'legacy_path')) "
        "WHERE metadata ? 'legacy_path'"
    )


def downgrade() -> None:
    op.drop_index("ix_file_metadata_legacy_path", table_name="file_metadata")
    # A held job goes back to what it was in the legacy system (queued or processing), as before this revision.
    for table, key in (("job_queue", "job_id"), ("jobs", "id")):
        op.execute(
            f"UPDATE {table} t SET status = coalesce(j.configuration->'legacy'->>'status', 'queued') "
            f"FROM jobs j WHERE j.id = t.{key} AND t.status = 'held'"
        )
    _statuses(OLD)
