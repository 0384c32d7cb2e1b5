"""The audits' checks, on the data they judge: the buckets' settings, the stored objects, the temp bucket, the jobs
table, and the `jobs` and `scenes` partition sets (external assets of their own, unpartitioned).

Each check changes nothing it judges and can run on its own (the UI's "Execute", or the `audit_checks` job, which `sensors.py`
launches after each maintenance job with the checks of the data it maintained). They judge the data itself, now,
with the same library rules as the maintenance (`job_problems`, `overdue_temp_versions`, `invalid_partition_keys`),
except for the two object checks: a reconciliation lists every version and reads each one's checksum, too costly
to repeat for a check, so they judge the findings the latest reconciliation (the `storage_reconciliation` job or
`t2m audit`) left open in `audit_findings`. The bucket-settings audit acts on nothing, so it is all check: it reads
the settings and records its findings in `audit_findings`, like `t2m audit` (the only write a check makes).

(No `from __future__ import annotations` here: Dagster reads the resource annotations at runtime.)
"""

from collections import Counter
from typing import Any

import dagster as dg

from t2m_pipeline.audits.findings import Finding, open_counts
from t2m_pipeline.audits.reconcile import (
    CHANGED,
    ORPHAN,
    ReconcileStats,
    existing_buckets,
    object_subject,
    reconcile_scope,
    reconciled_buckets,
)
from t2m_pipeline.audits.retention import RetentionStats, invalid_partition_keys
from t2m_pipeline.audits.runner import AuditReport, audit_buckets
from t2m_pipeline.audits.stuck_jobs import ORPHAN_QUEUE, QUEUE_MISMATCH, STUCK, job_problems
from t2m_pipeline.audits.temp_cleanup import overdue_temp_versions
from t2m_pipeline.defs.audits.maintenance import DEFAULTS, DOMAIN_TAGS, storage_reconciliation_job
from t2m_pipeline.defs.resources import PostgresResource, S3StorageResource
from t2m_pipeline.defs.storage.assets import (
    JOBS_PARTITION_SET,
    JOBS_TABLE,
    S3_BUCKETS,
    SCENES_PARTITION_SET,
    STORED_OBJECTS,
    TEMP_BUCKET,
)
from t2m_pipeline.partition_keys import JOBS_PARTITIONS_NAME, SCENES_PARTITIONS_NAME

SAMPLE = 20
WARN, ERROR = dg.AssetCheckSeverity.WARN, dg.AssetCheckSeverity.ERROR


def sample(subjects: list[str]) -> dict[str, Any]:
    return {"sample": dg.MetadataValue.json(subjects[:SAMPLE])} if subjects else {}


def drift_severity(report: AuditReport) -> dg.AssetCheckSeverity:
    """As severe as the worst open finding: lifecycle drift alone is a WARNING finding, so a WARN check."""
    summary = report.summary
    return WARN if summary and summary.left_open() == summary.left_open(severities={"WARNING"}) else ERROR


@dg.asset_check(
    asset=S3_BUCKETS.key,
    description="Each bucket's live settings equal storage/bucket_settings.py: versioning, encryption, public access "
    "block, TLS-only policy (ERROR) and lifecycle rules (WARN: drift costs money, loses nothing). Fails at the worst "
    "open finding's severity; findings are recorded in audit_findings.",
)
def bucket_settings_as_declared(database: PostgresResource, storage: S3StorageResource) -> dg.AssetCheckResult:
    s3 = storage.get()
    report = audit_buckets(s3.settings, database.engine, s3.client)
    drift, unreadable = report.extra["drift"], report.extra["unreadable"]
    passed = not drift and not unreadable
    metadata: dict[str, Any] = {
        "buckets": report.stats["buckets"],
        "drifted_buckets": len(drift),
        "unreadable_buckets": len(unreadable),
    }
    if drift:
        metadata["drift"] = dg.MetadataValue.json(drift)
    if unreadable:
        metadata["unreadable"] = dg.MetadataValue.json(unreadable)
    return dg.AssetCheckResult(
        passed=passed,
        severity=ERROR if passed else drift_severity(report),
        metadata=metadata,
        description=None if passed else "bucket settings differ from storage/bucket_settings.py",
    )


def _left_open_by_reconciliation(
    context: dg.AssetCheckExecutionContext, database: PostgresResource, storage: S3StorageResource
) -> tuple[Counter, dict[str, Any]]:
    """Open findings of the reconciliation's scope, and which run judged them last (when it was a Dagster run)."""
    scope = reconcile_scope(reconciled_buckets(storage.get().settings), verify_checksums=True)
    runs = context.instance.get_run_records(
        dg.RunsFilter(job_name=storage_reconciliation_job.name, statuses=[dg.DagsterRunStatus.SUCCESS]), limit=1
    )
    judged_by = {"reconciled_by_run": dg.MetadataValue.dagster_run(runs[0].dagster_run.run_id)} if runs else {}
    return open_counts(database.engine, scope), judged_by


@dg.asset_check(
    asset=STORED_OBJECTS.key,
    description="ERROR when a file_metadata row's version is missing in S3 or differs from it (size, or sha256 when "
    "checksums are verified): possible data loss. Judged from the findings the latest reconciliation left open.",
)
def no_missing_or_mismatched_objects(
    context: dg.AssetCheckExecutionContext, database: PostgresResource, storage: S3StorageResource
) -> dg.AssetCheckResult:
    counts, judged_by = _left_open_by_reconciliation(context, database, storage)
    errors = {check: n for (check, severity), n in sorted(counts.items()) if severity == "ERROR"}
    metadata = {"errors": sum(errors.values()), "by_check": dg.MetadataValue.json(errors), **judged_by}
    return dg.AssetCheckResult(passed=not errors, severity=ERROR, metadata=metadata)


@dg.asset_check(
    asset=STORED_OBJECTS.key,
    description="WARN when S3 holds versions no file_metadata row records (written around the storage layer); "
    "identical extra versions of our own retried writes are removed by the reconciliation, not counted. Judged from "
    "the findings the latest reconciliation left open.",
)
def no_unrecorded_objects(
    context: dg.AssetCheckExecutionContext, database: PostgresResource, storage: S3StorageResource
) -> dg.AssetCheckResult:
    counts, judged_by = _left_open_by_reconciliation(context, database, storage)
    unrecorded = sum(n for (check, severity), n in counts.items() if check in (ORPHAN, CHANGED) and severity == "WARNING")
    metadata = {"unrecorded_versions": unrecorded, **judged_by}
    return dg.AssetCheckResult(passed=unrecorded == 0, severity=WARN, metadata=metadata)


@dg.asset_check(
    asset=TEMP_BUCKET.key,
    description="WARN when temp objects are still there past 7 days plus a 2-day grace: neither the lifecycle rule "
    "(AWS) nor the temp_bucket_cleanup job (elsewhere) removed them.",
)
def temp_expiry_enforced(storage: S3StorageResource) -> dg.AssetCheckResult:
    s3 = storage.get()
    temp = s3.settings.bucket("temp")
    if not existing_buckets(s3.client, [temp], ReconcileStats()):
        return dg.AssetCheckResult(passed=False, severity=WARN, description=f"bucket {temp} does not exist")
    overdue = [object_subject(temp, v.key, v.version_id) for v in overdue_temp_versions(s3.settings, s3.client, DEFAULTS)]
    limit = DEFAULTS.temp_max_age_days + DEFAULTS.temp_grace_days
    return dg.AssetCheckResult(
        passed=not overdue, severity=WARN, metadata={"overdue_versions": len(overdue), "limit_days": limit, **sample(overdue)}
    )


def _jobs_result(findings: list[Finding], count_name: str) -> dg.AssetCheckResult:
    subjects = [f.subject for f in findings]
    return dg.AssetCheckResult(passed=not findings, severity=WARN, metadata={count_name: len(findings), **sample(subjects)})


@dg.asset_check(
    asset=JOBS_TABLE.key,
    description="WARN when a job has been processing with no sign of life past the stuck limit (3 hours): the "
    "stuck_jobs_repair job fails (or re-queues) such jobs, so one left means its policy is `report` or it did not run.",
)
def no_stuck_jobs(database: PostgresResource) -> dg.AssetCheckResult:
    return _jobs_result([f for f in job_problems(database.engine, DEFAULTS) if f.check_name == STUCK], "stuck_jobs")


@dg.asset_check(
    asset=JOBS_TABLE.key,
    description="WARN when job_queue rows disagree with their jobs: live rows of deleted jobs, or another status than "
    "the job's (a writer bypassed the state machine).",
)
def job_queue_consistent(database: PostgresResource) -> dg.AssetCheckResult:
    problems = [f for f in job_problems(database.engine, DEFAULTS) if f.check_name in (ORPHAN_QUEUE, QUEUE_MISMATCH)]
    return _jobs_result(problems, "inconsistent_queue_rows")


def _keys_result(context: dg.AssetCheckExecutionContext, database: PostgresResource, name: str) -> dg.AssetCheckResult:
    stats = RetentionStats()
    invalid = [f.subject for f in invalid_partition_keys(database.engine, context.instance, name, stats)]
    metadata = {"partitions": stats.counts[f"{name}_partitions"], "invalid_keys": len(invalid), **sample(invalid)}
    return dg.AssetCheckResult(passed=not invalid, severity=WARN, metadata=metadata)


KEYS_DESCRIPTION = (
    "WARN when the `{name}` partition set holds keys that do not decode or whose user is not the job's owner "
    "(the partition retention leaves them in place). On the set itself, unpartitioned: a check on a partitioned "
    "asset would run, whole-set scan and all, in every materialization and backfill of one of its partitions."
)


@dg.asset_check(
    asset=JOBS_PARTITION_SET.key, name="partition_keys_valid", description=KEYS_DESCRIPTION.format(name=JOBS_PARTITIONS_NAME)
)
def job_partition_keys_valid(context: dg.AssetCheckExecutionContext, database: PostgresResource) -> dg.AssetCheckResult:
    return _keys_result(context, database, JOBS_PARTITIONS_NAME)


@dg.asset_check(
    asset=SCENES_PARTITION_SET.key, name="partition_keys_valid", description=KEYS_DESCRIPTION.format(name=SCENES_PARTITIONS_NAME)
)
def scene_partition_keys_valid(context: dg.AssetCheckExecutionContext, database: PostgresResource) -> dg.AssetCheckResult:
    return _keys_result(context, database, SCENES_PARTITIONS_NAME)


PARTITION_KEY_CHECKS = [job_partition_keys_valid, scene_partition_keys_valid]
AUDIT_CHECKS = [
    bucket_settings_as_declared,
    no_missing_or_mismatched_objects,
    no_unrecorded_objects,
    temp_expiry_enforced,
    no_stuck_jobs,
    job_queue_consistent,
    *PARTITION_KEY_CHECKS,
]

audit_checks_job = dg.define_asset_job(
    "audit_checks",
    selection=dg.AssetSelection.checks(*AUDIT_CHECKS),
    executor_def=dg.in_process_executor,  # cheap reads: a subprocess per check would cost more than the checks
    tags=DOMAIN_TAGS,
    description="The audits' checks on the data they judge; each maintenance job's success launches its own subset.",
)
