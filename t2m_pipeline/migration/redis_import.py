"""Legacy Redis -> PostgreSQL: users, jobs, job_queue, the other durable records, and quarantine.

Writes in batches: jobs are COPYed into a temporary table and upserted with one `INSERT ... SELECT ... ON CONFLICT`;
users, records and quarantine rows are multi-row upserts over `unnest` arrays. Never row by row.

Idempotent: a job is updated only when the legacy `updated_at` is strictly newer than the row's, so a rerun
changes nothing and a row the new system has touched since (newer `updated_at`) is never overwritten. A job that was
queued or processing in the legacy system is imported `held` (nothing runs it until an operator requeues it). The
report's `reattribute_partitions` are the migrated topic folders whose evidence this run changed: a files run of
those partitions moves their files where the evidence now says (the cut-over schedule requests it). Users are
only inserted, never updated. Every insert and every update (with the row's previous image) is recorded in the
batch's created rows in the same transaction, for `rollback`.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import time
import uuid
from collections import Counter
from collections.abc import Callable
from concurrent.futures import Future, ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import dataclass, field

from sqlalchemy import Engine, text
from sqlalchemy.engine import Connection

from t2m_pipeline.db.engine import in_transaction
from t2m_pipeline.db.job_state import HELD
from t2m_pipeline.db.users import NewUser, ensure_users
from t2m_pipeline.migration.batches import created_rows, created_rows_insert, finish_batch, record_created, start_batch
from t2m_pipeline.db import json_text
from t2m_pipeline.migration.attribution import combined_video_folder
from t2m_pipeline.migration.discovery import topic_partition
from t2m_pipeline.migration.legacy_paths import ledger_path, path_text, slugify
from t2m_pipeline.migration.records import BadRecord, JobRow, clerk_id, decode_job_hash, decode_json, decode_text, normalise_job
from t2m_pipeline.migration.redis_reader import RawKey, ScanCounts, scan_durable

LEGACY_USER_METADATA = {
    "source": "legacy",
    "email_unknown": True,
    "note": "migrated from the legacy platform, which never stored emails: email left empty until the user signs in",
}
# `migration_quarantine`'s unique index (source, source_key, reason) holds at most 2,704 bytes a row: a source key of
# at most 1,200 bytes and a reason of at most 300 characters fit, whatever a hostile key or value holds.
QUARANTINE_KEY_BYTES = 1200
QUARANTINE_REASON_CHARS = 300
JOB_COLUMNS = (
    "id", "clerk_user_id", "job_type", "status", "priority", "topic", "description", "configuration",
    "progress_percentage", "current_stage", "error_info", "metrics", "created_at", "updated_at", "started_at",
    "completed_at", "estimated_completion", "batch_id", "is_deleted", "deleted_at",
)
_JSON_COLUMNS = {"configuration", "error_info", "metrics"}
_TEMP_TABLE = """
CREATE TEMP TABLE _legacy_jobs (
    id uuid, clerk_user_id text, job_type text, status text, priority text, topic text, description text,
    configuration jsonb, progress_percentage numeric(5,2), current_stage text, error_info jsonb, metrics jsonb,
    created_at timestamptz, updated_at timestamptz, started_at timestamptz, completed_at timestamptz,
    estimated_completion timestamptz, batch_id uuid, is_deleted boolean, deleted_at timestamptz
) ON COMMIT DROP
"""
_UPSERT_JOBS = """
INSERT INTO jobs (id, user_id, job_type, status, priority, topic, description, configuration, progress_percentage,
                  current_stage, error_info, metrics, created_at, updated_at, started_at, completed_at,
                  estimated_completion, batch_id, is_deleted, deleted_at)
SELECT t.id, u.id, t.job_type, t.status, t.priority, t.topic, t.description, t.configuration, t.progress_percentage,
       t.current_stage, t.error_info, t.metrics, t.created_at, t.updated_at, t.started_at, t.completed_at,
       t.estimated_completion, t.batch_id, t.is_deleted, t.deleted_at
FROM _legacy_jobs t JOIN users u ON u.clerk_user_id = t.clerk_user_id
ON CONFLICT (id) DO UPDATE SET
    user_id = EXCLUDED.user_id, job_type = EXCLUDED.job_type, status = EXCLUDED.status, priority = EXCLUDED.priority,
    topic = EXCLUDED.topic, description = EXCLUDED.description, configuration = EXCLUDED.configuration,
    progress_percentage = EXCLUDED.progress_percentage, current_stage = EXCLUDED.current_stage,
    error_info = EXCLUDED.error_info, metrics = EXCLUDED.metrics, created_at = EXCLUDED.created_at,
    updated_at = EXCLUDED.updated_at, started_at = EXCLUDED.started_at, completed_at = EXCLUDED.completed_at,
    estimated_completion = EXCLUDED.estimated_completion, batch_id = EXCLUDED.batch_id,
    is_deleted = EXCLUDED.is_deleted, deleted_at = EXCLUDED.deleted_at
WHERE jobs.updated_at < EXCLUDED.updated_at
RETURNING id, (xmax = 0) AS inserted, updated_at
"""
# The upsert, its written rows recorded in the batch ([id, updated_at], for rollback) by the same statement: 100,000
# jobs' ids and times no longer come back to Python to be formatted and sent again.
_UPSERT_JOBS_RECORDED = f"""
WITH written AS ({_UPSERT_JOBS.strip()}),
recorded AS ({created_rows_insert("jobs", "jsonb_agg(jsonb_build_array(id::text, to_json(updated_at))) FROM written HAVING count(*) > 0")})
SELECT count(*) FILTER (WHERE inserted) AS inserted, count(*) AS written FROM written
"""


@dataclass
class _Buffers:
    jobs: dict[uuid.UUID, JobRow] = field(default_factory=dict)
    clerks: set[str] = field(default_factory=set)
    records: dict[str, tuple[str, object]] = field(default_factory=dict)
    quarantine: dict[tuple[str, str], bytes | None] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.jobs) + len(self.records) + len(self.quarantine)


def _raw_payload(raw: RawKey) -> bytes | None:
    value = raw.value
    if value is None or isinstance(value, bytes):
        return value
    if isinstance(value, dict):
        value = {k.decode("utf-8", "replace"): v.decode("utf-8", "replace") for k, v in value.items()}
    elif isinstance(value, (set, list, tuple)):
        value = [v.decode("utf-8", "replace") if isinstance(v, bytes) else repr(v) for v in value]
    return json.dumps(value, default=repr).encode()


def _members(raw: RawKey, what: str) -> list[str]:
    return sorted(decode_text(m, f"a member of {what}") for m in raw.value)


def _absorb(raw: RawKey, buf: _Buffers, queue: list) -> None:
    """One durable key into the buffers; raises BadRecord for the quarantine."""
    source_key = ledger_path(raw.key)  # the text form; cut (and hashed) if too long for the records' primary key
    if raw.wrong_type:
        raise BadRecord(f"wrong Redis type: {raw.kind} keys are {'|'.join(raw.expected)}, this one is {raw.redis_type}")
    if raw.value is None:
        raise BadRecord("the key vanished or could not be read during the scan")
    suffix = decode_text(raw.suffix, "the key")
    if raw.kind == "job":
        record = decode_json(raw.value, source_key) if raw.redis_type == "string" else decode_job_hash(raw.value)
        row = normalise_job(suffix, record)
        buf.jobs[row.id] = row
        buf.clerks.add(row.clerk_user_id)
    elif raw.kind == "job_queue":
        queue.extend(raw.value)
        buf.records[source_key] = ("job_queue", [path_text(v) for v in raw.value])  # NUL and odd bytes as %XX
    elif raw.kind in ("user_jobs", "user_files", "user_batches"):
        buf.clerks.add(clerk_id(suffix, "the key's Clerk id"))
        buf.records[source_key] = (raw.kind, _members(raw, source_key))
    else:  # video, file, batch: JSON objects
        payload = decode_json(raw.value, source_key)
        if not isinstance(payload, dict):
            raise BadRecord(f"{raw.kind} record is not a JSON object")
        if raw.kind == "batch" and payload.get("user_id") not in (None, ""):
            buf.clerks.add(clerk_id(payload.get("user_id")))
        buf.records[source_key] = (raw.kind, payload)


def _ensure_users(conn: Connection, clerks: set[str], batch_id: uuid.UUID) -> int:
    users = ensure_users(conn, {clerk: NewUser(metadata=LEGACY_USER_METADATA) for clerk in clerks})
    record_created(conn, batch_id, users=[str(i) for i in users.created])
    return len(users.created)


def _copy_value(column: str, value):
    if value is None:
        return None
    if column in _JSON_COLUMNS:
        return json_text.dumps(value)
    return value


def _upsert_jobs(conn: Connection, jobs: list[JobRow], batch_id: uuid.UUID, counts: Counter) -> None:
    if not jobs:
        return
    raw = conn.connection.driver_connection
    with raw.cursor() as cur:
        cur.execute(_TEMP_TABLE)
        with cur.copy(f"COPY _legacy_jobs ({', '.join(JOB_COLUMNS)}) FROM STDIN") as copy:
            for job in jobs:
                copy.write_row([_copy_value(c, getattr(job, c)) for c in JOB_COLUMNS])
        cur.execute("ANALYZE _legacy_jobs")  # a temporary table has no statistics: the joins below then probe `jobs` by key
    # the rows the upsert will change (their images, for rollback) and those it must keep (newer here), in one pass
    differing = conn.execute(
        text("SELECT to_jsonb(j), j.updated_at > t.updated_at FROM jobs j JOIN _legacy_jobs t ON t.id = j.id "
             "WHERE j.updated_at <> t.updated_at")
    ).all()
    before = [image for image, newer in differing if not newer]
    counts["jobs_kept_newer"] += len(differing) - len(before)
    inserted, written = conn.execute(text(_UPSERT_JOBS_RECORDED), {"batch": batch_id}).one()
    counts["jobs_inserted"] += inserted
    counts["jobs_updated"] += written - inserted
    counts["jobs_unchanged"] += len(jobs) - written
    record_created(conn, batch_id, jobs_before=list(before))


def _upsert_records(conn: Connection, records: dict[str, tuple[str, object]], batch_id: uuid.UUID, counts: Counter) -> None:
    if not records:
        return
    keys = list(records)
    params = {
        "k": keys,
        "kd": [records[k][0] for k in keys],
        "p": [json.dumps(records[k][1], sort_keys=True) for k in keys],
        "b": batch_id,
    }
    new = "unnest(CAST(:k AS text[]), CAST(:kd AS text[]), CAST(:p AS text[])) AS n(source_key, kind, payload)"
    before = conn.execute(
        text(
            f"SELECT to_jsonb(r) FROM migration_legacy_records r JOIN {new} USING (source_key) "
            "WHERE r.payload IS DISTINCT FROM n.payload::jsonb"
        ),
        params,
    ).scalars().all()
    written = conn.execute(
        text(
            f"INSERT INTO migration_legacy_records (source_key, kind, payload, batch_id) "
            f"SELECT n.source_key, n.kind, n.payload::jsonb, :b FROM {new} "
            "ON CONFLICT (source_key) DO UPDATE SET kind = EXCLUDED.kind, payload = EXCLUDED.payload, "
            "batch_id = EXCLUDED.batch_id, migrated_at = now() "
            "WHERE migration_legacy_records.payload IS DISTINCT FROM EXCLUDED.payload "
            "RETURNING source_key, (xmax = 0) AS inserted"
        ),
        params,
    ).all()
    counts["records_inserted"] += sum(1 for r in written if r.inserted)
    counts["records_updated"] += sum(1 for r in written if not r.inserted)
    record_created(conn, batch_id, legacy_records=[r.source_key for r in written if r.inserted], legacy_records_before=list(before))


def _quarantine(conn: Connection, items: dict[tuple[str, str], bytes | None], batch_id: uuid.UUID, counts: Counter) -> None:
    if not items:
        return
    capped: dict[tuple[str, str], bytes | None] = {}
    for (key, reason), payload in items.items():  # within the unique index's row size (see QUARANTINE_KEY_BYTES)
        capped.setdefault((key, reason[:QUARANTINE_REASON_CHARS]), payload)
    items = capped
    keys = list(items)
    created = conn.execute(
        text(
            "INSERT INTO migration_quarantine (source, source_key, raw_payload, reason, batch_id) "
            "SELECT 'redis', k, p, r, :b FROM unnest(CAST(:k AS text[]), CAST(:p AS bytea[]), CAST(:r AS text[])) AS q(k, p, r) "
            "ON CONFLICT (source, source_key, reason) DO NOTHING RETURNING id"
        ),
        {"k": [k for k, _ in keys], "r": [r for _, r in keys], "p": [items[k] for k in keys], "b": batch_id},
    ).scalars().all()
    counts["quarantine_new"] += len(created)
    record_created(conn, batch_id, quarantine=[str(i) for i in created])


def _flush(engine: Engine, buf: _Buffers, batch_id: uuid.UUID, new_clerks: set[str]) -> Counter:
    """One transaction for one buffer: users (those no earlier buffer of this run had), jobs, records, quarantine."""

    def work(conn: Connection) -> Counter:
        local: Counter = Counter()
        local["users_inserted"] += _ensure_users(conn, new_clerks, batch_id)
        _upsert_jobs(conn, list(buf.jobs.values()), batch_id, local)
        _upsert_records(conn, buf.records, batch_id, local)
        _quarantine(conn, buf.quarantine, batch_id, local)
        return local

    return in_transaction(engine, work)


def _migrate_queue(engine: Engine, queue: list[bytes], batch_id: uuid.UUID, counts: Counter) -> list[str]:
    """`job_queue` rows for held jobs (queued or processing in the legacy system) in the legacy list order, then the
    held jobs the list does not name; duplicates collapsed; missing ids reported. The rows are `held` like their
    jobs: nothing runs until an operator requeues them (`migration.requeue`)."""
    ordered: list[uuid.UUID] = []
    seen: set[uuid.UUID] = set()
    bad: dict[tuple[str, str], bytes | None] = {}
    for position, raw in enumerate(queue):
        try:
            job_id = uuid.UUID(raw.decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            bad[(f"job_queue[{position}]", "job_queue entry is not a job id")] = raw
            continue
        if job_id in seen:
            counts["queue_duplicates_collapsed"] += 1
            continue
        seen.add(job_id)
        ordered.append(job_id)
    counts["queue_entries"] += len(queue)

    def work(conn: Connection) -> list[str]:
        existing = set(conn.execute(text("SELECT id FROM jobs WHERE id = ANY(:ids)"), {"ids": ordered}).scalars())
        missing = [str(j) for j in ordered if j not in existing]
        for job_id in missing:
            bad[(f"job_queue:{job_id}", "job_queue names a job that does not exist")] = job_id.encode()
        local: Counter = Counter()
        _quarantine(conn, bad, batch_id, local)
        listed = [j for j in ordered if j in existing]
        created = conn.execute(
            text(
                "INSERT INTO job_queue (job_id, priority, status, queue_position, queued_at) "
                "SELECT j.id, j.priority, j.status, q.pos, j.created_at "
                "FROM unnest(CAST(:ids AS uuid[]), CAST(:pos AS bigint[])) AS q(id, pos) JOIN jobs j ON j.id = q.id "
                "WHERE j.status = :held AND NOT j.is_deleted "
                "ON CONFLICT (job_id) DO NOTHING RETURNING id"
            ),
            {"ids": listed, "pos": list(range(1, len(listed) + 1)), "held": HELD},
        ).scalars().all()
        unlisted = conn.execute(
            text(
                "INSERT INTO job_queue (job_id, priority, status, queue_position, queued_at) "
                "SELECT j.id, j.priority, j.status, :n + row_number() OVER (ORDER BY j.created_at, j.id), j.created_at "
                "FROM jobs j WHERE j.status = :held AND NOT j.is_deleted AND j.configuration ? 'legacy' "
                "AND NOT EXISTS (SELECT 1 FROM job_queue q WHERE q.job_id = j.id) "
                "ON CONFLICT (job_id) DO NOTHING RETURNING id"
            ),
            {"n": len(listed), "held": HELD},
        ).scalars().all()
        local["queue_rows_inserted"] += len(created)
        local["queue_rows_unlisted_queued_jobs"] += len(unlisted)
        local["queue_listed_not_queued"] += conn.execute(
            text("SELECT count(*) FROM jobs WHERE id = ANY(:ids) AND (status <> :held OR is_deleted)"), {"ids": listed, "held": HELD}
        ).scalar_one()
        record_created(conn, batch_id, job_queue=[str(i) for i in [*created, *unlisted]])
        counts.update(local)
        return missing

    return in_transaction(engine, work)


def reattribution_partitions(conn: Connection, batch_id: uuid.UUID) -> list[str]:
    """Topic partitions already migrated whose evidence this batch changed (a job or a `videos:job_*` record of theirs
    written): their files go where the evidence now says on the next files run of those partitions."""
    if not conn.execute(text("SELECT EXISTS (SELECT 1 FROM migration_ledger)")).scalar_one():
        return []  # no topic folder migrated yet (Redis first, as the cut-over runs it): nothing to move
    rows = created_rows(conn, batch_id)
    job_ids: set[uuid.UUID] = {uuid.UUID(job_id) for job_id, _ in rows.get("jobs", [])}
    folders: set[str] = set()
    for image in rows.get("jobs_before", []):  # a job whose topic changed leaves its old folder too
        folders.add(slugify((image.get("configuration") or {}).get("topic") or image.get("topic") or ""))
    for image in rows.get("legacy_records_before", []):
        if image.get("kind") == "video":
            folders.add(combined_video_folder((image.get("payload") or {}).get("file_path")) or "")
    for key in [*rows.get("legacy_records", []), *(i.get("source_key", "") for i in rows.get("legacy_records_before", []))]:
        if key.startswith("videos:job_"):
            try:
                job_ids.add(uuid.UUID(key.removeprefix("videos:job_")))
            except ValueError:
                pass
    if job_ids:
        for row in conn.execute(
            text(
                "SELECT coalesce(j.configuration->>'topic', j.topic) AS topic, r.payload->>'file_path' AS file_path "
                "FROM jobs j LEFT JOIN migration_legacy_records r ON r.source_key = 'videos:job_' || j.id::text "
                "WHERE j.id = ANY(:ids) AND j.configuration ? 'legacy'"
            ),
            {"ids": list(job_ids)},
        ):
            folders.add(slugify(row.topic or ""))
            folders.add(combined_video_folder(row.file_path) or "")
    keys = sorted({topic_partition(f.encode("utf-8", "surrogateescape")) for f in folders if f})
    if not keys:
        return []
    return conn.execute(
        text("SELECT DISTINCT partition_key FROM migration_ledger WHERE partition_key = ANY(:k) ORDER BY 1"), {"k": keys}
    ).scalars().all()


@dataclass
class _ShardResult:
    counts: Counter
    scan: ScanCounts
    queue: list[bytes]


def _migrate_shard(
    engine: Engine, client, batch_id: uuid.UUID, shard: int, shards: int, flush_every: int,
    progress: Callable[[int], None] | None = None, stopped: Callable[[], bool] = lambda: False,
    counts: Counter | None = None,
) -> _ShardResult:
    """The shard's durable keys into PostgreSQL, buffer by buffer, counted into `counts` as they are written;
    `stopped()` true ends it between pages."""
    scan, buf, queue = ScanCounts(), _Buffers(), []
    counts = Counter() if counts is None else counts
    writer = ThreadPoolExecutor(1, thread_name_prefix="redis-import-writer")  # writes overlap the next page's reads
    pending: Future | None = None
    ensured: set[str] = set()  # users an earlier buffer ensured (buffers commit in order: the next waits for this one)

    def submit(buf: _Buffers) -> Future:
        new_clerks = buf.clerks - ensured
        ensured.update(new_clerks)
        return writer.submit(_flush, engine, buf, batch_id, new_clerks)

    try:
        for page in scan_durable(client, scan, shard=shard, shards=shards):
            if stopped():
                raise RuntimeError(f"Redis shard {shard} stopped: another shard of the batch failed, or its process ended")
            for raw in page:
                try:
                    _absorb(raw, buf, queue)
                    counts[f"read_{raw.kind}"] += 1
                except BadRecord as exc:
                    buf.quarantine[(ledger_path(raw.key, QUARANTINE_KEY_BYTES), str(exc))] = _raw_payload(raw)
                    counts[f"quarantined_{raw.kind}"] += 1
            if len(buf) >= flush_every:
                if pending is not None:
                    counts.update(pending.result())  # one write in flight: bounded memory, errors surface here
                pending, buf = submit(buf), _Buffers()
            if progress:
                progress(scan.scanned)
        if pending is not None:
            counts.update(pending.result())
            pending = None
        counts.update(submit(buf).result())
    finally:
        if pending is not None:
            pending.cancel()
        writer.shutdown(wait=True)
    return _ShardResult(counts, scan, queue)


_STOP = None  # in a helper process: the batch's stop event


def _helper_init(stop) -> None:
    global _STOP
    _STOP = stop


def _shard_in_helper(url: str, redis_pool: tuple, batch_id: uuid.UUID, shard: int, shards: int, flush_every: int) -> _ShardResult:
    """A shard in a helper process: its own engine and Redis client (nothing crosses a process but their settings)."""
    import redis

    from t2m_pipeline.db.engine import make_engine

    connection_class, kwargs = redis_pool
    engine = make_engine(url)
    client = redis.Redis(connection_pool=redis.ConnectionPool(connection_class=connection_class, **kwargs))
    parent = multiprocessing.parent_process()  # a helper whose parent died (killed) stops: nobody would finish its batch
    try:
        return _migrate_shard(
            engine, client, batch_id, shard, shards, flush_every,
            stopped=lambda: _STOP.is_set() or (parent is not None and not parent.is_alive()),
        )
    finally:
        client.close()
        engine.dispose()


def _plain(kwargs: dict) -> dict:
    """The client's connection settings that are settings (address, database, credentials, timeouts, TLS): not the
    pool's live helpers, which hold locks and cannot cross a process."""
    return {k: v for k, v in kwargs.items() if isinstance(v, (str, int, float, bool, type(None))) and not k.startswith("orig_")}


def default_processes() -> int:
    """Shards at once: one per core this process may use, up to 4 (parsing and validating records is CPU-bound
    Python, one core each)."""
    return max(1, min(4, len(os.sched_getaffinity(0))))


def migrate_redis(
    engine: Engine,
    client,
    *,
    flush_every: int = 5000,
    progress: Callable[[int], None] | None = None,
    processes: int | None = None,
) -> dict:
    """Migrate every durable key; returns the report (also stored in the batch's `counts`).

    `client` is a redis-py client with `decode_responses=False`. The keys are split into `processes` shards by a hash
    of the key: this process migrates one, helper processes (spawned, each with its own connections) the others, all
    under one batch. Shards share no key; users they both meet are inserted once (`ON CONFLICT`, in one order).
    The queue and the reattributions follow once every shard is in.
    """
    started = time.monotonic()
    batch_id = start_batch(engine, "redis")
    shards = processes or default_processes()
    counts: Counter = Counter()  # this process's shard counts into it as it writes: a failed batch keeps them
    helpers, stop, futures = None, None, []
    try:
        if shards > 1:
            context = multiprocessing.get_context("spawn")  # never fork a process that may hold threads and sockets
            stop = context.Event()
            helpers = ProcessPoolExecutor(shards - 1, mp_context=context, initializer=_helper_init, initargs=(stop,))
            url = engine.url.render_as_string(hide_password=False)
            pool = (client.connection_pool.connection_class, _plain(client.connection_pool.connection_kwargs))
            futures = [helpers.submit(_shard_in_helper, url, pool, batch_id, shard, shards, flush_every) for shard in range(1, shards)]
            for future in futures:  # a helper that fails stops the others, and this process's shard, at their next page
                future.add_done_callback(lambda f: f.cancelled() or f.exception() is None or stop.set())
        own = _migrate_shard(
            engine, client, batch_id, 0, shards, flush_every, progress,
            stopped=lambda: stop is not None and stop.is_set(), counts=counts,
        )
        scan, queue = own.scan, own.queue  # this shard's counts are in `counts` already
        for result in [future.result() for future in futures]:
            counts.update(result.counts)
            scan.add(result.scan)
            queue += result.queue
        missing = _migrate_queue(engine, queue, batch_id, counts)
        reattribute = in_transaction(engine, lambda conn: reattribution_partitions(conn, batch_id))
    except BaseException:
        if stop is not None:
            stop.set()
        if helpers is not None:  # the batch is marked failed once nothing writes to it any more
            helpers.shutdown(wait=True, cancel_futures=True)
        finish_batch(engine, batch_id, "failed", dict(counts))
        raise
    if helpers is not None:
        helpers.shutdown(wait=True)
    report = {
        "batch_id": str(batch_id),
        "keys_scanned": scan.keys_seen,
        "durable_keys": dict(scan.durable),
        "cache_keys_not_migrated": dict(scan.cache),
        "other_keys_not_migrated": scan.other,
        "queue_missing_job_ids": missing,
        "reattribute_partitions": reattribute,
        "quarantined": sum(v for k, v in counts.items() if k.startswith("quarantined_")),
        "processes": shards,
        "seconds": round(time.monotonic() - started, 3),
        **dict(counts),
    }
    finish_batch(engine, batch_id, "succeeded", report)
    return report
