from t2m_pipeline_tests.migration.legacy_world import migration_db, mp4s, redis_db, world  # noqa: F401
