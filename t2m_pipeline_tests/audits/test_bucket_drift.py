from t2m_pipeline.audits.bucket_drift import audit_bucket_settings, bucket_subject
from t2m_pipeline.audits.findings import record_findings
from t2m_pipeline.storage.bootstrap import bootstrap_bucket
from t2m_pipeline.storage.bucket_settings import bucket_spec, declared_buckets
from t2m_pipeline.storage.s3 import make_s3_client
from t2m_pipeline_tests.audits.conftest import findings_rows, own_settings


def run(env):
    audit = audit_bucket_settings(env.settings, env.client)
    return audit, record_findings(env.engine, audit.scope, audit.findings)


def test_a_bucket_without_versioning_is_found_then_resolved_after_the_fix(env):
    audit, _ = run(env)
    assert audit.ok and audit.findings == []

    videos = env.settings.bucket("videos")
    env.client.put_bucket_versioning(Bucket=videos, VersioningConfiguration={"Status": "Suspended"})
    temp = env.settings.bucket("temp")
    env.client.delete_bucket_lifecycle(Bucket=temp)

    audit, summary = run(env)
    assert not audit.ok
    assert audit.drift[videos] == {"versioning": {"declared": "Enabled", "live": "Suspended"}}
    assert set(audit.drift[temp]) == {"lifecycle_rules"} and audit.drift[temp]["lifecycle_rules"]["live"] == []
    severities = {f.subject: f.severity for f in audit.findings}
    assert severities == {bucket_subject(videos, "versioning"): "ERROR", bucket_subject(temp, "lifecycle_rules"): "WARNING"}
    assert summary.open_errors == 1

    run(env)  # still drifting: refreshed, not duplicated
    [row] = findings_rows(env.engine, bucket_subject(videos, "versioning"))
    assert row["resolved_at"] is None and row["detail"]["live"] == "Suspended"

    for spec in declared_buckets(env.settings):  # the fix: re-apply the declared settings
        bootstrap_bucket(env.client, spec, env.settings.region)
    audit, summary = run(env)
    assert audit.ok and summary.resolved == 2
    for subject in (bucket_subject(videos, "versioning"), bucket_subject(temp, "lifecycle_rules")):
        [row] = findings_rows(env.engine, subject)
        assert row["resolved_at"] is not None
    run(env)
    assert len(findings_rows(env.engine, bucket_subject(videos, "versioning"))) == 1


def test_a_missing_bucket_is_an_error_and_other_environments_are_untouched(service_env, engine):
    settings = own_settings(service_env)
    client = make_s3_client(settings)
    code = bucket_spec(settings, "code")
    bootstrap_bucket(client, code, settings.region)
    audit = audit_bucket_settings(settings, client)
    summary = record_findings(engine, audit.scope, audit.findings)
    missing = {f.subject for f in audit.findings if f.subject.endswith("#exists")}
    assert missing == {bucket_subject(settings.bucket(k), "exists") for k in ("videos", "thumbnails", "temp")}
    assert summary.open_errors == 3 and code.name not in audit.drift
    assert all(prefix.startswith("s3://") and settings.account_id in prefix for prefix in audit.scope.subject_prefixes)
