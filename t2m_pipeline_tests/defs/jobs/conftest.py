from t2m_pipeline_tests.defs.scenes.support import instance, pipeline_db_url, pipeline_engine, resources  # noqa: F401
