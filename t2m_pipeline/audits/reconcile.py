"""`file_metadata` against S3, streamed: a merge of two key-sorted streams, so memory stays bounded at any size.

One side pages through ListObjectVersions (keys in UTF-8 byte order, at most `list_page_size` versions per page);
the other reads `file_metadata` through a server-side cursor ordered by `s3_key COLLATE "C"` (byte order too, so
both sides agree on what "next key" means). The merge walks one key at a time; only that key's versions and rows,
one page and one fetch batch are in memory, plus a bounded batch of HEAD requests when checksums are verified.

Findings (subject `s3://bucket/key?versionId=...`):
- missing_object (ERROR): a row whose version is not in S3: possible data loss.
- object_size_mismatch / object_checksum_mismatch (ERROR): the version differs from its row.
- changed_object (WARNING): the current version of a recorded key has no row: written around the storage layer.
- orphan_object (WARNING): any other version without a row.
Either is INFO when its sha256 equals a recorded version's of the key (an identical extra version left by a retried
write). Nothing is repaired here: the runner has the storage layer's sweep remove identical extra versions that
our own writes left (`S3Storage.remove_duplicate_versions`); anything else, a human decides.
"""

from __future__ import annotations

import base64
import binascii
import itertools
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError
from sqlalchemy import Engine, select

from t2m_pipeline.audits.findings import CheckScope, Finding
from t2m_pipeline.audits.policy import AuditPolicy
from t2m_pipeline.config import Settings
from t2m_pipeline.db.models import FileMetadata
from t2m_pipeline.storage.errors import map_error
from t2m_pipeline.storage.layout import is_report_key
from t2m_pipeline.storage.versions import iter_versions

MISSING = "missing_object"
ORPHAN = "orphan_object"
CHANGED = "changed_object"
SIZE_MISMATCH = "object_size_mismatch"
CHECKSUM_MISMATCH = "object_checksum_mismatch"
RECONCILED_KINDS = ("videos", "code", "thumbnails")  # temp holds scratch without rows
HEAD_BATCH_PER_WORKER = 16
NULL_VERSION = "null"


class ListingOrderError(RuntimeError):
    """A stream was not in key order: the merge would report false findings, so the audit stops instead."""


@dataclass(frozen=True)
class S3Version:
    key: str
    version_id: str
    size: int
    is_latest: bool
    last_modified: datetime
    delete_marker: bool = False


@dataclass(frozen=True)
class RowVersion:
    id: Any
    key: str
    version_id: str | None
    size: int | None
    checksum: str | None
    created_at: datetime


@dataclass
class ReconcileStats:
    """Counts for reports; filled while the findings stream is consumed."""

    buckets: list[str] = field(default_factory=list)
    skipped_buckets: dict[str, str] = field(default_factory=dict)
    counts: Counter = field(default_factory=Counter)

    def as_dict(self) -> dict[str, Any]:
        return {"buckets": self.buckets, "skipped_buckets": self.skipped_buckets, **dict(sorted(self.counts.items()))}


def object_subject(bucket: str, key: str, version_id: str | None) -> str:
    return f"s3://{bucket}/{key}" + (f"?versionId={version_id}" if version_id is not None else "")


def split_object_subject(subject: str) -> tuple[str, str, str | None]:
    """`object_subject`'s inverse: (bucket, key, version id)."""
    location, marker, version_id = subject.removeprefix("s3://").rpartition("?versionId=")
    if not marker:
        location, version_id = version_id, None
    bucket, _, key = location.partition("/")
    return bucket, key, version_id


def reconcile_scope(buckets: list[str], verify_checksums: bool) -> CheckScope:
    names = (MISSING, ORPHAN, CHANGED, SIZE_MISMATCH) + ((CHECKSUM_MISMATCH,) if verify_checksums else ())
    return CheckScope(names, tuple(f"s3://{bucket}/" for bucket in buckets))


def _utc(value: datetime) -> datetime:
    return value.astimezone(timezone.utc) if value.tzinfo else value.replace(tzinfo=timezone.utc)


# -- the two streams ---------------------------------------------------------------------------------------------


def _s3_version(entry: dict, delete_marker: bool) -> S3Version:
    return S3Version(
        entry["Key"],
        entry.get("VersionId") or NULL_VERSION,
        0 if delete_marker else entry["Size"],
        entry.get("IsLatest", False),
        _utc(entry["LastModified"]),
        delete_marker,
    )


def iter_s3_versions(client: Any, bucket: str, page_size: int = 1000) -> Iterator[S3Version]:
    """Every version and delete marker of the bucket in key order, one page in memory at a time."""
    try:
        for entry in iter_versions(client, bucket, page_size=page_size, delete_markers=True):
            yield _s3_version(entry, delete_marker=entry["IsDeleteMarker"])
    except (ClientError, BotoCoreError) as exc:
        raise map_error(exc, bucket) from exc


def iter_rows(engine: Engine, bucket: str, fetch_size: int = 2000) -> Iterator[RowVersion]:
    """The bucket's `file_metadata` rows in byte order of their keys, through a server-side cursor."""
    query = (
        select(
            FileMetadata.id,
            FileMetadata.s3_key,
            FileMetadata.version_id,
            FileMetadata.file_size,
            FileMetadata.checksum,
            FileMetadata.created_at,
        )
        .where(FileMetadata.s3_bucket == bucket)
        .order_by(FileMetadata.s3_key.collate("C"), FileMetadata.version_id)
    )
    with engine.connect() as conn:
        result = conn.execution_options(stream_results=True, yield_per=fetch_size).execute(query)
        for row in result:
            yield RowVersion(row.id, row.s3_key, row.version_id, row.file_size, row.checksum, row.created_at)


def _grouped(items: Iterator, what: str) -> Iterator[tuple[str, list]]:
    previous: str | None = None
    for key, group in itertools.groupby(items, key=lambda item: item.key):
        if previous is not None and key <= previous:
            raise ListingOrderError(f"{what} not in key order: {key!r} after {previous!r}")
        previous = key
        yield key, list(group)


def merge_by_key(
    s3_items: Iterator[S3Version], rows: Iterator[RowVersion]
) -> Iterator[tuple[str, list[S3Version], list[RowVersion]]]:
    """(key, its S3 versions, its rows) for every key on either side, in key order."""
    s3_groups, row_groups = _grouped(s3_items, "S3 listing"), _grouped(rows, "file_metadata rows")
    s3_next, row_next = next(s3_groups, None), next(row_groups, None)
    while s3_next is not None or row_next is not None:
        if row_next is None or (s3_next is not None and s3_next[0] < row_next[0]):
            yield s3_next[0], s3_next[1], []
            s3_next = next(s3_groups, None)
        elif s3_next is None or row_next[0] < s3_next[0]:
            yield row_next[0], [], row_next[1]
            row_next = next(row_groups, None)
        else:
            yield s3_next[0], s3_next[1], row_next[1]
            s3_next, row_next = next(s3_groups, None), next(row_groups, None)


# -- judging one key ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _PendingHead:
    """A version whose content must be read back (HEAD) before it can be judged."""

    bucket: str
    key: str
    version: S3Version
    row: RowVersion | None  # the row to compare with; None for an unrecorded version
    recorded: tuple[RowVersion, ...] = ()


def _checksum_hex(value: str | None) -> str | None:
    """S3's ChecksumSHA256 (base64) as hex; None for a composite (multipart) checksum or none at all."""
    if not value or "-" in value:
        return None
    try:
        raw = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        return None
    return raw.hex() if len(raw) == 32 else None


@dataclass
class _Judge:
    bucket: str
    settle_before: datetime
    verify: bool
    stats: ReconcileStats

    def key(self, key: str, versions: list[S3Version], rows: list[RowVersion]) -> tuple[list[Finding], list[_PendingHead]]:
        findings: list[Finding] = []
        pending: list[_PendingHead] = []
        live = {v.version_id: v for v in versions if not v.delete_marker}
        latest = next((v for v in versions if v.is_latest), None)
        latest_live = latest if latest is not None and not latest.delete_marker else None
        counts = self.stats.counts
        counts["versions"] += len(live)
        counts["delete_markers"] += len(versions) - len(live)
        counts["rows"] += len(rows)
        matched: set[str] = set()
        for row in rows:
            if row.version_id in (None, NULL_VERSION):
                # Written while versioning was off or suspended: the "null" version, else whatever is current.
                version = live.get(NULL_VERSION) or (latest_live if row.version_id is None else None)
            else:
                version = live.get(row.version_id)
            if version is None:
                if row.created_at >= self.settle_before:
                    counts["too_recent_to_judge"] += 1
                    continue
                detail = {
                    "row_id": str(row.id),
                    "size": row.size,
                    "sha256": row.checksum,
                    "other_versions": len(live),
                    "key_deleted": latest is not None and latest.delete_marker,
                    "meaning": "possible data loss: the row's object version is not in S3",
                }
                findings.append(Finding(MISSING, "ERROR", object_subject(self.bucket, key, row.version_id), detail))
                continue
            matched.add(version.version_id)
            counts["matched"] += 1
            if row.size is not None and row.size != version.size:
                detail = {"row_id": str(row.id), "row_size": row.size, "s3_size": version.size, "s3_version": version.version_id}
                findings.append(Finding(SIZE_MISMATCH, "ERROR", object_subject(self.bucket, key, row.version_id), detail))
            elif self.verify and row.checksum:
                pending.append(_PendingHead(self.bucket, key, version, row))
        recorded = tuple(rows)
        for version in live.values():
            if version.version_id in matched:
                continue
            if version.last_modified >= self.settle_before:
                counts["too_recent_to_judge"] += 1
                continue
            if recorded and self.verify:
                pending.append(_PendingHead(self.bucket, key, version, None, recorded))
            else:
                findings.append(self.unrecorded(key, version, recorded, None))
        return findings, pending

    def unrecorded(self, key: str, version: S3Version, recorded: tuple[RowVersion, ...], sha256: str | None) -> Finding:
        subject = object_subject(self.bucket, key, version.version_id)
        detail: dict[str, Any] = {
            "size": version.size,
            "last_modified": version.last_modified.isoformat(),
            "is_latest": version.is_latest,
            "recorded_versions": len(recorded),
        }
        if sha256:
            detail["sha256"] = sha256
        twin = next((r for r in recorded if sha256 and r.checksum == sha256 and r.size in (None, version.size)), None)
        check = CHANGED if recorded and version.is_latest else ORPHAN
        if twin is not None:
            detail["identical_to_version"] = twin.version_id
            detail["meaning"] = "an identical extra version (a retried write whose answer was lost)"
            return Finding(check, "INFO", subject, detail)
        if check == CHANGED:
            detail["meaning"] = "the key's current content has no row: written around the storage layer"
        return Finding(check, "WARNING", subject, detail)

    def after_head(self, item: _PendingHead, head: dict | None) -> Finding | None:
        counts = self.stats.counts
        if head is None:  # gone between listing and HEAD: the next run judges it again
            counts["vanished_during_audit"] += 1
            return None
        counts["heads"] += 1
        meta_sha = (head.get("Metadata") or {}).get("sha256")
        checksum_sha = _checksum_hex(head.get("ChecksumSHA256"))
        if item.row is None:
            return self.unrecorded(item.key, item.version, item.recorded, meta_sha or checksum_sha)
        if meta_sha is None and checksum_sha is None:
            counts["unverifiable"] += 1
            return None
        expected = item.row.checksum
        if (meta_sha is not None and meta_sha != expected) or (checksum_sha is not None and checksum_sha != expected):
            detail = {
                "row_id": str(item.row.id),
                "row_sha256": expected,
                "s3_metadata_sha256": meta_sha,
                "s3_checksum_sha256": checksum_sha,
                "s3_version": item.version.version_id,
            }
            return Finding(CHECKSUM_MISMATCH, "ERROR", object_subject(self.bucket, item.key, item.row.version_id), detail)
        counts["checksums_verified"] += 1
        return None


def _head(client: Any, item: _PendingHead) -> dict | None:
    args: dict[str, Any] = {"Bucket": item.bucket, "Key": item.key, "ChecksumMode": "ENABLED"}
    if item.version.version_id != NULL_VERSION or not item.version.is_latest:
        args["VersionId"] = item.version.version_id
    try:
        return client.head_object(**args)
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NoSuchVersion"):
            return None
        raise map_error(exc, item.bucket, item.key) from exc
    except BotoCoreError as exc:
        raise map_error(exc, item.bucket, item.key) from exc


def existing_buckets(client: Any, buckets: list[str], stats: ReconcileStats) -> list[str]:
    """The buckets that can be listed; the rest are noted (the bucket-settings audit reports them)."""
    present = []
    for bucket in buckets:
        try:
            client.head_bucket(Bucket=bucket)
            present.append(bucket)
        except (ClientError, BotoCoreError) as exc:
            stats.skipped_buckets[bucket] = str(map_error(exc, bucket))
    return present


def reconcile_findings(
    client: Any,
    engine: Engine,
    buckets: list[str],
    policy: AuditPolicy,
    stats: ReconcileStats,
    now: datetime | None = None,
) -> Iterator[Finding]:
    """Stream the findings of every bucket in `buckets` (which must exist); `stats` fills in as it runs."""
    now = now or datetime.now(timezone.utc)
    settle_before = now - timedelta(seconds=policy.settle_s)
    batch_limit = policy.head_concurrency * HEAD_BATCH_PER_WORKER
    with ThreadPoolExecutor(max_workers=policy.head_concurrency, thread_name_prefix="audit-head") as pool:
        for bucket in buckets:
            stats.buckets.append(bucket)
            judge = _Judge(bucket, settle_before, policy.verify_checksums, stats)
            pending: list[_PendingHead] = []
            merged = merge_by_key(
                iter_s3_versions(client, bucket, policy.list_page_size), iter_rows(engine, bucket, policy.db_fetch_size)
            )
            for key, versions, rows in merged:
                if is_report_key(key) and not rows:
                    continue  # a platform report: derived from the metadata, recorded nowhere by design
                findings, heads = judge.key(key, versions, rows)
                yield from findings
                pending.extend(heads)
                if len(pending) >= batch_limit:
                    yield from _flush(pool, client, judge, pending)
                    pending = []
            yield from _flush(pool, client, judge, pending)


def _flush(pool: ThreadPoolExecutor, client: Any, judge: _Judge, pending: list[_PendingHead]) -> Iterator[Finding]:
    for item, head in zip(pending, pool.map(lambda item: _head(client, item), pending)):
        finding = judge.after_head(item, head)
        if finding is not None:
            yield finding


def reconciled_buckets(settings: Settings) -> list[str]:
    return [settings.bucket(kind) for kind in RECONCILED_KINDS]  # type: ignore[arg-type]
