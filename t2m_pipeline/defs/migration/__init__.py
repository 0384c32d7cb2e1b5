"""The Dagster layer of the legacy migration (see t2m_pipeline.migration for the library it wraps)."""
