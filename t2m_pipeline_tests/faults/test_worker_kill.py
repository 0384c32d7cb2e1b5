"""A run worker killed with SIGKILL mid-render, under the real `dagster-daemon`: the run is failed as a crash and
retried from failure, and the job completes; with retries off for the run nothing brings it back, the job stays
`processing`, and the stuck-job audit is what ends that row. The scenario, and who notices the dead worker:
`worker_kill_scenarios.py`.
"""

import re

import pytest

from t2m_pipeline_tests.faults.worker_kill_scenarios import (
    RENDER_JOB,
    alive,
    explain,
    run_worker_kill_scenario,
    scenario_databases,
)

KILLED = re.compile(r"signal 9 \(SIGKILL\)|run worker \S+ is gone")


@pytest.fixture(scope="module")
def killed_workers(service_env, buckets, settings, tmp_path_factory):
    """One scenario run shared by the tests below: two one-scene jobs, each with its render worker SIGKILLed
    mid-render; the first left to run retries, the second's run tagged not to be retried (the control); the failure
    write-back held back until after the audit (`late`)."""
    with scenario_databases() as (engine, metadata_url, dagster_url):
        workdir = tmp_path_factory.mktemp("worker-kill")
        return run_worker_kill_scenario(engine, settings, metadata_url, dagster_url, service_env, workdir)


@pytest.mark.e2e
@pytest.mark.slow
def test_the_killed_run_is_failed_as_a_crash_and_retried_from_failure(killed_workers):
    job = killed_workers.job(retried=True)
    assert job.killed is not None, explain(killed_workers)
    assert KILLED.search(job.crash_message or ""), explain(killed_workers)
    killed = next(r for r in job.runs if r["run_id"] == job.killed.run_id)
    assert (killed["status"], job.will_retry) == ("FAILURE", "true"), explain(killed_workers)
    [retry] = job.retry_runs
    assert (retry["job"], retry["partition"], retry["parent"], retry["retry_number"], retry["status"]) == (
        RENDER_JOB, job.killed.scene, job.killed.run_id, "1", "SUCCESS"
    ), explain(killed_workers)
    assert not any(alive(p) for p in [job.killed.pid, *job.killed.manim_pids])  # manim died with it (bubblewrap)
    assert job.slot_held_at_end is False  # its render slot, held by a dead worker, given back by run monitoring


@pytest.mark.e2e
@pytest.mark.slow
def test_the_job_completes_with_every_object_and_the_audit_has_nothing_to_do(killed_workers):
    job = killed_workers.job(retried=True)
    assert job.status_at_end == "completed", explain(killed_workers)
    assert job.file_types == ["combined_video", "scene_code", "scene_outline", "scene_video", "thumbnail"]
    assert job.object_problems == []
    assert job.stuck_action is None and job.status_after_audit == "completed"


@pytest.mark.e2e
@pytest.mark.slow
def test_a_late_failure_write_back_of_the_retried_run_leaves_the_job_completed(killed_workers):
    job = killed_workers.job(retried=True)
    if job.status_at_end != "completed" or job.status_after_write_back is None:
        pytest.fail(f"the scenario did not get that far: {explain(killed_workers)}")  # not the expected failure
    assert job.status_after_write_back == "completed", job.error_info_after_write_back
    assert job.queue_status == "completed"


@pytest.mark.e2e
@pytest.mark.slow
def test_control_a_killed_run_not_retried_stays_dead_and_only_the_audit_ends_its_processing_row(killed_workers):
    """Retries off for the run (dagster/max_retries=0): the same kill, the same wait (until the retried job had
    completed, and at least 15 s of nothing in progress), and nothing brings the run back; the job stays `processing`,
    forever but for the stuck-job audit, which fails it."""
    job = killed_workers.job(retried=False)
    assert job.killed is not None, explain(killed_workers)
    assert KILLED.search(job.crash_message or ""), explain(killed_workers)  # a crash, whichever detector saw it first
    assert job.will_retry == "false" and job.retry_runs == [], explain(killed_workers)
    assert [r["status"] for r in job.runs if r["job"] == RENDER_JOB] == ["FAILURE"], explain(killed_workers)
    assert job.status_at_end == "processing" and "combined_video" not in job.file_types, explain(killed_workers)
    assert job.object_problems == []
    assert job.stuck_action == "failed" and job.status_after_audit == "failed"
    assert job.error_info_after_audit["stage"] == "audit" and job.error_info_after_audit["reason"] == "stuck"
