"""Metadata in PostgreSQL: models, engine and sessions, Alembic migrations, the job state machine."""
