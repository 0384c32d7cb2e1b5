import dagster as dg
import pytest

from t2m_pipeline.audits.policy import AuditPolicy
from t2m_pipeline.audits.runner import AUDITS, run_audits


def test_every_audit_runs_in_order_and_reports_what_it_judged(env):
    env.client.put_bucket_versioning(Bucket=env.settings.bucket("code"), VersioningConfiguration={"Status": "Suspended"})
    with dg.DagsterInstance.ephemeral() as instance:
        # Report-only for jobs: this audit sees every job in the shared database and must not change them.
        policy = AuditPolicy(settle_s=0, stuck_policy="report", fix_queue=False, retention_days=None)
        reports = run_audits(env.settings, env.engine, env.client, policy, instance=instance)
    assert [r.audit for r in reports] == list(AUDITS) and all(r.skipped is None for r in reports)
    by_name = {r.audit: r for r in reports}
    assert by_name["buckets"].open_errors == 1
    assert set(by_name["objects"].stats["buckets"]) == {env.settings.bucket(k) for k in ("videos", "code", "thumbnails")}
    assert by_name["temp"].stats["bucket"] == env.settings.bucket("temp")
    assert by_name["buckets"].as_dict()["drift"][env.settings.bucket("code")]["versioning"]["live"] == "Suspended"


def test_partitions_need_a_dagster_instance_and_unknown_audits_are_refused(env):
    [report] = run_audits(env.settings, env.engine, env.client, AuditPolicy(), audits=("partitions",))
    assert report.skipped and report.summary is None
    with pytest.raises(ValueError, match="unknown audit 'everything'"):
        run_audits(env.settings, env.engine, env.client, AuditPolicy(), audits=("everything",))


def test_a_missing_bucket_is_an_error_and_the_temp_audit_skips_it(env):
    temp = env.settings.bucket("temp")
    env.client.delete_bucket_lifecycle(Bucket=temp)
    env.client.delete_bucket_policy(Bucket=temp)
    env.client.delete_bucket(Bucket=temp)
    reports = run_audits(env.settings, env.engine, env.client, AuditPolicy(), audits=("buckets", "temp"))
    assert reports[0].open_errors == 1 and reports[0].extra["unreadable"][temp]
    assert reports[1].skipped == f"bucket {temp} does not exist"
