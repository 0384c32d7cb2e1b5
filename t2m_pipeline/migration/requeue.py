"""Held legacy jobs -> queued, when an operator decides (`t2m migrate requeue`, the `legacy_jobs_requeue` job).

Migrating Redis never makes a job run: a job that was queued or processing in the legacy system is imported `held`
(`db.job_state.status_on_import`), which the `new_jobs` sensor does not take. Requeueing is the state machine's
`held -> queued` (`apply_transition`, one transaction with the job's queue row, a new `queued_at` and so a new run
key); a held job without a queue row gets one first. Deleted jobs are never requeued.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field

from sqlalchemy import Engine, text
from sqlalchemy.engine import Connection

from t2m_pipeline.db.engine import in_transaction
from t2m_pipeline.db.job_state import HELD, apply_transition

MAX_JOBS_PER_CALL = 10_000


class RequeueError(ValueError):
    """The request names no job, or a job id that is not a UUID; the message is one line."""


@dataclass
class RequeueReport:
    requeued: list[str] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (job id, why)

    def as_dict(self) -> dict:
        return {"requeued": self.requeued, "skipped": [{"job_id": j, "reason": r} for j, r in self.skipped]}


def held_job_ids(conn: Connection, limit: int = MAX_JOBS_PER_CALL) -> list[uuid.UUID]:
    """Held, not deleted jobs in legacy queue order (their queue position), then by creation."""
    return list(
        conn.execute(
            text(
                "SELECT j.id FROM jobs j LEFT JOIN job_queue q ON q.job_id = j.id "
                "WHERE j.status = :held AND NOT j.is_deleted "
                "ORDER BY q.queue_position NULLS LAST, j.created_at, j.id LIMIT :n"
            ),
            {"held": HELD, "n": limit},
        ).scalars()
    )


def _requeue_one(conn: Connection, job_id: uuid.UUID) -> str | None:
    """Requeue one job inside the caller's transaction; returns why not, or None when it was requeued."""
    row = conn.execute(
        text("SELECT status, is_deleted, priority FROM jobs WHERE id = :j FOR UPDATE"), {"j": job_id}
    ).one_or_none()
    if row is None:
        return "no such job"
    if row.status != HELD:
        return f"not held (status {row.status})"
    if row.is_deleted:
        return "deleted in the legacy system"
    conn.execute(
        text(
            "INSERT INTO job_queue (job_id, priority, status) VALUES (:j, :p, :held) ON CONFLICT (job_id) DO NOTHING"
        ),
        {"j": job_id, "p": row.priority, "held": HELD},
    )
    apply_transition(conn, job_id, "queued")
    return None


def requeue_held_jobs(engine: Engine, job_ids: list[str] | None = None) -> RequeueReport:
    """Requeue the named held jobs, or every held job when `job_ids` is None (at most MAX_JOBS_PER_CALL a call)."""
    if job_ids is not None:
        if not job_ids:
            raise RequeueError("no job to requeue: name jobs or ask for all held jobs")
        try:
            ids = [uuid.UUID(str(j)) for j in job_ids]
        except ValueError:
            bad = next(j for j in job_ids if not _is_uuid(j))
            raise RequeueError(f"job id {bad!r} is not a UUID") from None
    else:
        ids = in_transaction(engine, held_job_ids)
    report = RequeueReport()
    for job_id in dict.fromkeys(ids):  # one transaction per job: one bad row never holds the others back
        why = in_transaction(engine, lambda conn, j=job_id: _requeue_one(conn, j))
        if why is None:
            report.requeued.append(str(job_id))
        else:
            report.skipped.append((str(job_id), why))
    return report


def _is_uuid(value: str) -> bool:
    try:
        uuid.UUID(str(value))
    except ValueError:
        return False
    return True
