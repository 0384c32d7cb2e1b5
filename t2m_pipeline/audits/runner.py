"""Each audit as one call: judge, repair where the policy says so, record findings. The CLI and Dagster share these."""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Engine

from t2m_pipeline.audits.bucket_drift import audit_bucket_settings
from t2m_pipeline.audits.findings import Finding, RecordSummary, record_findings
from t2m_pipeline.audits.policy import AuditPolicy
from t2m_pipeline.audits.reconcile import (
    CHANGED,
    ORPHAN,
    ReconcileStats,
    existing_buckets,
    reconcile_findings,
    reconcile_scope,
    reconciled_buckets,
    split_object_subject,
)
from t2m_pipeline.audits.stuck_jobs import JobAuditStats, job_findings, jobs_scope
from t2m_pipeline.audits.temp_cleanup import TempCleanupStats, temp_findings, temp_scope
from t2m_pipeline.config import Settings
from t2m_pipeline.db.engine import DatabaseUnavailableError
from t2m_pipeline.storage.errors import StorageError
from t2m_pipeline.storage.s3 import S3Storage

AUDITS = ("buckets", "objects", "temp", "jobs", "partitions")
DUPLICATE_KEYS_REMEMBERED = 10_000
log = logging.getLogger(__name__)


@dataclass
class AuditReport:
    """One audit's outcome: the recorded findings' summary, its own counts, and anything it wants to show."""

    audit: str
    summary: RecordSummary | None = None
    stats: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)
    skipped: str | None = None

    @property
    def open_errors(self) -> int:
        return self.summary.open_errors if self.summary else 0

    def as_dict(self) -> dict[str, Any]:
        return {
            "audit": self.audit,
            "skipped": self.skipped,
            "findings": self.summary.as_dict() if self.summary else None,
            "stats": self.stats,
            **self.extra,
        }


def audit_buckets(settings: Settings, engine: Engine, client: Any) -> AuditReport:
    result = audit_bucket_settings(settings, client)
    summary = record_findings(engine, result.scope, result.findings)
    stats = {"buckets": len(result.scope.subject_prefixes or ())}
    return AuditReport("buckets", summary, stats, {"drift": result.drift, "unreadable": result.unreadable})


def audit_objects(settings: Settings, engine: Engine, client: Any, policy: AuditPolicy, now: datetime | None = None) -> AuditReport:
    stats = ReconcileStats()
    buckets = existing_buckets(client, reconciled_buckets(settings), stats)
    scope = reconcile_scope(buckets, policy.verify_checksums)
    findings = reconcile_findings(client, engine, buckets, policy, stats, now)
    if policy.remove_duplicates:
        findings = _removing_duplicates(findings, S3Storage(settings, engine, client), policy, stats)
    summary = record_findings(engine, scope, findings)
    return AuditReport("objects", summary, stats.as_dict())


def _removing_duplicates(findings: Iterator[Finding], storage: S3Storage, policy: AuditPolicy, stats: ReconcileStats) -> Iterator[Finding]:
    """Unrecorded versions of recorded keys go through the storage layer's sweep; what it removes is recorded fixed."""
    grace = timedelta(seconds=policy.duplicate_grace_s)
    removed: OrderedDict[tuple[str, str], set[str]] = OrderedDict()  # per key, bounded: findings come in key order
    for finding in findings:
        if finding.check_name in (ORPHAN, CHANGED) and finding.detail.get("recorded_versions"):
            bucket, key, version_id = split_object_subject(finding.subject)
            if (bucket, key) not in removed:
                try:
                    removed[(bucket, key)] = set(storage.remove_duplicate_versions(bucket, key, grace=grace))
                except (StorageError, DatabaseUnavailableError) as exc:  # one key's sweep never ends the audit
                    log.warning("duplicate sweep of s3://%s/%s failed: %s", bucket, key, exc)
                    removed[(bucket, key)] = set()
                stats.counts["duplicates_removed"] += len(removed[(bucket, key)])
                while len(removed) > DUPLICATE_KEYS_REMEMBERED:
                    removed.popitem(last=False)
            if version_id in removed[(bucket, key)]:
                detail = {**finding.detail, "removed": "an identical extra version our own retried write left"}
                finding = replace(finding, severity="INFO", detail=detail, fixed=True)
        yield finding


def audit_temp(settings: Settings, engine: Engine, client: Any, policy: AuditPolicy, now: datetime | None = None) -> AuditReport:
    stats = TempCleanupStats()
    temp = settings.bucket("temp")
    if not existing_buckets(client, [temp], ReconcileStats()):
        return AuditReport("temp", skipped=f"bucket {temp} does not exist")
    summary = record_findings(engine, temp_scope(settings), temp_findings(settings, client, policy, stats, now))
    return AuditReport("temp", summary, stats.as_dict())


def audit_jobs(engine: Engine, policy: AuditPolicy, now: datetime | None = None) -> AuditReport:
    stats = JobAuditStats()
    summary = record_findings(engine, jobs_scope(), job_findings(engine, policy, stats, now))
    return AuditReport("jobs", summary, stats.as_dict())


def audit_partitions(engine: Engine, instance: Any, policy: AuditPolicy, now: datetime | None = None) -> AuditReport:
    from t2m_pipeline.audits.retention import RetentionStats, retention_findings, retention_scope

    stats = RetentionStats()
    summary = record_findings(engine, retention_scope(), retention_findings(engine, instance, policy, stats, now))
    return AuditReport("partitions", summary, stats.as_dict())


def run_audits(
    settings: Settings,
    engine: Engine,
    client: Any,
    policy: AuditPolicy,
    *,
    instance: Any = None,
    audits: tuple[str, ...] = AUDITS,
    now: datetime | None = None,
) -> list[AuditReport]:
    """The audits named in `audits`, in a fixed order; `partitions` needs a Dagster instance and is skipped without."""
    unknown = set(audits) - set(AUDITS)
    if unknown:
        raise ValueError(f"unknown audit {sorted(unknown)[0]!r}: expected one of {'|'.join(AUDITS)}")
    reports = []
    for name in AUDITS:
        if name not in audits:
            continue
        if name == "buckets":
            reports.append(audit_buckets(settings, engine, client))
        elif name == "objects":
            reports.append(audit_objects(settings, engine, client, policy, now))
        elif name == "temp":
            reports.append(audit_temp(settings, engine, client, policy, now))
        elif name == "jobs":
            reports.append(audit_jobs(engine, policy, now))
        elif instance is None:
            reports.append(AuditReport("partitions", skipped="no Dagster instance (set DAGSTER_HOME)"))
        else:
            reports.append(audit_partitions(engine, instance, policy, now))
    return reports
