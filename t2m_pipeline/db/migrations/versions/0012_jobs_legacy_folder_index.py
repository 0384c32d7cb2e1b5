"""Legacy jobs found by their topic folder through an index: each wave of a files migration reads the legacy jobs
that can be filed under its topic folders (`attribution.load_index`), and with 100,000 legacy jobs the filter's
regular expression ran over every one of them, once a wave.

Two partial indexes over the legacy jobs (`configuration ? 'legacy'`), one per arm of that filter that is not the
primary key, so PostgreSQL reads a wave's jobs by a BitmapOr instead of the whole table (85 ms -> 0.2 ms a wave at
100,000 legacy jobs): the folder rule's expression (`vocabulary.LEGACY_FOLDER_SQL`, the same text: a test holds
them equal) and whether the topic is not ASCII (those are always read). Built CONCURRENTLY: the jobs table takes
writes while it builds.

Revision ID: 0012_jobs_legacy_folder_index
Revises: 0011_job_queue_notify
"""

from alembic import op

revision = "0012_jobs_legacy_folder_index"
down_revision = "0011_job_queue_notify"
branch_labels = None
depends_on = None

TOPIC = "coalesce(configuration->>'topic', topic)"
FOLDER = f"""regexp_replace(lower({TOPIC} COLLATE "C"), '[^a-z0-9_]+', '_', 'g')"""
NON_ASCII = f"octet_length({TOPIC}) <> char_length({TOPIC})"


def upgrade() -> None:
    with op.get_context().autocommit_block():
        # a concurrent build that failed or was cancelled leaves an INVALID index that IF NOT EXISTS would keep
        op.execute("DROP INDEX CONCURRENTLY IF EXISTS ix_jobs_legacy_folder")
        op.execute(f"CREATE INDEX CONCURRENTLY ix_jobs_legacy_folder ON jobs (({FOLDER})) WHERE configuration ? 'legacy'")
        # on the test itself, not on id under it as a predicate: PostgreSQL then keeps statistics of the test and
        # knows it is almost never true (as a predicate it guessed 99 % of rows and read the whole table)
        op.execute("DROP INDEX CONCURRENTLY IF EXISTS ix_jobs_legacy_non_ascii_topic")
        op.execute(f"CREATE INDEX CONCURRENTLY ix_jobs_legacy_non_ascii_topic ON jobs (({NON_ASCII})) WHERE configuration ? 'legacy'")


def downgrade() -> None:
    with op.get_context().autocommit_block():
        op.execute("DROP INDEX CONCURRENTLY IF EXISTS ix_jobs_legacy_non_ascii_topic")
        op.execute("DROP INDEX CONCURRENTLY IF EXISTS ix_jobs_legacy_folder")
