"""scripts/local_stack.py keeps the local S3 state, the metadata database and Dagster's database together: one stack
id in each; when one of the three is gone or from another life, all three are emptied together and it says so."""

from __future__ import annotations

import os
import sys
import uuid
from pathlib import Path

import pytest
from sqlalchemy import text

from devtools.local_s3 import free_port
from t2m_pipeline_tests.conftest import ADMIN_URL

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts"))
import local_stack  # noqa: E402

pytestmark = pytest.mark.slow


@pytest.fixture
def stack_env(monkeypatch, tmp_path):
    """A shell with no AWS or T2M settings but the stack's own throwaway databases."""
    from t2m_pipeline.db.engine import drop_database

    for name in list(os.environ):
        if name.startswith(("AWS_", "T2M_", "DAGSTER_")):
            monkeypatch.delenv(name)
    suffix = uuid.uuid4().hex[:10]
    base = ADMIN_URL.rsplit("/", 1)[0]
    metadata_url = f"{base}/t2m_stack_{suffix}"
    dagster_url = f"{base.replace('+psycopg:', '+psycopg2:')}/t2m_stack_dagster_{suffix}"
    monkeypatch.setenv("T2M_DATABASE_URL", metadata_url)
    monkeypatch.setenv("T2M_DAGSTER_PG_URL", dagster_url)
    monkeypatch.setenv("HOME", str(tmp_path))
    yield metadata_url, tmp_path / "stack"
    drop_database(metadata_url)
    drop_database(dagster_url.replace("+psycopg2:", "+psycopg:"))


def submit_job(stack) -> str:
    done = stack.t2m("jobs", "submit", "--user", "u", "--email", "u@example.com", "--topic", "kept", capture=True)
    return done.stdout.strip()


def jobs(url: str) -> int:
    from t2m_pipeline.db.engine import make_engine

    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            return conn.execute(text("SELECT count(*) FROM jobs")).scalar()
    finally:
        engine.dispose()


def test_a_restart_keeps_all_three_and_a_lost_s3_state_resets_all_three_loudly(stack_env, capsys):
    metadata_url, local_dir = stack_env
    port = free_port()
    stack = local_stack.start(s3_port=port, local_dir=local_dir)
    try:
        submit_job(stack)
        ids = local_stack.stack_ids(stack_stores(stack, local_dir))
        assert len(set(ids.values())) == 1 and None not in ids.values()
        assert (local_dir / "stack.env").stat().st_mode & 0o777 == 0o600
    finally:
        stack.stop()

    stack = local_stack.start(s3_port=port, local_dir=local_dir)  # a plain restart: nothing reset
    stack.stop()
    assert "RESET" not in capsys.readouterr().out and jobs(metadata_url) == 1

    import shutil

    shutil.rmtree(local_dir / "s3")  # the S3 state is lost; PostgreSQL still has the job
    stack = local_stack.start(s3_port=port, local_dir=local_dir)
    stack.stop()
    out = capsys.readouterr().out
    assert "RESET" in out and "local S3 of this stack is gone or new" in out
    assert jobs(metadata_url) == 0  # emptied together with S3 and Dagster's database


def test_s3_behind_postgresql_is_found_and_reset(stack_env, capsys, monkeypatch):
    metadata_url, local_dir = stack_env
    port = free_port()
    stack = local_stack.start(s3_port=port, local_dir=local_dir)
    try:
        from t2m_pipeline.config import load_settings
        from t2m_pipeline.db.engine import make_engine
        from t2m_pipeline.storage.s3 import ObjectOwner, S3Storage, make_s3_client

        for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
            monkeypatch.setenv(name, stack.env[name])
        settings = load_settings(stack.env)
        engine = make_engine(settings.database_url)
        with engine.begin() as conn:
            user_id = conn.execute(
                text("INSERT INTO users (clerk_user_id, email) VALUES ('u2', 'u2@example.com') RETURNING id")
            ).scalar()
        stored = S3Storage(settings, engine).put_bytes(
            settings.bucket("code"), "users/x/a.txt", b"a", owner=ObjectOwner(str(user_id), "scene_code"), content_type="text/plain"
        )
        assert local_stack.missing_objects(settings, make_s3_client(settings), engine) == []
        make_s3_client(settings).delete_object(Bucket=stored.bucket, Key=stored.key, VersionId=stored.version_id)
        assert len(local_stack.missing_objects(settings, make_s3_client(settings), engine)) == 1  # the control
        engine.dispose()
    finally:
        stack.stop()
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.delenv(name)  # a new shell, as for make dev
    stack = local_stack.start(s3_port=port, local_dir=local_dir)
    stack.stop()
    out = capsys.readouterr().out
    assert "RESET" in out and "S3 is behind PostgreSQL: 1 recorded version(s)" in out
    assert "using AWS" not in out  # the restart after the reset is the local stack again


def test_a_foreign_database_with_data_is_never_emptied(stack_env, monkeypatch):
    metadata_url, local_dir = stack_env
    from t2m_pipeline.db.engine import make_engine
    from t2m_pipeline.db.migrate import upgrade

    upgrade(metadata_url)  # someone's own database, with a job, no stack id
    engine = make_engine(metadata_url)
    with engine.begin() as conn:
        user = conn.execute(text("INSERT INTO users (clerk_user_id, email) VALUES ('f', 'f@example.com') RETURNING id")).scalar()
        conn.execute(text("INSERT INTO jobs (user_id, topic) VALUES (:u, 'theirs')"), {"u": user})
    engine.dispose()
    with pytest.raises(SystemExit, match="holds data and was not made by a local stack"):
        local_stack.start(s3_port=free_port(), local_dir=local_dir)
    assert jobs(metadata_url) == 1


def stack_stores(stack, local_dir):
    return local_stack.Stores(local_dir / "s3", stack.env["T2M_DATABASE_URL"], stack.env["T2M_DAGSTER_PG_URL"], stack.dagster_home)
