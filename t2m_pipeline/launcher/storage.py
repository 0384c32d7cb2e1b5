"""Dagster's PostgreSQL storage, keeping its connections open between calls.

dagster-postgres opens a new connection for every storage call (SQLAlchemy's NullPool) in every process but its
webserver: creating one `render_scenes` run opened about 140 (its planned events resolve the run's partition range
once per asset and per check, a few queries each), and each event a run stores opened one more. On the 2-core
machine that made `create_run` 8x slower than with a pool (`benchmarks/create_run_bench.py`), and a job pays it in
its plan run's handoff, between its outline and its scenes.

This is the same storage (`dagster_postgres.DagsterPostgresStorage`: its tables, its configuration) whose run and
event-log storages use pooled engines like the ones Dagster's webserver switches to (`optimize_for_webserver`): one
connection kept per storage in each process that opens the instance (daemon, run workers, webserver), more while
threads need them. Each checkout is pinged first (`pool_pre_ping`), so a database restart or failover costs a
reconnect, as it did without the pool, never a failed write. The instance's `dispose` closes them. The schedule
storage (sensor and schedule state, which the instance does not dispose) keeps Dagster's one connection per call.
"""

from __future__ import annotations

from typing import Any

from dagster_postgres import DagsterPostgresStorage
from dagster_postgres.event_log import PostgresEventLogStorage
from dagster_postgres.run_storage import PostgresRunStorage
from dagster_postgres.schedule_storage import PostgresScheduleStorage
from dagster_postgres.utils import create_pg_engine, get_token_provider_from_config, pg_url_from_config
from sqlalchemy.engine import make_url

POOL_SIZE = 1  # kept open per storage in each process
MAX_OVERFLOW = 20  # more while threads (the daemon's, a scenes step's) need them, closed when given back
POOL_RECYCLE_S = 3600  # under RDS's idle timeouts
PRE_PING = True  # a connection the server dropped (a restart) is replaced at checkout, not failed on


def pooled_engine(postgres_url: str, token_provider) -> Any:
    """A pooled engine for the storage's database, autocommit as Dagster's own (the URL's `options` go to each
    connection, as `optimize_for_webserver` passes them)."""
    kwargs: dict[str, Any] = {
        "isolation_level": "AUTOCOMMIT",
        "pool_size": POOL_SIZE,
        "max_overflow": MAX_OVERFLOW,
        "pool_recycle": POOL_RECYCLE_S,
        "pool_pre_ping": PRE_PING,
    }
    options = make_url(postgres_url).query.get("options")
    if options:
        kwargs["connect_args"] = {"options": options}
    return create_pg_engine(postgres_url, token_provider, **kwargs)


class _Pooled:
    """A dagster-postgres storage whose engine keeps its connections (see the module's note)."""

    _engine: Any

    def __init__(self, postgres_url: str, should_autocreate_tables: bool = True, inst_data=None, token_provider=None):
        super().__init__(postgres_url, should_autocreate_tables, inst_data, token_provider)  # type: ignore[call-arg]
        shipped, self._engine = self._engine, pooled_engine(postgres_url, token_provider)
        shipped.dispose()

    def optimize_for_webserver(self, statement_timeout: int, pool_recycle: int, max_overflow: int) -> None:
        self._engine.dispose()  # the webserver's own pool replaces ours
        super().optimize_for_webserver(statement_timeout, pool_recycle, max_overflow)  # type: ignore[misc]

    def dispose(self) -> None:
        super().dispose()  # type: ignore[misc]
        self._engine.dispose()


class PooledRunStorage(_Pooled, PostgresRunStorage):
    pass


class PooledEventLogStorage(_Pooled, PostgresEventLogStorage):
    pass


class PooledPostgresStorage(DagsterPostgresStorage):
    """`storage: custom:` in dagster.yaml, configured as the `postgres:` storage is."""

    def __init__(self, postgres_url: str, should_autocreate_tables: bool = True, inst_data=None, token_provider=None):
        self.postgres_url = postgres_url
        self.should_autocreate_tables = should_autocreate_tables
        self._inst_data = inst_data
        self._run_storage = PooledRunStorage(postgres_url, should_autocreate_tables, token_provider=token_provider)
        self._event_log_storage = PooledEventLogStorage(postgres_url, should_autocreate_tables, token_provider=token_provider)
        self._schedule_storage = PostgresScheduleStorage(postgres_url, should_autocreate_tables, token_provider=token_provider)
        super(DagsterPostgresStorage, self).__init__()

    @classmethod
    def from_config_value(cls, inst_data, config_value) -> PooledPostgresStorage:
        return cls(
            inst_data=inst_data,
            postgres_url=pg_url_from_config(config_value),
            should_autocreate_tables=config_value.get("should_autocreate_tables", True),
            token_provider=get_token_provider_from_config(config_value),
        )
