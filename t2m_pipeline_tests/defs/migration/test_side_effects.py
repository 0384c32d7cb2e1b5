"""A data engineer's day after the migration, in Dagster (in-process, real instance, real services): the audits and
the thumbnail backfill the README promises for migrated scenes, and none of it launches what nobody asked for."""

import dagster as dg
import pytest
from sqlalchemy import text

from t2m_pipeline.defs.audits.maintenance import partition_retention_job, stuck_jobs_repair_job
from t2m_pipeline.defs.scenes.sensors import combine_ready_jobs, new_jobs
from t2m_pipeline.defs.migration.assets import MIGRATION_ASSETS, legacy_files, legacy_redis_data, legacy_sources_catalog
from t2m_pipeline.defs.migration.partitions import LEGACY_SOURCES_NAME
from t2m_pipeline.defs.migration.resources import LegacySourcesResource
from t2m_pipeline.defs.resources import resources_for
from t2m_pipeline.defs.scenes.resources import JobQueueResource
from t2m_pipeline.defs.scenes.partitions import SCENES_PARTITIONS_NAME, THUMBNAIL
from t2m_pipeline.partition_keys import decode_scene_key
from t2m_pipeline_tests.defs.scenes.support import materialize_thumbnail


def tick(sensor, instance, resources, cursor=None) -> dg.SensorResult:
    with dg.build_sensor_context(instance=instance, resources=resources, cursor=cursor) as context:
        return sensor(context)


@pytest.fixture
def resources(ownership_world, migration_db, buckets):
    settings, engine = migration_db
    return {
        **resources_for(settings),
        "job_queue": JobQueueResource(wait_ms=0),
        "legacy": LegacySourcesResource(legacy_root=str(ownership_world.root), redis_url=ownership_world.redis_url, workers=4),
    }


def test_audits_keep_migrated_scenes_and_their_thumbnail_backfill_launches_nothing(ownership_world, migration_db, resources):
    world, (_, engine) = ownership_world, migration_db
    with dg.instance_for_test() as instance:
        assert dg.materialize([legacy_redis_data, legacy_sources_catalog], instance=instance, resources=resources).success
        partitions = instance.get_dynamic_partitions(LEGACY_SOURCES_NAME)
        assert dg.materialize(
            MIGRATION_ASSETS, selection=[legacy_files.key], instance=instance, resources=resources,
            tags={"dagster/asset_partition_range_start": partitions[0], "dagster/asset_partition_range_end": partitions[-1]},
        ).success
        scenes = set(instance.get_dynamic_partitions(SCENES_PARTITIONS_NAME))
        a1 = {k for k in scenes if decode_scene_key(k).job_id == world.jobs["a1"]}
        assert len(a1) == 2  # scene 1 and the render-cache hit, scene 2

        # the daily maintenance: the migrated jobs finished in 2024, past the 365-day retention; their partitions stay
        for maintenance in (partition_retention_job, stuck_jobs_repair_job):
            assert maintenance.execute_in_process(instance=instance, resources={"database": resources["database"]}).success
        assert set(instance.get_dynamic_partitions(SCENES_PARTITIONS_NAME)) == scenes
        with engine.connect() as conn:
            held = conn.execute(text("SELECT status FROM jobs WHERE id = :j"), {"j": world.jobs["a3"]}).scalar_one()
        assert held == "held"  # the stuck-job audit left it alone

        # the thumbnail backfill for a1's migrated scenes: both succeed, nothing is combined (a migrated job has no
        # outline row with the pipeline's scene count: its combined video is the migrated one), nothing launched
        for key in sorted(a1):
            assert materialize_thumbnail(instance, resources, key).success
        assert instance.get_materialized_partitions(THUMBNAIL) == a1
        assert tick(combine_ready_jobs, instance, resources).run_requests == []
        assert tick(new_jobs, instance, resources).run_requests == []
        assert instance.get_runs_count(dg.RunsFilter(job_name="plan_job")) == 0
