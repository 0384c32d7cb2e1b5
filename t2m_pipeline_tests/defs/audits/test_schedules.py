from datetime import datetime, timezone

import dagster as dg

from t2m_pipeline.defs.audits.assets import AUDIT_ASSETS
from t2m_pipeline.defs.audits.schedules import storage_audit


def test_storage_audit_runs_daily_in_utc_and_requests_the_audit_job():
    assert storage_audit.cron_schedule == "0 4 * * *" and storage_audit.execution_timezone == "UTC"
    assert storage_audit.default_status == dg.DefaultScheduleStatus.RUNNING
    context = dg.build_schedule_context(scheduled_execution_time=datetime(2026, 3, 29, 4, 0, tzinfo=timezone.utc))
    data = storage_audit.evaluate_tick(context)
    [request] = data.run_requests
    assert request.job_name in (None, "storage_audit_job") and storage_audit.job_name == "storage_audit_job"


def test_the_code_location_has_the_schedule_the_audit_assets_and_their_checks():
    from t2m_pipeline.definitions import defs

    assert defs.resolve_schedule_def("storage_audit").job_name == "storage_audit_job"
    job = defs.resolve_job_def("storage_audit_job")
    keys = {key.to_user_string() for key in job.asset_layer.executable_asset_keys}
    assert keys == {a.key.to_user_string() for a in AUDIT_ASSETS}
    checks = {c.name for c in job.asset_layer.asset_graph.asset_check_keys}
    assert {"bucket_settings_as_declared", "no_missing_or_mismatched_objects", "no_stuck_jobs", "job_queue_consistent"} <= checks
