"""A pipeline job end to end (a job row inserted with plain SQL -> sensors -> plan_job, render_scenes that combines
the job too, in process) with every S3 request going through the FaultProxy at 20% mixed faults: the job completes, every
`file_metadata` row points at a version holding exactly its checksum's bytes, and after the duplicate sweep each key
holds only its recorded versions. With retries off (`T2M_S3_MAX_ATTEMPTS=1`) the same faults get through to the
steps (Dagster's RetryPolicy then usually completes the job: a second layer, not the one tested here).

With retries off, a write that fails in the storage layer after its request landed, then rewritten by a Dagster step
retry, leaves an unrecorded version with its own write-id: once old enough, `remove_duplicate_versions` removes it
when it holds a recorded version's bytes (a re-render with other bytes is an orphan the objects audit reports).

The pipeline's resources are built from `fault_settings` (this module's private moto server) with the endpoint moved
to the proxy in front of it.
"""

import dataclasses

import pytest

from devtools.fault_proxy import FaultKind, FaultPlan
from t2m_pipeline_tests.defs.scenes.support import pipeline_db_url, pipeline_engine  # noqa: F401 - fixtures
from t2m_pipeline_tests.faults.pipeline_scenarios import run_pipeline_fault_scenario

RATE = 0.2
SEED = 39  # its first PutObjects get a late write and a reset after the write: answers lost, writes landed
HELD_SECONDS = 1.0  # a delayed answer / late write is held this long (the pipeline's client waits up to 60 s)
SCENES = 2


def mixed_plan() -> FaultPlan:
    return FaultPlan(rate=RATE, kinds=tuple(FaultKind), seed=SEED, delay_seconds=HELD_SECONDS)


@pytest.fixture
def pipeline_settings(fault_settings, pipeline_db_url, pipeline_engine):  # noqa: F811 - the engine empties the tables
    return dataclasses.replace(fault_settings, database_url=pipeline_db_url)


@pytest.mark.slow
def test_a_job_completes_under_mixed_s3_faults_and_every_row_points_at_its_bytes(pipeline_settings):
    report = run_pipeline_fault_scenario(pipeline_settings, mixed_plan(), scenes=SCENES)

    # the faults were there, on writes and on other operations
    injected = report.proxy["injected"]
    assert report.proxy["injected_total"] >= 5, injected
    landed = injected.get("PutObject:reset-after", 0) + injected.get("PutObject:late-write", 0)
    assert landed >= 1, injected  # a write landed whose answer was lost: a duplicate to prevent or remove
    # ... and none got past the storage layer: no step attempt failed, every run succeeded, the job is complete
    assert (report.runs, report.runs_failed, report.step_troubles) == (2, 0, [])  # plan, the scenes' range (which combines)
    assert report.completed == 1 and report.rows == 2 + 3 * SCENES
    # every row holds its bytes; after the sweep each key holds exactly its recorded versions, newest on top
    assert report.problems == [] and report.stale_latest == [] and report.unrecorded_left == 0


@pytest.mark.slow
def test_with_s3_retries_off_the_same_faults_get_through(pipeline_settings):
    report = run_pipeline_fault_scenario(pipeline_settings, mixed_plan(), scenes=SCENES, s3_max_attempts=1)

    assert report.proxy["injected_total"] >= 1
    # the fault reached the steps: a step attempt failed on S3 (then Dagster's retry or the job's failure)
    assert report.step_troubles or report.completed == 0, report
    messages = " ".join(report.step_troubles)
    assert any(word in messages for word in ("Storage", "S3", "SlowDown", "InternalError", "Connection", "timed out")), messages[:2000]
    # rows still hold their bytes, and the sweep leaves no unrecorded copy of a recorded version's bytes
    assert report.problems == []
