"""Runs of the files migration at once: different partitions in parallel, one partition's runs in turn (one copy and
one row per file), against the real PostgreSQL and the local S3 server."""

import contextlib
import threading

import pytest

from t2m_pipeline.migration import files_import
from t2m_pipeline.migration.discovery import discover_sources
from t2m_pipeline.migration.upload_shards import upload_shards
from t2m_pipeline.migration.files_import import FilesMigration
from t2m_pipeline_tests.migration.test_files_import import file_rows, ledger, migrated_redis  # noqa: F401 - fixture


def run_at_once(settings, engine, root, partition_sets, fault) -> list[BaseException]:
    errors: list[BaseException] = []

    def run(partitions):
        try:
            FilesMigration(settings, engine, root, workers=4, fault=fault).run(partitions)
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(p,)) for p in partition_sets]
    for t in threads:
        t.start()
    for t in threads:
        t.join(180)
    return errors


def copies_per_file(engine) -> dict:
    """file_metadata rows per (legacy file, key): a copy for a job is another key; two rows on one key are two uploads."""
    rows: dict = {}
    for r in file_rows(engine).values():
        rows.setdefault((r.metadata["legacy_path"], r.s3_key), []).append(r.version_id)
    return rows


def test_four_runs_of_different_partitions_hold_their_locks_at_once(world, migrated_redis, buckets):
    settings, engine = migrated_redis
    four = [[p] for p in discover_sources(world.root, upload_shards(engine, world.root)) if p.startswith(("topic/", "loose"))][:4]
    assert len(four) == 4
    together = threading.Barrier(4)
    errors = run_at_once(settings, engine, world.root, four, lambda stage: together.wait(60) if stage == "locked" else None)
    assert errors == []  # had one waited for another's lock, the barrier would have broken
    assert all(len(versions) == 1 for versions in copies_per_file(engine).values())


@pytest.mark.parametrize("locked", [True, False], ids=["locked", "control-unlocked"])
def test_two_runs_of_one_partition_end_with_one_copy_and_one_row_per_file(world, migrated_redis, buckets, monkeypatch, locked):
    settings, engine = migrated_redis
    if not locked:
        monkeypatch.setattr(files_import, "partitions_locked", lambda engine, partitions: contextlib.nullcontext())
    both = threading.Barrier(2)

    def meet_after_intents(stage):  # without the lock both runs have planned and written intents: both upload
        if stage == "after_intents":
            try:
                both.wait(3)
            except threading.BrokenBarrierError:
                pass  # with the lock the other run waits for this one: go on alone

    one = f"topic/{world.slug_shared}"
    assert run_at_once(settings, engine, world.root, [[one], [one]], meet_after_intents) == []
    doubled = {k: v for k, v in copies_per_file(engine).items() if len(v) > 1}
    assert (doubled == {}) is locked, doubled
    if locked:
        assert {r.outcome for r in ledger(engine).values() if r.partition_key == one} <= {"migrated", "skipped", "unsafe"}


def test_a_run_that_waits_for_another_says_so_once(migration_db, caplog):
    from t2m_pipeline.migration.locks import partitions_locked

    _, engine = migration_db
    with partitions_locked(engine, ["topic/a", "topic/b"]):
        with caplog.at_level("WARNING", logger="t2m_pipeline.migration.locks"):
            done = threading.Event()

            def whole_tree():
                with partitions_locked(engine, None):
                    done.set()

            waiter = threading.Thread(target=whole_tree)
            waiter.start()
            assert not done.wait(1.5)  # the whole-tree run waits for the partition run
    waiter.join(10)
    assert done.is_set()
    said = [r.getMessage() for r in caplog.records if r.name == "t2m_pipeline.migration.locks"]
    assert said == ["waiting for another files-migration run of the legacy tree to finish"]
