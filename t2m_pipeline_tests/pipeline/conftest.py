from t2m_pipeline_tests.defs.scenes.support import pipeline_db_url, pipeline_engine  # noqa: F401
