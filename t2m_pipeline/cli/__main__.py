from t2m_pipeline.cli import entry

entry()
