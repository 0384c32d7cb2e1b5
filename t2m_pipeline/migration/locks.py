"""Runs of the files migration that touch the same legacy partition take turns; runs of different partitions run at
once (a backfill's runs, one per group of partitions, each an ECS task in production).

Without this, two runs of one partition both planned the same files, both wrote their intents and both uploaded:
two versions and two `file_metadata` rows for one file. PostgreSQL advisory locks, held by a connection of the run's
own for as long as the run: an exclusive lock per partition, under a shared lock on the whole tree, which a run
over every partition takes exclusively (one lock, however many partitions the tree has). A run that dies loses its
connection and with it its locks; a connection lost to a database restart does the same, so during that window the
run goes on unguarded (its intents still make a rerun adopt, not duplicate, what it wrote).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

from sqlalchemy import Engine, text
from sqlalchemy.exc import SQLAlchemyError

log = logging.getLogger(__name__)

TREE = "t2m:legacy_files:tree"
PARTITION = "t2m:legacy_files:partition"


@contextmanager
def partitions_locked(engine: Engine, partitions: Sequence[str] | None) -> Iterator[None]:
    """Wait for, then hold, the locks of `partitions` (None: the whole tree) until the block ends."""
    conn = engine.connect().execution_options(isolation_level="AUTOCOMMIT")  # no transaction held for hours
    try:
        if partitions is None:
            conn.execute(text("SELECT pg_advisory_lock(hashtext(:ns), 0)"), {"ns": TREE})
        else:
            conn.execute(text("SELECT pg_advisory_lock_shared(hashtext(:ns), 0)"), {"ns": TREE})
            for key in sorted(set(partitions)):  # one order for every run: no deadlock between two of them
                conn.execute(text("SELECT pg_advisory_lock(hashtext(:ns), hashtext(:k))"), {"ns": PARTITION, "k": key})
        yield
    finally:
        try:
            conn.execute(text("SELECT pg_advisory_unlock_all()"))  # the pooled connection must not keep them
        except SQLAlchemyError as exc:  # the connection is gone (a restart): so are its locks
            log.warning("could not release the migration's partition locks (%s); the connection held them", type(exc).__name__)
        finally:
            conn.close()
