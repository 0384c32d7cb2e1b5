"""Queued jobs announce themselves: a commit that queues a job notifies channel `t2m_job_queue`.

The `new_jobs` sensor listens while its tick waits, so a job inserted with plain SQL by any system starts within a
moment instead of at Dagster's next sensor pass (every 5 s at best). The notification carries no payload: listeners
read the queue itself, so nothing about a job travels outside the table's own permissions. One notification per
statement (transition tables), not per row: a bulk insert of 100,000 jobs sends one.

Revision ID: 0011_job_queue_notify
Revises: 0010_legacy_upload_shards
"""

from alembic import op

revision = "0011_job_queue_notify"
down_revision = "0010_legacy_upload_shards"
branch_labels = None
depends_on = None

CHANNEL = "t2m_job_queue"  # t2m_pipeline.pipeline.dispatch.QUEUE_CHANNEL (a test holds them equal)


def upgrade() -> None:
    op.execute(
        f"""
        CREATE FUNCTION t2m_notify_job_queued() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            IF EXISTS (SELECT 1 FROM changed_rows WHERE status = 'queued') THEN
                PERFORM pg_notify('{CHANNEL}', '');
            END IF;
            RETURN NULL;
        END $$
        """
    )
    # PostgreSQL allows transition tables on single-event triggers only: one trigger per event, one function.
    for event in ("INSERT", "UPDATE"):
        op.execute(
            f"CREATE TRIGGER tr_job_queue_notify_{event.lower()} AFTER {event} ON job_queue "
            "REFERENCING NEW TABLE AS changed_rows FOR EACH STATEMENT EXECUTE FUNCTION t2m_notify_job_queued()"
        )


def downgrade() -> None:
    for event in ("insert", "update"):
        op.execute(f"DROP TRIGGER IF EXISTS tr_job_queue_notify_{event} ON job_queue")
    op.execute("DROP FUNCTION IF EXISTS t2m_notify_job_queued()")
