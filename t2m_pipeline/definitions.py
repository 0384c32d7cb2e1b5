"""The code location: every domain's definitions merged, with the shared resources."""

import dagster as dg

from t2m_pipeline.defs.resources import default_resources

defs = dg.Definitions.merge(
    dg.Definitions(resources=default_resources()),
)
