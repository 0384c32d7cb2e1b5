"""Engine, transactions with retry on transient connection errors, database creation and a health check."""

from __future__ import annotations

import logging
from collections.abc import Callable
from functools import lru_cache
from typing import TypeVar

from sqlalchemy import Engine, create_engine, text
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.exc import DBAPIError, OperationalError
from tenacity import Retrying, retry_if_exception, stop_after_delay, wait_exponential_jitter

log = logging.getLogger(__name__)
T = TypeVar("T")


class DatabaseUnavailableError(RuntimeError):
    """The metadata database could not be reached (after retries)."""


def make_engine(url: str, *, pool_size: int = 5, max_overflow: int = 10) -> Engine:
    """Pooled engine: pre-ping drops dead connections after a restart or failover; recycle beats idle timeouts."""
    return create_engine(
        url,
        pool_size=pool_size,
        max_overflow=max_overflow,
        pool_pre_ping=True,
        pool_recycle=1800,
        pool_timeout=30,
        connect_args={"connect_timeout": 10, "application_name": "t2m_pipeline"},
    )


@lru_cache(maxsize=8)
def shared_engine(url: str) -> Engine:
    """One engine per URL per process, so resources and CLI commands share a pool."""
    return make_engine(url)


def is_transient(exc: BaseException) -> bool:
    """Connection-level failures worth retrying: a restart, failover, or dropped socket."""
    if isinstance(exc, DBAPIError) and exc.connection_invalidated:
        return True
    if isinstance(exc, OperationalError):
        message = str(exc.orig or exc).lower()
        return any(
            marker in message
            for marker in (
                "connection refused",
                "server closed the connection",
                "terminating connection",
                "connection is closed",
                "the database system is starting up",
                "the database system is shutting down",
                "could not connect",
                "connection timeout",
                "consuming input failed",
                "ssl syscall",
                "eof detected",
            )
        )
    return False


def _retrying(max_seconds: float) -> Retrying:
    return Retrying(
        retry=retry_if_exception(is_transient),
        wait=wait_exponential_jitter(initial=0.2, max=5.0),
        stop=stop_after_delay(max_seconds),
        reraise=True,
        before_sleep=lambda state: log.warning(
            "database unavailable (%s); retry %d", type(state.outcome.exception()).__name__, state.attempt_number
        ),
    )


def in_transaction(engine: Engine, work: Callable[[Connection], T], *, max_seconds: float = 60.0) -> T:
    """Run `work` in one transaction, re-running the whole transaction when the connection fails transiently.

    `work` must be safe to repeat: an aborted transaction left nothing behind.
    """

    def attempt() -> T:
        with engine.begin() as conn:
            return work(conn)

    try:
        # Retrying called, not applied as a decorator: tenacity's per-call decorator is a reference cycle that kept
        # `work`, what it holds and its result (a migration chunk's files) alive until the garbage collector ran
        return _retrying(max_seconds)(attempt)
    except (OperationalError, DBAPIError) as exc:
        if is_transient(exc):
            raise DatabaseUnavailableError(f"database {safe_url(engine.url)} unavailable: {exc.orig or exc}") from exc
        raise


def safe_url(url) -> str:
    """The URL with its password masked, for messages and logs."""
    return make_url(url).render_as_string(hide_password=True)


def health_check(engine: Engine) -> dict:
    """Reachable? Which Alembic revision? Never raises: the answer says what is wrong."""
    try:
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
            try:
                revision = conn.execute(text("SELECT version_num FROM alembic_version")).scalar()
            except DBAPIError:
                revision = None
        return {"reachable": True, "revision": revision, "error": None}
    except Exception as exc:  # noqa: BLE001 - a health check reports, it does not raise
        return {"reachable": False, "revision": None, "error": f"{type(exc).__name__}: {str(exc).splitlines()[0]}"}


def ensure_database(url: str) -> bool:
    """Create the database named in `url` when missing (connecting to `postgres`). Returns True if created."""
    target = make_url(url)
    name = target.database
    admin = create_engine(target.set(database="postgres"), isolation_level="AUTOCOMMIT", )
    try:
        with admin.connect() as conn:
            exists = conn.execute(text("SELECT 1 FROM pg_database WHERE datname = :n"), {"n": name}).scalar()
            if exists:
                return False
            quoted = conn.dialect.identifier_preparer.quote(name)
            conn.execute(text(f"CREATE DATABASE {quoted}"))
            return True
    finally:
        admin.dispose()


def drop_database(url: str) -> None:
    target = make_url(url)
    admin = create_engine(target.set(database="postgres"), isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            quoted = conn.dialect.identifier_preparer.quote(target.database)
            conn.execute(text(f"DROP DATABASE IF EXISTS {quoted} WITH (FORCE)"))
    finally:
        admin.dispose()
