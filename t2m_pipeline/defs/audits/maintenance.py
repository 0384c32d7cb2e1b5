"""Maintenance: the audits that act, as ops in jobs, never assets, so no "Materialize" deletes or re-queues anything.

Each job runs one op over one library call (`t2m_pipeline.audits.runner`, shared with `t2m audit`): the temp bucket's
expiry (deletes), partition retention (removes partitions), stuck jobs and queue rows (fails or re-queues jobs,
re-syncs queue rows), and the reconciliation of `file_metadata` with S3 (removes the identical extra versions our own
retried writes left). Each records its findings in `audit_findings` and shows what it did in its run (log, output
metadata with the findings table) and, where it acts on one data asset, as an observation of that asset. Whether
the data is then right is for the checks on the data (`checks.py`), run after each job (`sensors.py`).

(No `from __future__ import annotations` here: Dagster reads the config and resource annotations at runtime.)
"""

from typing import Any

import dagster as dg

from t2m_pipeline.audits.policy import STUCK_POLICIES, AuditPolicy
from t2m_pipeline.audits.runner import AuditReport, audit_jobs, audit_objects, audit_partitions, audit_temp
from t2m_pipeline.defs.resources import PostgresResource, S3StorageResource
from t2m_pipeline.defs.storage.assets import JOBS_TABLE, STORED_OBJECTS, TEMP_BUCKET
from t2m_pipeline.defs.tables import table_metadata
from t2m_pipeline.reports import findings_table

DEFAULTS = AuditPolicy()
DOMAIN_TAGS = {"t2m/domain": "audits"}


class AuditConfig(dg.Config):
    """Run config of the maintenance ops; defaults are `AuditPolicy`'s."""

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


def report_metadata(report: AuditReport) -> dict[str, Any]:
    summary = report.summary.as_dict() if report.summary else {}
    meta: dict[str, Any] = {
        "stats": dg.MetadataValue.json(report.stats),
        "found": summary.get("found", 0),
        "new": summary.get("new", 0),
        "fixed": summary.get("fixed", 0),
        "resolved": summary.get("resolved_unseen", 0),
        "left_open": summary.get("left_open", 0),
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


def show(context: dg.OpExecutionContext, report: AuditReport, acted_on: dg.AssetSpec | None = None) -> None:
    """What the op did, where the UI shows it: the run's log and output metadata, and the data asset's events."""
    meta = report_metadata(report)
    if report.skipped:
        context.log.warning(f"{report.audit} skipped: {report.skipped}")
    else:
        context.log.info(
            f"{report.audit}: {meta['found']} found, {meta['fixed']} fixed, {meta['left_open']} left open, "
            f"{meta['resolved']} resolved since the last run; {report.stats}"
        )
    if acted_on is not None:
        context.log_event(dg.AssetObservation(asset_key=acted_on.key, description=f"{context.job_name} run", metadata=meta))
    context.add_output_metadata(meta)


@dg.op(description="Delete temp versions past 7 days where the endpoint does not enforce lifecycle; report them on AWS.")
def delete_expired_temp_objects(context: dg.OpExecutionContext, database: PostgresResource, storage: S3StorageResource) -> None:
    s3 = storage.get()
    show(context, audit_temp(s3.settings, database.engine, s3.client, DEFAULTS), TEMP_BUCKET)


@dg.op(description="Remove the `jobs` and `scenes` partitions of deleted or expired jobs (their history stays).")
def remove_expired_partitions(context: dg.OpExecutionContext, config: AuditConfig, database: PostgresResource) -> None:
    # The partition sets belong to five assets at once: the counts are the run's, not one asset's observation.
    show(context, audit_partitions(database.engine, context.instance, config.policy()))


@dg.op(description="Fail (or re-queue, by policy) jobs stuck in processing; cancel deleted queued jobs, re-sync queue rows.")
def settle_stuck_jobs(context: dg.OpExecutionContext, config: AuditConfig, database: PostgresResource) -> None:
    show(context, audit_jobs(database.engine, config.policy()), JOBS_TABLE)


@dg.op(description="Reconcile file_metadata with S3 (streamed) and remove identical extra versions our own retried writes left.")
def reconcile_storage(context: dg.OpExecutionContext, config: AuditConfig, database: PostgresResource, storage: S3StorageResource) -> None:
    s3 = storage.get()
    show(context, audit_objects(s3.settings, database.engine, s3.client, config.policy()), STORED_OBJECTS)


def maintenance_job(name: str, op: dg.OpDefinition, description: str) -> dg.JobDefinition:
    """A job of one maintenance op, in process (a step subprocess would only add its start-up time)."""

    @dg.job(name=name, tags=DOMAIN_TAGS, executor_def=dg.in_process_executor, description=description)
    def job():
        op()

    return job


temp_bucket_cleanup_job = maintenance_job(
    "temp_bucket_cleanup", delete_expired_temp_objects,
    "The temp bucket's 7-day expiry where the endpoint does not apply the lifecycle rule (reported on AWS).",
)
partition_retention_job = maintenance_job(
    "partition_retention", remove_expired_partitions,
    "Partitions of deleted jobs, and of jobs finished longer than retention_days ago, leave the sets.",
)
stuck_jobs_repair_job = maintenance_job(
    "stuck_jobs_repair", settle_stuck_jobs,
    "Jobs silent in processing past the stuck limit are failed (or re-queued); queue rows follow their job.",
)
storage_reconciliation_job = maintenance_job(
    "storage_reconciliation", reconcile_storage,
    "file_metadata against S3; the sweep removes identical extra versions our own retried writes left.",
)

MAINTENANCE_JOBS = [temp_bucket_cleanup_job, partition_retention_job, stuck_jobs_repair_job, storage_reconciliation_job]
