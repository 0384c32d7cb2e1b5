import uuid

import pytest
from sqlalchemy import text

from t2m_pipeline.db.job_state import IllegalTransitionError, JobNotFoundError, transition
from t2m_pipeline.db.jobs import job_summary, submit_job


def queue_row(engine, job_id):
    with engine.connect() as conn:
        return conn.execute(text("SELECT * FROM job_queue WHERE job_id = :j"), {"j": job_id}).mappings().one()


def job_row(engine, job_id):
    with engine.connect() as conn:
        return conn.execute(text("SELECT * FROM jobs WHERE id = :j"), {"j": job_id}).mappings().one()


@pytest.fixture
def job_id(engine):
    return submit_job(engine, clerk_user_id=f"user_{uuid.uuid4().hex[:8]}", email="a@b.c", topic="Pythagoras", context="c")


def test_lifecycle_updates_jobs_and_queue_together(engine, job_id):
    assert queue_row(engine, job_id)["queue_position"] is not None
    transition(engine, job_id, "processing", stage="planning", progress=5)
    job, queue = job_row(engine, job_id), queue_row(engine, job_id)
    assert (job["status"], job["current_stage"], float(job["progress_percentage"])) == ("processing", "planning", 5.0)
    assert job["started_at"] is not None and queue["status"] == "processing" and queue["processing_started_at"] is not None

    transition(engine, job_id, metrics={"stage_seconds": {"planning": 1.5}})
    transition(engine, job_id, metrics={"stage_seconds": {"rendering": 3.0}, "bytes_written": 10})
    assert job_row(engine, job_id)["metrics"] == {"stage_seconds": {"planning": 1.5, "rendering": 3.0}, "bytes_written": 10}

    transition(engine, job_id, "completed", stage="completed")
    job, queue = job_row(engine, job_id), queue_row(engine, job_id)
    assert job["status"] == "completed" and float(job["progress_percentage"]) == 100.0 and job["completed_at"] is not None
    assert queue["status"] == "completed" and queue["completed_at"] is not None


def test_illegal_transitions_are_refused_and_change_nothing(engine, job_id):
    transition(engine, job_id, "processing")
    transition(engine, job_id, "completed")
    before = dict(job_row(engine, job_id))
    with pytest.raises(IllegalTransitionError, match="completed -> queued"):
        transition(engine, job_id, "queued")
    assert dict(job_row(engine, job_id)) == before
    with pytest.raises(IllegalTransitionError):
        transition(engine, job_id, "cancelled")


def test_failure_then_rerun(engine, job_id):
    transition(engine, job_id, "processing")
    transition(engine, job_id, "failed", error_info={"stage": "rendering", "scene": 2, "message": "boom"})
    assert job_row(engine, job_id)["error_info"]["scene"] == 2
    transition(engine, job_id, "processing")
    job = job_row(engine, job_id)
    assert job["error_info"] is None and job["completed_at"] is None


def test_unknown_job(engine):
    with pytest.raises(JobNotFoundError):
        transition(engine, uuid.uuid4(), "processing")


def test_summary(engine, job_id):
    summary = job_summary(engine, job_id)
    assert summary["status"] == "queued" and summary["topic"] == "Pythagoras" and summary["objects"] == []
    assert job_summary(engine, uuid.uuid4()) is None
