"""Finding queued jobs and claiming them for a run: what the `new_jobs` sensor does, without Dagster.

Jobs are written by other systems with plain SQL. The query takes the highest priority first, then queue position
and time, through the partial index `ix_job_queue_dispatch` (the ORDER BY repeats its expression exactly), and a
bounded number per call. Claiming a job moves it `queued -> processing` in the same transaction as its neighbours,
each inside a savepoint: one bad row is rejected (marked failed with the reason) or skipped, never fatal.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Engine, text
from sqlalchemy.engine import Connection
from sqlalchemy.exc import SQLAlchemyError

from t2m_pipeline.db.engine import in_transaction
from t2m_pipeline.db.job_state import IllegalTransitionError, JobNotFoundError
from t2m_pipeline.partition_keys import PartitionKeyError, encode_job_key
from t2m_pipeline.pipeline import status
from t2m_pipeline.render.outline import JobSpecError, job_spec_from_row

log = logging.getLogger(__name__)

PIPELINE_JOB_TYPES = ("video_generation", "batch_video_generation")
DEFAULT_BATCH = 100

# The ORDER BY must be the index's expression, verbatim, for PostgreSQL to walk ix_job_queue_dispatch.
DISPATCH_ORDER = (
    "(CASE q.priority WHEN 'urgent' THEN 0 WHEN 'high' THEN 1 WHEN 'normal' THEN 2 ELSE 3 END), q.queue_position, q.queued_at"
)
QUEUED_JOBS_SQL = text(
    f"""
    SELECT j.id AS job_id, j.user_id, j.topic, j.description, j.configuration, q.queued_at
    FROM job_queue q JOIN jobs j ON j.id = q.job_id
    WHERE q.status = 'queued' AND j.status = 'queued' AND NOT j.is_deleted
      AND j.job_type IN ('video_generation', 'batch_video_generation')
      AND NOT (q.job_id = ANY(CAST(:exclude AS uuid[])))
    ORDER BY {DISPATCH_ORDER}
    LIMIT :limit
    """
)
MAX_REMEMBERED_SKIPS = 1000


@dataclass(frozen=True)
class QueuedJob:
    job_id: uuid.UUID
    user_id: uuid.UUID
    topic: object
    description: object
    configuration: object
    queued_at: datetime

    @property
    def partition_key(self) -> str:
        return encode_job_key(self.user_id, self.job_id)

    @property
    def run_key(self) -> str:
        """One run per queueing of a job: a re-queued job (new `queued_at`) may run again, nothing else can."""
        return f"{self.job_id}@{self.queued_at.timestamp():.6f}"


@dataclass(frozen=True)
class Claimed:
    launched: list[QueuedJob]
    rejected: list[tuple[uuid.UUID, str]]
    skipped: list[tuple[uuid.UUID, str]]


def find_queued_jobs(conn: Connection, limit: int = DEFAULT_BATCH, exclude: Iterable[uuid.UUID | str] = ()) -> list[QueuedJob]:
    """Up to `limit` queued jobs in dispatch order (other job types, deleted jobs and `exclude` passed over)."""
    params = {"limit": limit, "exclude": [str(job_id) for job_id in exclude]}
    return [QueuedJob(**row) for row in conn.execute(QUEUED_JOBS_SQL, params).mappings()]


def claim_queued_jobs(engine: Engine, limit: int = DEFAULT_BATCH, exclude: Iterable[uuid.UUID | str] = ()) -> Claimed:
    """Claim up to `limit` queued jobs: valid ones become `processing` (stage planning), bad ones `failed`.

    A row that cannot even be marked (a database error on it) is skipped and reported; the caller passes its id
    in `exclude` next time so it cannot take a place in every batch.
    """

    def work(conn: Connection) -> Claimed:
        launched, rejected, skipped = [], [], []
        for job in find_queued_jobs(conn, limit, exclude):
            savepoint = conn.begin_nested()
            try:
                try:
                    job_spec_from_row(job.topic, job.description, job.configuration)
                    job.partition_key  # noqa: B018 - validates both ids through the codec
                except (JobSpecError, PartitionKeyError) as exc:
                    status.reject(conn, job.job_id, f"job row rejected: {exc}")
                    rejected.append((job.job_id, str(exc)))
                else:
                    status.launch(conn, job.job_id)
                    launched.append(job)
                savepoint.commit()
            except (IllegalTransitionError, JobNotFoundError, SQLAlchemyError) as exc:
                savepoint.rollback()
                reason = str(exc).splitlines()[0][:300]
                skipped.append((job.job_id, reason))
                log.warning("job %s skipped: %s", job.job_id, reason)
        return Claimed(launched, rejected, skipped)

    return in_transaction(engine, work)
