"""The daily `storage_audit` schedule: every audit asset and its checks, once a day at 04:00 UTC."""

import dagster as dg

from t2m_pipeline.defs.audits.assets import AUDIT_GROUP

STORAGE_AUDIT_CRON = "0 4 * * *"

storage_audit_job = dg.define_asset_job(
    "storage_audit_job",
    selection=dg.AssetSelection.groups(AUDIT_GROUP),
    description="All lifecycle audits: bucket settings, reconciliation, temp expiry, stuck jobs, partition retention.",
    tags={"t2m/domain": "audits"},
)

storage_audit = dg.ScheduleDefinition(
    name="storage_audit",
    job=storage_audit_job,
    cron_schedule=STORAGE_AUDIT_CRON,
    execution_timezone="UTC",
    default_status=dg.DefaultScheduleStatus.RUNNING,
    description="Daily lifecycle audits (UTC); findings land in audit_findings, drift fails the asset checks.",
)
