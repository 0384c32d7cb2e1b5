"""The cut-over schedule: incremental Redis re-sync and migration of legacy sources new since the last run.

Stopped by default; one switch (the UI toggle, or `dagster schedule start migration_cutover`) starts it.

Each tick requests (1) a run of `legacy_redis_data` then `legacy_sources_catalog` (the Redis re-sync writes only
what changed; discovery registers new folders only after that re-sync, so their jobs are already in PostgreSQL),
(2) a `legacy_files` run for every registered partition never materialized yet: the ones the previous tick's
discovery found, and (3) a `legacy_files` run for every migrated topic partition whose evidence the latest re-sync
changed (its `reattribute_partitions`): the files go where the evidence now says. Work per tick is bounded; run
keys make each request happen once.
"""


import dagster as dg

from t2m_pipeline.defs.migration.assets import legacy_files, legacy_redis_data, legacy_sources_catalog
from t2m_pipeline.defs.migration.partitions import LEGACY_SOURCES_NAME, LegacySourceKeyError, check_source_key

CUTOVER_CRON = "*/30 * * * *"
MAX_NEW_PARTITIONS_PER_TICK = 200

legacy_redis_sync_job = dg.define_asset_job(
    "legacy_redis_sync",
    selection=dg.AssetSelection.assets(legacy_redis_data, legacy_sources_catalog),
    description="Legacy Redis re-sync, then discovery of new legacy sources.",
    tags={"t2m/domain": "migration"},
)
legacy_files_job = dg.define_asset_job(
    "legacy_files_migration",
    selection=dg.AssetSelection.assets(legacy_files),
    description="Legacy files of the selected legacy_sources partitions into S3, verified.",
    tags={"t2m/domain": "migration"},
)


@dg.schedule(
    name="migration_cutover",
    cron_schedule=CUTOVER_CRON,
    execution_timezone="UTC",
    target=dg.AssetSelection.assets(legacy_redis_data, legacy_sources_catalog, legacy_files),
    default_status=dg.DefaultScheduleStatus.STOPPED,
    description="Cut-over window: Redis re-sync and new legacy folders, every 30 minutes (stopped by default).",
)
def migration_cutover(context: dg.ScheduleEvaluationContext):
    tick = context.scheduled_execution_time.strftime("%Y%m%dT%H%M")
    yield dg.RunRequest(
        run_key=f"redis-sync-{tick}",
        asset_selection=[legacy_redis_data.key, legacy_sources_catalog.key],
        tags={"t2m/domain": "migration"},
    )
    registered = context.instance.get_dynamic_partitions(LEGACY_SOURCES_NAME)
    done = context.instance.get_materialized_partitions(legacy_files.key)
    pending = [k for k in registered if k not in done]
    for key in pending[:MAX_NEW_PARTITIONS_PER_TICK]:
        try:
            check_source_key(key)
        except LegacySourceKeyError as exc:
            context.log.warning(str(exc))
            continue
        yield dg.RunRequest(run_key=f"legacy-files-{key}", partition_key=key, asset_selection=[legacy_files.key])
    budget = MAX_NEW_PARTITIONS_PER_TICK - min(len(pending), MAX_NEW_PARTITIONS_PER_TICK)
    for key, storage_id in _reattribution(context.instance, set(registered), set(pending))[:budget]:
        yield dg.RunRequest(run_key=f"reattribute-{key}@{storage_id}", partition_key=key, asset_selection=[legacy_files.key])


def _reattribution(instance: dg.DagsterInstance, registered: set[str], pending: set[str]) -> list[tuple[str, int]]:
    """The partitions the latest Redis re-sync named for re-attribution, with that materialization's storage id."""
    records = instance.fetch_materializations(dg.AssetRecordsFilter(asset_key=legacy_redis_data.key), limit=1).records
    if not records or records[0].asset_materialization is None:
        return []
    value = records[0].asset_materialization.metadata.get("reattribute_partitions")
    keys = value.value if value is not None and isinstance(value.value, list) else []
    return [(k, records[0].storage_id) for k in keys if k in registered and k not in pending]


MIGRATION_JOBS = [legacy_redis_sync_job, legacy_files_job]
MIGRATION_SCHEDULES = [migration_cutover]
