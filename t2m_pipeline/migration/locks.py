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
    waited = False

    def take(kind: str, ns: str, key: str | None, what: str) -> None:
        nonlocal waited
        second = "hashtext(:k)" if key is not None else "0"
        args = {"ns": ns, "k": key}
        if not conn.execute(text(f"SELECT pg_try_advisory_{kind}(hashtext(:ns), {second})"), args).scalar():
            if not waited:  # said once, so a run that seems stuck says why
                log.warning("waiting for another files-migration run of %s to finish", what)
                waited = True
            conn.execute(text(f"SELECT pg_advisory_{kind}(hashtext(:ns), {second})"), args)

    try:
        if partitions is None:
            take("lock", TREE, None, "the legacy tree")
        else:
            take("lock_shared", TREE, None, "the whole legacy tree")
            for key in sorted(set(partitions)):  # one order for every run: no deadlock between two of them
                take("lock", PARTITION, key, f"partition {key}")
        yield
    finally:
        try:
            conn.execute(text("SELECT pg_advisory_unlock_all()"))  # the pooled connection must not keep them
        except SQLAlchemyError as exc:  # the connection is gone (a restart): so are its locks
            log.warning("could not release the migration's partition locks (%s); the connection held them", type(exc).__name__)
        finally:
            conn.close()
