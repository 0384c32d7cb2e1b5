"""Who owns a legacy file: topic folder -> job (by slug), upload -> Clerk user; the rest -> the system user.

Only jobs that came from the legacy Redis (`configuration.legacy` set by the Redis import) can claim a folder, so a
job created later in the new system with the same topic never changes where already-migrated files belong.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import text
from sqlalchemy.engine import Connection

from t2m_pipeline.migration.legacy_paths import slugify

SYSTEM_CLERK_ID = "system_legacy_unattributed"
SYSTEM_USER_METADATA = {
    "system": True,
    "purpose": "owner of legacy files no job or user claims",
    "email_unknown": True,
    "source": "legacy migration",
}


@dataclass(frozen=True)
class JobRef:
    job_id: uuid.UUID
    user_id: uuid.UUID
    created_at: datetime


@dataclass(frozen=True)
class Attribution:
    owner: JobRef | None
    others: tuple[JobRef, ...] = ()


@dataclass
class AttributionIndex:
    jobs_by_slug: dict[str, list[JobRef]] = field(default_factory=dict)
    owner_by_file_id: dict[str, str] = field(default_factory=dict)  # from user_files:{clerk}
    file_records: dict[str, dict] = field(default_factory=dict)  # files:{id}

    def for_folder(self, folder: str) -> Attribution:
        """The most recent job with this slug owns the folder; the others are named in metadata."""
        jobs = self.jobs_by_slug.get(folder, [])
        if not jobs:
            return Attribution(None)
        return Attribution(jobs[0], tuple(jobs[1:]))


def load_index(conn: Connection) -> AttributionIndex:
    index = AttributionIndex()
    rows = conn.execute(
        text(
            "SELECT id, user_id, coalesce(configuration->>'topic', topic) AS topic, created_at "
            "FROM jobs WHERE configuration ? 'legacy'"
        )
    )
    for row in rows:
        index.jobs_by_slug.setdefault(slugify(row.topic), []).append(JobRef(row.id, row.user_id, row.created_at))
    for jobs in index.jobs_by_slug.values():
        jobs.sort(key=lambda j: (j.created_at, str(j.job_id)), reverse=True)
    records = conn.execute(
        text("SELECT source_key, kind, payload FROM migration_legacy_records WHERE kind IN ('file', 'user_files')")
    )
    for row in records:
        if row.kind == "file" and isinstance(row.payload, dict):
            index.file_records[row.source_key.split(":", 1)[1]] = row.payload
        elif row.kind == "user_files" and isinstance(row.payload, list):
            clerk = row.source_key.split(":", 1)[1]
            for file_id in row.payload:
                index.owner_by_file_id.setdefault(str(file_id), clerk)
    return index
