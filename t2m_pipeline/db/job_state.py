"""The job state machine: the one function that changes a job's status, progress and stage.

`transition` locks the job row, checks the move is legal, and updates `jobs` and `job_queue` in one transaction.

`held` is where the legacy migration puts a job that was queued or processing in the legacy system
(`status_on_import`): nothing launches it (the `new_jobs` sensor takes only `queued` rows) until an operator
requeues it (`held -> queued`) or cancels it. The legacy system itself keeps seeing the status it wrote
(`legacy_status`).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timezone
from decimal import Decimal
from typing import Any

from sqlalchemy import Engine, select, update
from sqlalchemy.engine import Connection

from t2m_pipeline.db.engine import in_transaction
from t2m_pipeline.vocabulary import JobStatus

Q, P, C, F, X, HELD = (JobStatus.QUEUED, JobStatus.PROCESSING, JobStatus.COMPLETED, JobStatus.FAILED,
                       JobStatus.CANCELLED, JobStatus.HELD)
# Legacy statuses of jobs that would run if imported as they are: imported `held` instead.
HELD_ON_IMPORT = frozenset({Q, P})

# A status may always "move" to itself (a progress or stage update).
LEGAL_TRANSITIONS: dict[str, frozenset[str]] = {
    # held -> queued: an operator requeues a migrated job (`t2m migrate requeue`); held -> cancelled: or drops it.
    HELD: frozenset({Q, X}),
    Q: frozenset({P, X}),
    # processing -> queued: the stuck-job audit's re-queue policy.
    P: frozenset({C, F, X, Q}),
    # failed -> processing: a data engineer re-runs the failed partition; failed -> queued: a resubmission.
    F: frozenset({P, Q, X}),
    # completed -> processing: re-materializing a partition of a finished job (say, a backfilled thumbnail).
    C: frozenset({P}),
    X: frozenset(),
}
TERMINAL = frozenset({C, F, X})


def status_on_import(legacy_status: str) -> str:
    """The status a job migrated from the legacy system starts with: never one that launches a run by itself."""
    return HELD if legacy_status in HELD_ON_IMPORT else legacy_status


def legacy_status(status: str, configuration: dict | None = None) -> str:
    """The status the legacy system is shown (the cut-over mirror): a held job is what it was there."""
    if status != HELD:
        return status
    legacy = (configuration or {}).get("legacy") if isinstance(configuration, dict) else None
    recorded = legacy.get("status") if isinstance(legacy, dict) else None
    return recorded if recorded in HELD_ON_IMPORT else Q


class IllegalTransitionError(ValueError):
    """A status change the state machine forbids (e.g. completed -> queued)."""


class JobNotFoundError(LookupError):
    pass


@dataclass(frozen=True)
class JobState:
    job_id: uuid.UUID
    status: str
    progress_percentage: Decimal
    current_stage: str | None
    updated_at: datetime | None = None  # as written (the legacy mirror compares it with the legacy record's)


def _merge(base: dict | None, patch: dict | None) -> dict | None:
    """Deep-merge `patch` into `base` (dicts merge, anything else replaces)."""
    if patch is None:
        return base
    out = dict(base or {})
    for key, value in patch.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def apply_transition(
    conn: Connection,
    job_id: uuid.UUID | str,
    to_status: str | None = None,
    *,
    progress: float | Decimal | None = None,
    stage: str | None = None,
    error_info: dict | None = None,
    metrics: dict | None = None,
    allow_same: bool = True,
) -> JobState:
    """The transition inside the caller's transaction (for callers that must commit it with other writes)."""
    from t2m_pipeline.db.models import Job, JobQueue  # the ORM's import (0.3 s): paid by what changes a job only

    job_id = uuid.UUID(str(job_id))
    row = conn.execute(
        select(Job.status, Job.metrics, Job.started_at).where(Job.id == job_id).with_for_update()
    ).one_or_none()
    if row is None:
        raise JobNotFoundError(f"job {job_id} does not exist")
    current = row.status
    target = to_status or current
    if target != current and target not in LEGAL_TRANSITIONS.get(current, frozenset()):
        raise IllegalTransitionError(f"job {job_id}: illegal status change {current} -> {target}")
    if target == current and not allow_same and to_status is not None:
        raise IllegalTransitionError(f"job {job_id}: already {current}")

    now = datetime.now(timezone.utc)
    values: dict[str, Any] = {"status": target, "updated_at": now}
    queue_values: dict[str, Any] = {"status": target}
    if progress is not None:
        values["progress_percentage"] = Decimal(str(round(max(0.0, min(100.0, float(progress))), 2)))
    if stage is not None:
        values["current_stage"] = stage
    if metrics is not None:
        values["metrics"] = _merge(row.metrics, metrics)
    if target != current:
        if target == P:
            values["completed_at"] = None
            values["error_info"] = None
            if row.started_at is None:
                values["started_at"] = now
            queue_values.update(processing_started_at=now, completed_at=None)
        elif target in TERMINAL:
            values["completed_at"] = now
            queue_values["completed_at"] = now
        elif target == Q:
            values.update(started_at=None, completed_at=None, progress_percentage=Decimal("0"))
            queue_values.update(processing_started_at=None, completed_at=None, queued_at=now)
    if target == C:
        values.setdefault("progress_percentage", Decimal("100"))
        values["error_info"] = None
    if error_info is not None:
        values["error_info"] = error_info
    updated = conn.execute(
        update(Job).where(Job.id == job_id).values(**values).returning(Job.progress_percentage, Job.current_stage)
    ).one()
    conn.execute(update(JobQueue).where(JobQueue.job_id == job_id).values(**queue_values))
    return JobState(job_id, str(target), updated.progress_percentage, updated.current_stage, now)  # plain text, as read back


def transition(engine: Engine, job_id: uuid.UUID | str, to_status: str | None = None, **changes: Any) -> JobState:
    """Change a job's status and/or progress, atomically with its queue row; retried on a dropped connection."""
    return in_transaction(engine, lambda conn: apply_transition(conn, job_id, to_status, **changes))
