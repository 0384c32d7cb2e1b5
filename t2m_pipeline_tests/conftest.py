"""Real services for the tests: the local S3 server (`devtools.local_s3`, in memory) on a free loopback port, a throwaway PostgreSQL database.

Both are set in the environment before any test imports settings, so subprocesses (manim renders, the Dagster
daemon, the CLI) see the same endpoint and database.
"""

from __future__ import annotations

import os
import uuid

import pytest

from devtools.local_s3 import start_local_s3

# A test that reaches any of these fixtures (directly or through others) needs a service on this machine.
SERVICE_FIXTURES = frozenset({"service_env", "redis_db"})


def pytest_collection_modifyitems(config, items):
    """Each test gets its tier: e2e where marked, service when it reaches a service fixture, unit otherwise."""
    for item in items:
        if item.get_closest_marker("e2e"):
            continue
        item.add_marker(pytest.mark.service if SERVICE_FIXTURES & set(getattr(item, "fixturenames", ())) else pytest.mark.unit)


from devtools.dagster_daemon import ADMIN_URL  # noqa: E402 - one name for the admin database


@pytest.fixture
def fake_aws_credentials(monkeypatch):
    """Credentials for a local endpoint, for a unit test that runs without `service_env` having set them."""
    for name, value in (("AWS_ACCESS_KEY_ID", "testing"), ("AWS_SECRET_ACCESS_KEY", "testing"), ("AWS_REGION", "us-east-1")):
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("AWS_PROFILE", raising=False)


@pytest.fixture(scope="session")
def service_env(tmp_path_factory):
    """Environment for the whole run: local S3 endpoint, throwaway database, no real AWS credentials."""
    from t2m_pipeline.db.engine import drop_database
    from t2m_pipeline.db.migrate import upgrade

    logs = tmp_path_factory.mktemp("service-logs")
    local_s3 = start_local_s3(logs)
    endpoint = local_s3.endpoint
    db_name = f"t2m_test_{uuid.uuid4().hex[:12]}"
    db_url = ADMIN_URL.rsplit("/", 1)[0] + "/" + db_name
    env = {
        "AWS_ENDPOINT_URL": endpoint,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_REGION": "us-east-1",
        "AWS_DEFAULT_REGION": "us-east-1",
        "T2M_ENV": "dev",
        "T2M_DATABASE_URL": db_url,
        "T2M_MULTIPART_THRESHOLD_MIB": "5",
        "T2M_LOCAL_STACK_FILE": "",  # a developer's running `make dev` never leaks into the tests
    }
    for drop in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ACCOUNT_ID", "T2M_REDIS_URL"):
        os.environ.pop(drop, None)
    os.environ.update(env)
    upgrade(db_url)
    yield env
    local_s3.stop()
    from t2m_pipeline.db.engine import shared_engine

    shared_engine.cache_clear()
    drop_database(db_url)


@pytest.fixture(scope="session")
def settings(service_env):
    from t2m_pipeline.config import load_settings

    return load_settings()


@pytest.fixture(scope="session")
def engine(settings):
    from t2m_pipeline.db.engine import make_engine

    eng = make_engine(settings.database_url)
    yield eng
    eng.dispose()


@pytest.fixture(scope="session")
def buckets(settings):
    """The four buckets, bootstrapped once per run with their declared settings."""
    from t2m_pipeline.storage.bootstrap import bootstrap_bucket
    from t2m_pipeline.storage.bucket_settings import declared_buckets
    from t2m_pipeline.storage.s3 import make_s3_client

    client = make_s3_client(settings)
    for spec in declared_buckets(settings):
        bootstrap_bucket(client, spec, settings.region)
    return settings.buckets


@pytest.fixture
def storage(settings, engine, buckets):
    from t2m_pipeline.storage.s3 import S3Storage

    return S3Storage(settings, engine)


@pytest.fixture
def make_user(engine):
    """Create a user row; returns (users.id, clerk id)."""
    from t2m_pipeline.db.engine import in_transaction
    from t2m_pipeline.db.users import ensure_user

    def make(clerk_id: str | None = None, email: str = "someone@example.com"):
        clerk_id = clerk_id or f"user_{uuid.uuid4().hex[:16]}"
        return in_transaction(engine, lambda conn: ensure_user(conn, clerk_id, email)), clerk_id

    return make


# The legacy worlds' fixtures, defined once for the whole run: a module importing them would define its own
# session-scoped `redis_db`, and each would claim one of the few Redis databases (5..15) until the run ends.
from t2m_pipeline_tests.migration.legacy_world import migration_db, mp4s, redis_db, world  # noqa: E402,F401
from t2m_pipeline_tests.migration.ownership_world import ownership_world  # noqa: E402,F401
