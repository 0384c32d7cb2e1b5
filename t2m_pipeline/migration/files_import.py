"""Legacy local files -> S3 and `file_metadata`, driven by `migration_ledger` (one row per discovered file).

How a rerun after kill -9 creates no duplicate objects, versions or rows:
1. A file is uploaded only after its ledger row has been committed as an *intent*: outcome `failed`, reason
   `INTENT`, with the sha256 and the target key (write-ahead). A file with no ledger row was never uploaded.
2. After the upload, one transaction records the `file_metadata` row and turns the ledger row `migrated` with the
   version id. `file_metadata` is unique per (bucket, key, version) and the ledger per legacy path.
3. A rerun skips files whose ledger row is `migrated` with the same sha256 and key (0 bytes uploaded). For a row
   left as an intent (or `failed` with the same sha256), it first lists the key's versions and adopts one that no
   `file_metadata` row claims and whose S3 metadata carries the same sha256 and the same legacy path (S3's
   `original-name` metadata holds the legacy path); only when there is none does it upload.
Versions of one key (scene code `_v1.._vK`, scene video versions) are uploaded by one worker, oldest first, so the
S3 version history is the legacy history; different keys go in parallel (a thread pool, and an S3 client whose
connection pool is at least as large), and two chunks are in flight so hashing and recording overlap uploads.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import threading
import time
import uuid
from collections import Counter, defaultdict, deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from urllib.parse import quote

from sqlalchemy import Engine, text
from sqlalchemy.engine import Connection

from t2m_pipeline.config import Settings
from t2m_pipeline.db.engine import in_transaction
from t2m_pipeline.migration.attribution import SYSTEM_CLERK_ID, SYSTEM_USER_METADATA, AttributionIndex, load_index
from t2m_pipeline.migration.batches import finish_batch, record_created, start_batch
from t2m_pipeline.migration.discovery import LOOSE, Entry, all_entries, root_bytes
from t2m_pipeline.migration.legacy_paths import display_name, is_failed_plan, parse_upload_name
from t2m_pipeline.migration.mapping import (
    MIN_VALID_VIDEO_BYTES,
    Skip,
    Target,
    map_loose_entry,
    map_topic_entry,
    map_upload_entry,
)
from t2m_pipeline.migration.redis_import import LEGACY_USER_METADATA
from t2m_pipeline.storage.layout import UnsafeKeyError
from t2m_pipeline.storage.s3 import MIB, ObjectOwner, S3Storage, make_s3_client

INTENT = "interrupted: upload started, not yet confirmed"
INLINE_LIMIT = 8 * MIB  # files up to this size are read once into memory (hash + body from the same read)
CHUNK_BYTES = 128 * MIB


@dataclass
class Planned:
    entry: Entry
    partition: str
    outcome: str | None = None  # None: to migrate
    reason: str | None = None
    target: Target | None = None
    # filled while migrating
    sha256: str | None = None
    size: int | None = None
    data: bytes | None = None
    flags: list[str] = field(default_factory=list)
    result: dict | None = None

    @property
    def legacy_path(self) -> str:
        return self.entry.legacy_path


def _ensure_users(conn: Connection, clerks: dict[str, dict], batch_id: uuid.UUID) -> dict[str, uuid.UUID]:
    """Users by Clerk id (inserted when new, never updated); returns clerk -> users.id."""
    if not clerks:
        return {}
    ids = sorted(clerks)
    created = conn.execute(
        text(
            "INSERT INTO users (clerk_user_id, email, metadata) "
            "SELECT c, '', CAST(m AS jsonb) FROM unnest(CAST(:ids AS text[]), CAST(:meta AS text[])) AS t(c, m) "
            "ON CONFLICT (clerk_user_id) DO NOTHING RETURNING id"
        ),
        {"ids": ids, "meta": [json.dumps(clerks[c]) for c in ids]},
    ).scalars().all()
    record_created(conn, batch_id, users=[str(i) for i in created])
    rows = conn.execute(text("SELECT clerk_user_id, id FROM users WHERE clerk_user_id = ANY(:ids)"), {"ids": ids})
    return {r.clerk_user_id: r.id for r in rows}


def _upload_clerks(entries: list[Entry], index: AttributionIndex) -> set[str]:
    clerks = set()
    for entry in entries:
        if entry.kind != "file":
            continue
        parsed = parse_upload_name(entry.parts[-1].decode("utf-8", "surrogateescape"))
        if parsed:
            clerks.add(parsed.clerk_user_id)
            if listed := index.owner_by_file_id.get(parsed.file_id):
                clerks.add(listed)
    return clerks


def plan_entries(
    by_partition: dict[str, list[Entry]], index: AttributionIndex, users: dict[str, uuid.UUID], system_user: uuid.UUID
) -> list[Planned]:
    plans = []
    for partition, entries in by_partition.items():
        for entry in entries:
            plan = Planned(entry, partition)
            plans.append(plan)
            if entry.kind == "symlink":
                plan.outcome, plan.reason = "unsafe", "symlink: not followed"
                continue
            if entry.kind == "special":
                plan.outcome, plan.reason = "unsafe", "not a regular file (device, socket or pipe)"
                continue
            if entry.kind == "unreadable":
                plan.outcome, plan.reason = "failed", "unreadable: permission denied or vanished during the walk"
                continue
            try:
                if partition.startswith("topic/"):
                    folder = entry.parts[1].decode("utf-8", "surrogateescape")
                    plan.target = map_topic_entry(entry, index.for_folder(folder), system_user)
                elif partition.startswith("uploads/"):
                    plan.target = map_upload_entry(entry, index, users, system_user)
                else:
                    plan.target = map_loose_entry(entry)
            except Skip as skip:
                plan.outcome, plan.reason = skip.outcome, skip.reason
            except UnsafeKeyError as exc:
                plan.outcome, plan.reason = "failed", f"no safe key: {exc}"
    return plans


def _existing_ledger(engine: Engine, paths: list[str]) -> dict[str, dict]:
    def read(conn: Connection) -> dict[str, dict]:
        out: dict[str, dict] = {}
        for i in range(0, len(paths), 10000):
            rows = conn.execute(
                text("SELECT to_jsonb(l) AS img FROM migration_ledger l WHERE legacy_path = ANY(:p)"),
                {"p": paths[i : i + 10000]},
            ).scalars()
            for img in rows:
                out[img["legacy_path"]] = img
        return out

    return in_transaction(engine, read)  # reads too: a restart mid-read is retried, not fatal to the run


_LEDGER_UPSERT = """
INSERT INTO migration_ledger (legacy_path, partition_key, size, sha256, outcome, reason, bucket, key, version_id,
                              file_metadata_id, batch_id)
SELECT p, pk, sz, sha, oc, rs, b, k, NULL, NULL, :batch
FROM unnest(CAST(:p AS text[]), CAST(:pk AS text[]), CAST(:sz AS bigint[]), CAST(:sha AS text[]),
            CAST(:oc AS text[]), CAST(:rs AS text[]), CAST(:b AS text[]), CAST(:k AS text[]))
     AS t(p, pk, sz, sha, oc, rs, b, k)
ON CONFLICT (legacy_path) DO UPDATE SET partition_key = EXCLUDED.partition_key, size = EXCLUDED.size,
    sha256 = EXCLUDED.sha256, outcome = EXCLUDED.outcome, reason = EXCLUDED.reason, bucket = EXCLUDED.bucket,
    key = EXCLUDED.key, version_id = NULL, file_metadata_id = NULL, batch_id = EXCLUDED.batch_id, updated_at = now()
RETURNING id, legacy_path, (xmax = 0) AS inserted
"""


def _write_ledger(conn: Connection, batch_id: uuid.UUID, rows: list[dict], existing: dict[str, dict]) -> None:
    """Insert or overwrite ledger rows (outcome, reason, sha...), recording inserts and previous images."""
    if not rows:
        return
    cols = {c: [r[c] for r in rows] for c in ("p", "pk", "sz", "sha", "oc", "rs", "b", "k")}
    written = conn.execute(text(_LEDGER_UPSERT), {**cols, "batch": batch_id}).all()
    record_created(
        conn, batch_id,
        ledger=[str(r.id) for r in written if r.inserted],
        ledger_before=[existing[r.legacy_path] for r in written if not r.inserted and r.legacy_path in existing],
    )


_FILE_METADATA_INSERT = """
INSERT INTO file_metadata (user_id, job_id, file_type, original_filename, s3_bucket, s3_key, file_size, content_type,
                           version_id, checksum, metadata)
SELECT u, j, ft, ofn, b, k, sz, ct, v, cs, m::jsonb
FROM unnest(CAST(:u AS uuid[]), CAST(:j AS uuid[]), CAST(:ft AS text[]), CAST(:ofn AS text[]), CAST(:b AS text[]),
            CAST(:k AS text[]), CAST(:sz AS bigint[]), CAST(:ct AS text[]), CAST(:v AS text[]), CAST(:cs AS text[]),
            CAST(:m AS text[])) AS t(u, j, ft, ofn, b, k, sz, ct, v, cs, m)
ON CONFLICT ON CONSTRAINT uq_file_metadata_object_version DO UPDATE SET metadata = EXCLUDED.metadata
RETURNING id, s3_bucket, s3_key, version_id, (xmax = 0) AS inserted
"""
_LEDGER_FINISH = """
UPDATE migration_ledger l SET outcome = v.oc, reason = v.rs, version_id = v.ver, file_metadata_id = v.fm,
    batch_id = :batch, updated_at = now()
FROM unnest(CAST(:p AS text[]), CAST(:oc AS text[]), CAST(:rs AS text[]), CAST(:ver AS text[]), CAST(:fm AS uuid[]))
     AS v(p, oc, rs, ver, fm)
WHERE l.legacy_path = v.p
"""


def versions_by_key(client, objects: set[tuple[str, str]]) -> dict[tuple[str, str], list[str]]:
    """Version ids of each (bucket, key), listed once per folder rather than once per key (fewer, larger listings)."""
    folders: dict[tuple[str, str], set[str]] = defaultdict(set)
    for bucket, key in objects:
        folders[(bucket, key.rsplit("/", 1)[0] + "/")].add(key)
    out: dict[tuple[str, str], list[str]] = {obj: [] for obj in objects}
    for (bucket, folder), keys in folders.items():
        for page in client.get_paginator("list_object_versions").paginate(Bucket=bucket, Prefix=folder):
            for version in page.get("Versions", []):
                if version["Key"] in keys:
                    out[(bucket, version["Key"])].append(version["VersionId"])
    return out


def carries_legacy_path(meta: dict, legacy_path: str) -> bool:
    """Does an S3 version's metadata name this legacy path? (`original-name` is the quoted path, maybe shortened.)"""
    name = meta.get("original-name", "")
    return bool(name) and quote(legacy_path, safe="").startswith(name) and len(name) >= min(64, len(quote(legacy_path, safe="")))


class FilesMigration:
    """One run over some partitions (all of them by default). `fault` is a test seam called between stages."""

    def __init__(
        self,
        settings: Settings,
        engine: Engine,
        legacy_root,
        *,
        workers: int = 32,
        chunk_files: int = 500,
        progress: Callable[[int, int, int, int], None] | None = None,
        fault: Callable[[str], None] | None = None,
    ):
        self.settings = settings
        self.engine = engine
        self.root = root_bytes(legacy_root)
        self.workers = max(1, workers)
        self.chunk_files = max(1, chunk_files)
        self.progress = progress
        self.fault = fault or (lambda stage: None)
        pool = max(settings.s3_max_pool_connections, self.workers + 4)
        tuned = dataclasses.replace(settings, s3_max_pool_connections=pool)
        self.storage = S3Storage(tuned, None, client=make_s3_client(tuned))
        self.counts: Counter = Counter()
        self._lock = threading.Lock()
        self._done_files = self._done_bytes = self._total_files = self._total_bytes = 0

    # -- planning ------------------------------------------------------------------------------------------------

    def run(self, partitions: list[str] | None = None) -> dict:
        started = time.monotonic()
        if not os.path.isdir(self.root):
            raise FileNotFoundError(f"legacy root {os.fsdecode(self.root)!r} is not a directory")
        by_partition = all_entries(self.root, partitions)
        batch_id = start_batch(self.engine, "files", os.fsdecode(self.root))
        self.batch_id = batch_id
        try:
            report = self._run(by_partition, batch_id)
        except BaseException:
            finish_batch(self.engine, batch_id, "failed", dict(self.counts))
            raise
        report["seconds"] = round(time.monotonic() - started, 3)
        finish_batch(self.engine, batch_id, "succeeded", report)
        return report

    def _run(self, by_partition: dict[str, list[Entry]], batch_id: uuid.UUID) -> dict:
        index = in_transaction(self.engine, load_index)
        uploads = [e for key, entries in by_partition.items() if key.startswith("uploads/") for e in entries]
        clerks = {c: LEGACY_USER_METADATA for c in _upload_clerks(uploads, index)}
        clerks[SYSTEM_CLERK_ID] = SYSTEM_USER_METADATA
        users = in_transaction(self.engine, lambda conn: _ensure_users(conn, clerks, batch_id))
        plans = plan_entries(by_partition, index, users, users[SYSTEM_CLERK_ID])
        existing = _existing_ledger(self.engine, [p.legacy_path for p in plans])

        settled = [p for p in plans if p.outcome is not None]
        self._settle(settled, existing, batch_id)
        to_migrate = [p for p in plans if p.outcome is None]
        self._total_files = len(plans)
        self._total_bytes = sum(p.entry.size or 0 for p in to_migrate)
        self._tick(len(settled), 0)

        groups: dict[tuple[str, str], list[Planned]] = defaultdict(list)
        for plan in to_migrate:
            groups[(plan.target.bucket_kind, plan.target.key)].append(plan)
        for group in groups.values():
            group.sort(key=lambda p: (p.target.order, p.legacy_path))
        # Two chunks in flight: one hashes / writes its intents / records while the other uploads, so the upload
        # pool never waits on those steps. Chunks never share a key, so version order is unaffected.
        with ThreadPoolExecutor(self.workers, thread_name_prefix="migrate") as pool, ThreadPoolExecutor(2) as chunks:
            inflight: deque[Future] = deque()
            try:
                for chunk in self._chunks(list(groups.values())):
                    inflight.append(chunks.submit(self._migrate_chunk, pool, chunk, existing, batch_id))
                    if len(inflight) >= 2:
                        inflight.popleft().result()
                while inflight:
                    inflight.popleft().result()
            finally:
                for future in inflight:
                    future.cancel()

        for plan in plans:
            self.counts[f"outcome_{plan.outcome}"] += 1
        return {
            "batch_id": str(batch_id),
            "legacy_root": os.fsdecode(self.root),
            "partitions": sorted(by_partition),
            "files": len(plans),
            "outcomes": {o: self.counts[f"outcome_{o}"] for o in ("migrated", "skipped", "unsafe", "failed")},
            "uploaded_files": self.counts["uploaded_files"],
            "uploaded_bytes": self.counts["uploaded_bytes"],
            "adopted_versions": self.counts["adopted_versions"],
            "unchanged_files": self.counts["unchanged_files"],
            "flagged_invalid": self.counts["flagged_invalid"],
            "checksum_mismatches": self.counts["checksum_mismatches"],
            "scenes": self.migrated_scenes(sorted(by_partition)),
        }

    def _tick(self, files: int, size: int) -> None:
        with self._lock:
            self._done_files += files
            self._done_bytes += size
            if self.progress:
                self.progress(self._done_files, self._done_bytes, self._total_files, self._total_bytes)

    def _settle(self, plans: list[Planned], existing: dict[str, dict], batch_id: uuid.UUID) -> None:
        """Ledger rows for skipped / unsafe / failed-before-reading entries (unchanged rows are not rewritten)."""
        rows = []
        for p in plans:
            old = existing.get(p.legacy_path)
            if old and (old["outcome"], old["reason"], old["partition_key"]) == (p.outcome, p.reason, p.partition):
                continue
            rows.append(dict(p=p.legacy_path, pk=p.partition, sz=p.entry.size, sha=None, oc=p.outcome, rs=p.reason, b=None, k=None))
        for i in range(0, len(rows), 5000):
            in_transaction(self.engine, lambda conn, part=rows[i : i + 5000]: _write_ledger(conn, batch_id, part, existing))

    def _chunks(self, groups: list[list[Planned]]):
        chunk, files, size = [], 0, 0
        for group in groups:
            chunk.append(group)
            files += len(group)
            size += sum(p.entry.size or 0 for p in group if (p.entry.size or 0) <= INLINE_LIMIT)
            if files >= self.chunk_files or size >= CHUNK_BYTES:
                yield chunk
                chunk, files, size = [], 0, 0
        if chunk:
            yield chunk

    # -- one chunk: hash, intents, uploads, record -----------------------------------------------------------------

    def _read(self, plan: Planned) -> None:
        path = os.path.join(self.root, plan.entry.rel)
        try:
            # O_NOFOLLOW: a file swapped for a symlink after the walk is refused, not followed
            if (plan.entry.size or 0) <= INLINE_LIMIT:
                with os.fdopen(os.open(path, os.O_RDONLY | os.O_NOFOLLOW), "rb") as fh:
                    data = fh.read()
                plan.data, plan.size, plan.sha256 = data, len(data), hashlib.sha256(data).hexdigest()
                head = data[:256]
            else:
                digest, size = hashlib.sha256(), 0
                with os.fdopen(os.open(path, os.O_RDONLY | os.O_NOFOLLOW), "rb") as fh:
                    head = fh.read(256)
                    fh.seek(0)
                    for block in iter(lambda: fh.read(MIB), b""):
                        digest.update(block)
                        size += len(block)
                plan.size, plan.sha256 = size, digest.hexdigest()
        except OSError as exc:
            plan.outcome, plan.reason = "failed", f"unreadable: {exc.strerror or exc}"
            return
        target = plan.target
        if target.check == "video" and plan.size < MIN_VALID_VIDEO_BYTES:
            plan.flags.append("invalid by legacy rules: video under 1 KB")
        if target.check == "plan" and is_failed_plan(head):
            plan.flags.append("invalid by legacy rules: failed plan (# Scene N - Error:)")
        if target.legacy_checksum and target.legacy_checksum != plan.sha256:
            plan.flags.append("legacy checksum mismatch (files:{id} says " + target.legacy_checksum + ")")

    def _migrate_chunk(self, pool: ThreadPoolExecutor, chunk: list[list[Planned]], existing: dict, batch_id) -> None:
        files = [p for group in chunk for p in group]
        list(pool.map(self._read, files))
        buckets = self.settings.buckets
        intents, work = [], []
        for group in chunk:
            todo = []
            for p in group:
                if p.outcome == "failed":
                    continue
                old = existing.get(p.legacy_path)
                bucket = buckets[p.target.bucket_kind]
                same_place = old is not None and old["sha256"] == p.sha256 and old["bucket"] == bucket and old["key"] == p.target.key
                if same_place and old["outcome"] == "migrated" and old["version_id"]:
                    p.outcome = "migrated"
                    p.result = None  # unchanged
                    with self._lock:
                        self.counts["unchanged_files"] += 1
                    continue
                todo.append((p, same_place and old["outcome"] == "failed"))
                intents.append(
                    dict(p=p.legacy_path, pk=p.partition, sz=p.size, sha=p.sha256, oc="failed", rs=INTENT, b=bucket, k=p.target.key)
                )
            if todo:
                work.append(todo)
        read_failures = [p for p in files if p.outcome == "failed"]
        in_transaction(
            self.engine,
            lambda conn: _write_ledger(
                conn, batch_id,
                intents + [dict(p=p.legacy_path, pk=p.partition, sz=p.size, sha=None, oc="failed", rs=p.reason, b=None, k=None) for p in read_failures],
                existing,
            ),
        )
        unchanged = [p for p in files if p.outcome == "migrated"]
        self._tick(len(unchanged) + len(read_failures), sum(p.size or 0 for p in unchanged))
        self.fault("after_intents")
        if work:
            checks = [p for todo in work for p, check in todo if check]
            claimed = self._claimed_versions(checks)
            listed = versions_by_key(self.storage.client, {(buckets[p.target.bucket_kind], p.target.key) for p in checks}) if checks else {}
            list(pool.map(lambda todo: self._upload_group(todo, claimed, listed), work))
        self.fault("after_uploads")
        done = [p for todo in work for p, _ in todo]
        in_transaction(self.engine, lambda conn: self._record(conn, done, batch_id))
        for p in files:
            p.data = None  # free the chunk's bodies

    def _claimed_versions(self, plans: list[Planned]) -> dict[tuple[str, str], set[str]]:
        if not plans:
            return {}
        buckets = self.settings.buckets
        pairs = {(buckets[p.target.bucket_kind], p.target.key) for p in plans}
        rows = in_transaction(
            self.engine,
            lambda conn: conn.execute(
                text(
                    "SELECT s3_bucket, s3_key, version_id FROM file_metadata "
                    "WHERE (s3_bucket, s3_key) IN (SELECT * FROM unnest(CAST(:b AS text[]), CAST(:k AS text[])))"
                ),
                {"b": [b for b, _ in pairs], "k": [k for _, k in pairs]},
            ).all(),
        )
        claimed: dict[tuple[str, str], set[str]] = defaultdict(set)
        for r in rows:
            claimed[(r.s3_bucket, r.s3_key)].add(r.version_id)
        return claimed

    def _owner(self, p: Planned) -> ObjectOwner:
        t = p.target
        return ObjectOwner(user_id=t.user_id, file_type=t.file_type, job_id=t.job_id, scene_number=t.scene_number)

    def _adoptable(self, p: Planned, bucket: str, versions: list[str], claimed: set[str]) -> dict | None:
        """A version of the key uploaded by an interrupted run for this very file (same sha256 and legacy path)."""
        for version_id in versions:
            if version_id in claimed:
                continue
            head = self.storage.client.head_object(Bucket=bucket, Key=p.target.key, VersionId=version_id)
            meta = head.get("Metadata", {})
            if meta.get("sha256") == p.sha256 and carries_legacy_path(meta, p.legacy_path):
                claimed.add(version_id)
                return {"version_id": version_id, "size": head["ContentLength"], "adopted": True}
        return None

    def _upload_group(self, todo: list[tuple[Planned, bool]], claimed: dict, listed: dict) -> None:
        """The versions of one key, oldest first; after a failure the newer versions wait for a rerun (order kept)."""
        failed = None
        for p, check in todo:
            bucket = self.settings.buckets[p.target.bucket_kind]
            if failed:
                p.outcome, p.reason = "failed", f"not attempted: an older version of this key failed ({failed})"
                continue
            try:
                where = (bucket, p.target.key)
                result = self._adoptable(p, bucket, listed.get(where, []), claimed.setdefault(where, set())) if check else None
                if result is None:
                    result = self._put(p, bucket)
                p.result, p.outcome = result, "migrated"
            except Exception as exc:  # noqa: BLE001 - one file's failure is recorded, never fatal to the run
                failed = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"[:500]
                p.outcome, p.reason = "failed", f"upload failed: {failed}"
            self._tick(1, p.size or 0)

    def _put(self, p: Planned, bucket: str) -> dict:
        args = dict(owner=self._owner(p), content_type=p.target.content_type, original_name=p.legacy_path)
        if p.data is not None:
            stored = self.storage.put_bytes(bucket, p.target.key, p.data, **args)
        else:
            stored = self.storage.put_file(bucket, p.target.key, os.path.join(self.root, p.entry.rel).decode("utf-8", "surrogateescape"), **args)
            if stored.sha256 != p.sha256:
                raise RuntimeError("the file changed while it was being migrated")
        with self._lock:
            self.counts["uploaded_files"] += 1
            self.counts["uploaded_bytes"] += stored.size
        return {"version_id": stored.version_id, "size": stored.size, "adopted": False}

    def _metadata(self, p: Planned) -> dict:
        t = p.target
        meta = {
            "legacy_path": p.legacy_path,
            "legacy_name": display_name(p.entry.parts[-1]),
            "migration_batch": str(self.batch_id),
            **t.metadata,
        }
        if t.scene_number is not None:
            meta["scene_number"] = t.scene_number
        if t.order:
            meta["version_order"] = list(t.order)
        if t.legacy_checksum:
            meta["legacy_checksum"] = t.legacy_checksum
            meta["legacy_checksum_match"] = t.legacy_checksum == p.sha256
        if p.flags:
            meta["flags"] = p.flags
            meta["legacy_invalid"] = any(f.startswith("invalid") for f in p.flags)
        return meta

    def _record(self, conn: Connection, done: list[Planned], batch_id) -> None:
        ok = [p for p in done if p.outcome == "migrated" and p.result]
        buckets = self.settings.buckets
        fm_ids: dict[tuple[str, str, str | None], uuid.UUID] = {}
        if ok:
            cols = dict(
                u=[p.target.user_id for p in ok],
                j=[p.target.job_id for p in ok],
                ft=[p.target.file_type for p in ok],
                ofn=[p.target.original_filename[:1024] for p in ok],
                b=[buckets[p.target.bucket_kind] for p in ok],
                k=[p.target.key for p in ok],
                sz=[p.size for p in ok],
                ct=[p.target.content_type for p in ok],
                v=[p.result["version_id"] for p in ok],
                cs=[p.sha256 for p in ok],
                m=[json.dumps(self._metadata(p)) for p in ok],
            )
            rows = conn.execute(text(_FILE_METADATA_INSERT), cols).all()
            fm_ids = {(r.s3_bucket, r.s3_key, r.version_id): r.id for r in rows}
            record_created(
                conn, batch_id,
                file_metadata=[str(r.id) for r in rows if r.inserted],
                s3_versions=[[buckets[p.target.bucket_kind], p.target.key, p.result["version_id"]] for p in ok if not p.result["adopted"]],
            )
        finished = [p for p in done if p.outcome in ("migrated", "failed") and (p.result or p.outcome == "failed")]
        if finished:
            params = dict(
                p=[p.legacy_path for p in finished],
                oc=[p.outcome for p in finished],
                rs=[("; ".join(p.flags) or None) if p.outcome == "migrated" else p.reason for p in finished],
                ver=[p.result["version_id"] if p.result else None for p in finished],
                fm=[fm_ids.get((buckets[p.target.bucket_kind], p.target.key, p.result["version_id"])) if p.result else None for p in finished],
                batch=batch_id,
            )
            conn.execute(text(_LEDGER_FINISH), params)
        with self._lock:  # two chunks may record at once
            for p in ok:
                self.counts["adopted_versions"] += int(p.result["adopted"])
                self.counts["flagged_invalid"] += int(any(f.startswith("invalid") for f in p.flags))
                self.counts["checksum_mismatches"] += int(any(f.startswith("legacy checksum") for f in p.flags))

    # -- what joins the asset graph --------------------------------------------------------------------------------

    def migrated_scenes(self, partitions: list[str]) -> list[dict]:
        return migrated_scenes(self.engine, partitions, self.batch_id)


def migrated_scenes(engine: Engine, partitions: list[str], batch_id: uuid.UUID | None = None) -> list[dict]:
    """Scenes of attributed jobs with migrated code or video, each with its newest code and video version."""
    rows = in_transaction(
        engine,
        lambda conn: conn.execute(
            text(
                "SELECT fm.user_id, fm.job_id, (fm.metadata->>'scene_number')::int AS scene, fm.file_type, fm.s3_bucket, "
                "fm.s3_key, fm.version_id, fm.file_size, fm.checksum, fm.metadata->'version_order' AS ord, "
                "l.batch_id = :b AS new FROM migration_ledger l JOIN file_metadata fm ON fm.id = l.file_metadata_id "
                "WHERE l.partition_key = ANY(:parts) AND l.outcome = 'migrated' AND fm.job_id IS NOT NULL "
                "AND fm.file_type IN ('code', 'video') AND fm.metadata ? 'scene_number'"
            ),
            {"parts": partitions, "b": batch_id},
        ).all(),
    )
    scenes: dict[tuple, dict] = {}
    for r in rows:
        scene = scenes.setdefault(
            (str(r.user_id), str(r.job_id), r.scene),
            {"user_id": str(r.user_id), "job_id": str(r.job_id), "scene_number": r.scene, "new": False},
        )
        scene["new"] = scene["new"] or bool(r.new)
        best = scene.get(r.file_type)
        order = list(r.ord or [])
        if best is None or order > best["order"]:
            scene[r.file_type] = {
                "bucket": r.s3_bucket, "key": r.s3_key, "version_id": r.version_id, "size": r.file_size,
                "sha256": r.checksum, "order": order,
            }
    return sorted(scenes.values(), key=lambda s: (s["job_id"], s["scene_number"]))


def migrate_files(settings: Settings, engine: Engine, legacy_root, partitions: list[str] | None = None, **kwargs) -> dict:
    """Run the files migration over `partitions` (default: every partition discovered under `legacy_root`)."""
    return FilesMigration(settings, engine, legacy_root, **kwargs).run(partitions)


__all__ = ["FilesMigration", "migrate_files", "migrated_scenes", "INTENT", "LOOSE"]
