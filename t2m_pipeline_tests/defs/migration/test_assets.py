"""The migration assets run for real (in-process, a real Dagster instance) against Redis, PostgreSQL and moto."""

import datetime as dt
import io
import json

import dagster as dg
import pandas as pd
import pytest
import redis
from sqlalchemy import text
from dagster._core.storage.asset_check_execution_record import AssetCheckExecutionRecordStatus

from t2m_pipeline.defs.migration.assets import (
    MIGRATION_ASSETS,
    legacy_files,
    legacy_files_verified,
    legacy_redis_data,
    legacy_sources_catalog,
)
from t2m_pipeline.defs.migration.partitions import LEGACY_SOURCES_NAME, LegacySourceKeyError, check_source_key
from t2m_pipeline.defs.migration.resources import LegacySourcesResource
from t2m_pipeline.defs.migration.schedules import migration_cutover
from t2m_pipeline.defs.resources import resources_for
from t2m_pipeline.defs.scenes.partitions import RENDERED_VIDEO, SCENE_CODE, SCENES_PARTITIONS_NAME
from t2m_pipeline.migration.discovery import partition_entries
from t2m_pipeline.migration.upload_shards import upload_shards
from t2m_pipeline.partition_keys import decode_scene_key
from t2m_pipeline.storage.s3 import S3Storage


@pytest.fixture
def resources(world, migration_db, buckets):
    settings, engine = migration_db
    return {
        **resources_for(settings),
        "legacy": LegacySourcesResource(legacy_root=str(world.root), redis_url=world.redis_url, workers=8),
    }


def test_the_definitions_load_with_a_stopped_cutover_schedule():
    from t2m_pipeline.definitions import defs

    repo = defs.get_repository_def()  # the whole code location, with every other domain
    assert {"legacy_redis_sync", "legacy_files_migration"} <= {j.name for j in repo.get_all_jobs()}
    assert repo.get_schedule_def("migration_cutover").default_status == dg.DefaultScheduleStatus.STOPPED
    assert legacy_files.backfill_policy == dg.BackfillPolicy.multi_run(max_partitions_per_run=50)
    with pytest.raises(LegacySourceKeyError):
        check_source_key("topic/../../etc")


def test_redis_discovery_files_backfill_in_one_run_check_and_scene_graph(resources, world, migration_db):
    settings, engine = migration_db
    with dg.instance_for_test() as instance:
        first = dg.materialize([legacy_redis_data, legacy_sources_catalog], instance=instance, resources=resources)
        assert first.success
        redis_meta = first.asset_materializations_for_node("legacy_redis_data")[0].metadata
        assert redis_meta["jobs_inserted"].value == 7
        partitions = instance.get_dynamic_partitions(LEGACY_SOURCES_NAME)
        assert f"topic/{world.slug_shared}" in partitions and "loose" in partitions
        shards = upload_shards(engine, world.root)  # as the catalog decided them
        assert first.asset_materializations_for_node("legacy_sources_catalog")[0].metadata["upload_shards"].value == shards

        # the schedule: a Redis re-sync, and a files run for each registered, never-materialized partition
        context = dg.build_schedule_context(instance=instance, scheduled_execution_time=dt.datetime(2025, 1, 1, 12, 30))
        requests = list(migration_cutover(context))
        assert requests[0].asset_selection == [legacy_redis_data.key, legacy_sources_catalog.key]
        assert sorted(r.partition_key for r in requests[1:]) == sorted(partitions)

        # a backfill of every partition in ONE run (what BackfillPolicy.multi_run does), with the check per partition
        run = dg.materialize(
            [*MIGRATION_ASSETS, legacy_files_verified],
            selection=[legacy_files.key],
            instance=instance,
            resources=resources,
            tags={"dagster/asset_partition_range_start": partitions[0], "dagster/asset_partition_range_end": partitions[-1]},
        )
        assert run.success
        checks = run.get_asset_check_evaluations()
        assert checks and all(c.passed for c in checks), [c.metadata for c in checks]
        assert instance.get_materialized_partitions(legacy_files.key) == set(partitions)
        # read back through the instance: one check result per partition, each passed (none planned = "skipped"),
        # and no unpartitioned result beside them
        history = instance.event_log_storage.get_asset_check_execution_history(
            dg.AssetCheckKey(legacy_files.key, "legacy_files_verified"), limit=10_000)
        mine = [h for h in history if h.run_id == run.run_id]
        assert sorted(h.partition for h in mine) == sorted(partitions)
        assert {h.status for h in mine} == {AssetCheckExecutionRecordStatus.SUCCEEDED}
        # each partition's materialization shows that partition's files only
        for key in partitions:
            event = instance.fetch_materializations(
                dg.AssetRecordsFilter(asset_key=legacy_files.key, asset_partitions=[key]), limit=1
            ).records[0].asset_materialization
            assert event.metadata["files"].value == len(partition_entries(world.root, key, shards)), key
        shared = instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=legacy_files.key, asset_partitions=[f"topic/{world.slug_shared}"]), limit=1
        ).records[0].asset_materialization.metadata
        assert shared["copies"].value > 0 and shared["unattributed"].value == 0
        # its summary table: per topic, user and outcome, the owner and the reusing job's user both named
        summary = shared["summary"].value
        assert {c.name for c in summary.schema.columns} == {"topic", "user", "outcome", "files", "bytes"}
        assert sum(r.data["files"] for r in summary.records) == shared["files"].value + shared["copies"].value
        assert len({r.data["user"] for r in summary.records if r.data["outcome"] == "migrated"}) >= 2
        # the batch's CSV in S3, linked from the materialization: one line per ledger row of the batch
        bucket, _, key = shared["report_s3_uri"].value.removeprefix("s3://").partition("/")
        batch_id = key.split("/")[2]
        assert key == f"reports/migration/{batch_id}/files.csv" and shared["report_csv"].value.endswith(key)
        csv = pd.read_csv(io.BytesIO(S3Storage(settings).get_bytes(bucket, key)), keep_default_na=False)
        with engine.connect() as conn:
            ledger_rows = conn.execute(text("SELECT count(*) FROM migration_ledger WHERE batch_id = :b"), {"b": batch_id}).scalar()
        assert len(csv) == ledger_rows > 0 and set(csv["partition"]) == set(partitions) - {p for p in partitions if not partition_entries(world.root, p, shards)}
        progress = instance.get_run_by_id(run.run_id).tags["t2m/migration_progress"]
        total = progress.split(" files")[0].split("/")
        assert total[0] == total[1]

        # migrated scenes are `scenes` partitions with code and video materializations: thumbnail can be backfilled
        scenes = instance.get_dynamic_partitions(SCENES_PARTITIONS_NAME)
        decoded = {(k.job_id, k.scene_number) for k in map(decode_scene_key, scenes)}
        assert (world.jobs["new"], 1) in decoded and (world.jobs["new"], 10) in decoded
        key = next(k for k in scenes if decode_scene_key(k).job_id == world.jobs["new"] and k.endswith("/001"))
        assert key in instance.get_materialized_partitions(SCENE_CODE)
        assert key in instance.get_materialized_partitions(RENDERED_VIDEO)
        code_event = instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=SCENE_CODE, asset_partitions=[key]), limit=1
        ).records[0].asset_materialization
        assert code_event.metadata["s3_uri"].value.endswith("/code/scene_001/scene.py")

        # and a thumbnail is backfilled for the legacy video through the pipeline's own asset
        from t2m_pipeline_tests.defs.scenes.support import materialize_thumbnail

        thumb = materialize_thumbnail(instance, resources, key)
        assert thumb.success
        assert thumb.asset_materializations_for_node("scenes")[0].metadata["width"].value == 64

        # nothing pending any more: the next tick only re-syncs Redis
        later = list(migration_cutover(dg.build_schedule_context(instance=instance, scheduled_execution_time=dt.datetime(2025, 1, 1, 13))))
        assert len(later) == 1

        # the legacy Redis changes a job of a migrated folder: the re-sync names the folder, the next tick re-runs it
        r = redis.Redis.from_url(world.redis_url)
        record = json.loads(r.get(f"jobs:{world.jobs['old']}"))
        r.set(f"jobs:{world.jobs['old']}", json.dumps({**record, "updated_at": "2024-01-02 00:00:00"}))
        resync = dg.materialize([legacy_redis_data], instance=instance, resources=resources)
        named = resync.asset_materializations_for_node("legacy_redis_data")[0].metadata["reattribute_partitions"].value
        assert named == [f"topic/{world.slug_shared}"]
        tick = list(migration_cutover(dg.build_schedule_context(instance=instance, scheduled_execution_time=dt.datetime(2025, 1, 1, 13, 30))))
        assert [(r.partition_key, r.run_key.split("@")[0]) for r in tick[1:]] == [(f"topic/{world.slug_shared}", f"reattribute-topic/{world.slug_shared}")]


def test_control_an_asset_check_result_in_a_multi_partition_run_leaves_every_partition_skipped():
    """Why the verify check yields evaluations itself: Dagster's `AssetCheckResult` in a run over several partitions
    gives one unpartitioned result and leaves each partition's planned execution unresolved (shown "Skipped")."""
    parts = dg.StaticPartitionsDefinition(["a", "b", "c"])

    @dg.asset(partitions_def=parts, backfill_policy=dg.BackfillPolicy.multi_run(max_partitions_per_run=3))
    def toy(context):
        return dg.MaterializeResult()

    @dg.asset_check(asset=toy, partitions_def=parts)
    def toy_check(context):
        return dg.AssetCheckResult(passed=True)

    with dg.instance_for_test() as instance:
        run = dg.materialize([toy, toy_check], instance=instance,
                             tags={"dagster/asset_partition_range_start": "a", "dagster/asset_partition_range_end": "c"})
        history = instance.event_log_storage.get_asset_check_execution_history(dg.AssetCheckKey(toy.key, "toy_check"), limit=100)
    by_partition = {h.partition: h.status for h in history if h.run_id == run.run_id}
    assert by_partition[None] == AssetCheckExecutionRecordStatus.SUCCEEDED
    assert {by_partition[k] for k in "abc"} == {AssetCheckExecutionRecordStatus.PLANNED}


def test_a_files_run_reads_only_changed_files_unless_its_config_asks_for_checksums(resources, world, migration_db):
    settings, engine = migration_db
    one = f"topic/{world.slug_shared}"

    def unread_files(run_config=None) -> int:
        run = dg.materialize([*MIGRATION_ASSETS, legacy_files_verified], selection=[legacy_files.key], partition_key=one,
                             instance=instance, resources=resources, run_config=run_config)
        assert run.success
        with engine.connect() as conn:
            counts = conn.execute(text("SELECT counts FROM migration_batches WHERE source = 'files' ORDER BY started_at DESC LIMIT 1")).scalar()
        return counts["unread_files"]

    with dg.instance_for_test() as instance:
        assert dg.materialize([legacy_redis_data, legacy_sources_catalog], instance=instance, resources=resources).success
        assert unread_files() == 0  # the first run reads everything
        assert unread_files() > 0
        assert unread_files({"ops": {"legacy_files": {"config": {"checksum": True}}}}) == 0
