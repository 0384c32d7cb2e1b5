"""The code location: every domain's definitions merged, with the shared resources.

Domains are imported as modules, not their `defs` objects: Dagster refuses a module with more than one
Definitions object at module scope.
"""

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

defs = dg.Definitions.merge(
    dg.Definitions(resources=default_resources()),
    scenes.defs,
    jobs.defs,
    migration.defs,
    audits.defs,
)
