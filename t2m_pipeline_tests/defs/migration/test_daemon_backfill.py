"""The migration as a data engineer runs it, on the real daemon (`dagster-daemon run`, PostgreSQL-backed instance):

- Redis migrated: the `new_jobs` sensor ticks and launches nothing (the legacy queued job is held);
- a backfill of `legacy_files` over every legacy source (the UI's "Materialize all partitions"): the backfill daemon
  runs them in one run (the asset's multi-run policy), and the per-partition verify check's results, read through
  the instance API, are one per partition, each passed; each partition's materialization counts its own files;
- `requeue` of the held job: the same sensor launches it.
"""

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import dagster as dg
import pytest
import redis
from dagster._core.execution.backfill import BulkActionStatus, PartitionBackfill
from dagster._core.instance.ref import InstanceRef
from dagster._core.storage.asset_check_execution_record import AssetCheckExecutionRecordStatus
from dagster._core.utils import make_new_backfill_id
from sqlalchemy import text

from t2m_pipeline.migration.discovery import discover_sources, partition_entries
from t2m_pipeline.migration.upload_shards import upload_shards
from t2m_pipeline.migration.redis_import import migrate_redis
from t2m_pipeline.migration.requeue import requeue_held_jobs
from devtools.dagster_daemon import daemon_databases, stop_process_group

REPO = Path(__file__).resolve().parents[3]
DEADLINE_S = 300


def wait_for(what: str, predicate, deadline_s: float = DEADLINE_S, log: Path | None = None):
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(1)
    tail = log.read_text()[-4000:] if log else ""
    pytest.fail(f"timed out waiting for {what}; daemon log:\n{tail}")


def sensor_ticks(instance, name: str) -> list:
    for state in instance.all_instigator_state():
        if state.instigator_name == name:
            return list(instance.get_ticks(state.instigator_origin_id, state.selector_id))
    return []


@pytest.mark.e2e
@pytest.mark.slow
def test_on_the_daemon_redis_launches_nothing_a_backfill_checks_each_partition_and_requeue_launches(
    service_env, buckets, ownership_world, tmp_path, monkeypatch
):
    world = ownership_world
    with daemon_databases("t2m_migdaemon") as (engine, metadata_url, dagster_url):
        migrate_redis(engine, redis.Redis.from_url(world.redis_url))
        home = tmp_path / "dagster_home"
        home.mkdir()
        shutil.copy(REPO / "dagster.yaml", home / "dagster.yaml")
        monkeypatch.setenv("T2M_DAGSTER_PG_URL", dagster_url)
        instance = dg.DagsterInstance.from_ref(InstanceRef.from_dir(str(home)))  # creates Dagster's tables first
        shards = upload_shards(engine, world.root)
        sources = discover_sources(world.root, shards)
        instance.add_dynamic_partitions("legacy_sources", sources)
        env = {
            **os.environ, **service_env, "T2M_DATABASE_URL": metadata_url, "T2M_DAGSTER_PG_URL": dagster_url,
            "DAGSTER_HOME": str(home), "T2M_LEGACY_ROOT": str(world.root), "T2M_REDIS_URL": world.redis_url,
        }
        log_path = tmp_path / "daemon.log"
        with open(log_path, "wb") as log:
            daemon = subprocess.Popen(
                [str(Path(sys.executable).parent / "dagster-daemon"), "run", "-w", str(REPO / "workspace.yaml")],
                cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            )
        try:
            # 1. the sensor ticks on the migrated database and launches nothing
            wait_for("three new_jobs ticks", lambda: len(sensor_ticks(instance, "new_jobs")) >= 3, log=log_path)
            assert instance.get_runs_count() == 0
            with engine.connect() as conn:
                assert conn.execute(text("SELECT status FROM jobs WHERE id = :j"), {"j": world.jobs["a3"]}).scalar_one() == "held"

            # 2. a backfill of every legacy source, as the UI launches it
            from t2m_pipeline.definitions import defs

            backfill = PartitionBackfill.from_asset_partitions(
                backfill_id=make_new_backfill_id(), asset_graph=defs.resolve_asset_graph(), partition_names=sources,
                asset_selection=[dg.AssetKey("legacy_files")], backfill_timestamp=time.time(), tags={},
                dynamic_partitions_store=instance, all_partitions=False, title=None, description=None, run_config=None,
            )
            instance.add_backfill(backfill)
            done = wait_for(
                "the backfill",
                lambda: (b := instance.get_backfill(backfill.backfill_id)).status not in (BulkActionStatus.REQUESTED,) and b,
                log=log_path,
            )
            assert done.status == BulkActionStatus.COMPLETED_SUCCESS, done.status
            runs = instance.get_runs(filters=dg.RunsFilter(tags={"dagster/backfill": backfill.backfill_id}))
            assert len(runs) == 1 and runs[0].status == dg.DagsterRunStatus.SUCCESS  # every partition in one run
            history = instance.event_log_storage.get_asset_check_execution_history(
                dg.AssetCheckKey(dg.AssetKey("legacy_files"), "legacy_files_verified"), limit=1000)
            results = {h.partition: h.status for h in history if h.run_id == runs[0].run_id}
            assert results == {key: AssetCheckExecutionRecordStatus.SUCCEEDED for key in sources}  # one each, none skipped
            for key in sources:
                event = instance.fetch_materializations(
                    dg.AssetRecordsFilter(asset_key=dg.AssetKey("legacy_files"), asset_partitions=[key]), limit=1
                ).records[0].asset_materialization
                assert event.metadata["files"].value == len(partition_entries(world.root, key, shards)), key

            # 3. the operator requeues the held job: the sensor launches it (and nothing else)
            assert requeue_held_jobs(engine, [world.jobs["a3"]]).requeued == [world.jobs["a3"]]
            launched = wait_for(
                "the requeued job's run",
                lambda: instance.get_runs(filters=dg.RunsFilter(job_name="plan_job")),
                deadline_s=120, log=log_path,
            )
            assert [r.tags["t2m/job_id"] for r in launched] == [world.jobs["a3"]]
        finally:
            stop_process_group(daemon)
            instance.dispose()
