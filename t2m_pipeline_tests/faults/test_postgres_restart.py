"""The metadata database restarts mid-run: the pool recovers, nothing is lost or doubled; without the retry, the
outage reaches the caller; without pre-ping, a pooled connection the restart killed does.

The restarts happen on a private PostgreSQL cluster (`PrivatePostgres`), never on the machine's shared server.
"""

import pytest
from sqlalchemy import create_engine, text

from t2m_pipeline.db.engine import DatabaseUnavailableError, in_transaction, make_engine
from t2m_pipeline.db.job_state import apply_transition
from t2m_pipeline.db.migrate import upgrade
from devtools.private_postgres import PrivatePostgres
from t2m_pipeline_tests.faults.scenarios import run_restart_scenario


@pytest.fixture(scope="module")
def cluster():
    with PrivatePostgres() as pg:
        yield pg


@pytest.fixture(scope="module")
def database_url(cluster):
    url = cluster.url("t2m_restart")
    upgrade(url)
    return url


@pytest.mark.slow
def test_a_restart_mid_run_loses_and_doubles_nothing(cluster, database_url, fault_settings):
    report = run_restart_scenario(cluster, fault_settings, database_url, restarts=2, iterations_between=6, outage_seconds=1.0)
    assert report.errors == []
    assert report.problems == []
    assert report.restarts == 2
    assert report.db_retries >= 2  # the loop did hit each outage and retried through it
    assert report.iterations >= 3 * 6


def test_without_retry_the_outage_reaches_the_caller(cluster, database_url, fault_settings):
    def transition_without_retry(engine, job_id, status, **changes):
        return in_transaction(engine, lambda conn: apply_transition(conn, job_id, status, **changes), max_seconds=0)

    report = run_restart_scenario(
        cluster, fault_settings, database_url, restarts=1, iterations_between=4, outage_seconds=1.0,
        transition=transition_without_retry, write_objects=False,
    )
    assert report.restarts == 1
    assert len(report.errors) == 1 and "DatabaseUnavailableError" in report.errors[0]


def test_pre_ping_replaces_connections_a_restart_killed(cluster, database_url):
    """After a restart (server up again), a pooled connection is dead: pre-ping swaps it silently; without
    pre-ping and without the retry, the first transaction fails."""
    with_ping = make_engine(database_url, pool_size=1, max_overflow=0)
    without_ping = create_engine(database_url, pool_size=1, max_overflow=0, pool_pre_ping=False)
    try:
        for engine in (with_ping, without_ping):
            with engine.connect() as conn:
                conn.execute(text("SELECT 1"))  # one warm connection in each pool
        before = in_transaction(with_ping, lambda c: c.execute(text("SELECT pg_backend_pid()")).scalar(), max_seconds=0)
        cluster.restart()
        after = in_transaction(with_ping, lambda c: c.execute(text("SELECT pg_backend_pid()")).scalar(), max_seconds=0)
        assert after != before
        with pytest.raises(DatabaseUnavailableError):
            in_transaction(without_ping, lambda c: c.execute(text("SELECT 1")).scalar(), max_seconds=0)
        # the retry alone also gets through it (the dead connection is invalidated, the next attempt reconnects)
        cluster.restart()
        assert in_transaction(without_ping, lambda c: c.execute(text("SELECT 1")).scalar(), max_seconds=30) == 1
    finally:
        with_ping.dispose()
        without_ping.dispose()
