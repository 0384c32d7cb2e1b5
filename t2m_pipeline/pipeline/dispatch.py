"""Finding queued jobs and claiming them for a run: what the `new_jobs` sensor does, without Dagster.

Jobs are written by other systems with plain SQL. The query takes the highest priority first, then queue position
and time, through the partial index `ix_job_queue_dispatch` (the ORDER BY repeats its expression exactly), and a
bounded number per call. Claiming a job moves it `queued -> processing` in the same transaction as its neighbours,
each inside a savepoint: one bad row is rejected (marked failed with the reason) or skipped, never fatal.

The batch query returns ids only. Each row is then read inside its own savepoint with nothing left for the driver
to decode that a hostile row could break (a 3,000-deep JSON, a 5,000-digit number, a `queued_at` of 'infinity'
raise while fetching, before any of our code runs): configuration and texts come as bounded text, times only when
finite, and `decode_configuration` applies the limits.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Engine, text
from sqlalchemy.engine import Connection
from sqlalchemy.exc import SQLAlchemyError

from t2m_pipeline.db.engine import in_transaction
from t2m_pipeline.db.job_state import IllegalTransitionError, JobNotFoundError
from t2m_pipeline.partition_keys import PartitionKeyError, encode_job_key
from t2m_pipeline.pipeline import status
from t2m_pipeline.render.outline import MAX_CONFIGURATION_BYTES, JobSpecError, decode_configuration, job_spec_from_row
from t2m_pipeline.vocabulary import PIPELINE_JOB_TYPES, JobStatus, priority_order_sql, sql_list

log = logging.getLogger(__name__)

DEFAULT_BATCH = 100

# The ORDER BY must be the index's expression, verbatim, for PostgreSQL to walk ix_job_queue_dispatch.
DISPATCH_ORDER = f"{priority_order_sql('q.priority')}, q.queue_position, q.queued_at"
QUEUED_JOBS_SQL = text(
    f"""
    SELECT q.job_id
    FROM job_queue q JOIN jobs j ON j.id = q.job_id
    WHERE q.status = '{JobStatus.QUEUED}' AND j.status = '{JobStatus.QUEUED}' AND NOT j.is_deleted
      AND j.job_type IN ({sql_list(PIPELINE_JOB_TYPES)})
      AND NOT (q.job_id = ANY(CAST(:exclude AS uuid[])))
    ORDER BY {DISPATCH_ORDER}
    LIMIT :limit
    """
)
MAX_REMEMBERED_SKIPS = 1000
MAX_TEXT_CHARS = 10_000  # topic and description are cut here in SQL; the spec's own limits are far below
JOB_ROW_SQL = text(
    """
    SELECT CAST(j.user_id AS text) AS user_id,
           left(j.topic, :max_text) AS topic, left(j.description, :max_text) AS description,
           octet_length(CAST(j.configuration AS text)) AS configuration_bytes,
           CASE WHEN octet_length(CAST(j.configuration AS text)) <= :max_config THEN CAST(j.configuration AS text) END
               AS configuration_json,
           CASE WHEN q.queued_at BETWEEN '0001-01-02' AND '9999-12-30' THEN q.queued_at END AS queued_at,
           left(CAST(q.queued_at AS text), 40) AS queued_at_text
    FROM job_queue q JOIN jobs j ON j.id = q.job_id
    WHERE q.job_id = :job_id
    """
)


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


def find_queued_ids(conn: Connection, limit: int = DEFAULT_BATCH, exclude: Iterable[uuid.UUID | str] = ()) -> list[uuid.UUID]:
    """Up to `limit` queued job ids in dispatch order (other job types, deleted jobs and `exclude` passed over)."""
    params = {"limit": limit, "exclude": [str(job_id) for job_id in exclude]}
    return list(conn.execute(QUEUED_JOBS_SQL, params).scalars())


def read_queued_job(conn: Connection, job_id: uuid.UUID) -> QueuedJob | None:
    """One queued row, decoded and validated; JobSpecError or PartitionKeyError (one line) when it cannot be run."""
    row = conn.execute(
        JOB_ROW_SQL, {"job_id": job_id, "max_text": MAX_TEXT_CHARS, "max_config": MAX_CONFIGURATION_BYTES}
    ).mappings().one_or_none()
    if row is None:
        return None
    if row["queued_at"] is None:
        raise JobSpecError(f"job_queue.queued_at is {row['queued_at_text']!r}: expected a finite time in years 1 to 9999")
    configuration = decode_configuration(row["configuration_json"], row["configuration_bytes"])
    job = QueuedJob(job_id, uuid.UUID(row["user_id"]), row["topic"], row["description"], configuration, row["queued_at"])
    job_spec_from_row(job.topic, job.description, job.configuration)
    job.partition_key  # noqa: B018 - validates both ids through the codec
    return job


def _one_line(exc: BaseException) -> str:
    return (str(exc).splitlines() or [type(exc).__name__])[0][:300]


def claim_queued_jobs(engine: Engine, limit: int = DEFAULT_BATCH, exclude: Iterable[uuid.UUID | str] = ()) -> Claimed:
    """Claim up to `limit` queued jobs: valid ones become `processing` (stage planning), bad ones `failed`.

    A row that cannot even be marked (a database error on it) is skipped and reported; the caller passes its id
    in `exclude` next time so it cannot take a place in every batch.
    """

    def work(conn: Connection) -> Claimed:
        launched, rejected, skipped = [], [], []
        for job_id in find_queued_ids(conn, limit, exclude):
            savepoint = conn.begin_nested()
            try:
                try:
                    job = read_queued_job(conn, job_id)
                except (JobSpecError, PartitionKeyError) as exc:
                    status.reject(conn, job_id, f"job row rejected: {_one_line(exc)}")
                    rejected.append((job_id, _one_line(exc)))
                else:
                    if job is not None:
                        status.launch(conn, job.job_id)
                        launched.append(job)
                savepoint.commit()
            except (IllegalTransitionError, JobNotFoundError, SQLAlchemyError, ValueError, TypeError, RecursionError) as exc:
                savepoint.rollback()
                reason = _one_line(exc)
                skipped.append((job_id, reason))
                log.warning("job %s skipped: %s", job_id, reason)
        return Claimed(launched, rejected, skipped)

    return in_transaction(engine, work)


# -- waiting for the next queued job --------------------------------------------------------------------------------

QUEUE_CHANNEL = "t2m_job_queue"  # notified by a trigger on job_queue (migration 0011) when a commit queues a job


@contextmanager
def queue_notifications(engine: Engine) -> Iterator[Callable[[float], bool]]:
    """LISTEN for queued jobs for the block, on a connection of its own; yields `wait(seconds)`, which returns as soon
    as a job is queued (True) or when the time is up (False).

    Listen first, then look at the queue, then wait: a job committed between the look and the wait is still heard.
    A driver without notifications (not psycopg 3) makes `wait` return False at once: the caller's next pass finds
    the job instead, as before."""
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.exec_driver_sql(f"LISTEN {QUEUE_CHANNEL}")
        driver = conn.connection.driver_connection
        notifies = getattr(driver, "notifies", None)

        def wait(seconds: float) -> bool:
            if notifies is None or seconds <= 0:
                return False
            return any(True for _ in notifies(timeout=seconds, stop_after=1))

        try:
            yield wait
        finally:
            try:
                conn.exec_driver_sql("UNLISTEN *")
            except SQLAlchemyError:  # a broken connection: the pool's pre-ping replaces it; the block's own error stands
                conn.invalidate()
