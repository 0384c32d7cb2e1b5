"""Legacy local files -> S3 and `file_metadata`, driven by `migration_ledger` (one row per discovered file).

How a rerun after kill -9 creates no duplicate objects, versions or rows:
1. A file is uploaded only after its ledger row has been committed as an *intent*: outcome `failed`, reason
   `INTENT`, with the sha256, the target key and a write id (write-ahead). The upload carries that write id in its
   S3 user metadata (`write-id`). A file with no ledger row was never uploaded.
2. After the upload, one transaction records the `file_metadata` row and turns the ledger row `migrated` with the
   version id. `file_metadata` is unique per (bucket, key, version) and the ledger per legacy path.
3. A rerun skips files whose ledger row is `migrated` with the same sha256 and key (0 bytes uploaded). A row left
   as an intent (or `failed`) with the same sha256 and key is the same write, resumed: its write id is kept, and the
   rerun adopts a version of the key that no `file_metadata` row claims and that carries that write id
   (`S3Storage.versions_of_write`, the one rule for "this version was produced by this write"); only when there is
   none does it upload, under the same write id. Another version with the same bytes and legacy path is another
   write's (a file migrated twice, a hand copy), never adopted (`_adoptable`).
Versions of one key (scene code `_v1.._vK`, scene video versions) are uploaded by one worker, oldest first, so the
S3 version history is the legacy history; different keys go in parallel (a thread pool, and an S3 client whose
connection pool is at least as large), and two chunks are in flight so reading, hashing and recording overlap
uploads. A run goes through the tree in waves of whole partitions (from `FIRST_WAVE_FILES` up to `WAVE_FILES`), each
walked and planned while the one before uploads, and reconciled once its chunks are recorded; the chunks of all
waves go through one pipeline, so the endpoint never waits between waves. Memory holds a few waves, whatever the
tree's size.

Where a file goes is `attribution`'s decision, made again on every run from the evidence in PostgreSQL, so any order
and repetition of `migrate redis` and `migrate files` converges on the same state once `files` has run after
`redis`:
- a job that reused a folder gets server-side copies (`S3Storage.copy_version`) with ledger rows of their own
  (`legacy_paths.copy_ledger_path`); keys holding copies are done after the keys holding their sources ("levels"),
  each key still oldest version first;
- `_reconcile`, after the uploads: an object of a legacy file that is no longer where the evidence puts it (the
  `legacy/unattributed/` upload of a run before Redis was migrated, a copy a job no longer gets) is deleted with its
  row, the ledger row says where the file moved from, and the batch keeps the row images (and the version that
  holds the same bytes) so `rollback` can put it back; the metadata of rows in place is brought up to date (the
  candidate jobs, the linked `videos:job_*` record). One query per 5,000 files, no S3 request for files in place.
"""

from __future__ import annotations

import dataclasses
import gc
import hashlib
import json
import os
import re
import threading
import time
import uuid
from collections import Counter, defaultdict, deque
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from sqlalchemy import Engine, text
from sqlalchemy.engine import Connection

from t2m_pipeline.config import Settings
from t2m_pipeline.db.engine import in_transaction
from t2m_pipeline.db.users import NewUser, ensure_users
from t2m_pipeline.db import json_text
from t2m_pipeline.migration.attribution import (
    SYSTEM_CLERK_ID,
    SYSTEM_USER_METADATA,
    Attribution,
    AttributionIndex,
    load_index,
    load_records,
)
from t2m_pipeline.migration.batches import finish_batch, record_created, start_batch
from t2m_pipeline.migration.discovery import LOOSE, Entry, iter_partitions, root_bytes
from t2m_pipeline.migration.legacy_paths import (
    COPY_MARK,
    copy_ledger_path,
    display_name,
    is_failed_plan,
    parse_upload_name,
    split_copy_path,
)
from t2m_pipeline.migration.locks import partitions_locked
from t2m_pipeline.migration.mapping import (
    MIN_VALID_VIDEO_BYTES,
    Skip,
    Target,
    map_loose_entry,
    map_topic_entry,
    map_upload_entry,
)
from t2m_pipeline.migration.redis_import import LEGACY_USER_METADATA
from t2m_pipeline.migration.upload_shards import upload_shards
from t2m_pipeline.storage.layout import UnsafeKeyError, combined_video_key
from t2m_pipeline.storage.versions import version_ids_by_key
from t2m_pipeline.vocabulary import FileType

if TYPE_CHECKING:
    from t2m_pipeline.storage.s3 import ObjectOwner, S3Storage

INTENT = "interrupted: upload started, not yet confirmed"
RECONCILE_PATHS = 5000
# Kept as they are when a row's metadata is brought up to date: the batch that wrote the row, where it moved from.
PRESERVED_METADATA = ("migration_batch", "moved_from")
_UNWRITTEN = object()
MIB = 1 << 20
INLINE_LIMIT = 8 * MIB  # files up to this size are read once into memory (hash + body from the same read)
CHUNK_BYTES = 128 * MIB
WAVE_FILES = 10_000  # a run holds this many files' plans at a time (whole partitions): memory does not grow with the tree
# The first wave is planned before any upload: a small one starts the endpoint sooner. Each next wave is at most
# WAVE_GROWTH times the one before (up to WAVE_FILES): it is planned while the one before uploads, and a plan costs
# about a twentieth of an upload per file, so it is ready before the uploads ahead of it run out.
FIRST_WAVE_FILES = 100
WAVE_GROWTH = 4
CHUNKS_IN_FLIGHT = 2  # one reads, hashes and writes its intents (or records) while the other uploads
READERS = 8  # at most, threads reading and hashing files (their own pool: a chunk's reads never wait behind uploads)


@dataclass(eq=False)
class Planned:
    """One ledger row's worth of work: a legacy file to its target, or (`copy_source` set) a copy of it for a job."""

    entry: Entry
    partition: str
    outcome: str | None = None  # None: to migrate
    reason: str | None = None
    target: Target | None = None
    attribution: Attribution | None = None
    copy_source: Planned | None = None  # the original this copy is made from (server-side)
    # filled while migrating
    sha256: str | None = None
    size: int | None = None
    data: bytes | None = None
    flags: list[str] = field(default_factory=list)
    result: dict | None = None
    stored: tuple[str, str, str | None] | None = None  # (bucket, key, version id) once migrated
    write_id: str | None = None  # the ledger intent's, carried by the upload or copy (S3 `write-id`)
    unread: bool = False  # taken as unchanged from its size, mtime and inode: its bytes were not read this run
    file_metadata_id: uuid.UUID | None = None
    written_reason: object = _UNWRITTEN  # the ledger reason this run wrote (unset: the row's is the earlier run's)

    @property
    def legacy_path(self) -> str:
        """The ledger key: the legacy path, or the copy's key for a copy."""
        if self.copy_source is not None:
            return copy_ledger_path(self.entry.legacy_path, self.target.job_id)
        return self.entry.legacy_path

    @property
    def source_path(self) -> str:
        """The legacy file's own path (what S3's `original-name` and the row's `legacy_path` name)."""
        return self.entry.legacy_path


def _ensure_users(conn: Connection, clerks: dict[str, dict], batch_id: uuid.UUID) -> dict[str, uuid.UUID]:
    """Users by Clerk id (inserted when new, never updated), recorded in the batch; returns clerk -> users.id."""
    users = ensure_users(conn, {clerk: NewUser(metadata=meta) for clerk, meta in clerks.items()})
    record_created(conn, batch_id, users=[str(i) for i in users.created])
    return users.ids


def _upload_clerks(by_partition: dict[str, list[Entry]], index: AttributionIndex) -> set[str]:
    """The Clerk ids the uploads of these partitions name or are listed under: their owners, made users."""
    clerks = set()
    uploads = (e for key, entries in by_partition.items() if key.startswith("uploads/") for e in entries)
    for entry in uploads:
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
                    plan.attribution = index.for_file(folder, entry.mtime)
                    plan.target = map_topic_entry(entry, plan.attribution, system_user)
                    _link_video_record(plan.target, index, folder)
                    for job in plan.attribution.copies:
                        copy = Attribution(job, reason=f"copy for job {job.job_id}: {plan.attribution.reason}")
                        target = map_topic_entry(entry, copy, system_user)
                        source = plan.target
                        target.metadata["copy_of"] = {"job_id": str(source.job_id) if source.job_id else None, "key": source.key}
                        _link_video_record(target, index, folder)
                        plans.append(Planned(entry, partition, target=target, attribution=copy, copy_source=plan))
                elif partition.startswith("uploads/"):
                    plan.target = map_upload_entry(entry, index, users, system_user)
                else:
                    plan.target = map_loose_entry(entry)
            except Skip as skip:
                plan.outcome, plan.reason = skip.outcome, skip.reason
            except UnsafeKeyError as exc:
                plan.outcome, plan.reason = "failed", f"no safe key: {exc}"
    return plans


FAILED_PLAN_FLAG = "invalid by legacy rules: failed plan (# Scene N - Error:)"


def content_flags(target: Target, size: int, sha256: str, failed_plan: bool) -> list[str]:
    """What the legacy rules and the evidence say of a file's bytes: from its size and sha256, and whether it is a
    failed plan (which only its first bytes tell: a file not read this run keeps what its row says)."""
    flags = []
    if target.check == "video" and size < MIN_VALID_VIDEO_BYTES:
        flags.append("invalid by legacy rules: video under 1 KB")
    if failed_plan:
        flags.append(FAILED_PLAN_FLAG)
    if target.legacy_checksum and target.legacy_checksum != sha256:
        flags.append("legacy checksum mismatch (files:{id} says " + target.legacy_checksum + ")")
    return flags


def _ledger_reason(p: Planned, moved_from=()) -> str | None:
    """A migrated file's ledger reason: why it went where it is (attribution), its flags, where it moved from."""
    parts = [p.attribution.reason] if p.attribution is not None and p.attribution.reason else []
    parts += p.flags
    parts += [f"moved from s3://{m['bucket']}/{m['key']} (version {m['version_id']})" for m in moved_from]
    return "; ".join(parts) or None


def expected_plans(engine: Engine, by_partition: dict[str, list[Entry]]) -> list[Planned]:
    """What a files run would do now, read-only (nothing inserted): where the evidence puts every file, for verify."""

    def read(conn: Connection) -> tuple[AttributionIndex, dict[str, uuid.UUID]]:
        index = load_index(conn)
        clerks = sorted(_upload_clerks(by_partition, index) | {SYSTEM_CLERK_ID})
        rows = conn.execute(text("SELECT clerk_user_id, id FROM users WHERE clerk_user_id = ANY(:c)"), {"c": clerks})
        return index, {r.clerk_user_id: r.id for r in rows}

    index, users = in_transaction(engine, read)
    system = users.pop(SYSTEM_CLERK_ID, None) or uuid.UUID(int=0)  # no system user: nothing was migrated yet
    return plan_entries(by_partition, index, users, system)


def _link_video_record(target: Target, index: AttributionIndex, folder: str) -> None:
    """The combined video of a job with a `videos:job_{id}` record naming it: the record (width, height, duration,
    file_path...) goes into the row's metadata, `legacy_record` naming its `migration_legacy_records` key."""
    if target.job_id is None or target.key != combined_video_key(target.user_id, target.job_id):
        return
    record = index.video_record_for(target.job_id, folder)
    if record is not None:
        target.metadata["legacy_record"] = f"videos:job_{target.job_id}"
        target.metadata["legacy_video"] = record


_LEDGER_COLUMNS = ("legacy_path, partition_key, outcome, reason, size, sha256, bucket, key, version_id, file_metadata_id, "
                   "write_id, mtime_ns, inode")


def _existing_ledger(engine: Engine, paths: list[str], partitions: list[str] = ()) -> dict[str, dict]:
    """Ledger rows by key (the columns a run decides by): those of `paths`, and every copy row of `partitions` (a
    copy no longer planned is found). Whole-row images, for rollback, are read where a row is overwritten or removed
    (`_ledger_images`): most rows of a rerun are neither, and decoding every row's image was a rerun's largest cost."""

    def read(conn: Connection) -> dict[str, dict]:
        out: dict[str, dict] = {}
        for i in range(0, len(paths), 10000):
            rows = conn.execute(
                text(f"SELECT {_LEDGER_COLUMNS} FROM migration_ledger WHERE legacy_path = ANY(:p)"), {"p": paths[i : i + 10000]}
            ).mappings()
            for row in rows:
                out[row["legacy_path"]] = dict(row)
        if partitions:
            rows = conn.execute(
                text(
                    f"SELECT {_LEDGER_COLUMNS} FROM migration_ledger "
                    "WHERE partition_key = ANY(:parts) AND strpos(legacy_path, :mark) > 0"
                ),
                {"parts": list(partitions), "mark": COPY_MARK},
            ).mappings()
            for row in rows:
                out[row["legacy_path"]] = dict(row)
        return out

    return in_transaction(engine, read)  # reads too: a restart mid-read is retried, not fatal to the run


_LEDGER_UPSERT = """
INSERT INTO migration_ledger (legacy_path, partition_key, size, sha256, outcome, reason, bucket, key, version_id,
                              file_metadata_id, batch_id, write_id, mtime_ns, inode)
SELECT p, pk, sz, sha, oc, rs, b, k, NULL, NULL, :batch, w, mt, ino
FROM jsonb_to_recordset(CAST(:rows AS jsonb))
     AS t(p text, pk text, sz bigint, sha text, oc text, rs text, b text, k text, w text, mt bigint, ino bigint)
ON CONFLICT (legacy_path) DO UPDATE SET partition_key = EXCLUDED.partition_key, size = EXCLUDED.size,
    sha256 = EXCLUDED.sha256, outcome = EXCLUDED.outcome, reason = EXCLUDED.reason, bucket = EXCLUDED.bucket,
    key = EXCLUDED.key, version_id = NULL, file_metadata_id = NULL, batch_id = EXCLUDED.batch_id,
    write_id = EXCLUDED.write_id, mtime_ns = EXCLUDED.mtime_ns, inode = EXCLUDED.inode, updated_at = now()
RETURNING id, legacy_path, (xmax = 0) AS inserted
"""


def _ledger_images(conn: Connection, paths: list[str]) -> list[dict]:
    """Whole ledger rows as JSON images (what rollback puts back)."""
    if not paths:
        return []
    return conn.execute(text("SELECT to_jsonb(l) FROM migration_ledger l WHERE legacy_path = ANY(:p)"), {"p": paths}).scalars().all()


def _write_ledger(conn: Connection, batch_id: uuid.UUID, rows: list[dict], existing: dict[str, dict]) -> None:
    """Insert or overwrite ledger rows (outcome, reason, sha..., the intent's write id `w` and the file's mtime `mt`
    and inode `ino` as hashed, else none), recording inserts and the images of the rows overwritten, as they were
    before (read in this transaction: the run holds the partition's lock, and writes a row here once)."""
    if not rows:
        return
    before = _ledger_images(conn, [r["p"] for r in rows if r["p"] in existing])
    written = conn.execute(text(_LEDGER_UPSERT), {"rows": json_text.recordset(rows), "batch": batch_id}).all()
    overwritten = {r.legacy_path for r in written if not r.inserted}
    record_created(
        conn, batch_id,
        ledger=[str(r.id) for r in written if r.inserted],
        ledger_before=[img for img in before if img["legacy_path"] in overwritten],
    )


_LEDGER_RESTAT = """
UPDATE migration_ledger l SET mtime_ns = v.mt, inode = v.ino
FROM unnest(CAST(:p AS text[]), CAST(:mt AS bigint[]), CAST(:ino AS bigint[])) AS v(p, mt, ino)
WHERE l.legacy_path = v.p
"""

_LEDGER_FINISH = """
UPDATE migration_ledger l SET outcome = v.oc, reason = v.rs, version_id = v.ver, file_metadata_id = v.fm,
    batch_id = :batch, updated_at = now()
FROM jsonb_to_recordset(CAST(:rows AS jsonb)) AS v(p text, oc text, rs text, ver text, fm uuid)
WHERE l.legacy_path = v.p
"""


def _new_write_id() -> str:
    from t2m_pipeline.storage.s3 import new_write_id  # imported once a run writes, never by a rerun

    return new_write_id()


TASK_FILES = 4  # at most, files (or key groups) per pool task: a Future per file was 6% of a first run's Python CPU


def _batched(items: list, workers: int) -> list[list]:
    """`items` in tasks of up to TASK_FILES, never fewer tasks than workers when there are that many items (a
    chunk of a few large files keeps every worker busy)."""
    size = max(1, min(TASK_FILES, len(items) // workers))
    return [items[i:i + size] for i in range(0, len(items), size)]


def _resumed_write(old: dict | None, same_place: bool) -> str | None:
    """The write id an earlier run's unfinished intent for this very write holds (same file, same bytes, same key;
    left `failed`: killed, or failed with its answer maybe lost), so this run adopts what that write produced, or
    writes again under it; None: a new write, with a new write id.

    Kept, not replaced, so a run killed again before it records anything leaves the same write id for the next one
    (a fresh id would make the first run's upload unrecognisable). An intent written before the ledger had write ids
    has none: the file is uploaded again under a new one. That is safe: nothing is lost (the legacy file is the
    source, and the row records the new version); the older upload, if it landed, is an unrecorded version with the
    recorded one's bytes, which the sweep (`S3Storage.remove_duplicate_versions`) removes and the objects audit
    reports until then. Recognising it by its sha256 and legacy path instead would take any such version, whoever
    wrote it, so there is no such fallback.
    """
    if same_place and old["outcome"] == "failed" and old.get("write_id"):
        return old["write_id"]
    return None


def _levels(groups: dict[tuple[str, str], list[Planned]]) -> list[list[list[Planned]]]:
    """The groups (each one key's versions) in the order they can run: level 0 holds no copy; a key holding copies
    runs one level after the highest level among the keys holding their sources. (Sources never depend on their
    copies: a copy is of a file older than the copying job's completion, written by another job's run.)"""
    key_of = {id(p): key for key, group in groups.items() for p in group}
    level: dict[tuple[str, str], int] = {}
    by_level: dict[int, list[list[Planned]]] = defaultdict(list)
    for key, group in groups.items():
        by_level[_level_of(key, groups, key_of, level)].append(group)
    return [by_level[n] for n in sorted(by_level)]


def _level_of(key: tuple[str, str], groups: dict, key_of: dict, level: dict, path: frozenset = frozenset()) -> int:
    """`_levels`' recursion, a function of its own: a nested one that calls itself is a reference cycle, which kept a
    whole wave's plans alive until the cyclic garbage collector ran."""
    if key in level:
        return level[key]
    copies = [p for p in groups[key] if p.copy_source is not None]
    sources = {key_of[id(p.copy_source)] for p in copies if id(p.copy_source) in key_of}
    if sources & (path | {key}):  # a cycle: conflicting evidence, never seen in a legacy tree; refused
        for p in copies:
            p.outcome, p.reason = "failed", "copy not attempted: its source depends on it (conflicting evidence)"
        level[key] = 0
    else:
        level[key] = (1 + max((_level_of(s, groups, key_of, level, path | {key}) for s in sources), default=0)) if copies else 0
    return level[key]


def _partition_report(by_partition: dict[str, list[Entry]], plans: list[Planned]) -> dict[str, dict]:
    """What one run did per partition (a Dagster partition's materialization shows its own files only)."""
    out = {key: {"files": 0, "migrated": 0, "skipped": 0, "unsafe": 0, "failed": 0, "unattributed": 0, "copies": 0,
                 "uploaded": 0, "scenes": 0} for key in by_partition}
    for p in plans:
        row = out[p.partition]
        if p.copy_source is not None:
            row["copies"] += p.outcome == "migrated"
            row["failed"] += p.outcome == "failed"
            continue
        row["files"] += 1
        row[p.outcome or "failed"] += 1
        row["unattributed"] += bool(p.outcome == "migrated" and p.attribution and p.attribution.owner is None)
        row["uploaded"] += bool(p.result and not p.result.get("adopted"))
    return out


@dataclass(eq=False)
class PlannedWave:
    """Whole partitions, planned: what `_start_wave` and its chunks migrate."""

    by_partition: dict[str, list[Entry]]
    plans: list[Planned]
    existing: dict[str, dict]  # their ledger rows by legacy path
    copies: dict[int, list[Planned]] = field(default_factory=dict)  # id(original) -> the copies planned of it
    pending: int = 0  # its chunks submitted and not yet done
    submitted: bool = False  # every chunk of it submitted


GC_THRESHOLD = 50_000  # new objects between two young collections while a run goes (Python's default: 700)
_gc_lock = threading.Lock()
_gc_runs = 0  # runs going in this process
_gc_saved: tuple | None = None  # (thresholds, whether this module froze) from before the first of them


@contextmanager
def _fewer_collections():
    """The cyclic garbage collector, quieter while runs go. Each full collection holds the GIL, so every upload
    thread with it, while it walks every object the process holds: 0.1 to 0.2 s, nine times in a 20,000-file run,
    each time leaving the endpoint with nothing to do. So what is alive when the first run starts (the imports, the
    caller's objects) is frozen out of collections (`gc.freeze`, unless someone froze before us), and a collection
    waits for 50,000 new objects instead of 700: a run's own objects are freed when their counts drop (it makes no
    reference cycles per file), so memory stays flat. The last run to end puts back what the first one found."""
    global _gc_runs, _gc_saved
    with _gc_lock:
        if _gc_runs == 0:
            thresholds, froze = gc.get_threshold(), gc.get_freeze_count() == 0
            if froze:
                gc.freeze()
            if thresholds[0]:  # 0: automatic collection is off, and stays off
                gc.set_threshold(max(thresholds[0], GC_THRESHOLD), *thresholds[1:])
            _gc_saved = (thresholds, froze)
        _gc_runs += 1
    try:
        yield
    finally:
        with _gc_lock:
            _gc_runs -= 1
            if _gc_runs == 0 and _gc_saved is not None:
                thresholds, froze = _gc_saved
                gc.set_threshold(*thresholds)
                if froze:
                    gc.unfreeze()
                _gc_saved = None


@dataclass(frozen=True)
class _Pools:
    """A run's threads: `ahead` plans the next wave, `behind` reconciles, `uploads` sends (its threads keep their
    connections), `reads` reads and hashes files, `chunks` runs the chunks in flight."""

    ahead: ThreadPoolExecutor
    behind: ThreadPoolExecutor
    uploads: ThreadPoolExecutor
    reads: ThreadPoolExecutor
    readers: int
    chunks: ThreadPoolExecutor


class _UploadShards(Mapping):
    """`upload_shards` of the tree, read (and for a type folder seen the first time, counted and decided) when the
    walk first asks, at the upload folders: the topic folders, walked first, need none, so a first run's uploads do
    not wait for the count of every upload."""

    def __init__(self, engine: Engine, root: bytes):
        self._engine, self._root, self._shards = engine, root, None

    def _read(self) -> dict[str, int]:
        if self._shards is None:
            self._shards = upload_shards(self._engine, self._root)
        return self._shards

    def __getitem__(self, kind: str) -> int:
        return self._read()[kind]

    def __iter__(self):
        return iter(self._read())

    def __len__(self) -> int:
        return len(self._read())


class FilesMigration:
    """One run over some partitions (all of them by default). `fault` is a test seam called between stages.

    A file whose ledger row is `migrated` to where the evidence puts it now, with the size, mtime and inode the walk
    sees, is taken as unchanged without reading it, as rsync and rclone take it (with each copy made of it in place
    too). Like theirs, that rule misses a change that keeps size, mtime and inode (a write that restores its mtime):
    `checksum=True` (`--checksum`) reads and hashes every file."""

    def __init__(
        self,
        settings: Settings,
        engine: Engine,
        legacy_root,
        *,
        workers: int = 32,
        chunk_files: int = 500,
        wave_files: int = WAVE_FILES,
        checksum: bool = False,
        progress: Callable[[int, int, int, int], None] | None = None,
        fault: Callable[[str], None] | None = None,
    ):
        self.settings = settings
        self.checksum = checksum  # read and hash every file, even those whose size, mtime and inode are unchanged
        self.engine = engine
        self.root = root_bytes(legacy_root)
        self.workers = max(1, workers)
        self.chunk_files = max(1, chunk_files)
        self.wave_files = max(1, wave_files)
        self.progress = progress
        self.fault = fault or (lambda stage: None)
        self._storage: S3Storage | None = None
        self.counts: Counter = Counter()
        self._lock = threading.Lock()
        self._done_files = self._done_bytes = self._total_files = self._total_bytes = 0

    @property
    def storage(self) -> S3Storage:
        """Made when the run first needs S3: an unchanged rerun never does, and boto3's import and a client cost a
        tenth of its time. Its connection pool is at least as large as the upload pool. Files sent in one request go
        by `storage/direct_puts.py` (the CRT's signer, http.client): botocore's Python was half the CPU per file."""
        with self._lock:
            if self._storage is None:
                from t2m_pipeline.storage.direct_puts import DirectPuts
                from t2m_pipeline.storage.s3 import S3Storage

                pool = max(self.settings.s3_max_pool_connections, self.workers + 4)
                tuned = dataclasses.replace(self.settings, s3_max_pool_connections=pool)
                self._storage = S3Storage(tuned, None, single_puts=DirectPuts(tuned))
            return self._storage

    # -- planning ------------------------------------------------------------------------------------------------

    def run(self, partitions: list[str] | None = None) -> dict:
        started = time.monotonic()
        if not os.path.isdir(self.root):
            raise FileNotFoundError(f"legacy root {os.fsdecode(self.root)!r} is not a directory")
        with _fewer_collections(), partitions_locked(self.engine, partitions):  # another run of these partitions finishes first
            batch_id = start_batch(self.engine, "files", os.fsdecode(self.root))
            self.batch_id = batch_id
            try:
                self.fault("locked")
                report = self._run(partitions, batch_id)
            except BaseException:
                finish_batch(self.engine, batch_id, "failed", dict(self.counts))
                raise
            report["seconds"] = round(time.monotonic() - started, 3)
            finish_batch(self.engine, batch_id, "succeeded", report)
        return report

    def _waves(self, partitions: list[str] | None) -> Iterator[dict[str, list[Entry]]]:
        """Whole partitions, a wave at a time: the first `FIRST_WAVE_FILES` entries or more, each next one up to
        `WAVE_GROWTH` times the one before, then `wave_files` or more (the last fewer)."""
        wave: dict[str, list[Entry]] = {}
        size, target = 0, min(self.wave_files, FIRST_WAVE_FILES)
        for key, entries in iter_partitions(self.root, _UploadShards(self.engine, self.root), partitions):
            wave[key] = entries
            size += len(entries)
            if size >= target:
                target = min(self.wave_files, max(target, size) * WAVE_GROWTH)
                yield wave
                wave, size = {}, 0
        if wave:
            yield wave

    def _run(self, partitions: list[str] | None, batch_id: uuid.UUID) -> dict:
        """The tree wave by wave: each wave's partitions planned, migrated and reconciled (the next one planned and the
        one before reconciled meanwhile), so memory holds a few waves, not the tree. That keeps every rule, because
        what a rule needs together lies in one partition: a key with versions in order is a scene's or a job's, and a
        job's files and the copies made of them are in its topic folder (`attribution.add_run` files a job under one
        folder). The legacy jobs are read for the wave's folders; the other records once."""
        records = in_transaction(self.engine, load_records)
        by_partition_report: dict[str, dict] = {}
        waves = (self._plan_wave(by_partition, records, batch_id) for by_partition in self._waves(partitions))
        # The next wave is walked and planned while this one uploads, and a wave is reconciled while the next one
        # uploads (waves share no partition, so no file): the endpoint never waits between waves. One upload pool
        # for the run: its threads keep their connections from wave to wave.
        try:
            with ThreadPoolExecutor(1, thread_name_prefix="plan-next-wave") as ahead, \
                    ThreadPoolExecutor(1, thread_name_prefix="reconcile-wave") as behind, \
                    ThreadPoolExecutor(self.workers, thread_name_prefix="migrate") as pool, \
                    ThreadPoolExecutor(min(self.workers, READERS), thread_name_prefix="read") as reads, \
                    ThreadPoolExecutor(CHUNKS_IN_FLIGHT, thread_name_prefix="chunk") as chunks:
                pools = _Pools(ahead, behind, pool, reads, min(self.workers, READERS), chunks)
                self._waves_overlapped(pools, waves, batch_id, by_partition_report)
        finally:  # the upload threads are done: their connections close
            if self._storage is not None:
                self._storage.single_puts.close()
        keys = sorted(by_partition_report)
        scenes = self.migrated_scenes(keys)
        for scene in scenes:
            by_partition_report[scene["partition"]]["scenes"] += 1
        c = self.counts
        return {
            "batch_id": str(batch_id),
            "legacy_root": os.fsdecode(self.root),
            "partitions": keys,
            "waves": c["waves"],
            "files": c["files"],
            "outcomes": {o: c[f"outcome_{o}"] for o in ("migrated", "skipped", "unsafe", "failed")},
            "unattributed_files": c["unattributed_files"],
            "copies": {o: c[f"copies_{o}"] for o in ("migrated", "failed")},
            **{name: c[name] for name in (
                "uploaded_files", "uploaded_bytes", "copied_files", "adopted_versions", "unchanged_files", "unread_files",
                "moved_objects_removed", "copies_no_longer_due", "metadata_refreshed", "flagged_invalid",
                "checksum_mismatches",
            )},
            "by_partition": {key: by_partition_report[key] for key in keys},
            "scenes": scenes,
        }

    def _waves_overlapped(self, pools: _Pools, waves: Iterator[PlannedWave], batch_id, by_partition_report: dict) -> None:
        """Every chunk of the run goes through one pipeline of `CHUNKS_IN_FLIGHT`, wave after wave: the next wave's
        first chunks read and write their intents while this wave's last ones upload (a wave waiting for the one
        before to be recorded left the endpoint idle at every wave's end). `ahead` plans the next wave meanwhile; a
        wave is reconciled in `behind` once its last chunk is recorded, while later chunks upload. A level of copies
        waits for the chunks before it (copies are made from their sources in S3). A wave is counted once
        reconciled; a failure anywhere fails the run, none hides another."""
        upcoming = pools.ahead.submit(next, waves, None)
        inflight: deque[tuple[Future, PlannedWave]] = deque()
        reconciles: deque[Future] = deque()
        try:
            while (wave := upcoming.result()) is not None:
                self._check_reconciles(reconciles)  # the wave before failed to reconcile: stop now, not a wave later
                upcoming = pools.ahead.submit(next, waves, None)
                for n, level in enumerate(self._start_wave(wave, batch_id)):
                    while n and inflight:  # copies find their sources uploaded and recorded
                        self._chunk_done(*inflight.popleft(), pools, reconciles, batch_id, by_partition_report)
                    for chunk in self._chunks(level):
                        wave.pending += 1
                        inflight.append((pools.chunks.submit(self._migrate_chunk, pools, chunk, wave, batch_id), wave))
                        while len(inflight) >= CHUNKS_IN_FLIGHT:
                            self._chunk_done(*inflight.popleft(), pools, reconciles, batch_id, by_partition_report)
                wave.submitted = True
                if not wave.pending:  # nothing of it to upload
                    self._wave_done(wave, pools, reconciles, batch_id, by_partition_report)
            while inflight:
                self._chunk_done(*inflight.popleft(), pools, reconciles, batch_id, by_partition_report)
            while reconciles:
                self._count_wave(*reconciles.popleft().result(), by_partition_report)
        except BaseException as exc:
            upcoming.cancel()
            for future, _ in inflight:
                future.cancel()  # one already running finishes (the pools wait for it): its intents stay resumable
            while reconciles:
                try:  # a wave reconciled meanwhile counts; or its own failure is told as well
                    self._count_wave(*reconciles.popleft().result(), by_partition_report)
                except BaseException as other:  # noqa: BLE001 (told, then the first failure is raised)
                    exc.add_note(f"the reconcile of an earlier wave failed too: {other!r}")
            raise

    def _check_reconciles(self, reconciles: deque[Future]) -> None:
        for future in reconciles:
            if future.done():
                future.result()  # raises its failure

    def _chunk_done(self, future: Future, wave: PlannedWave, pools: _Pools, reconciles: deque[Future], batch_id, report: dict) -> None:
        future.result()
        wave.pending -= 1
        if wave.submitted and not wave.pending:
            self._wave_done(wave, pools, reconciles, batch_id, report)

    def _wave_done(self, wave: PlannedWave, pools: _Pools, reconciles: deque[Future], batch_id, report: dict) -> None:
        """Every chunk of `wave` is recorded: its reconcile goes to `behind`, after the one before it is counted (a
        failure there is raised here, no later than the next wave's end)."""
        self.fault("before_reconcile")
        while reconciles:
            self._count_wave(*reconciles.popleft().result(), report)
        reconciles.append(pools.behind.submit(self._reconcile_wave, wave, batch_id))

    def _plan_wave(self, by_partition: dict[str, list[Entry]], records, batch_id: uuid.UUID) -> PlannedWave:
        """A wave's evidence, owners, plans and ledger rows: read (and its users made) before it migrates."""
        folders = sorted({e.parts[1].decode("utf-8", "surrogateescape") for key, entries in by_partition.items()
                          if key.startswith("topic/") for e in entries})
        index = in_transaction(self.engine, lambda conn: load_index(conn, folders, records))
        clerks = {c: LEGACY_USER_METADATA for c in _upload_clerks(by_partition, index)}
        clerks[SYSTEM_CLERK_ID] = SYSTEM_USER_METADATA
        users = in_transaction(self.engine, lambda conn: _ensure_users(conn, clerks, batch_id))
        plans = plan_entries(by_partition, index, users, users[SYSTEM_CLERK_ID])
        existing = _existing_ledger(self.engine, [p.legacy_path for p in plans], sorted(by_partition))
        return PlannedWave(by_partition, plans, existing)

    def _start_wave(self, wave: PlannedWave, batch_id: uuid.UUID) -> list[list[list[Planned]]]:
        """A planned wave's settled entries written, its copies indexed; returns its keys' version groups in levels."""
        plans, existing = wave.plans, wave.existing
        settled = [p for p in plans if p.outcome is not None]
        to_migrate = [p for p in plans if p.outcome is None]
        with self._lock:  # the walk goes on as the run does: the totals grow wave by wave
            self._total_files += len(plans)
            self._total_bytes += sum(p.entry.size or 0 for p in to_migrate)
        self._settle(settled, existing, batch_id)
        copies: dict[int, list[Planned]] = defaultdict(list)
        for plan in to_migrate:
            if plan.copy_source is not None:
                copies[id(plan.copy_source)].append(plan)
        wave.copies = dict(copies)
        self._tick(len(settled), 0)

        groups: dict[tuple[str, str], list[Planned]] = defaultdict(list)
        for plan in to_migrate:
            groups[(plan.target.bucket_kind, plan.target.key)].append(plan)
        for group in groups.values():
            group.sort(key=lambda p: (p.target.order, p.legacy_path))
        # Chunks never share a key, so version order is unaffected by two in flight. A level starts when the one
        # before it is recorded: copies then find their sources in S3.
        return _levels(groups)

    def _reconcile_wave(self, wave: PlannedWave, batch_id: uuid.UUID) -> tuple[PlannedWave, list[Planned]]:
        self._reconcile(wave.plans, wave.existing, batch_id)
        return wave, wave.plans

    def _count_wave(self, wave: PlannedWave, plans: list[Planned], by_partition_report: dict[str, dict]) -> None:
        by_partition_report.update(_partition_report(wave.by_partition, plans))
        with self._lock:
            self.counts["waves"] += 1
            for p in plans:
                if p.copy_source is not None:
                    self.counts[f"copies_{p.outcome}"] += 1
                    continue
                self.counts["files"] += 1
                self.counts[f"outcome_{p.outcome}"] += 1
                self.counts["unattributed_files"] += bool(p.outcome == "migrated" and p.attribution and p.attribution.owner is None)

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
        if plan.copy_source is not None:  # a copy is made from S3, of what its source read
            source = plan.copy_source
            if plan.outcome is None:
                plan.sha256, plan.size, plan.flags = source.sha256, source.size, list(source.flags)
            return
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
        plan.flags += content_flags(plan.target, plan.size, plan.sha256, plan.target.check == "plan" and is_failed_plan(head))

    def _unchanged_on_disk(self, p: Planned, existing: dict[str, dict], copies: dict[int, list[Planned]]) -> bool:
        """The ledger has this file migrated to where it goes now, with the size, mtime and inode the walk sees, and
        every copy made of it is in place with the same bytes: nothing to read (never with `checksum`)."""
        old = existing.get(p.legacy_path)
        e, buckets = p.entry, self.settings.buckets
        if self.checksum or p.copy_source is not None or not old or old["outcome"] != "migrated" or not old["version_id"]:
            return False
        if old.get("inode") is None or (old["size"], old.get("mtime_ns"), old["inode"]) != (e.size, e.mtime_ns, e.inode):
            return False
        for q in (p, *copies.get(id(p), ())):
            row = existing.get(q.legacy_path)
            in_place = row and row["outcome"] == "migrated" and row["version_id"] and row["sha256"] == old["sha256"]
            if not in_place or (row["bucket"], row["key"]) != (buckets[q.target.bucket_kind], q.target.key):
                return False
        return True

    def _migrate_chunk(self, pools: _Pools, chunk: list[list[Planned]], wave: PlannedWave, batch_id) -> None:
        existing, pool = wave.existing, pools.uploads
        files = [p for group in chunk for p in group]
        to_read = []
        for p in files:
            if self._unchanged_on_disk(p, existing, wave.copies):
                old = existing[p.legacy_path]
                p.sha256, p.size, p.unread = old["sha256"], old["size"], True
                p.flags = content_flags(p.target, p.size, p.sha256, failed_plan=False)  # completed from the row later
            else:
                to_read.append(p)
        with self._lock:
            self.counts["unread_files"] += len(files) - len(to_read)
        list(pools.reads.map(lambda batch: [self._read(p) for p in batch], _batched(to_read, pools.readers)))
        buckets = self.settings.buckets
        intents, work, restat = [], [], []
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
                    stat = (p.entry.mtime_ns, p.entry.inode)
                    if p.copy_source is None and not p.unread and (old.get("mtime_ns"), old.get("inode")) != stat:
                        restat.append(dict(p=p.legacy_path, mt=stat[0], ino=stat[1]))  # a rerun reads it no more
                    p.stored, p.file_metadata_id = (bucket, p.target.key, old["version_id"]), old["file_metadata_id"]
                    with self._lock:
                        self.counts["unchanged_files"] += 1
                    continue
                resumed = _resumed_write(old, same_place)
                p.write_id = resumed or _new_write_id()
                todo.append((p, resumed is not None))
                stat = {} if p.copy_source is not None else dict(mt=p.entry.mtime_ns, ino=p.entry.inode)
                intents.append(
                    dict(p=p.legacy_path, pk=p.partition, sz=p.size, sha=p.sha256, oc="failed", rs=INTENT, b=bucket,
                         k=p.target.key, w=p.write_id, **stat)
                )
            if todo:
                work.append(todo)
        read_failures = [p for p in files if p.outcome == "failed"]
        failures = [dict(p=p.legacy_path, pk=p.partition, sz=p.size, sha=None, oc="failed", rs=p.reason, b=None, k=None) for p in read_failures]

        def write(conn: Connection) -> None:
            _write_ledger(conn, batch_id, intents + failures, existing)
            if restat:
                conn.execute(text(_LEDGER_RESTAT), {c: [r[c] for r in restat] for c in ("p", "mt", "ino")})

        if intents or failures or restat:  # an unchanged chunk writes nothing: no transaction
            in_transaction(self.engine, write)
        unchanged = [p for p in files if p.outcome == "migrated"]
        self._tick(len(unchanged) + len(read_failures), sum(p.size or 0 for p in unchanged))
        self.fault("after_intents")
        if work:
            checks = [p for todo in work for p, check in todo if check]
            claimed = self._claimed_versions(checks)
            listed = version_ids_by_key(self.storage.client, {(buckets[p.target.bucket_kind], p.target.key) for p in checks}) if checks else {}
            list(pool.map(lambda batch: [self._upload_group(todo, claimed, listed) for todo in batch], _batched(work, self.workers)))
        self.fault("after_uploads")
        done = [p for todo in work for p, _ in todo]
        if done:
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
        from t2m_pipeline.storage.s3 import ObjectOwner

        t = p.target
        return ObjectOwner(user_id=t.user_id, file_type=t.file_type, job_id=t.job_id, scene_number=t.scene_number)

    def _adoptable(self, p: Planned, bucket: str, versions: list[str], claimed: set[str], heads: dict[str, dict]) -> dict | None:
        """The version an interrupted run's write of this very file produced: one no row claims, carrying the
        intent's write id (`S3Storage.versions_of_write`; the newest if a retried request left several). `versions`
        are the key's as listed (newest first); `heads` the HEAD answers already read for this key (each version is
        read once for all of the key's files).

        Its bytes are also checked against the intent (the version's `sha256` must be the file's): a write can have
        produced other bytes (a big file that changed while it was uploaded fails that write, and a kill may come
        before that failure is written down; the file may then change back). That is a check of content, not a second
        way to recognise the write: a version with the same bytes and legacy path under another write id is not
        adopted, and the file is uploaded again.
        """
        unclaimed = [v for v in versions if v not in claimed]
        for version_id in reversed(self.storage.versions_of_write(bucket, p.target.key, p.write_id, listed=unclaimed, heads=heads)):
            head = heads[version_id]
            if head.get("Metadata", {}).get("sha256") != p.sha256:
                continue
            claimed.add(version_id)
            return {"version_id": version_id, "size": head["ContentLength"], "adopted": True}
        return None

    def _upload_group(self, todo: list[tuple[Planned, bool]], claimed: dict, listed: dict) -> None:
        """The versions of one key, oldest first; after a failure the newer versions wait for a rerun (order kept)."""
        failed = None
        heads: dict[str, dict] = {}  # the key's versions as HEAD answered, read once for all its files
        for p, check in todo:
            bucket = self.settings.buckets[p.target.bucket_kind]
            if failed:
                p.outcome, p.reason = "failed", f"not attempted: an older version of this key failed ({failed})"
                continue
            source = p.copy_source
            if source is not None and (source.outcome != "migrated" or source.stored is None):
                p.outcome, p.reason = "failed", "copy not attempted: its original is not migrated (rerun)"
                failed = "its original is not migrated"
                continue
            try:
                where = (bucket, p.target.key)
                result = self._adoptable(p, bucket, listed.get(where, []), claimed.setdefault(where, set()), heads) if check else None
                if result is None:
                    result = self._put(p, bucket) if source is None else self._copy(p, bucket)
                p.result, p.outcome = result, "migrated"
                p.stored = (bucket, p.target.key, result["version_id"])
            except Exception as exc:  # noqa: BLE001 - one file's failure is recorded, never fatal to the run
                failed = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"[:500]
                p.outcome, p.reason = "failed", f"{'copy' if source else 'upload'} failed: {failed}"
            self._tick(1, p.size or 0)

    def _copy(self, p: Planned, bucket: str) -> dict:
        """A server-side copy of the source's version: the bytes never leave S3."""
        stored = self.storage.copy_version(
            p.copy_source.stored, bucket, p.target.key, sha256=p.sha256, size=p.size, owner=self._owner(p),
            content_type=p.target.content_type, original_name=p.source_path, write_id=p.write_id,
        )
        with self._lock:
            self.counts["copied_files"] += 1
        return {"version_id": stored.version_id, "size": stored.size, "adopted": False}

    def _put(self, p: Planned, bucket: str) -> dict:
        args = dict(owner=self._owner(p), content_type=p.target.content_type, original_name=p.source_path, write_id=p.write_id)
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
            "legacy_path": p.source_path,
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
        video_hash = (t.metadata.get("legacy_video") or {}).get("file_hash")
        if isinstance(video_hash, str) and re.fullmatch(r"[0-9a-fA-F]{64}", video_hash):
            meta["legacy_video_hash_match"] = video_hash.lower() == p.sha256
        if p.flags:
            meta["flags"] = p.flags
            meta["legacy_invalid"] = any(f.startswith("invalid") for f in p.flags)
        return meta

    def _record(self, conn: Connection, done: list[Planned], batch_id) -> None:
        ok = [p for p in done if p.outcome == "migrated" and p.result]
        buckets = self.settings.buckets
        fm_ids: dict[tuple[str, str, str | None], uuid.UUID] = {}
        if ok:
            from t2m_pipeline.db.files import FileRecord, record_files

            records = [
                FileRecord(
                    user_id=p.target.user_id, job_id=p.target.job_id, file_type=p.target.file_type,
                    original_filename=p.target.original_filename[:1024], bucket=buckets[p.target.bucket_kind],
                    key=p.target.key, size=p.size, content_type=p.target.content_type,
                    version_id=p.result["version_id"], sha256=p.sha256, extra=self._metadata(p),
                )
                for p in ok
            ]
            rows = record_files(conn, records)  # the one statement every file_metadata row goes through
            fm_ids = {(r.bucket, r.key, r.version_id): r.id for r in rows}
            record_created(
                conn, batch_id,
                file_metadata=[str(r.id) for r in rows if r.inserted],
                s3_versions=[[buckets[p.target.bucket_kind], p.target.key, p.result["version_id"]] for p in ok if not p.result["adopted"]],
            )
        for p in ok:
            p.file_metadata_id = fm_ids.get((buckets[p.target.bucket_kind], p.target.key, p.result["version_id"]))
            p.written_reason = _ledger_reason(p)
        finished = [p for p in done if p.outcome in ("migrated", "failed") and (p.result or p.outcome == "failed")]
        if finished:
            rows = [
                {"p": p.legacy_path, "oc": p.outcome, "rs": _ledger_reason(p) if p.outcome == "migrated" else p.reason,
                 "ver": p.result["version_id"] if p.result else None,
                 "fm": fm_ids.get((buckets[p.target.bucket_kind], p.target.key, p.result["version_id"])) if p.result else None}
                for p in finished
            ]
            conn.execute(text(_LEDGER_FINISH), {"rows": json_text.recordset(rows), "batch": batch_id})
        with self._lock:  # two chunks may record at once
            for p in ok:
                self.counts["adopted_versions"] += int(p.result["adopted"])
                self.counts["flagged_invalid"] += int(any(f.startswith("invalid") for f in p.flags))
                self.counts["checksum_mismatches"] += int(any(f.startswith("legacy checksum") for f in p.flags))

    # -- after the uploads: one place per file, metadata up to date ----------------------------------------------

    def _reconcile(self, plans: list[Planned], existing: dict[str, dict], batch_id: uuid.UUID) -> None:
        """Remove what the migration wrote for a legacy file where the evidence no longer puts it, and bring the rows
        in place up to date. A file with a failed plan is left alone (its old place stays until its new one exists).

        Only files the ledger had a row for before this run (their own, or a copy's) are looked at: every object the
        migration writes for a file has such a row from its intent on (write-ahead), until a rollback removes both,
        so a file new to the ledger has nothing elsewhere, and its rows are this run's, written from the evidence it
        read. (A first run was reading back every row it had just written, after its last upload.)"""
        by_path: dict[str, list[Planned]] = defaultdict(list)
        for p in plans:
            by_path[p.source_path].append(p)
        known = {split_copy_path(key)[0] for key in existing}
        settled = {
            path: ps for path, ps in by_path.items()
            if path in known and all(p.outcome in ("migrated", "skipped", "unsafe") for p in ps)
        }
        planned_keys = {p.legacy_path for p in plans}
        stale_copies = [
            key for key in existing if COPY_MARK in key and key not in planned_keys and split_copy_path(key)[0] in settled
        ]
        paths = sorted(settled)
        for i in range(0, len(paths), RECONCILE_PATHS):
            part = paths[i : i + RECONCILE_PATHS]
            part_set = set(part)
            self._reconcile_paths(
                {path: settled[path] for path in part}, existing,
                [key for key in stale_copies if split_copy_path(key)[0] in part_set], batch_id,
            )

    def _reconcile_paths(self, by_path: dict[str, list[Planned]], existing: dict, stale_copies: list[str], batch_id) -> None:
        rows = in_transaction(
            self.engine,
            lambda conn: conn.execute(
                text("SELECT id, s3_bucket, s3_key, metadata::text FROM file_metadata WHERE metadata->>'legacy_path' = ANY(:p)"),
                {"p": list(by_path)},
            ).all(),
        )
        buckets = self.settings.buckets
        stale_ids: dict[str, Planned | None] = {}
        current: dict[str, dict] = {}
        for row_id, s3_bucket, s3_key, metadata_text in rows:
            metadata = json_text.loads(metadata_text)  # every migrated row of these files: read fast
            plans = by_path[metadata["legacy_path"]]
            places = {(buckets[p.target.bucket_kind], p.target.key) for p in plans if p.outcome == "migrated"}
            if (s3_bucket, s3_key) in places:
                current[str(row_id)] = {"id": row_id, "metadata": metadata}
                continue
            original = next((p for p in plans if p.copy_source is None), None)
            stale_ids[str(row_id)] = original if original is not None and original.stored else next((p for p in plans if p.stored), None)
        stale: list[dict] = []
        if stale_ids:  # rare (a file that moved): whole rows, for the batch's images
            images = in_transaction(
                self.engine,
                lambda conn: conn.execute(
                    text("SELECT to_jsonb(f) FROM file_metadata f WHERE id = ANY(CAST(:ids AS uuid[]))"), {"ids": list(stale_ids)}
                ).scalars().all(),
            )
            for img in images:
                keeper = stale_ids[str(img["id"])]
                stale.append({**img, "replaced_by": list(keeper.stored) if keeper else None,
                              "replaced_by_sha256": keeper.sha256 if keeper else None})
        if stale:  # S3 first: a run killed after this finds the rows again, and their versions gone
            from t2m_pipeline.storage.errors import ObjectNotFoundError

            for img in stale:
                try:
                    self.storage.delete_version(img["s3_bucket"], img["s3_key"], img["version_id"])
                except ObjectNotFoundError:
                    pass
        self.fault("after_stale_deletes")

        updates, ledger_updates = [], []
        moved: dict[str, list[dict]] = defaultdict(list)
        for img in stale:
            if "copy_of" not in img["metadata"]:
                moved[img["metadata"]["legacy_path"]].append({"bucket": img["s3_bucket"], "key": img["s3_key"],
                                                             "version_id": img["version_id"], "batch": str(batch_id)})
        for path, plans in by_path.items():
            for p in plans:
                if p.outcome != "migrated" or p.file_metadata_id is None or str(p.file_metadata_id) not in current:
                    continue
                row = current[str(p.file_metadata_id)]
                old = row["metadata"] or {}
                if p.unread or (p.copy_source is not None and p.copy_source.unread):  # its first bytes were not read
                    p.flags = content_flags(p.target, p.size, p.sha256, FAILED_PLAN_FLAG in (old.get("flags") or ()))
                kept = {k: old[k] for k in PRESERVED_METADATA if k in old}
                if p.copy_source is None and moved.get(path):
                    kept["moved_from"] = [*kept.get("moved_from", []), *moved[path]]
                desired = {**{k: v for k, v in self._metadata(p).items() if k not in PRESERVED_METADATA}, **kept}
                if desired != old:
                    updates.append((row, desired))
                reason = _ledger_reason(p, desired.get("moved_from", ()))
                ledger_row = existing.get(p.legacy_path)
                written = p.written_reason if p.written_reason is not _UNWRITTEN else (ledger_row or {}).get("reason")
                if reason != written:
                    ledger_updates.append((p.legacy_path, reason))
        if not (stale or stale_copies or updates or ledger_updates):
            return

        def work(conn: Connection) -> None:
            removed = _ledger_images(conn, stale_copies)
            if stale_copies:
                conn.execute(text("DELETE FROM migration_ledger WHERE legacy_path = ANY(:k)"), {"k": stale_copies})
            if stale:
                conn.execute(text("DELETE FROM file_metadata WHERE id = ANY(CAST(:ids AS uuid[]))"), {"ids": [str(i["id"]) for i in stale]})
            fm_before = []
            if updates:
                ids = [str(row["id"]) for row, _ in updates]
                fm_before = conn.execute(
                    text("SELECT to_jsonb(f) FROM file_metadata f WHERE id = ANY(CAST(:ids AS uuid[]))"), {"ids": ids}
                ).scalars().all()
                conn.execute(
                    text(
                        "UPDATE file_metadata f SET metadata = CAST(v.m AS jsonb) "
                        "FROM unnest(CAST(:ids AS uuid[]), CAST(:ms AS text[])) AS v(i, m) WHERE f.id = v.i"
                    ),
                    {"ids": ids, "ms": [json.dumps(desired) for _, desired in updates]},
                )
            before = []
            if ledger_updates:
                before = conn.execute(
                    text("SELECT to_jsonb(l) FROM migration_ledger l WHERE legacy_path = ANY(:k)"), {"k": [k for k, _ in ledger_updates]}
                ).scalars().all()
                conn.execute(
                    text(
                        "UPDATE migration_ledger l SET reason = v.rs, batch_id = :b, updated_at = now() "
                        "FROM unnest(CAST(:k AS text[]), CAST(:rs AS text[])) AS v(k, rs) WHERE l.legacy_path = v.k"
                    ),
                    {"k": [k for k, _ in ledger_updates], "rs": [r for _, r in ledger_updates], "b": batch_id},
                )
            record_created(
                conn, batch_id,
                ledger_removed=removed,
                file_metadata_removed=stale,
                file_metadata_before=list(fm_before),
                ledger_before=list(before),
            )

        in_transaction(self.engine, work)
        with self._lock:
            self.counts["moved_objects_removed"] += sum(1 for i in stale if "copy_of" not in i["metadata"])
            self.counts["copies_no_longer_due"] += sum(1 for i in stale if "copy_of" in i["metadata"])
            self.counts["metadata_refreshed"] += len(updates)

    # -- what joins the asset graph --------------------------------------------------------------------------------

    def migrated_scenes(self, partitions: list[str]) -> list[dict]:
        return migrated_scenes(self.engine, partitions, self.batch_id)


def migrated_scenes(engine: Engine, partitions: list[str], batch_id: uuid.UUID | None = None) -> list[dict]:
    """Scenes of attributed jobs with migrated code or video (a render-cache hit has a video and no code: a scene
    all the same), each with its newest code and video version and its legacy partition."""
    rows = in_transaction(
        engine,
        lambda conn: conn.execute(
            text(
                "SELECT l.partition_key, fm.user_id, fm.job_id, (fm.metadata->>'scene_number')::int AS scene, fm.file_type, fm.s3_bucket, "
                "fm.s3_key, fm.version_id, fm.file_size, fm.checksum, fm.metadata->'version_order' AS ord, "
                "l.batch_id = :b AS new FROM migration_ledger l JOIN file_metadata fm ON fm.id = l.file_metadata_id "
                "WHERE l.partition_key = ANY(:parts) AND l.outcome = 'migrated' AND fm.job_id IS NOT NULL "
                "AND fm.file_type IN (:code, :video) AND fm.metadata ? 'scene_number'"
            ),
            {"parts": partitions, "b": batch_id, "code": FileType.SCENE_CODE, "video": FileType.SCENE_VIDEO},
        ).all(),
    )
    scenes: dict[tuple, dict] = {}
    for r in rows:
        scene = scenes.setdefault(
            (str(r.user_id), str(r.job_id), r.scene),
            {"user_id": str(r.user_id), "job_id": str(r.job_id), "scene_number": r.scene, "partition": r.partition_key, "new": False},
        )
        scene["new"] = scene["new"] or bool(r.new)
        part = "code" if r.file_type == FileType.SCENE_CODE else "video"
        best = scene.get(part)
        order = list(r.ord or [])
        if best is None or order > best["order"]:
            scene[part] = {
                "bucket": r.s3_bucket, "key": r.s3_key, "version_id": r.version_id, "size": r.file_size,
                "sha256": r.checksum, "order": order,
            }
    return sorted(scenes.values(), key=lambda s: (s["job_id"], s["scene_number"]))


def migrate_files(settings: Settings, engine: Engine, legacy_root, partitions: list[str] | None = None, **kwargs) -> dict:
    """Run the files migration over `partitions` (default: every partition discovered under `legacy_root`)."""
    return FilesMigration(settings, engine, legacy_root, **kwargs).run(partitions)


__all__ = ["FilesMigration", "migrate_files", "migrated_scenes", "INTENT", "LOOSE"]
