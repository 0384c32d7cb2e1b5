"""Audit assets and their checks: each asset runs one library audit and records its findings; its checks pass or
fail on what the audit left open. Thin by design: the rules live in `t2m_pipeline.audits`.

(No `from __future__ import annotations` here: Dagster reads the config and resource annotations at runtime.)
"""

from typing import Any

import dagster as dg

from t2m_pipeline.audits.policy import STUCK_POLICIES, AuditPolicy
from t2m_pipeline.audits.reconcile import CHANGED, ORPHAN
from t2m_pipeline.audits.retention import INVALID
from t2m_pipeline.audits.runner import (
    AuditReport,
    audit_buckets,
    audit_jobs,
    audit_objects,
    audit_partitions,
    audit_temp,
)
from t2m_pipeline.audits.stuck_jobs import ORPHAN_QUEUE, QUEUE_MISMATCH, STUCK
from t2m_pipeline.defs.resources import PostgresResource, S3StorageResource
from t2m_pipeline.defs.tables import table_metadata
from t2m_pipeline.reports import findings_table

AUDIT_GROUP = "audits"
DEFAULTS = AuditPolicy()

BUCKET_SETTINGS_AUDIT = dg.AssetKey("bucket_settings_audit")
STORAGE_RECONCILIATION = dg.AssetKey("storage_reconciliation")
TEMP_BUCKET_CLEANUP = dg.AssetKey("temp_bucket_cleanup")
STUCK_JOBS_AUDIT = dg.AssetKey("stuck_jobs_audit")
PARTITION_RETENTION = dg.AssetKey("partition_retention")


class AuditConfig(dg.Config):
    """Run config of every audit asset; defaults are `AuditPolicy`'s."""

    stuck_after_minutes: int = DEFAULTS.stuck_after_s // 60
    stuck_policy: str = DEFAULTS.stuck_policy
    max_requeues: int = DEFAULTS.max_requeues
    fix_queue: bool = DEFAULTS.fix_queue
    retention_days: int | None = DEFAULTS.retention_days
    verify_checksums: bool = DEFAULTS.verify_checksums
    settle_minutes: int = DEFAULTS.settle_s // 60
    remove_duplicates: bool = DEFAULTS.remove_duplicates

    def policy(self) -> AuditPolicy:
        if self.stuck_policy not in STUCK_POLICIES:
            raise dg.Failure(f"stuck_policy {self.stuck_policy!r}: expected one of {'|'.join(STUCK_POLICIES)}")
        return AuditPolicy(
            stuck_after_s=self.stuck_after_minutes * 60,
            stuck_policy=self.stuck_policy,
            max_requeues=self.max_requeues,
            fix_queue=self.fix_queue,
            retention_days=self.retention_days,
            verify_checksums=self.verify_checksums,
            settle_s=self.settle_minutes * 60,
            remove_duplicates=self.remove_duplicates,
        )


def _metadata(report: AuditReport) -> dict[str, Any]:
    summary = report.summary.as_dict() if report.summary else {}
    meta: dict[str, Any] = {
        "stats": dg.MetadataValue.json(report.stats),
        "found": summary.get("found", 0),
        "new": summary.get("new", 0),
        "fixed": summary.get("fixed", 0),
        "resolved": summary.get("resolved_unseen", 0),
        "open_errors": report.open_errors,
    }
    if summary.get("by_check"):
        meta["by_check"] = dg.MetadataValue.json(summary["by_check"])
        meta["findings"] = table_metadata(findings_table(summary["by_check"]))
    if summary.get("sample"):
        rows = ["| check | severity | subject | fixed |", "|---|---|---|---|"]
        rows += [f"| {f['check']} | {f['severity']} | `{f['subject']}` | {f['fixed']} |" for f in summary["sample"]]
        meta["sample"] = dg.MetadataValue.md("\n".join(rows))
    if report.skipped:
        meta["skipped"] = report.skipped
    return meta


def _open(report: AuditReport, checks: set[str] | None = None, severities: set[str] | None = None) -> int:
    return report.summary.left_open(checks, severities) if report.summary else 0


def drift_severity(report: AuditReport) -> dg.AssetCheckSeverity:
    """As severe as the worst open finding: lifecycle drift alone is a WARNING finding, so a WARN check."""
    return dg.AssetCheckSeverity.WARN if report.summary and _open(report) == _open(report, severities={"WARNING"}) else dg.AssetCheckSeverity.ERROR


CHECK_DESCRIPTIONS = {
    "bucket_settings_as_declared": "Each bucket's live settings equal storage/bucket_settings.py: versioning, encryption, "
    "public access block, TLS-only policy (ERROR) and lifecycle rules (WARN: drift costs money, loses nothing). "
    "Fails at the worst open finding's severity.",
    "no_missing_or_mismatched_objects": "ERROR when a file_metadata row's version is missing in S3 or differs from it "
    "(size, or sha256 with --checksums): possible data loss.",
    "no_unrecorded_objects": "WARN when S3 holds versions no file_metadata row records (written around the storage "
    "layer); identical extra versions of our own retried writes are removed, not counted.",
    "temp_expiry_enforced": "WARN when temp objects older than 7 days are left (the endpoint does not apply the "
    "lifecycle rule and the cleanup could not remove them).",
    "no_stuck_jobs": "WARN when a processing job has been silent past the stuck threshold and the policy left it so.",
    "job_queue_consistent": "WARN when job_queue rows disagree with their jobs (orphaned or of another status) and "
    "were left unfixed.",
    "partition_keys_valid": "WARN when the jobs or scenes partition sets hold keys that do not decode.",
}


def spec(name: str, asset: dg.AssetKey) -> dg.AssetCheckSpec:
    return dg.AssetCheckSpec(name, asset=asset, description=CHECK_DESCRIPTIONS[name])


@dg.asset(
    group_name=AUDIT_GROUP,
    description="Live settings of the environment's four buckets compared with their declarations.",
    check_specs=[spec("bucket_settings_as_declared", BUCKET_SETTINGS_AUDIT)],
)
def bucket_settings_audit(database: PostgresResource, storage: S3StorageResource) -> dg.MaterializeResult:
    s3 = storage.get()
    report = audit_buckets(s3.settings, database.engine, s3.client)
    drift, unreadable = report.extra["drift"], report.extra["unreadable"]
    passed = not drift and not unreadable
    check_meta: dict[str, Any] = {"drifted_buckets": len(drift), "unreadable_buckets": len(unreadable)}
    if drift:
        check_meta["drift"] = dg.MetadataValue.json(drift)
    if unreadable:
        check_meta["unreadable"] = dg.MetadataValue.json(unreadable)
    return dg.MaterializeResult(
        metadata=_metadata(report),
        check_results=[
            dg.AssetCheckResult(
                check_name="bucket_settings_as_declared",
                passed=passed,
                severity=drift_severity(report) if not passed else dg.AssetCheckSeverity.ERROR,
                metadata=check_meta,
                description=None if passed else "bucket settings differ from storage/bucket_settings.py",
            )
        ],
    )


@dg.asset(
    group_name=AUDIT_GROUP,
    description="file_metadata reconciled with S3 (paged ListObjectVersions, streamed merge).",
    check_specs=[
        spec("no_missing_or_mismatched_objects", STORAGE_RECONCILIATION),
        spec("no_unrecorded_objects", STORAGE_RECONCILIATION),
    ],
)
def storage_reconciliation(config: AuditConfig, database: PostgresResource, storage: S3StorageResource) -> dg.MaterializeResult:
    s3 = storage.get()
    report = audit_objects(s3.settings, database.engine, s3.client, config.policy())
    errors = _open(report, severities={"ERROR"})
    unrecorded = _open(report, checks={ORPHAN, CHANGED}, severities={"WARNING"})
    return dg.MaterializeResult(
        metadata=_metadata(report),
        check_results=[
            dg.AssetCheckResult(
                check_name="no_missing_or_mismatched_objects",
                passed=errors == 0,
                severity=dg.AssetCheckSeverity.ERROR,
                metadata={"errors": errors},
            ),
            dg.AssetCheckResult(
                check_name="no_unrecorded_objects",
                passed=unrecorded == 0,
                severity=dg.AssetCheckSeverity.WARN,
                metadata={"unrecorded_versions": unrecorded},
            ),
        ],
    )


@dg.asset(
    group_name=AUDIT_GROUP,
    description="Temp objects past 7 days: deleted where the endpoint does not enforce lifecycle, reported on AWS.",
    check_specs=[spec("temp_expiry_enforced", TEMP_BUCKET_CLEANUP)],
)
def temp_bucket_cleanup(database: PostgresResource, storage: S3StorageResource) -> dg.MaterializeResult:
    s3 = storage.get()
    report = audit_temp(s3.settings, database.engine, s3.client, DEFAULTS)
    left = _open(report)
    return dg.MaterializeResult(
        metadata=_metadata(report),
        check_results=[
            dg.AssetCheckResult(
                check_name="temp_expiry_enforced",
                passed=left == 0 and report.skipped is None,
                severity=dg.AssetCheckSeverity.WARN,
                metadata={"expired_left": left, "deleted": report.stats.get("deleted", 0)},
            )
        ],
    )


@dg.asset(
    group_name=AUDIT_GROUP,
    description="Jobs stuck in processing (failed or re-queued by policy) and job_queue rows that disagree with their job.",
    check_specs=[
        spec("no_stuck_jobs", STUCK_JOBS_AUDIT),
        spec("job_queue_consistent", STUCK_JOBS_AUDIT),
    ],
)
def stuck_jobs_audit(config: AuditConfig, database: PostgresResource) -> dg.MaterializeResult:
    report = audit_jobs(database.engine, config.policy())
    stuck = _open(report, checks={STUCK})
    queue = _open(report, checks={ORPHAN_QUEUE, QUEUE_MISMATCH})
    return dg.MaterializeResult(
        metadata=_metadata(report),
        check_results=[
            dg.AssetCheckResult(
                check_name="no_stuck_jobs",
                passed=stuck == 0,
                severity=dg.AssetCheckSeverity.WARN,
                metadata={"stuck_left_unfixed": stuck},
            ),
            dg.AssetCheckResult(
                check_name="job_queue_consistent",
                passed=queue == 0,
                severity=dg.AssetCheckSeverity.WARN,
                metadata={"queue_rows_left_unfixed": queue},
            ),
        ],
    )


@dg.asset(
    group_name=AUDIT_GROUP,
    description="Partitions of deleted or expired jobs removed from the `jobs` and `scenes` sets (history stays).",
    check_specs=[spec("partition_keys_valid", PARTITION_RETENTION)],
)
def partition_retention(context: dg.AssetExecutionContext, config: AuditConfig, database: PostgresResource) -> dg.MaterializeResult:
    report = audit_partitions(database.engine, context.instance, config.policy())
    invalid = _open(report, checks={INVALID})
    return dg.MaterializeResult(
        metadata=_metadata(report),
        check_results=[
            dg.AssetCheckResult(
                check_name="partition_keys_valid",
                passed=invalid == 0,
                severity=dg.AssetCheckSeverity.WARN,
                metadata={"invalid_keys": invalid},
            )
        ],
    )


AUDIT_ASSETS = [bucket_settings_audit, storage_reconciliation, temp_bucket_cleanup, stuck_jobs_audit, partition_retention]
