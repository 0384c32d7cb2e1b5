"""`legacy_files` as several Dagster runs at once, each in a process of its own (as each run has its worker, on ECS
its task) on a PostgreSQL-backed instance as the daemon's, released together: four runs of four partitions, then two
runs of one partition. Every file ends with one copy and one row, each partition's materialization and verify
result are its own; the control (the partition lock off, the two runs meeting once both have planned) shows the
double upload the lock prevents. (Runs in threads of one process deadlock in Dagster's own logging set-up, which
reconfigures the process's logging per run: not how runs run.)"""

import contextlib
import multiprocessing
import threading
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass

import dagster as dg
import pytest
from sqlalchemy import text

from devtools.dagster_daemon import daemon_databases
from t2m_pipeline.defs.migration import assets as migration_assets
from t2m_pipeline.defs.migration.assets import MIGRATION_ASSETS, legacy_files, legacy_files_verified, legacy_redis_data, legacy_sources_catalog
from t2m_pipeline.defs.migration.resources import LegacySourcesResource
from t2m_pipeline.defs.resources import resources_for
from t2m_pipeline.migration import files_import
from t2m_pipeline.migration.discovery import discover_sources, partition_entries
from t2m_pipeline.migration.upload_shards import upload_shards
from t2m_pipeline.migration.legacy_paths import COPY_MARK

pytestmark = pytest.mark.e2e


@pytest.fixture
def instance(service_env):
    with daemon_databases("t2m_parallel") as (_, _, dagster_url):
        with dg.instance_for_test(overrides={"storage": {"postgres": {"postgres_url": dagster_url}}}) as instance:
            yield instance


def resources(settings, world) -> dict:
    return {**resources_for(settings), "legacy": LegacySourcesResource(legacy_root=str(world.root), redis_url=world.redis_url, workers=4)}


@dataclass(frozen=True)
class Outcome:
    """What one run's process saw of its run."""

    success: bool
    run_id: str
    materialized: list[tuple[str | None, int]]  # (partition, files) per legacy_files materialization
    checks: list[tuple[str | None, bool]]  # (partition, passed) per verify result


class _Meeting:
    """The runs' `fault` seam: once both have planned and written their intents, wait for the other (3 s at most)."""

    def __init__(self, barrier):
        self.barrier = barrier

    def __call__(self, stage: str) -> None:
        if stage == "after_intents":
            try:
                self.barrier.wait(3)
            except threading.BrokenBarrierError:
                pass  # locked, the other run waits for this one's lock: go on alone


_BARRIERS: dict = {}  # in a spawned process: "start" (every run), "meet" (the two runs of the control), or None


def _receive_barriers(start, meet) -> None:
    _BARRIERS.update(start=start, meet=meet)


def _run_in_own_process(ref, settings, root: str, redis_url: str, key: str, unlocked: bool = False) -> Outcome:
    """In a spawned process: one `legacy_files` run of `key`, started when every process is ready."""
    start, meet = _BARRIERS["start"], _BARRIERS["meet"]
    if unlocked:
        files_import.partitions_locked = lambda engine, partitions: contextlib.nullcontext()
    if meet is not None:
        seam = _Meeting(meet)

        class MeetingMigration(files_import.FilesMigration):
            def __init__(self, *args, **kwargs):
                super().__init__(*args, fault=seam, **kwargs)

        migration_assets.FilesMigration = MeetingMigration
    legacy = LegacySourcesResource(legacy_root=root, redis_url=redis_url, workers=4)
    with dg.DagsterInstance.from_ref(ref) as instance:
        start.wait(120)
        result = dg.materialize(
            [*MIGRATION_ASSETS, legacy_files_verified], selection=[legacy_files.key], partition_key=key,
            instance=instance, resources={**resources_for(settings), "legacy": legacy}, raise_on_error=False,
        )
        return Outcome(
            result.success,
            result.run_id,
            [
                (m.partition, m.metadata["files"].value)
                for m in result.asset_materializations_for_node(legacy_files.key.path[-1]) if m.asset_key == legacy_files.key
            ],
            [(c.partition, c.passed) for c in result.get_asset_check_evaluations()],
        )


def at_once(instance, settings, world, keys: list[str], meet: bool = False, unlocked: bool = False) -> list[Outcome]:
    """One `legacy_files` run per key, each in a spawned process, all released together."""
    context = multiprocessing.get_context("spawn")
    barriers = (context.Barrier(len(keys)), context.Barrier(2) if meet else None)
    with ProcessPoolExecutor(len(keys), mp_context=context, initializer=_receive_barriers, initargs=barriers) as pool:
        pending = [
            pool.submit(_run_in_own_process, instance.get_ref(), settings, str(world.root), world.redis_url, key, unlocked)
            for key in keys
        ]
        return [future.result(300) for future in pending]


def uploads_per_place(engine) -> dict[tuple[str, str], int]:
    """file_metadata rows per (legacy file, key): a copy for a job is another key; two rows on one key, two uploads."""
    with engine.connect() as conn:
        rows = conn.execute(text("SELECT metadata->>'legacy_path', s3_key FROM file_metadata WHERE metadata ? 'legacy_path'")).all()
    counts: dict[tuple[str, str], int] = {}
    for path, key in rows:
        counts[(path, key)] = counts.get((path, key), 0) + 1
    return counts


def files_in_ledger(engine, partition: str) -> int:
    """The partition's ledger rows for legacy files (not for the copies a file gets for other jobs)."""
    with engine.connect() as conn:
        return conn.execute(
            text("SELECT count(*) FROM migration_ledger WHERE partition_key = :p AND strpos(legacy_path, :copy) = 0"),
            {"p": partition, "copy": COPY_MARK},
        ).scalar_one()


def test_four_runs_of_four_partitions_at_once_then_two_runs_of_one(world, migration_db, buckets, instance):
    settings, engine = migration_db
    assert dg.materialize([legacy_redis_data, legacy_sources_catalog], instance=instance, resources=resources(settings, world)).success
    shards = upload_shards(engine, world.root)
    sources = discover_sources(world.root, shards)
    four = [p for p in sources if p.startswith(("topic/", "loose"))][:4]
    assert len(four) == 4
    runs = at_once(instance, settings, world, four)
    assert [r.success for r in runs] == [True] * 4 and len({r.run_id for r in runs}) == 4
    assert uploads_per_place(engine) and set(uploads_per_place(engine).values()) == {1}
    for key, run in zip(four, runs):  # each run's materialization and verify result are its partition's
        files = len(partition_entries(world.root, key, shards))
        assert run.materialized == [(key, files)] and files == files_in_ledger(engine, key)
        assert run.checks == [(key, True)]

    one = next(p for p in sources if p not in four and partition_entries(world.root, p, shards))
    both = at_once(instance, settings, world, [one, one])
    assert [r.success for r in both] == [True, True]
    files = len(partition_entries(world.root, one, shards))
    assert [r.materialized for r in both] == [[(one, files)]] * 2 and [r.checks for r in both] == [[(one, True)]] * 2
    assert set(uploads_per_place(engine).values()) == {1}  # the second run found the first's work: no second upload
    assert files_in_ledger(engine, one) == len(partition_entries(world.root, one, shards)) > 0  # no ledger row lost


@pytest.mark.parametrize("locked", [True, False], ids=["locked", "control-unlocked"])
def test_two_runs_of_one_partition_that_meet_after_planning(world, migration_db, buckets, instance, locked):
    settings, engine = migration_db
    assert dg.materialize([legacy_redis_data, legacy_sources_catalog], instance=instance, resources=resources(settings, world)).success
    one = f"topic/{world.slug_shared}"
    both = at_once(instance, settings, world, [one, one], meet=True, unlocked=not locked)
    assert [r.success for r in both] == [True, True]
    doubled = {place: n for place, n in uploads_per_place(engine).items() if n > 1}
    assert (doubled == {}) is locked, doubled
