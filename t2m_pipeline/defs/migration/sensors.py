"""The durable retry of the cut-over mirror: job rows changed since the cursor are written into the legacy Redis.

The pipeline mirrors each status change as it commits (`pipeline.status`), but a write that fails there waits in its
run worker's memory, which ends with the run. This sensor runs in the daemon, whatever happened to the runs, and only
moves its cursor past rows it wrote (held back by `RESYNC_LAG` for late commits and clock skew), so a Redis outage
delays the mirror and loses nothing. It does nothing unless `T2M_LEGACY_REDIS_MIRROR=1`; each tick writes at most
`RESYNC_BATCH` rows.
"""

import dagster as dg

from t2m_pipeline.defs.resources import PostgresResource
from t2m_pipeline.migration.mirror import resync_jobs

RESYNC_INTERVAL_S = 60

# What the sensor keeps current: an external asset, so each tick that wrote rows shows as its materialization (with
# the counts) instead of a "skipped" tick, and the UI has a history of the mirror.
LEGACY_REDIS_JOBS = dg.AssetSpec(
    "legacy_redis_jobs",
    group_name="migration",
    kinds={"redis"},
    description="The legacy Redis `jobs:{id}` records during the cut-over, kept current from PostgreSQL by the "
    "legacy_mirror_resync sensor (each tick that writes is a materialization with its counts).",
)


@dg.sensor(
    name="legacy_mirror_resync",
    minimum_interval_seconds=RESYNC_INTERVAL_S,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Cut-over: job rows changed since the last tick are mirrored into the legacy Redis (when the mirror is on).",
)
def legacy_mirror_resync(context: dg.SensorEvaluationContext, database: PostgresResource):
    if not (database.legacy_mirror and database.legacy_mirror.enabled):
        return dg.SkipReason("the legacy mirror is off (T2M_LEGACY_REDIS_MIRROR, T2M_REDIS_URL)")
    result = resync_jobs(database.legacy_mirror.settings(), database.engine, context.cursor)
    if result.error:
        context.log.warning(f"legacy Redis write failed, retried next tick: {result.error}")
    if not (result.written or result.kept_newer or result.skipped or result.error):
        context.update_cursor(result.cursor)
        return dg.SkipReason("no job row changed")
    return dg.SensorResult(
        cursor=result.cursor,
        asset_events=[
            dg.AssetMaterialization(
                LEGACY_REDIS_JOBS.key,
                description=result.summary() + (f", then the legacy Redis failed: {result.error}" if result.error else ""),
                metadata={
                    "written": result.written,
                    "kept_newer": result.kept_newer,
                    "skipped": result.skipped,
                    "error": result.error or "",
                },
            )
        ],
    )
