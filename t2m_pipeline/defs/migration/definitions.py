"""The migration domain: Redis and files backfills, discovery, the verify check, the cut-over schedule and mirror."""

import dagster as dg

from t2m_pipeline.defs.migration.assets import MIGRATION_ASSETS, MIGRATION_CHECKS
from t2m_pipeline.defs.migration.resources import default_legacy_resources
from t2m_pipeline.defs.migration.schedules import MIGRATION_JOBS, MIGRATION_SCHEDULES
from t2m_pipeline.defs.migration.sensors import MIGRATION_SENSORS

defs = dg.Definitions(
    assets=MIGRATION_ASSETS,
    asset_checks=MIGRATION_CHECKS,
    jobs=MIGRATION_JOBS,
    schedules=MIGRATION_SCHEDULES,
    sensors=MIGRATION_SENSORS,
    resources=default_legacy_resources(),
)
