"""The durable retry of the cut-over mirror: job rows changed since the cursor are written into the legacy Redis.

The pipeline mirrors each status change as it commits (`pipeline.status`), but a write that fails there waits in its
run worker's memory, which ends with the run. This sensor runs in the daemon, whatever happened to the runs, and only
moves its cursor past rows it wrote (held back by `RESYNC_LAG` for late commits and clock skew), so a Redis outage
delays the mirror and loses nothing. It does nothing unless `T2M_LEGACY_REDIS_MIRROR=1`; each tick writes at most
`RESYNC_BATCH` rows.
"""

import dagster as dg

from t2m_pipeline.config import load_settings
from t2m_pipeline.defs.resources import PostgresResource
from t2m_pipeline.migration.mirror import resync_jobs

RESYNC_INTERVAL_S = 60


@dg.sensor(
    name="legacy_mirror_resync",
    minimum_interval_seconds=RESYNC_INTERVAL_S,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Cut-over: job rows changed since the last tick are mirrored into the legacy Redis (when the mirror is on).",
)
def legacy_mirror_resync(context: dg.SensorEvaluationContext, database: PostgresResource):
    settings = load_settings()
    if not (settings.legacy_redis_mirror and settings.redis_url):
        return dg.SkipReason("the legacy mirror is off (T2M_LEGACY_REDIS_MIRROR, T2M_REDIS_URL)")
    result = resync_jobs(settings, database.engine, context.cursor)
    context.update_cursor(result.cursor)
    if result.error:
        context.log.warning(f"legacy Redis write failed, retried next tick: {result.error}")
        return dg.SkipReason(f"{result.summary()}, then the legacy Redis failed: {result.error}")
    return dg.SkipReason(result.summary())


MIGRATION_SENSORS = [legacy_mirror_resync]
