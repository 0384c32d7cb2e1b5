import json
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
    expression_indexes = {"ix_job_queue_dispatch", "ix_jobs_legacy_folder", "ix_jobs_legacy_non_ascii_topic"}
    diff = [d for d in diff if not (d[0] in ("add_index", "remove_index") and d[1].name in expression_indexes)]
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


def test_migrated_rows_take_the_one_file_type_vocabulary_and_uploads_keep_theirs(scratch_url):
    migrate.upgrade(scratch_url, "0005_migration_attribution")
    engine = create_engine(scratch_url)
    old = [  # (file_type, scene_number or None, job row?, migrated?) -> expected after the upgrade
        ("code", 1, True, True, "scene_code"), ("log", 1, True, True, "render_log"),
        ("video", 2, True, True, "scene_video"), ("video", None, True, True, "combined_video"),
        ("plan", 3, True, True, "scene_plan"), ("plan", None, True, True, "job_plan"),
        ("video", None, False, True, "video"),  # a migrated upload: its own type stays
        ("code", 1, True, False, "code"),  # not written by the migration: untouched
    ]
    with engine.begin() as conn:
        user = conn.execute(text("INSERT INTO users (clerk_user_id) VALUES ('user_ft') RETURNING id")).scalar_one()
        job = conn.execute(text("INSERT INTO jobs (user_id, topic) VALUES (:u, 't') RETURNING id"), {"u": user}).scalar_one()
        for i, (file_type, scene, with_job, migrated, _) in enumerate(old):
            meta = {**({"scene_number": scene} if scene else {}), **({"legacy_path": f"output/t/{i}"} if migrated else {})}
            conn.execute(
                text("INSERT INTO file_metadata (user_id, job_id, file_type, s3_bucket, s3_key, metadata) "
                     "VALUES (:u, :j, :t, 'b', :k, CAST(:m AS jsonb))"),
                {"u": user, "j": job if with_job else None, "t": file_type, "k": f"k{i}", "m": json.dumps(meta)},
            )
    engine.dispose()
    migrate.upgrade(scratch_url)
    engine = create_engine(scratch_url)
    with engine.connect() as conn:
        got = dict(conn.execute(text("SELECT s3_key, file_type FROM file_metadata")).all())
    assert [got[f"k{i}"] for i in range(len(old))] == [row[-1] for row in old]
    engine.dispose()
    migrate.downgrade(scratch_url, "0005_migration_attribution")
    engine = create_engine(scratch_url)
    with engine.connect() as conn:
        back = dict(conn.execute(text("SELECT s3_key, file_type FROM file_metadata")).all())
    assert [back[f"k{i}"] for i in range(len(old))] == [row[0] for row in old]
    engine.dispose()


def test_a_batch_recorded_before_0009_keeps_its_created_rows_for_rollback_and_back(scratch_url):
    from t2m_pipeline.migration.batches import created_rows, record_created

    migrate.upgrade(scratch_url, "0008_ledger_file_stat")
    engine = create_engine(scratch_url)
    recorded = {"users": [str(uuid.uuid4())], "jobs": [[str(uuid.uuid4()), "2024-01-01T00:00:00+00:00"]], "s3_versions": [["b", "k", "v1"]]}
    with engine.begin() as conn:
        batch = conn.execute(
            text("INSERT INTO migration_batches (source, created_rows) VALUES ('redis', CAST(:c AS jsonb)) RETURNING id"),
            {"c": json.dumps(recorded)},
        ).scalar_one()
    engine.dispose()
    migrate.upgrade(scratch_url)
    engine = make_engine(scratch_url)
    with engine.begin() as conn:
        assert created_rows(conn, batch) == recorded
        record_created(conn, batch, jobs=[["j2", "t2"]], s3_versions=[["b", "k", "v2"]])  # appended after the old ones
        after = created_rows(conn, batch)
    assert after == {**recorded, "jobs": [*recorded["jobs"], ["j2", "t2"]], "s3_versions": [["b", "k", "v1"], ["b", "k", "v2"]]}
    engine.dispose()
    migrate.downgrade(scratch_url, "0008_ledger_file_stat")
    engine = create_engine(scratch_url)
    with engine.connect() as conn:
        assert conn.execute(text("SELECT created_rows FROM migration_batches WHERE id = :b"), {"b": batch}).scalar_one() == after
    engine.dispose()


def test_upload_types_migrated_before_0010_keep_their_eight_shards_and_others_are_sized_by_work(scratch_url, tmp_path):
    from t2m_pipeline.migration.discovery import UPLOAD_FILES_PER_SHARD
    from t2m_pipeline.migration.upload_shards import upload_shards

    migrate.upgrade(scratch_url, "0009_migration_batch_rows")
    engine = create_engine(scratch_url)
    with engine.begin() as conn:
        conn.execute(text("INSERT INTO migration_ledger (legacy_path, partition_key, outcome) VALUES "
                          "('storage/uploads/image/a.png', 'uploads/image/5', 'migrated'), ('output/t/x', 'topic/t', 'migrated')"))
    engine.dispose()
    migrate.upgrade(scratch_url)
    engine = make_engine(scratch_url)
    for kind, files in (("image", 3), ("audio", UPLOAD_FILES_PER_SHARD + 1)):
        (tmp_path / "storage" / "uploads" / kind).mkdir(parents=True)
        for n in range(files):
            (tmp_path / "storage" / "uploads" / kind / f"{n}.bin").write_bytes(b"x")
    assert upload_shards(engine, tmp_path) == {"image": 8, "audio": 2}  # image: as its migrated rows say
    engine.dispose()
    migrate.downgrade(scratch_url, "0009_migration_batch_rows")
    engine = create_engine(scratch_url)
    assert "legacy_upload_shards" not in inspect(engine).get_table_names()
    engine.dispose()
