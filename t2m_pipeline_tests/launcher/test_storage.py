"""PooledPostgresStorage: the project's Dagster storage keeps its connections (Dagster's own postgres storage, the
control, opens one per call), survives a server restart (control: no ping on checkout), and closes them on dispose."""

from pathlib import Path

import dagster as dg
import psycopg2
import pytest
import yaml
from sqlalchemy import text

from devtools.private_postgres import PrivatePostgres
from t2m_pipeline.db.engine import ensure_database, make_engine
from t2m_pipeline.launcher import storage as pooled

PROJECT = yaml.safe_load((Path(__file__).resolve().parents[2] / "dagster.yaml").read_text())["storage"]
DAGSTERS_OWN = {"postgres": PROJECT["custom"]["config"]}


@pytest.fixture
def dagster_url(monkeypatch):
    from devtools.dagster_daemon import daemon_databases

    with daemon_databases("t2m_storage") as (_, _, url):
        monkeypatch.setenv("T2M_DAGSTER_PG_URL", url)
        yield url


def instance_with(storage: dict, home: Path) -> dg.DagsterInstance:
    home.mkdir(exist_ok=True)
    (home / "dagster.yaml").write_text(yaml.safe_dump({"storage": storage, "telemetry": {"enabled": False}}))
    return dg.DagsterInstance.from_config(str(home))


def storage_calls(instance: dg.DagsterInstance, n: int) -> None:
    for _ in range(n):
        instance.has_dynamic_partition("scenes", "u/j/001")
        instance.get_run_records(limit=1)


@pytest.mark.parametrize("storage", ["project", "control-dagsters-own"])
def test_the_projects_storage_keeps_its_connections(dagster_url, storage, tmp_path, monkeypatch):
    with instance_with(PROJECT if storage == "project" else DAGSTERS_OWN, tmp_path / "home") as instance:
        instance.add_dynamic_partitions("scenes", ["u/j/001"])
        storage_calls(instance, 1)  # each storage's first connection
        opened = []
        connect = psycopg2.connect
        monkeypatch.setattr(psycopg2, "connect", lambda *a, **k: opened.append(1) or connect(*a, **k))
        storage_calls(instance, 20)
        monkeypatch.undo()
    if storage == "project":
        assert isinstance(instance.run_storage, pooled.PooledRunStorage)
        assert len(opened) == 0  # the connections its first calls opened serve the next 40
    else:
        assert len(opened) >= 40  # one per call (and more for the event log's table checks)


def test_dispose_closes_the_connections(dagster_url, tmp_path):
    database = dagster_url.rsplit("/", 1)[1]
    watcher = make_engine(dagster_url.replace("+psycopg2", "+psycopg"))

    def sessions() -> int:
        with watcher.connect() as conn:
            return conn.execute(text("SELECT count(*) FROM pg_stat_activity WHERE datname = :d AND pid <> pg_backend_pid()"),
                                {"d": database}).scalar_one()

    try:
        with instance_with(PROJECT, tmp_path / "home") as instance:
            storage_calls(instance, 3)
            assert sessions() >= 1  # kept open while the instance lives
        assert sessions() == 0
    finally:
        watcher.dispose()


@pytest.mark.parametrize("ping", [True, False], ids=["pinged", "control-no-ping"])
def test_a_server_restart_costs_a_reconnect_not_a_failed_call(tmp_path, monkeypatch, ping):
    monkeypatch.setattr(pooled, "PRE_PING", ping)
    with PrivatePostgres() as cluster:
        url = cluster.url("dagster").replace("+psycopg:", "+psycopg2:")
        ensure_database(url.replace("+psycopg2", "+psycopg"))
        monkeypatch.setenv("T2M_DAGSTER_PG_URL", url)
        with instance_with(PROJECT, tmp_path / "home") as instance:
            storage_calls(instance, 2)
            cluster.restart()  # every session ends; the pool still holds its connections
            if ping:
                storage_calls(instance, 2)
            else:
                with pytest.raises(Exception, match="terminat|closed|connection"):
                    storage_calls(instance, 1)
