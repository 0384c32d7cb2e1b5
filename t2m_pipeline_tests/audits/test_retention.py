import uuid
from dataclasses import replace

import dagster as dg
import pytest
from sqlalchemy import text

from t2m_pipeline.audits.findings import record_findings
from t2m_pipeline.audits.policy import AuditPolicy
from t2m_pipeline.audits.retention import RetentionStats, invalid_partition_keys, retention_findings, retention_scope
from t2m_pipeline.db.engine import in_transaction
from t2m_pipeline.db.job_state import transition
from t2m_pipeline.db.jobs import submit_job
from t2m_pipeline.partition_keys import encode_job_key, encode_scene_key
from t2m_pipeline_tests.audits.conftest import findings_rows


def job(engine):
    job_id = submit_job(engine, clerk_user_id=f"user_{uuid.uuid4().hex[:8]}", email="a@b.c", topic="Retention", context="c")
    with engine.connect() as conn:
        user_id = conn.execute(text("SELECT user_id FROM jobs WHERE id = :j"), {"j": job_id}).scalar_one()
    return user_id, job_id


def register(instance, user_id, job_id, scenes=2):
    instance.add_dynamic_partitions("jobs", [encode_job_key(user_id, job_id)])
    instance.add_dynamic_partitions("scenes", [encode_scene_key(user_id, job_id, n) for n in range(1, scenes + 1)])


def run(engine, instance, policy=AuditPolicy()):
    stats = RetentionStats()
    findings = list(retention_findings(engine, instance, policy, stats))
    return {f.subject: f for f in findings}, record_findings(engine, retention_scope(), findings), stats


@pytest.fixture
def instance():
    with dg.DagsterInstance.ephemeral() as inst:
        yield inst


def test_partitions_of_deleted_and_expired_jobs_leave_the_sets_and_live_ones_stay(engine, instance):
    live, deleted, expired, gone = job(engine), job(engine), job(engine), job(engine)
    for user_id, job_id in (live, deleted, expired, gone):
        register(instance, user_id, job_id)
    in_transaction(engine, lambda c: c.execute(text("UPDATE jobs SET is_deleted = true WHERE id = :j"), {"j": deleted[1]}))
    transition(engine, expired[1], "processing")
    transition(engine, expired[1], "completed")
    in_transaction(engine, lambda c: c.execute(text("UPDATE jobs SET completed_at = now() - interval '400 days' WHERE id = :j"), {"j": expired[1]}))
    in_transaction(engine, lambda c: c.execute(text("DELETE FROM jobs WHERE id = :j"), {"j": gone[1]}))
    instance.add_dynamic_partitions("scenes", ["not-a-scene-key"])
    history_key = encode_scene_key(*deleted, 1)
    instance.report_runless_asset_event(dg.AssetMaterialization(asset_key="scene_code", partition=history_key))

    found, summary, stats = run(engine, instance)
    removed = {s: f.detail["reason"] for s, f in found.items() if f.check_name == "partition_retention"}
    expected = {}
    for (user_id, job_id), reason in ((deleted, "job deleted"), (expired, "retention expired"), (gone, "job row deleted")):
        expected[f"partition/jobs/{encode_job_key(user_id, job_id)}"] = reason
        for n in (1, 2):
            expected[f"partition/scenes/{encode_scene_key(user_id, job_id, n)}"] = reason
    assert removed == expected and summary.fixed == 9
    assert found["partition/scenes/not-a-scene-key"].check_name == "invalid_partition_key"
    assert set(instance.get_dynamic_partitions("jobs")) == {encode_job_key(*live)}
    assert set(instance.get_dynamic_partitions("scenes")) == {encode_scene_key(*live, 1), encode_scene_key(*live, 2), "not-a-scene-key"}
    for subject in expected:
        [row] = findings_rows(engine, subject)
        assert row["resolved_at"] is not None
    history = instance.fetch_materializations(dg.AssetKey("scene_code"), limit=10).records
    assert [r.partition_key for r in history] == [history_key]  # the partition is gone, its history is not

    found, _, _ = run(engine, instance)  # nothing more to remove; the bad key stays reported once
    assert set(found) == {"partition/scenes/not-a-scene-key"}
    assert len(findings_rows(engine, "partition/scenes/not-a-scene-key")) == 1
    instance.delete_dynamic_partition("scenes", "not-a-scene-key")
    run(engine, instance)
    assert findings_rows(engine, "partition/scenes/not-a-scene-key")[0]["resolved_at"] is not None


def test_without_a_retention_period_finished_jobs_keep_their_partitions(engine, instance):
    user_id, job_id = job(engine)
    register(instance, user_id, job_id, scenes=1)
    transition(engine, job_id, "processing")
    transition(engine, job_id, "failed")
    in_transaction(engine, lambda c: c.execute(text("UPDATE jobs SET completed_at = now() - interval '400 days' WHERE id = :j"), {"j": job_id}))
    found, _, _ = run(engine, instance, replace(AuditPolicy(), retention_days=None))
    assert found == {} and instance.has_dynamic_partition("jobs", encode_job_key(user_id, job_id))


def test_a_key_whose_user_is_not_the_jobs_owner_is_reported_not_removed(engine, instance):
    _, job_id = job(engine)
    stranger = uuid.uuid4()
    key = encode_job_key(stranger, job_id)
    instance.add_dynamic_partitions("jobs", [key])
    in_transaction(engine, lambda c: c.execute(text("UPDATE jobs SET is_deleted = true WHERE id = :j"), {"j": job_id}))
    found, _, _ = run(engine, instance)
    assert found[f"partition/jobs/{key}"].check_name == "invalid_partition_key"
    assert instance.has_dynamic_partition("jobs", key)


def test_a_migrated_jobs_retention_counts_from_its_migration_not_its_legacy_age(engine, instance):
    """A legacy job finished in 2024 whose files were migrated today keeps its partitions; one migrated more than the
    retention period ago loses them; the control, the same legacy age without a migration, loses them too."""
    migrated, long_ago, never = job(engine), job(engine), job(engine)
    for user_id, job_id in (migrated, long_ago, never):
        register(instance, user_id, job_id, scenes=1)
        transition(engine, job_id, "processing")
        transition(engine, job_id, "completed")
    in_transaction(engine, lambda c: c.execute(
        text("UPDATE jobs SET completed_at = '2024-01-01T10:00:00Z', configuration = configuration || '{\"legacy\": {}}' WHERE id = ANY(:j)"),
        {"j": [migrated[1], long_ago[1], never[1]]}))
    for (user_id, job_id), created in ((migrated, "now()"), (long_ago, "now() - interval '400 days'")):
        in_transaction(engine, lambda c, u=user_id, j=job_id, t=created: c.execute(text(
            "INSERT INTO file_metadata (user_id, job_id, file_type, s3_bucket, s3_key, metadata, created_at) "
            f"VALUES (:u, :j, 'video', 'b', :k, '{{\"legacy_path\": \"output/x/x_combined.mp4\"}}', {t})"),
            {"u": u, "j": j, "k": f"users/{u}/jobs/{j}/videos/combined/output.mp4"}))
    found, _, _ = run(engine, instance)
    removed = {s for s, f in found.items() if f.check_name == "partition_retention"}
    assert removed == {f"partition/{name}/{key}" for user_id, job_id in (long_ago, never)
                       for name, key in (("jobs", encode_job_key(user_id, job_id)), ("scenes", encode_scene_key(user_id, job_id, 1)))}
    assert instance.has_dynamic_partition("scenes", encode_scene_key(*migrated, 1))


def test_invalid_keys_are_found_per_set_and_nothing_is_removed(engine, instance):
    """What the checks judge with: a key that does not decode and one naming another user's job, in their own set;
    the deleted job's partitions (retention's business) stay."""
    deleted, (_, job_id) = job(engine), job(engine)
    register(instance, *deleted, scenes=1)
    in_transaction(engine, lambda c: c.execute(text("UPDATE jobs SET is_deleted = true WHERE id = :j"), {"j": deleted[1]}))
    stranger = encode_job_key(uuid.uuid4(), job_id)
    instance.add_dynamic_partitions("jobs", [stranger])
    instance.add_dynamic_partitions("scenes", ["not-a-scene-key"])
    stats = RetentionStats()
    jobs = [f.subject for f in invalid_partition_keys(engine, instance, "jobs", stats)]
    scenes = [f.subject for f in invalid_partition_keys(engine, instance, "scenes", stats)]
    assert jobs == [f"partition/jobs/{stranger}"] and scenes == ["partition/scenes/not-a-scene-key"]
    assert stats.counts["jobs_partitions"] == 2 and stats.counts["scenes_invalid"] == 1
    assert instance.has_dynamic_partition("jobs", encode_job_key(*deleted))
    assert instance.has_dynamic_partition("scenes", encode_scene_key(*deleted, 1))
