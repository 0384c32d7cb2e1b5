"""The checks run when the maintenance that acts on their data has finished, so they judge what it left (a stuck job
checked while the repair is still failing it would be a false alarm). The bucket settings, which no job maintains,
are checked with the reconciliation of the objects in those buckets."""

import dagster as dg

from t2m_pipeline.defs.audits import checks
from t2m_pipeline.defs.audits.checks import audit_checks_job
from t2m_pipeline.defs.audits.maintenance import (
    MAINTENANCE_JOBS,
    partition_retention_job,
    storage_reconciliation_job,
    stuck_jobs_repair_job,
    temp_bucket_cleanup_job,
)

MAINTENANCE_RUN_TAG = "t2m/maintenance_run"

CHECKS_AFTER = {
    temp_bucket_cleanup_job.name: [checks.temp_expiry_enforced],
    partition_retention_job.name: checks.PARTITION_KEY_CHECKS,
    stuck_jobs_repair_job.name: [checks.no_stuck_jobs, checks.job_queue_consistent],
    storage_reconciliation_job.name: [
        checks.no_missing_or_mismatched_objects,
        checks.no_unrecorded_objects,
        checks.bucket_settings_as_declared,
    ],
}


@dg.run_status_sensor(
    name="checks_after_maintenance",
    run_status=dg.DagsterRunStatus.SUCCESS,
    monitored_jobs=MAINTENANCE_JOBS,
    request_job=audit_checks_job,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="When a maintenance job succeeds, the checks on the data it maintained run (once per maintenance run).",
)
def checks_after_maintenance(context: dg.RunStatusSensorContext) -> dg.RunRequest | dg.SkipReason:
    run = context.dagster_run
    after = CHECKS_AFTER.get(run.job_name)
    if not after:
        return dg.SkipReason(f"no checks follow {run.job_name}")
    return dg.RunRequest(
        run_key=run.run_id,
        asset_check_keys=[check.check_key for check in after],
        tags={MAINTENANCE_RUN_TAG: run.run_id},
    )
