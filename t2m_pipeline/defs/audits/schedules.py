"""The maintenance jobs' schedules: each daily at 04:00 UTC, the cadence the audits have always had."""

import dagster as dg

from t2m_pipeline.defs.audits.maintenance import (
    partition_retention_job,
    storage_reconciliation_job,
    stuck_jobs_repair_job,
    temp_bucket_cleanup_job,
)

MAINTENANCE_CRON = "0 4 * * *"


def daily(job: dg.JobDefinition) -> dg.ScheduleDefinition:
    return dg.ScheduleDefinition(
        name=f"{job.name}_schedule",
        job=job,
        cron_schedule=MAINTENANCE_CRON,
        execution_timezone="UTC",
        default_status=dg.DefaultScheduleStatus.RUNNING,
        description=f"Daily at 04:00 UTC. {job.description}",
    )


temp_bucket_cleanup_schedule = daily(temp_bucket_cleanup_job)
partition_retention_schedule = daily(partition_retention_job)
stuck_jobs_repair_schedule = daily(stuck_jobs_repair_job)
storage_reconciliation_schedule = daily(storage_reconciliation_job)

MAINTENANCE_SCHEDULES = [
    temp_bucket_cleanup_schedule,
    partition_retention_schedule,
    stuck_jobs_repair_schedule,
    storage_reconciliation_schedule,
]
