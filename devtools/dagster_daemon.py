"""A Dagster daemon of one's own: its databases, and stopping its whole process group. Shared by the daemon tests,
the fault scenarios and the latency benchmark."""

from __future__ import annotations

import os
import signal
import subprocess
import time
import uuid
from contextlib import contextmanager

# The PostgreSQL server's admin database, where databases of one's own are created and dropped.
ADMIN_URL = os.environ.get("T2M_TEST_ADMIN_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")


@contextmanager
def daemon_databases(prefix: str):
    """A metadata database and a Dagster storage database of their own, for a daemon or scenario whose sensors claim
    every queued job they see: (engine, metadata URL, psycopg2 URL for Dagster). Dropped afterwards."""
    from t2m_pipeline.db.engine import drop_database, ensure_database, make_engine
    from t2m_pipeline.db.migrate import upgrade

    suffix = uuid.uuid4().hex[:10]
    base = ADMIN_URL.rsplit("/", 1)[0]
    metadata_url, dagster_url = f"{base}/{prefix}_meta_{suffix}", f"{base}/{prefix}_dagster_{suffix}"
    upgrade(metadata_url)
    ensure_database(dagster_url)
    engine = make_engine(metadata_url)
    try:
        yield engine, metadata_url, dagster_url.replace("postgresql+psycopg://", "postgresql+psycopg2://")
    finally:
        engine.dispose()
        drop_database(metadata_url)
        drop_database(dagster_url)


def stop_process_group(proc: subprocess.Popen, timeout: float = 30, grace: float = 10) -> None:
    """SIGTERM to the daemon's process group (it shuts its code server down), SIGKILL if it lingers. The code server
    outlives a SIGTERM while it has a run in progress (it waits for it), and cannot finish once the test's databases
    are gone: whatever is left of the group after `grace` seconds is killed."""
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            pass
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        try:
            os.killpg(proc.pid, 0)
        except ProcessLookupError:
            break  # the whole group is gone
        time.sleep(0.2)
    else:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    if proc.poll() is None:
        proc.wait(10)
