"""The code location: every domain's definitions merged, with the shared resources.

Domains are imported as modules, not their `defs` objects: Dagster refuses a module with more than one
Definitions object at module scope.
"""

import dagster as dg

from t2m_pipeline.defs.audits import definitions as audits
from t2m_pipeline.defs.jobs import definitions as jobs
from t2m_pipeline.defs.migration import definitions as migration
from t2m_pipeline.defs.resources import default_resources
from t2m_pipeline.defs.scenes import definitions as scenes

defs = dg.Definitions.merge(
    dg.Definitions(resources=default_resources()),
    scenes.defs,
    jobs.defs,
    migration.defs,
    audits.defs,
)
