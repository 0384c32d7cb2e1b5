"""One vocabulary of file types: migrated legacy files get the pipeline's names (`t2m_pipeline.vocabulary.FileType`).

Before, the migration wrote `code`, `video`, `plan`, `log` where the pipeline writes `scene_code`, `scene_video` /
`combined_video`, `scene_plan` / `job_plan`, `render_log`; "video" also named an upload's type. Only rows the
migration wrote (their metadata has a `legacy_path`) and that belong to a job are renamed; uploads keep theirs.

Revision ID: 0006_file_types
Revises: 0005_migration_attribution
"""

from alembic import op

revision = "0006_file_types"
down_revision = "0005_migration_attribution"
branch_labels = None
depends_on = None

MIGRATED = "job_id IS NOT NULL AND metadata ? 'legacy_path'"


def upgrade() -> None:
    op.execute(
        f"""
        UPDATE file_metadata SET file_type = CASE
            WHEN file_type = 'code' THEN 'scene_code'
            WHEN file_type = 'log' THEN 'render_log'
            WHEN file_type = 'video' AND metadata ? 'scene_number' THEN 'scene_video'
            WHEN file_type = 'video' THEN 'combined_video'
            WHEN file_type = 'plan' AND metadata ? 'scene_number' THEN 'scene_plan'
            WHEN file_type = 'plan' THEN 'job_plan'
        END
        WHERE {MIGRATED} AND file_type IN ('code', 'log', 'video', 'plan')
        """
    )


def downgrade() -> None:
    op.execute(
        f"""
        UPDATE file_metadata SET file_type = CASE
            WHEN file_type = 'scene_code' THEN 'code'
            WHEN file_type = 'render_log' THEN 'log'
            WHEN file_type IN ('scene_video', 'combined_video') THEN 'video'
            WHEN file_type IN ('scene_plan', 'job_plan') THEN 'plan'
        END
        WHERE {MIGRATED} AND file_type IN ('scene_code', 'render_log', 'scene_video', 'combined_video', 'scene_plan', 'job_plan')
        """
    )
