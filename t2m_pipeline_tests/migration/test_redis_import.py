"""Legacy Redis -> PostgreSQL against the real Redis (a db of our own) and a scratch PostgreSQL database."""

import json
import uuid
from datetime import datetime, timezone
from decimal import Decimal

import pytest
import redis
from sqlalchemy import text

from t2m_pipeline.migration import redis_import
from t2m_pipeline.migration.batches import created_rows
from t2m_pipeline.migration.redis_import import migrate_redis
from t2m_pipeline.migration.rollback import RollbackError, rollback_batch


def client(url):
    return redis.Redis.from_url(url, decode_responses=False)


def snapshot(engine) -> dict:
    tables = {
        "users": "id", "jobs": "id", "job_queue": "id", "migration_quarantine": "id",
        "migration_legacy_records": "source_key", "file_metadata": "id", "migration_ledger": "id",
    }
    with engine.connect() as conn:
        return {
            t: conn.execute(text(f"SELECT to_jsonb(x) FROM {t} x ORDER BY {pk}")).scalars().all() for t, pk in tables.items()
        }


def job(engine, job_id):
    with engine.connect() as conn:
        return conn.execute(
            text("SELECT j.*, u.clerk_user_id FROM jobs j JOIN users u ON u.id = j.user_id WHERE j.id = :i"), {"i": job_id}
        ).mappings().one_or_none()


def test_jobs_users_queue_records_and_quarantine(world, migration_db):
    settings, engine = migration_db
    report = migrate_redis(engine, client(world.redis_url), flush_every=3)  # small flushes: many batches
    j = world.jobs

    old = job(engine, j["old"])
    assert old["status"] == "completed" and old["clerk_user_id"] == world.clerks["alice"]
    assert old["created_at"] == datetime(2024, 1, 1, 9, tzinfo=timezone.utc)
    assert old["updated_at"] == datetime(2024, 1, 1, 10, 0, 0, 123456, tzinfo=timezone.utc)
    assert old["progress_percentage"] == Decimal("100.00") and old["metrics"] == {"cpu_usage_percent": 50.0}
    assert old["configuration"]["topic"].startswith("Pythagorean") and old["configuration"]["legacy"]["redis_key"] == f"jobs:{j['old']}"
    assert old["description"] == f"About {old['topic']}"
    new = job(engine, j["new"])  # the hash form, JobStatus.* enums, ISO T timestamps
    assert (new["status"], new["priority"]) == ("completed", "high")
    assert new["updated_at"] == datetime(2024, 2, 1, 9, 30, 0, 500000, tzinfo=timezone.utc)
    busy = job(engine, j["processing"])  # missing priority and job_type: defaults
    # processing in the legacy system: held here, nothing runs it; the legacy status and times kept for attribution
    assert (busy["priority"], busy["job_type"], busy["status"]) == ("normal", "video_generation", "held")
    assert busy["configuration"]["legacy"]["status"] == "processing"
    assert busy["configuration"]["legacy"]["started_at"] == "2024-01-06T10:00:00.000006+00:00"
    assert job(engine, j["queued"])["status"] == "held" and old["configuration"]["legacy"]["status"] == "completed"
    assert busy["started_at"] == datetime(2024, 1, 6, 10, 0, 0, 6, tzinfo=timezone.utc)
    deleted = job(engine, j["deleted"])
    assert deleted["is_deleted"] and deleted["deleted_at"] is not None
    failed = job(engine, j["noupdated"])
    assert failed["updated_at"] == failed["created_at"] and failed["error_info"]["error_code"] == "RENDER"

    with engine.connect() as conn:
        users = {r.clerk_user_id: r for r in conn.execute(text("SELECT clerk_user_id, email, metadata FROM users"))}
        queue = conn.execute(text("SELECT job_id, queue_position, priority, status FROM job_queue ORDER BY queue_position")).all()
        quarantined = {r.source_key: r for r in conn.execute(text("SELECT source_key, reason, raw_payload FROM migration_quarantine"))}
        records = {r.source_key: r.kind for r in conn.execute(text("SELECT source_key, kind FROM migration_legacy_records"))}
    # a user per Clerk id found anywhere (erin only appears as a set name); email empty and said so
    assert {world.clerks[n] for n in ("alice", "bob", "carol", "dave", "erin")} <= set(users)
    assert all(u.email == "" and u.metadata["email_unknown"] is True for u in users.values())
    # queue: legacy order, duplicate collapsed, deleted/finished not queued, the unlisted queued job appended; every
    # row held like its job (the new_jobs sensor takes none of them)
    assert [str(q.job_id) for q in queue] == [j["queued"], j["processing"], j["unlisted"]]
    assert queue[0].queue_position == 1 and queue[0].priority == "urgent" and {q.status for q in queue} == {"held"}
    assert report["queue_duplicates_collapsed"] == 1 and report["queue_missing_job_ids"] == [world.missing_queue_id]
    assert f"job_queue:{world.missing_queue_id}" in quarantined and "job_queue[6]" in quarantined
    # every bad record quarantined with its raw payload and a reason
    assert world.expected_quarantine <= set(quarantined)
    reasons = " | ".join(quarantined[k].reason for k in world.expected_quarantine)
    for fragment in ("malformed JSON", "missing required field user_id", "unknown status value 'exploded'", "bad UUID",
                     "wrong Redis type", "outside 0..100", "bad UUID in batch_id", "not valid UTF-8"):
        assert fragment in reasons
    assert b"{not json" in [q.raw_payload for q in quarantined.values()]
    # the other durable records kept verbatim
    assert {f"videos:job_{j['old']}", f"user_files:{world.clerks['carol']}", "job_queue"} <= set(records)
    assert records[f"files:{world.upload_ids['ok']}"] == "file"
    assert report["cache_keys_not_migrated"] == {"job_status": 1, "queue": 1, "cache": 2, "file_cache": 1, "rate_limit": 1, "pipeline": 1}
    assert report["jobs_inserted"] == 7


def test_rerun_changes_nothing_and_newer_rows_are_never_overwritten(world, migration_db):
    settings, engine = migration_db
    r = client(world.redis_url)
    migrate_redis(engine, r)
    # the new system moves a job on; the legacy record is older
    with engine.begin() as conn:
        conn.execute(text("UPDATE jobs SET status = 'queued', updated_at = now() WHERE id = :i"), {"i": world.jobs["queued"]})
    before = snapshot(engine)
    again = migrate_redis(engine, r)
    assert snapshot(engine) == before
    assert (again["jobs_inserted"], again["jobs_updated"], again["users_inserted"], again["quarantine_new"]) == (0, 0, 0, 0)
    assert again["jobs_kept_newer"] == 1

    # a legacy record updated later than the row is carried over, exactly once
    record = json.loads(r.get(f"jobs:{world.jobs['old']}"))
    record["status"], record["updated_at"] = "failed", "2025-01-01 00:00:00"
    r.set(f"jobs:{world.jobs['old']}", json.dumps(record))
    third = migrate_redis(engine, r)
    assert third["jobs_updated"] == 1 and job(engine, world.jobs["old"])["status"] == "failed"


def test_rollback_restores_the_previous_state_exactly(world, migration_db):
    settings, engine = migration_db
    r = client(world.redis_url)
    empty = snapshot(engine)
    first = migrate_redis(engine, r)
    after_first = snapshot(engine)
    # batch 2 changes one job and adds a new one
    record = json.loads(r.get(f"jobs:{world.jobs['old']}"))
    record["updated_at"] = "2025-06-01 00:00:00"
    record["progress"]["percentage"] = 55
    r.set(f"jobs:{world.jobs['old']}", json.dumps(record))
    extra = str(uuid.uuid4())
    r.set(f"jobs:{extra}", json.dumps({**record, "id": extra, "user_id": "user_newcomer"}))
    second = migrate_redis(engine, r)
    assert second["jobs_inserted"] == 1 and second["jobs_updated"] == 1 and second["users_inserted"] == 1

    with pytest.raises(RollbackError, match="changed since"):
        rollback_batch(settings, engine, first["batch_id"])  # batch 2 touched its rows: refused, nothing changed
    undone = rollback_batch(settings, engine, second["batch_id"])
    assert undone["rows_deleted"]["jobs"] == 1 and undone["rows_restored"]["jobs"] == 1
    assert snapshot(engine) == after_first
    with pytest.raises(RollbackError, match="already rolled back"):
        rollback_batch(settings, engine, second["batch_id"])
    rollback_batch(settings, engine, first["batch_id"])
    assert snapshot(engine) == empty


def test_jobs_per_second_path_uses_batches_not_rows(world, migration_db):
    """Many jobs in few statements: 600 jobs, flushes of 250, every row present once."""
    settings, engine = migration_db
    r = client(world.redis_url)
    pipe = r.pipeline()
    ids = [str(uuid.uuid4()) for _ in range(600)]
    for i in ids:
        pipe.set(f"jobs:{i}", json.dumps({"id": i, "user_id": f"user_bulk{int(i[:2], 16) % 7}", "status": "completed",
                                          "configuration": {"topic": f"T {i}"}, "created_at": "2024-03-01 00:00:00"}))
    pipe.execute()
    report = migrate_redis(engine, r, flush_every=250)
    with engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM jobs WHERE id = ANY(:i)"), {"i": ids}).scalar_one() == 600
    assert report["jobs_inserted"] == 607


def migrated(engine) -> dict:
    """What a migration left, by content (ids of users differ between runs)."""
    with engine.connect() as conn:
        return {
            "jobs": sorted(map(tuple, conn.execute(text(
                "SELECT j.id::text, u.clerk_user_id, j.status, j.updated_at::text, j.configuration::text FROM jobs j "
                "JOIN users u ON u.id = j.user_id")).all())),
            "queue": conn.execute(text("SELECT job_id::text, queue_position FROM job_queue ORDER BY queue_position")).all(),
            "quarantine": sorted(map(tuple, conn.execute(text("SELECT source_key, reason FROM migration_quarantine")).all())),
            "records": sorted(map(tuple, conn.execute(text("SELECT source_key, payload::text FROM migration_legacy_records")).all())),
            "users": sorted(conn.execute(text("SELECT clerk_user_id FROM users")).scalars().all()),
        }


def test_shards_in_helper_processes_migrate_what_one_process_does(world, migration_db):
    settings, engine = migration_db
    r = client(world.redis_url)
    alone = migrate_redis(engine, r, processes=1, flush_every=3)
    one = migrated(engine)
    rollback_batch(settings, engine, alone["batch_id"])
    sharded = migrate_redis(engine, r, processes=3, flush_every=3)  # two helper processes, each with its own keys
    assert migrated(engine) == one and one["jobs"]
    skip = {"batch_id", "seconds", "processes"}
    assert {k: v for k, v in sharded.items() if k not in skip} == {k: v for k, v in alone.items() if k not in skip}
    assert (alone["processes"], sharded["processes"]) == (1, 3)
    with engine.connect() as conn:  # each job recorded once for rollback, by whichever shard wrote it
        recorded = [row[0] for row in created_rows(conn, uuid.UUID(sharded["batch_id"]))["jobs"]]
    assert sorted(recorded) == sorted({job_id for job_id, *_ in one["jobs"]})
    rollback_batch(settings, engine, sharded["batch_id"])
    assert migrated(engine) == {"jobs": [], "queue": [], "quarantine": [], "records": [], "users": []}


def test_a_shard_that_fails_fails_the_batch_and_stops_the_others(world, migration_db, monkeypatch):
    settings, engine = migration_db

    def broken(raw, buf, queue):
        raise RuntimeError("this shard broke")

    monkeypatch.setattr(redis_import, "_absorb", broken)  # this process's shard only: the helpers run the real code
    with pytest.raises(RuntimeError, match="this shard broke"):
        migrate_redis(engine, client(world.redis_url), processes=2)
    with engine.connect() as conn:
        assert conn.execute(text("SELECT status FROM migration_batches")).scalars().all() == ["failed"]


def test_a_key_gone_since_the_scan_is_left_out_and_one_of_another_type_is_read_as_it_is(redis_db):
    from t2m_pipeline.migration.redis_reader import _read

    r = client(redis_db)
    job_id = str(uuid.uuid4())
    r.hset(f"jobs:{job_id}", mapping={"id": json.dumps(job_id)})  # the hash form of a job
    r.set("user_jobs:user_x", b"not a set")  # the wrong type for its prefix
    read = _read(r, [
        (f"jobs:{job_id}".encode(), "job", ("string", "hash")),
        (b"jobs:gone", "job", ("string", "hash")),  # deleted between SCAN and the read
        (b"user_files:user_gone", "user_files", ("set",)),
        (b"user_jobs:user_x", "user_jobs", ("set",)),
    ])
    assert [(raw.key, raw.redis_type, raw.wrong_type) for raw in read] == [
        (f"jobs:{job_id}".encode(), "hash", False), (b"user_jobs:user_x", "string", True),
    ]
    assert read[0].value == {b"id": json.dumps(job_id).encode()} and read[1].value == b"not a set"


def test_every_spelling_of_a_job_id_lands_in_one_shard():
    from t2m_pipeline.migration.redis_reader import shard_of

    job_id = uuid.uuid4()
    spellings = [f"jobs:{job_id}", f"jobs:{str(job_id).upper()}", f"jobs:{{{job_id}}}", f"jobs:urn:uuid:{job_id}", f"jobs:{job_id.hex}"]
    for shards in (2, 3, 4):
        assert len({shard_of(s.encode(), shards) for s in spellings}) == 1


def test_a_stopped_shard_ends_before_it_writes(world, migration_db):
    from t2m_pipeline.migration.batches import start_batch

    settings, engine = migration_db
    batch_id = start_batch(engine, "redis")
    with pytest.raises(RuntimeError, match="stopped"):
        redis_import._migrate_shard(engine, client(world.redis_url), batch_id, 0, 1, 5000, stopped=lambda: True)
    with engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM jobs")).scalar_one() == 0
