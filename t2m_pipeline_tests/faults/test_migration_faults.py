"""`t2m migrate files` (the real CLI, a subprocess) over a generated legacy tree with its S3 behind the FaultProxy at
20% mixed faults: it finishes, `t2m migrate verify` passes against moto directly, and the oracle finds every ledger
and `file_metadata` row pointing at a version holding its legacy file's bytes, no partial object, every legacy file
accounted for once, and no extra version after the duplicate sweep. With retries off (`T2M_S3_MAX_ATTEMPTS=1`) the
faults get through (failed files, a failing verify); a rerun with retries on, still under faults, then finishes the
migration correctly (resumable under faults).

Sizes here are small; `run_migration_fault_scenario` runs the same at a larger size for `make reliability` (`t2m_pipeline_tests/faults/reliability_report.py`).
"""

import dataclasses

import pytest

from devtools.fault_proxy import FaultKind, FaultPlan
from t2m_pipeline_tests.faults.migration_scenarios import run_migration_fault_scenario

RATE = 0.2
SEED = 20  # its first multipart upload gets a 503, a 500 on a part and a lost answer on the completion
HELD_SECONDS = 1.0  # delayed answers and late writes; the CLI's client waits up to 60 s, so `delay` is latency
LANDING = (FaultKind.RESET_AFTER, FaultKind.DELAY, FaultKind.LATE_WRITE)  # the request was carried out


def mixed_plan() -> FaultPlan:
    return FaultPlan(rate=RATE, kinds=tuple(FaultKind), seed=SEED, delay_seconds=HELD_SECONDS)


@pytest.fixture
def scenario_settings(fault_settings, migration_db):  # noqa: F811
    """The private moto server (empty buckets) and a scratch metadata database of this test's own."""
    db_settings, _ = migration_db
    return dataclasses.replace(fault_settings, database_url=db_settings.database_url)


@pytest.mark.slow
def test_migrate_files_under_mixed_faults_finishes_and_verifies(scenario_settings, redis_db, mp4s, tmp_path):  # noqa: F811
    report = run_migration_fault_scenario(scenario_settings, tmp_path, redis_db, mixed_plan(), mp4s=mp4s)
    (run,) = report.runs

    assert run.exit_code == 0 and run.failed == 0, (run.failed_reasons[:5], run.stderr[-2000:])
    assert run.verify_ok, run.verify_problems[:10]
    assert report.problems == []
    assert report.migrated == run.migrated == run.uploaded_files + run.copied_files and report.migrated > 60
    # the faults were there: on single uploads (some landed with the answer lost) and on the multipart upload
    assert report.faults_on({"PutObject"}) >= 5, report.faults_by_operation
    assert report.faults_on({"PutObject"}, LANDING) >= 1, report.faults_by_operation
    assert report.faults_on({"CreateMultipartUpload", "UploadPart", "CompleteMultipartUpload"}) >= 1, report.faults_by_operation
    assert report.faults_on({"ListObjectVersions", "HeadObject", "DeleteObject"}) >= 1  # the duplicate cleanup's own calls


@pytest.mark.slow
def test_with_retries_off_faults_get_through_and_a_rerun_with_retries_finishes(
    scenario_settings, redis_db, mp4s, tmp_path  # noqa: F811
):
    report = run_migration_fault_scenario(scenario_settings, tmp_path, redis_db, mixed_plan(), mp4s=mp4s,
                                          max_attempts=1, rerun=True, large_files=0)
    control, rerun = report.runs

    # retries off: the faults reach the migration; the files it could not upload are `failed`, verify says so
    assert control.exit_code == 1 and control.failed >= 3, control.outcomes
    assert any("upload failed" in r for r in control.failed_reasons), control.failed_reasons[:5]
    assert not control.verify_ok and any("outcome failed" in p for p in control.verify_problems)
    # the rerun (retries on, faults still on) picks up exactly what is left and finishes correctly
    assert rerun.exit_code == 0 and rerun.failed == 0, (rerun.failed_reasons[:5], rerun.stderr[-2000:])
    assert rerun.unchanged_files == control.migrated
    assert rerun.uploaded_files + rerun.copied_files + rerun.adopted_versions == control.failed
    assert rerun.faults >= 1
    assert rerun.verify_ok, rerun.verify_problems[:10]
    assert report.problems == []
