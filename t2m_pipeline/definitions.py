"""The code location: every domain's definitions merged, with the shared resources.

Domains are imported as modules, not their `defs` objects: Dagster refuses a module with more than one
Definitions object at module scope.
"""

import os
import warnings

import dagster as dg

# Two features we use on purpose, named so nothing else is hidden: a multi-run backfill policy on the legacy-files
# asset (beta) and checks on partitioned assets (preview). Without these filters every code-server start warns.
warnings.filterwarnings("ignore", category=dg.BetaWarning, message=r"Parameter `backfill_policy` of function `asset`")
warnings.filterwarnings("ignore", category=dg.PreviewWarning, message=r"Specifying a partitions_def on an AssetCheckSpec")

from t2m_pipeline.defs.audits import definitions as audits  # noqa: E402
from t2m_pipeline.defs.jobs import definitions as jobs  # noqa: E402
from t2m_pipeline.defs.migration import definitions as migration  # noqa: E402
from t2m_pipeline.defs.resources import default_resources  # noqa: E402
from t2m_pipeline.defs.scenes import definitions as scenes  # noqa: E402

# What a run worker prints on its console (the event log keeps everything): `make dev` sets WARNING unless VERBOSE=1.
RUN_CONSOLE_LOG_LEVEL = os.environ.get("T2M_RUN_LOG_LEVEL", "").strip().upper() or "INFO"
console = dg.colored_console_logger.configured({"log_level": RUN_CONSOLE_LOG_LEVEL, "name": "dagster"})

defs = dg.Definitions.merge(
    dg.Definitions(resources=default_resources(), loggers={"console": console}),
    scenes.defs,
    jobs.defs,
    migration.defs,
    audits.defs,
)
