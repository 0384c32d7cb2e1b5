"""Jobs that stopped moving, and `job_queue` rows that disagree with their job.

Every change goes through `db.job_state.apply_transition` (the transaction-scoped form of `transition`, the one
function for job state changes) inside a transaction that first re-reads the job under a row lock: a job that moved
on since it was found (its run finished, or it was re-launched) is left alone.

- stuck_job: `processing`, and neither the job nor its queue row changed for `stuck_after_s`. Policy `fail` sets it
  `failed` with `error_info`; `requeue` sends it back to `queued` (at most `max_requeues` times, counted in the job's
  metrics, then `failed`); `report` only records the finding.
- orphan_queue_row: the foreign key (ON DELETE CASCADE) rules out queue rows whose job row is gone, so the orphans
  that remain are live queue rows of soft-deleted jobs: queued ones are cancelled; processing ones are reported
  (a run may still be writing; the stuck-job rule is their backstop).
- queue_status_mismatch: the queue row's status differs from the job's (a writer bypassed the state machine): the
  queue row is re-synced from the job by a same-status transition.
"""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import Collection, Iterator
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta, timezone
from typing import Any

from sqlalchemy import Engine, func, or_, select
from sqlalchemy.engine import Connection

from t2m_pipeline.audits.findings import CheckScope, Finding
from t2m_pipeline.audits.policy import AuditPolicy
from t2m_pipeline.db.engine import in_transaction
from t2m_pipeline.db.job_state import apply_transition
from t2m_pipeline.db.models import Job, JobQueue

STUCK = "stuck_job"
ORPHAN_QUEUE = "orphan_queue_row"
QUEUE_MISMATCH = "queue_status_mismatch"
MAX_JOBS_PER_RUN = 10_000


@dataclass
class JobAuditStats:
    counts: Counter = field(default_factory=Counter)

    def as_dict(self) -> dict[str, Any]:
        return dict(sorted(self.counts.items()))


def jobs_scope(job_ids: Collection[uuid.UUID] | None = None) -> CheckScope:
    prefixes = ("job/", "job_queue/") if job_ids is None else tuple(f"{p}{j}" for j in job_ids for p in ("job/", "job_queue/"))
    return CheckScope((STUCK, ORPHAN_QUEUE, QUEUE_MISMATCH), prefixes)


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


def _last_activity():
    """When the job or its queue row last showed a sign of life."""
    return func.greatest(Job.updated_at, func.coalesce(JobQueue.processing_started_at, Job.updated_at))


def _stuck_query(cutoff: datetime, limit: int, job_ids: Collection[uuid.UUID] | None = None):
    query = (
        select(Job.id, Job.updated_at, Job.started_at, JobQueue.processing_started_at, Job.metrics)
        .outerjoin(JobQueue, JobQueue.job_id == Job.id)
        .where(Job.status == "processing", _last_activity() < cutoff)
        .order_by(Job.updated_at)
        .limit(limit)
    )
    return query if job_ids is None else query.where(Job.id.in_(list(job_ids)))


def _requeues(metrics: dict | None) -> int:
    audit = (metrics or {}).get("audit") or {}
    count = audit.get("requeues", 0)
    return count if isinstance(count, int) else 0


def _settle_stuck(engine: Engine, job_id: uuid.UUID, cutoff: datetime, policy: AuditPolicy, now: datetime) -> dict | None:
    """Fail or re-queue one stuck job, if it is still stuck under the row lock. Returns what was done, or None."""

    def work(conn: Connection) -> dict | None:
        row = conn.execute(_stuck_query(cutoff, 1).where(Job.id == job_id).with_for_update(of=Job)).one_or_none()
        if row is None:
            return None
        since = row.processing_started_at or row.started_at or row.updated_at
        stuck_for = int((now - row.updated_at).total_seconds())
        info = {
            "stage": "audit",
            "reason": "stuck",
            "message": f"no progress for {stuck_for} s while processing (limit {policy.stuck_after_s} s)",
            "processing_since": _iso(since),
            "last_update": _iso(row.updated_at),
            "policy": policy.stuck_policy,
        }
        requeues = _requeues(row.metrics)
        if policy.stuck_policy == "requeue" and requeues < policy.max_requeues:
            apply_transition(
                conn, job_id, "queued", error_info={**info, "action": "requeued"}, metrics={"audit": {"requeues": requeues + 1}}
            )
            return {"action": "requeued", "requeues": requeues + 1, **info}
        action = "failed" if policy.stuck_policy == "fail" else "failed after max requeues"
        apply_transition(conn, job_id, "failed", error_info={**info, "action": action})
        return {"action": action, "requeues": requeues, **info}

    return in_transaction(engine, work)


def stuck_job_findings(
    engine: Engine,
    policy: AuditPolicy,
    stats: JobAuditStats,
    now: datetime | None = None,
    job_ids: Collection[uuid.UUID] | None = None,
) -> Iterator[Finding]:
    now = now or datetime.now(timezone.utc)
    cutoff = now - timedelta(seconds=policy.stuck_after_s)
    with engine.connect() as conn:
        candidates = conn.execute(_stuck_query(cutoff, MAX_JOBS_PER_RUN, job_ids)).all()
    for row in candidates:
        subject = f"job/{row.id}"
        since = row.processing_started_at or row.started_at or row.updated_at
        base = {"processing_since": _iso(since), "last_update": _iso(row.updated_at), "limit_s": policy.stuck_after_s}
        if policy.stuck_policy == "report":
            stats.counts["stuck_reported"] += 1
            yield Finding(STUCK, "WARNING", subject, {**base, "action": "reported"})
            continue
        done = _settle_stuck(engine, row.id, cutoff, policy, now)
        if done is None:
            stats.counts["moved_on_before_fix"] += 1
            continue
        stats.counts[f"stuck_{done['action'].replace(' ', '_')}"] += 1
        yield Finding(STUCK, "WARNING", subject, {**base, "action": done["action"], "requeues": done["requeues"]}, fixed=True)


def _queue_query(job_ids: Collection[uuid.UUID] | None = None):
    live = JobQueue.status.in_(("queued", "processing"))
    query = (
        select(JobQueue.job_id, JobQueue.status.label("queue_status"), Job.status.label("job_status"), Job.is_deleted)
        .join(Job, Job.id == JobQueue.job_id)
        .where(or_(JobQueue.status != Job.status, Job.is_deleted & live))
        .order_by(JobQueue.job_id)
        .limit(MAX_JOBS_PER_RUN)
    )
    return query if job_ids is None else query.where(JobQueue.job_id.in_(list(job_ids)))


def _fix_queue_row(engine: Engine, job_id: uuid.UUID) -> str | None:
    """Cancel a soft-deleted queued job, or re-sync a mismatched queue row; None when nothing (safe) was done."""

    def work(conn: Connection) -> str | None:
        row = conn.execute(_queue_query().where(JobQueue.job_id == job_id).with_for_update(of=Job)).one_or_none()
        if row is None:
            return "already consistent"
        if row.is_deleted and row.job_status == "queued":
            apply_transition(conn, job_id, "cancelled", error_info={"stage": "audit", "message": "job deleted while queued"})
            return "cancelled"
        if row.is_deleted and row.job_status == "processing":
            return None
        apply_transition(conn, job_id)  # same status: writes the job's status to its queue row
        return "queue row re-synced"

    return in_transaction(engine, work)


def queue_findings(
    engine: Engine, policy: AuditPolicy, stats: JobAuditStats, job_ids: Collection[uuid.UUID] | None = None
) -> Iterator[Finding]:
    with engine.connect() as conn:
        rows = conn.execute(_queue_query(job_ids)).all()
    for row in rows:
        orphan = row.is_deleted and row.queue_status in ("queued", "processing")
        check = ORPHAN_QUEUE if orphan else QUEUE_MISMATCH
        detail: dict[str, Any] = {"queue_status": row.queue_status, "job_status": row.job_status, "job_deleted": row.is_deleted}
        action = _fix_queue_row(engine, row.job_id) if policy.fix_queue else None
        stats.counts[f"{check}_{(action or 'reported').replace(' ', '_')}"] += 1
        detail["action"] = action or "reported"
        yield Finding(check, "WARNING", f"job_queue/{row.job_id}", detail, fixed=action is not None)


def job_findings(
    engine: Engine,
    policy: AuditPolicy,
    stats: JobAuditStats,
    now: datetime | None = None,
    job_ids: Collection[uuid.UUID] | None = None,
) -> Iterator[Finding]:
    """Stuck jobs, then queue rows; `job_ids` limits the audit to those jobs (and its scope to their subjects)."""
    yield from stuck_job_findings(engine, policy, stats, now, job_ids)
    yield from queue_findings(engine, policy, stats, job_ids)


def job_problems(engine: Engine, policy: AuditPolicy, now: datetime | None = None) -> list[Finding]:
    """What the audit would find, changing nothing (stuck jobs reported, queue rows left): the checks judge with it."""
    report_only = replace(policy, stuck_policy="report", fix_queue=False)
    return list(job_findings(engine, report_only, JobAuditStats(), now))
