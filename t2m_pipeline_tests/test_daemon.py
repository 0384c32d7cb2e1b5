"""The real daemon path, once: `dagster-daemon run` on a PostgreSQL-backed instance; a job row inserted with plain
SQL completes with nobody doing anything else (sensors, queued run coordinator, run workers, the lot)."""

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from sqlalchemy import text

from devtools.dagster_daemon import daemon_databases, stop_process_group

from t2m_pipeline_tests.defs.scenes.support import file_rows, insert_job, job_row

REPO = Path(__file__).resolve().parents[1]
DEADLINE_S = 240


@pytest.fixture
def throwaway_databases(service_env):
    """A metadata database and a Dagster storage database of the daemon's own."""
    with daemon_databases("t2m_daemon") as databases:
        yield databases


def runs_by_job(home: Path, dagster_url: str, monkeypatch) -> dict[str, list[dict[str, str]]]:
    """Each Dagster job's runs in the daemon's instance: their tags, their id as `run_id`, their run config as
    `run_config` (JSON)."""
    import dagster as dg

    monkeypatch.setenv("T2M_DAGSTER_PG_URL", dagster_url)
    with dg.DagsterInstance.from_config(str(home)) as instance:
        found: dict[str, list[dict[str, str]]] = {}
        for run in instance.get_runs():
            found.setdefault(run.job_name, []).append(
                {**run.tags, "run_id": run.run_id, "status": run.status.value, "run_config": json.dumps(run.run_config, sort_keys=True)}
            )
        return found


@pytest.mark.e2e
@pytest.mark.slow
def test_daemon_completes_a_job_inserted_with_plain_sql(service_env, buckets, settings, throwaway_databases, tmp_path, monkeypatch):
    engine, metadata_url, dagster_url = throwaway_databases
    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copy(REPO / "dagster.yaml", home / "dagster.yaml")
    env = {
        **os.environ,
        **service_env,
        "T2M_DATABASE_URL": metadata_url,
        "T2M_DAGSTER_PG_URL": dagster_url,
        "DAGSTER_HOME": str(home),
    }
    log_path = tmp_path / "daemon.log"
    with open(log_path, "wb") as log:
        daemon = subprocess.Popen(
            [str(Path(sys.executable).parent / "dagster-daemon"), "run", "-w", str(REPO / "workspace.yaml")],
            cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )
    try:
        user_id, job_id = insert_job(engine, topic="Daemon test", configuration={"scene_count": 2, "quality": "low"})
        deadline = time.monotonic() + DEADLINE_S
        seen_stages = set()
        while time.monotonic() < deadline:
            row = job_row(engine, job_id)
            seen_stages.add(row["current_stage"])
            if row["status"] in ("completed", "failed") or daemon.poll() is not None:
                break
            time.sleep(1)
        row = job_row(engine, job_id)
        assert row["status"] == "completed", f"job {row['status']} ({row['error_info']}); daemon log:\n{log_path.read_text()[-5000:]}"
        assert daemon.poll() is None, "the daemon exited while the job ran"  # it did the work, and is still serving
    finally:
        stop_process_group(daemon)
    with pytest.raises(ProcessLookupError):
        os.killpg(daemon.pid, 0)  # nothing of its process group (code server, run workers) is left behind
    assert float(row["progress_percentage"]) == 100.0 and row["current_stage"] == "completed"
    assert "planning" in seen_stages or "code_generation" in seen_stages
    rows = file_rows(engine, job_id)
    runs = runs_by_job(home, dagster_url, monkeypatch)
    # one object per key (a step retried after its write, under load, adds a version of the same key: not a new object)
    kinds = sorted(kind for kind, _ in {(r["file_type"], r["s3_key"]) for r in rows})
    assert kinds == ["combined_video", "scene_code", "scene_code", "scene_outline", "scene_video", "scene_video", "thumbnail", "thumbnail"], (
        [(r["file_type"], r["s3_key"], r["version_id"], str(r["created_at"])) for r in rows], runs, log_path.read_text()[-5000:]
    )
    with engine.connect() as conn:
        assert conn.execute(text("SELECT status FROM job_queue WHERE job_id = :j"), {"j": job_id}).scalar_one() == "completed"
    # Two runs: the plan, and one run for the job's scenes (their partition range) queued by the plan run
    # (handoff.py), which also combined the job's videos (combine_in_step): the sensors, reacting to the same
    # materializations, found the run under its run key and the combined video made, and launched nothing more.
    [plan] = runs["plan_job"]
    renders = runs["render_scenes"]
    assert "combine_scenes" not in runs, runs
    assert [(r.get("dagster/asset_partition_range_start"), r.get("dagster/asset_partition_range_end")) for r in renders] == [
        (f"{user_id}/{job_id}/001", f"{user_id}/{job_id}/002")
    ], json.dumps([{k: v for k, v in r.items() if k != "run_config"} for r in renders], indent=1) + "\n" + log_path.read_text()[-8000:]
    [render] = renders
    assert plan["dagster/sensor_name"] == "new_jobs" and "t2m/handed_off_by" not in plan
    assert render["t2m/handed_off_by"] == plan["run_id"] and render["dagster/sensor_name"] == "scene_runs"
    # the run config Dagster resolves for a sensor's request (the job's config: its console log level), as on the plan run
    assert render["run_config"] == plan["run_config"] and "log_level" in plan["run_config"]
