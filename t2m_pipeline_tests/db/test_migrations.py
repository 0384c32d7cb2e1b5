import uuid

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import create_engine, inspect, text

from t2m_pipeline.db import migrate
from t2m_pipeline.db.engine import drop_database, health_check, make_engine
from t2m_pipeline.db.models import Base


@pytest.fixture
def scratch_url(service_env):
    url = service_env["T2M_DATABASE_URL"].rsplit("/", 1)[0] + f"/t2m_mig_{uuid.uuid4().hex[:10]}"
    yield url
    drop_database(url)


def test_upgrade_creates_the_database_and_every_table_then_downgrade_removes_them(scratch_url):
    assert migrate.upgrade(scratch_url) == migrate.head_revision()
    engine = create_engine(scratch_url)
    tables = set(inspect(engine).get_table_names())
    assert {"users", "jobs", "file_metadata", "job_queue", "migration_ledger", "migration_quarantine", "audit_findings"} <= tables
    columns = {c["name"]: c for c in inspect(engine).get_columns("jobs")}
    assert str(columns["progress_percentage"]["type"]) == "NUMERIC(5, 2)"
    assert "TIMESTAMP" in str(columns["created_at"]["type"]) and columns["created_at"]["type"].timezone

    with engine.connect() as conn:  # the models and the migrations describe the same schema
        diff = compare_metadata(MigrationContext.configure(conn, opts={"compare_type": True}), Base.metadata)
    # Alembic cannot compare expression indexes: it always reports ours as removed and re-added.
    diff = [d for d in diff if not (d[0] in ("add_index", "remove_index") and d[1].name == "ix_job_queue_dispatch")]
    assert diff == []
    engine.dispose()

    assert migrate.downgrade(scratch_url, "base") is None
    engine = create_engine(scratch_url)
    assert set(inspect(engine).get_table_names()) <= {"alembic_version"}
    with engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM pg_class WHERE relname = 'job_queue_position_seq'")).scalar() == 0
    engine.dispose()
    assert migrate.upgrade(scratch_url) == migrate.head_revision()  # and up again


def test_health_check_reports_revision_and_unreachable(engine):
    ok = health_check(engine)
    assert ok["reachable"] and ok["revision"] == migrate.head_revision()
    bad = health_check(make_engine("postgresql+psycopg://postgres@127.0.0.1:1/nothing"))
    assert not bad["reachable"] and "OperationalError" in bad["error"]


def test_constraints_refuse_bad_status_priority_and_checksum(engine, make_user):
    from sqlalchemy.exc import IntegrityError

    user_id, _ = make_user()
    for column, value in (("status", "done"), ("priority", "asap")):
        with pytest.raises(IntegrityError), engine.begin() as conn:
            conn.execute(text(f"INSERT INTO jobs (user_id, topic, {column}) VALUES (:u, 't', :v)"), {"u": user_id, "v": value})
    with pytest.raises(IntegrityError), engine.begin() as conn:
        conn.execute(
            text("INSERT INTO file_metadata (user_id, file_type, s3_bucket, s3_key, checksum) VALUES (:u, 'x', 'b', 'k', 'nothex')"),
            {"u": user_id},
        )
