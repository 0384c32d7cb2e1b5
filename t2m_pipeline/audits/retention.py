"""Retention of the `jobs` and `scenes` dynamic partitions: deleted or long-finished jobs leave the sets.

Removing a dynamic partition keeps its materialization history in the event log; it only stops the set from
growing without end (and stops anyone launching runs for a deleted job). Keys are decoded with the partition-key
codec: a key it rejects, or one whose user is not the job's owner, is reported and left in place
(`invalid_partition_keys` finds those alone, removing nothing).

A job migrated from the legacy platform finished long before its partitions joined the graph: its retention is
counted from the migration (the first `file_metadata` row the files migration wrote for it), not from its legacy
`completed_at`, so the first audit after the migration never removes what the migration just registered (and the
thumbnail backfill for migrated scenes still finds its partitions).
"""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any, Protocol

from sqlalchemy import Engine, func, select

from t2m_pipeline.audits.findings import CheckScope, Finding
from t2m_pipeline.audits.policy import AuditPolicy
from t2m_pipeline.db.job_state import TERMINAL
from t2m_pipeline.db.models import FileMetadata, Job
from t2m_pipeline.partition_keys import (
    JOBS_PARTITIONS_NAME,
    SCENES_PARTITIONS_NAME,
    PartitionKeyError,
    decode_job_key,
    decode_scene_key,
)

REMOVED = "partition_retention"
INVALID = "invalid_partition_key"
PAGE = 1000


class PartitionStore(Protocol):
    """The part of a DagsterInstance retention uses."""

    def get_paginated_dynamic_partitions(
        self, partitions_def_name: str, limit: int, ascending: bool, cursor: str | None = None
    ) -> Any: ...

    def delete_dynamic_partition(self, partitions_def_name: str, partition_key: str) -> None: ...


@dataclass
class RetentionStats:
    counts: Counter = field(default_factory=Counter)

    def as_dict(self) -> dict[str, Any]:
        return dict(sorted(self.counts.items()))


def retention_scope() -> CheckScope:
    return CheckScope((REMOVED, INVALID), tuple(f"partition/{name}/" for name in (JOBS_PARTITIONS_NAME, SCENES_PARTITIONS_NAME)))


def _decode(name: str, key: str) -> tuple[str, str]:
    decoded = decode_job_key(key) if name == JOBS_PARTITIONS_NAME else decode_scene_key(key)
    return decoded.user_id, decoded.job_id


def _why_remove(job, expired_before: datetime | None) -> str | None:
    if job is None:
        return "job row deleted"
    if job.is_deleted:
        return "job deleted"
    finished_at = max(t for t in (job.completed_at or job.updated_at, job.migrated_at) if t is not None)
    if expired_before is not None and job.status in TERMINAL and finished_at < expired_before:
        return "retention expired"
    return None


def _jobs(engine: Engine, job_ids: set[uuid.UUID]) -> dict[uuid.UUID, Any]:
    if not job_ids:
        return {}
    migrated_at = (
        select(func.min(FileMetadata.created_at))
        .where(FileMetadata.job_id == Job.id, FileMetadata.extra.has_key("legacy_path"))
        .scalar_subquery()
        .label("migrated_at")
    )
    query = select(
        Job.id, Job.user_id, Job.status, Job.is_deleted, Job.completed_at, Job.updated_at, migrated_at
    ).where(Job.id.in_(job_ids))
    with engine.connect() as conn:
        return {row.id: row for row in conn.execute(query)}


def _page(instance: PartitionStore, name: str) -> Iterator[list[str]]:
    cursor = None
    while True:
        page = instance.get_paginated_dynamic_partitions(name, PAGE, True, cursor)
        if page.results:
            yield list(page.results)
        if not page.has_more:
            return
        cursor = page.cursor


def _judged_keys(engine: Engine, instance: PartitionStore, name: str, stats: RetentionStats) -> Iterator[tuple[str, str, Any, str | None]]:
    """Each key of a set as (key, job id, job row, None), or (key, "", None, why it is invalid), a page at a time."""
    for keys in _page(instance, name):
        stats.counts[f"{name}_partitions"] += len(keys)
        decoded: dict[str, tuple[str, str]] = {}
        for key in keys:
            try:
                decoded[key] = _decode(name, key)
            except PartitionKeyError as exc:
                yield key, "", None, str(exc)
        jobs = _jobs(engine, {uuid.UUID(job_id) for _, job_id in decoded.values()})
        for key, (user_id, job_id) in decoded.items():
            job = jobs.get(uuid.UUID(job_id))
            if job is not None and str(job.user_id) != user_id:
                yield key, "", None, f"job {job_id} belongs to user {job.user_id}, not {user_id}"
            else:
                yield key, job_id, job, None


def _invalid(name: str, key: str, error: str, stats: RetentionStats) -> Finding:
    stats.counts[f"{name}_invalid"] += 1
    return Finding(INVALID, "WARNING", f"partition/{name}/{key}", {"error": error, "action": "left in place"})


def invalid_partition_keys(engine: Engine, instance: PartitionStore, name: str, stats: RetentionStats) -> Iterator[Finding]:
    """The keys of one set that do not decode or name another user's job; removes nothing (the checks judge with it)."""
    for key, _, _, error in _judged_keys(engine, instance, name, stats):
        if error is not None:
            yield _invalid(name, key, error, stats)


def retention_findings(
    engine: Engine, instance: PartitionStore, policy: AuditPolicy, stats: RetentionStats, now: datetime | None = None
) -> Iterator[Finding]:
    now = now or datetime.now(timezone.utc)
    expired_before = now - timedelta(days=policy.retention_days) if policy.retention_days is not None else None
    for name in (JOBS_PARTITIONS_NAME, SCENES_PARTITIONS_NAME):
        for key, job_id, job, error in _judged_keys(engine, instance, name, stats):
            if error is not None:
                yield _invalid(name, key, error, stats)
                continue
            reason = _why_remove(job, expired_before)
            if reason is None:
                continue
            instance.delete_dynamic_partition(name, key)
            stats.counts[f"{name}_removed"] += 1
            detail = {"reason": reason, "job_id": job_id, "action": "partition removed (history kept)"}
            if job is not None:
                detail["job_status"] = job.status
            yield Finding(REMOVED, "INFO", f"partition/{name}/{key}", detail, fixed=True)
