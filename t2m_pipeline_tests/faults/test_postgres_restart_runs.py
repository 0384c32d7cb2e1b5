"""The metadata database restarts while `t2m migrate redis` + `t2m migrate files` (CLI processes) and a pipeline
job (sensors and runs in process) are running: both finish without a rerun, nothing is lost or doubled, and every
status write the pipeline made is on the job. Without the retry, the restart reaches a step and the migration.

Each restart lands inside an open transaction of each run (see `restart_scenarios`); it happens on a private
cluster (`PrivatePostgres`), never on the machine's shared server.

Found here: `t2m migrate files` read the attribution index, the ledger and the claimed versions on plain
connections, outside `in_transaction`; a restart during such a read ended the run (exit 2, "database unreachable:
terminating connection due to administrator command"; a rerun was clean). Those reads now retry like the writes.
"""

import pytest

from devtools.private_postgres import PrivatePostgres
from t2m_pipeline_tests.faults.restart_scenarios import run_restart_during_runs


@pytest.fixture(scope="module")
def cluster():
    with PrivatePostgres() as pg:
        yield pg


@pytest.mark.slow
def test_restarts_during_a_migration_and_a_pipeline_job_lose_and_double_nothing(cluster, fault_settings, world):
    report = run_restart_during_runs(cluster, fault_settings, world, restarts=2, outage_seconds=1.0, scenes=2)
    assert report.restarts == 2
    # each restart landed inside a transaction of each run, and each run retried through it
    assert (report.pipeline_hit, report.migration_hit) == (2, 2), report.hits
    assert report.pipeline_db_retries >= 2 and report.migration_db_retries >= 2, report
    # both finished on their own: exit 0 the first time, every run succeeded with no failed step attempt
    assert report.migration_exit_codes == {"redis": [0], "files": [0]}, report.migration_errors
    assert report.reruns == []
    assert report.pipeline_errors == [] and report.step_troubles == []
    assert report.runs_succeeded == [True] * 2  # plan, the scenes' range (which combines)
    assert report.job_status == "completed"
    # verify passed; one row per legacy job and file, each version recorded once, every status write reflected
    assert report.verify_exit_code == 0 and report.verify["ok"]
    assert report.problems == []


@pytest.mark.slow
def test_without_the_db_retry_the_restart_reaches_a_step_and_the_migration(cluster, fault_settings, world):
    report = run_restart_during_runs(cluster, fault_settings, world, restarts=1, outage_seconds=1.0, scenes=1, db_retry=False)
    assert report.restarts == 1
    assert (report.pipeline_hit, report.migration_hit) == (1, 1), report.hits
    # the migration's transaction was cut and nothing re-ran it: a one-line error and a non-zero exit
    assert report.migration_exit_codes["redis"] == [2], report.migration_errors
    (error,) = report.migration_errors
    assert "t2m: error: database" in error, error
    assert not [p for p in report.problems if "traceback" in p], report.problems
    # the pipeline's status write failed, so the step failed (Dagster's RetryPolicy, a second layer, may re-run it)
    troubles = report.step_troubles + report.pipeline_errors
    assert any("DatabaseUnavailableError" in t for t in troubles), troubles
    assert report.pipeline_db_retries == 0 and report.migration_db_retries == 0
