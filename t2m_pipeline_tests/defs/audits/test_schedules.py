"""How the code location runs maintenance: op jobs on daily schedules, never assets; the checks on the data assets
they judge, launched after the maintenance; and none of them in a pipeline run."""

from datetime import datetime, timezone

import dagster as dg
import pytest

from t2m_pipeline.defs.audits.checks import AUDIT_CHECKS, PARTITION_KEY_CHECKS
from t2m_pipeline.defs.audits.maintenance import MAINTENANCE_JOBS, settle_stuck_jobs
from t2m_pipeline.defs.audits.schedules import MAINTENANCE_SCHEDULES
from t2m_pipeline.defs.audits.sensors import CHECKS_AFTER
from t2m_pipeline.defs.migration.requeue import legacy_jobs_requeue_job
from t2m_pipeline.defs.resources import PostgresResource, S3StorageResource

# The asset keys maintenance (and the operator's requeue) had while modelled as assets (issue 12): "Materialize" on
# them deleted or re-queued.
MAINTENANCE_ASSET_NAMES = {
    "temp_bucket_cleanup", "partition_retention", "stuck_jobs_audit", "storage_reconciliation", "legacy_jobs_requeued",
}
ACTION_JOBS = [*MAINTENANCE_JOBS, legacy_jobs_requeue_job]
# What each check judges, by asset key.
CHECK_TARGETS = {
    "bucket_settings_as_declared": {"s3_buckets"},
    "no_missing_or_mismatched_objects": {"stored_objects"},
    "no_unrecorded_objects": {"stored_objects"},
    "temp_expiry_enforced": {"temp_bucket"},
    "no_stuck_jobs": {"jobs_table"},
    "job_queue_consistent": {"jobs_table"},
    "partition_keys_valid": {"jobs_partition_set", "scenes_partition_set"},
}


@pytest.fixture(scope="module")
def defs():
    from t2m_pipeline.definitions import defs

    return defs


def maintenance_assets(defs: dg.Definitions) -> set[str]:
    """Assets a "Materialize" could launch whose name is a maintenance action's, or whose op runs one."""
    graph = defs.resolve_asset_graph()
    maintenance_ops = {node.name for job in ACTION_JOBS for node in job.graph.node_dict.values()}
    found = set()
    for key in dg.AssetSelection.all().resolve(graph):
        node = graph.get(key)
        op_name = node.assets_def.node_def.name if node.assets_def.is_executable else None
        if key.to_user_string() in MAINTENANCE_ASSET_NAMES or op_name in maintenance_ops:
            found.add(key.to_user_string())
    return found


def test_no_asset_is_a_maintenance_action(defs):
    keys = {key.to_user_string() for key in defs.resolve_asset_graph().get_all_asset_keys()}
    assert not keys & MAINTENANCE_ASSET_NAMES
    assert maintenance_assets(defs) == set()
    for job in ACTION_JOBS:  # each is an op job of the code location
        assert not defs.resolve_job_def(job.name).asset_layer.selected_asset_keys


def test_the_control_a_maintenance_asset_is_found():
    """The same question over definitions that model maintenance as assets again: by its old name, and by its op."""

    @dg.asset(name="temp_bucket_cleanup")
    def by_name() -> None: ...

    @dg.asset
    def innocent() -> None: ...

    by_op = dg.AssetsDefinition.from_op(settle_stuck_jobs, keys_by_output_name={"result": dg.AssetKey("jobs_settled")})
    database = PostgresResource()
    resources = {"database": database, "storage": S3StorageResource(database=database)}
    with dg.instance_for_test():
        defs = dg.Definitions(assets=[by_name, innocent, by_op], resources=resources)
        assert maintenance_assets(defs) == {"temp_bucket_cleanup", "jobs_settled"}


def test_each_maintenance_job_is_an_op_job_on_a_daily_schedule_at_4_utc(defs):
    assert {s.job_name for s in MAINTENANCE_SCHEDULES} == {job.name for job in MAINTENANCE_JOBS}
    for schedule in MAINTENANCE_SCHEDULES:
        job = defs.resolve_job_def(schedule.job_name)
        assert not job.asset_layer.selected_asset_keys and len(job.graph.node_dict) == 1
        assert job.tags["t2m/domain"] == "audits"
        assert defs.resolve_schedule_def(schedule.name).job_name == job.name
        assert schedule.cron_schedule == "0 4 * * *" and schedule.execution_timezone == "UTC"
        assert schedule.default_status == dg.DefaultScheduleStatus.RUNNING
        context = dg.build_schedule_context(scheduled_execution_time=datetime(2026, 3, 29, 4, 0, tzinfo=timezone.utc))
        [request] = schedule.evaluate_tick(context).run_requests
        assert request.job_name in (None, job.name)


def test_every_check_sits_on_the_data_it_judges_says_what_it_checks_and_follows_a_maintenance_job(defs):
    graph = defs.resolve_asset_graph()
    by_name: dict[str, set[str]] = {}
    for check in AUDIT_CHECKS:
        [key] = check.check_keys
        by_name.setdefault(key.name, set()).add(key.asset_key.to_user_string())
        spec = graph.get_check_spec(key)
        assert spec.description and len(spec.description) > 40
    assert by_name == CHECK_TARGETS
    followed = [check for checks in CHECKS_AFTER.values() for check in checks]
    assert sorted(c.check_key.to_user_string() for c in followed) == sorted(c.check_key.to_user_string() for c in AUDIT_CHECKS)
    assert set(CHECKS_AFTER) == {job.name for job in MAINTENANCE_JOBS}
    sensor = defs.resolve_sensor_def("checks_after_maintenance")
    assert [target.job_name for target in sensor.targets] == ["audit_checks"]


def test_no_pipeline_run_runs_a_whole_partition_set_check(defs):
    partition_checks = {key for check in PARTITION_KEY_CHECKS for key in check.check_keys}
    for name in ("plan_job", "render_scenes", "combine_scenes"):
        job = defs.resolve_job_def(name)
        assert not partition_checks & set(job.asset_layer.asset_graph.asset_check_keys), name
    render = defs.resolve_job_def("render_scenes").asset_layer.asset_graph.asset_check_keys
    assert dg.AssetCheckKey(dg.AssetKey("scene_code"), "code_checks") in render  # the assets' own checks still run
    audit = defs.resolve_job_def("audit_checks").asset_layer.asset_graph.asset_check_keys
    assert partition_checks <= set(audit)
    graph = defs.resolve_asset_graph()  # nor any other run: a check on a partitioned asset runs in its partitions' runs
    assert all(graph.get(key.asset_key).partitions_def is None for key in partition_checks)
