import uuid
from dataclasses import replace

import pytest
from sqlalchemy import text

from t2m_pipeline.audits.findings import record_findings
from t2m_pipeline.audits.policy import AuditPolicy
from t2m_pipeline.audits.stuck_jobs import JobAuditStats, job_findings, job_problems, jobs_scope
from t2m_pipeline.db.engine import in_transaction
from t2m_pipeline.db.job_state import transition
from t2m_pipeline.db.jobs import submit_job
from t2m_pipeline_tests.audits.conftest import findings_rows


def new_job(engine, status="queued"):
    job_id = submit_job(engine, clerk_user_id=f"user_{uuid.uuid4().hex[:8]}", email="a@b.c", topic="Stuck", context="c")
    if status == "processing":
        transition(engine, job_id, "processing", stage="rendering", progress=40)
    return job_id


def backdate(engine, job_id, hours):
    sql = [
        "UPDATE jobs SET updated_at = now() - make_interval(hours => :h), started_at = now() - make_interval(hours => :h) WHERE id = :j",
        "UPDATE job_queue SET processing_started_at = now() - make_interval(hours => :h) WHERE job_id = :j",
    ]
    in_transaction(engine, lambda c: [c.execute(text(s), {"h": hours, "j": job_id}) for s in sql])


def state(engine, job_id):
    with engine.connect() as conn:
        return conn.execute(
            text("SELECT j.status, j.error_info, j.metrics, q.status AS queue_status FROM jobs j JOIN job_queue q ON q.job_id = j.id WHERE j.id = :j"),
            {"j": job_id},
        ).mappings().one()


def run(engine, jobs, policy=AuditPolicy()):
    """The audit limited to this test's jobs: the database is shared with every other test."""
    stats = JobAuditStats()
    findings = list(job_findings(engine, policy, stats, job_ids=jobs))
    summary = record_findings(engine, jobs_scope(jobs), findings)
    return {f.subject: f for f in findings}, summary, stats


def test_a_stuck_job_is_failed_with_error_info_and_its_finding_resolved(engine):
    stuck, busy, elsewhere = new_job(engine, "processing"), new_job(engine, "processing"), new_job(engine, "processing")
    backdate(engine, stuck, hours=4)
    backdate(engine, elsewhere, hours=4)
    found, summary, _ = run(engine, [stuck, busy])
    finding = found[f"job/{stuck}"]
    assert finding.check_name == "stuck_job" and finding.fixed and finding.detail["action"] == "failed"
    assert f"job/{busy}" not in found
    after = state(engine, stuck)
    assert after["status"] == "failed" and after["queue_status"] == "failed"
    assert after["error_info"]["stage"] == "audit" and after["error_info"]["reason"] == "stuck"
    assert "no progress for" in after["error_info"]["message"]
    assert state(engine, busy)["status"] == "processing"
    assert state(engine, elsewhere)["status"] == "processing"  # outside the audited jobs: untouched
    transition(engine, elsewhere, "completed")
    [row] = findings_rows(engine, f"job/{stuck}")
    assert row["resolved_at"] is not None

    found, _, _ = run(engine, [stuck, busy])  # a second run finds nothing and duplicates nothing
    assert f"job/{stuck}" not in found and len(findings_rows(engine, f"job/{stuck}")) == 1


def test_requeue_policy_requeues_once_then_fails(engine):
    job_id = new_job(engine, "processing")
    backdate(engine, job_id, hours=4)
    policy = AuditPolicy(stuck_policy="requeue", max_requeues=1)
    found, _, _ = run(engine, [job_id], policy)
    assert found[f"job/{job_id}"].detail["action"] == "requeued"
    after = state(engine, job_id)
    assert after["status"] == "queued" and after["queue_status"] == "queued" and after["metrics"]["audit"]["requeues"] == 1

    transition(engine, job_id, "processing")  # relaunched... and stuck again
    backdate(engine, job_id, hours=4)
    found, _, _ = run(engine, [job_id], policy)
    assert found[f"job/{job_id}"].detail["action"] == "failed after max requeues"
    assert state(engine, job_id)["status"] == "failed"
    assert len(findings_rows(engine, f"job/{job_id}")) == 2  # two separate incidents, both resolved
    assert all(r["resolved_at"] is not None for r in findings_rows(engine, f"job/{job_id}"))


def test_report_policy_changes_nothing_and_the_finding_resolves_when_the_job_moves(engine):
    job_id = new_job(engine, "processing")
    backdate(engine, job_id, hours=4)
    policy = AuditPolicy(stuck_policy="report")
    found, _, _ = run(engine, [job_id], policy)
    assert not found[f"job/{job_id}"].fixed and state(engine, job_id)["status"] == "processing"
    run(engine, [job_id], policy)
    [row] = findings_rows(engine, f"job/{job_id}")
    assert row["resolved_at"] is None
    transition(engine, job_id, "completed")
    run(engine, [job_id], policy)
    assert findings_rows(engine, f"job/{job_id}")[0]["resolved_at"] is not None


def test_the_stuck_limit_is_configurable(engine):
    job_id = new_job(engine, "processing")
    backdate(engine, job_id, hours=1)
    found, _, _ = run(engine, [job_id])
    assert f"job/{job_id}" not in found
    found, _, _ = run(engine, [job_id], replace(AuditPolicy(), stuck_after_s=1800))
    assert found[f"job/{job_id}"].fixed and state(engine, job_id)["status"] == "failed"


def test_queue_rows_of_deleted_jobs_and_mismatched_queue_rows(engine):
    deleted, mismatched, deleted_running = new_job(engine), new_job(engine), new_job(engine, "processing")
    in_transaction(engine, lambda c: c.execute(text("UPDATE jobs SET is_deleted = true, deleted_at = now() WHERE id IN (:a, :b)"), {"a": deleted, "b": deleted_running}))
    in_transaction(engine, lambda c: c.execute(text("UPDATE job_queue SET status = 'processing' WHERE job_id = :j"), {"j": mismatched}))

    jobs = [deleted, mismatched, deleted_running]
    found, _, _ = run(engine, jobs)
    orphan, mismatch, running = (found[f"job_queue/{j}"] for j in (deleted, mismatched, deleted_running))
    assert (orphan.check_name, orphan.detail["action"], orphan.fixed) == ("orphan_queue_row", "cancelled", True)
    assert (mismatch.check_name, mismatch.detail["action"], mismatch.fixed) == ("queue_status_mismatch", "queue row re-synced", True)
    assert (running.check_name, running.fixed) == ("orphan_queue_row", False)
    assert state(engine, deleted)["status"] == "cancelled" and state(engine, deleted)["queue_status"] == "cancelled"
    assert state(engine, mismatched)["status"] == "queued" and state(engine, mismatched)["queue_status"] == "queued"
    assert state(engine, deleted_running)["status"] == "processing"

    found, _, _ = run(engine, jobs)
    assert f"job_queue/{deleted}" not in found and f"job_queue/{mismatched}" not in found
    assert f"job_queue/{deleted_running}" in found
    assert len(findings_rows(engine, f"job_queue/{deleted_running}")) == 1
    assert all(len(findings_rows(engine, f"job_queue/{j}")) == 1 for j in (deleted, mismatched))


def test_the_checks_view_finds_what_the_audit_would_and_changes_nothing(engine):
    """`job_problems` (what the checks judge with) sees a stuck job and a mismatched queue row under the fail policy
    and repairs neither; the audit itself, the control, repairs both."""
    stuck, mismatched = new_job(engine, "processing"), new_job(engine)
    backdate(engine, stuck, hours=4)
    in_transaction(engine, lambda c: c.execute(text("UPDATE job_queue SET status = 'processing' WHERE job_id = :j"), {"j": mismatched}))
    found = {f.subject: f for f in job_problems(engine, AuditPolicy(stuck_policy="fail", fix_queue=True))}
    assert found[f"job/{stuck}"].check_name == "stuck_job" and not found[f"job/{stuck}"].fixed
    assert found[f"job_queue/{mismatched}"].check_name == "queue_status_mismatch"
    assert state(engine, stuck)["status"] == "processing" and state(engine, mismatched)["queue_status"] == "processing"
    assert findings_rows(engine, f"job/{stuck}") == []  # nothing recorded either

    run(engine, [stuck, mismatched])
    assert state(engine, stuck)["status"] == "failed" and state(engine, mismatched)["queue_status"] == "queued"
    found = {f.subject for f in job_problems(engine, AuditPolicy())}
    assert f"job/{stuck}" not in found and f"job_queue/{mismatched}" not in found


def test_bad_policy_is_refused():
    with pytest.raises(ValueError, match="stuck policy"):
        AuditPolicy(stuck_policy="ignore")
