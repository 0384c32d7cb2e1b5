"""Reconcile the legacy tree, the ledger, `file_metadata` and S3.

Walks the tree again (the same discovery as the migration) and checks: every file has exactly one ledger row (the
ledger's unique `legacy_path` makes "more than one" impossible; "none" is a problem); no ledger row points at a file
that is gone; no `failed` outcome remains; for every `migrated` row, the legacy file still hashes to the ledger's
sha256, the `file_metadata` row agrees (bucket, key, version, size, checksum, `legacy_path`), the S3 version
exists with that size and sha256 (S3's own SHA-256 checksum when it returns one, and the object metadata), and
no S3 version of that key is unrecorded (a duplicate left by an interrupted run).
"""

from __future__ import annotations

import base64
import hashlib
import os
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

from sqlalchemy import Engine, text

from t2m_pipeline.config import Settings
from t2m_pipeline.migration.discovery import all_entries, root_bytes
from t2m_pipeline.migration.files_import import versions_by_key
from t2m_pipeline.storage.s3 import MIB, make_s3_client

MAX_PROBLEMS_LISTED = 200


def _sha256(path: bytes) -> str | None:
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as fh:
            for block in iter(lambda: fh.read(MIB), b""):
                digest.update(block)
    except OSError:
        return None
    return digest.hexdigest()


def verify_files(
    settings: Settings, engine: Engine, legacy_root, partitions: list[str] | None = None, *, workers: int = 32,
    progress=None,
) -> dict:
    """`progress(done, total)`, when given, is called as objects are checked (the CLI's progress bar)."""
    root = root_bytes(legacy_root)
    if not os.path.isdir(root):
        raise FileNotFoundError(f"legacy root {os.fsdecode(root)!r} is not a directory")
    by_partition = all_entries(root, partitions)
    entries = {e.legacy_path: e for items in by_partition.values() for e in items}
    with engine.connect() as conn:
        rows = conn.execute(
            text(
                "SELECT l.legacy_path, l.partition_key, l.outcome, l.reason, l.size, l.sha256, l.bucket, l.key, l.version_id, "
                "fm.id AS fm_id, fm.s3_bucket, fm.s3_key, fm.version_id AS fm_version, fm.file_size, fm.checksum, "
                "fm.metadata->>'legacy_path' AS fm_legacy_path "
                "FROM migration_ledger l LEFT JOIN file_metadata fm ON fm.id = l.file_metadata_id "
                "WHERE l.partition_key = ANY(:parts) OR l.legacy_path = ANY(:paths)"
            ),
            {"parts": sorted(by_partition), "paths": list(entries)},
        ).all()
    ledger = {r.legacy_path: r for r in rows}
    problems: list[dict] = []
    outcomes: Counter = Counter()

    def problem(path: str, what: str) -> None:
        problems.append({"legacy_path": path, "problem": what})

    for path in entries:
        if path not in ledger:
            problem(path, "not in the ledger")
    for path, row in ledger.items():
        outcomes[row.outcome] += 1
        if path not in entries:
            problem(path, "in the ledger but no longer in the legacy tree")
        elif row.outcome == "failed":
            problem(path, f"outcome failed: {row.reason}")

    migrated = [r for r in ledger.values() if r.outcome == "migrated" and r.legacy_path in entries]
    client = make_s3_client(settings)

    def check(row) -> list[str]:
        found = []
        if row.fm_id is None:
            return ["migrated but no file_metadata row"]
        if (row.s3_bucket, row.s3_key, row.fm_version) != (row.bucket, row.key, row.version_id):
            found.append("file_metadata names another object or version than the ledger")
        if row.checksum != row.sha256 or row.file_size != row.size:
            found.append("file_metadata size or checksum differs from the ledger")
        if row.fm_legacy_path != row.legacy_path:
            found.append("file_metadata.metadata.legacy_path differs")
        if _sha256(os.path.join(root, entries[row.legacy_path].rel)) != row.sha256:
            found.append("the legacy file no longer matches the ledger's sha256")
        args = {"Bucket": row.bucket, "Key": row.key}
        if row.version_id:
            args["VersionId"] = row.version_id
        try:
            head = client.head_object(**args, ChecksumMode="ENABLED")
        except Exception as exc:  # noqa: BLE001 - reported, not raised
            return found + [f"S3 object version missing: {type(exc).__name__}"]
        if head.get("ContentLength") != row.size:
            found.append(f"S3 size {head.get('ContentLength')} != {row.size}")
        if head.get("Metadata", {}).get("sha256") != row.sha256:
            found.append("S3 metadata sha256 differs")
        s3_checksum = head.get("ChecksumSHA256")
        # A multipart object's SHA-256 is a checksum of its parts' checksums, not of its bytes. AWS marks it with
        # a `-N` suffix or `ChecksumType: COMPOSITE`; moto returns the composite value bare, so the ETag's `-N`
        # (the part count, on AWS and moto alike) is what tells a multipart object.
        composite = (
            "-" in (s3_checksum or "") or head.get("ChecksumType") == "COMPOSITE" or "-" in head.get("ETag", "").strip('"')
        )
        if s3_checksum and not composite and base64.b64decode(s3_checksum).hex() != row.sha256:
            found.append("S3 SHA-256 checksum differs")
        return found

    with ThreadPoolExecutor(workers) as pool:
        for done, (row, found) in enumerate(zip(migrated, pool.map(check, migrated)), 1):
            for what in found:
                problem(row.legacy_path, what)
            if progress is not None:
                progress(done, len(migrated))
    for (bucket, key), version in _unrecorded_versions(engine, client, {(r.bucket, r.key) for r in migrated}):
        problems.append({"legacy_path": None, "problem": f"unrecorded S3 version {version} of s3://{bucket}/{key}"})

    return {
        "ok": not problems,
        "legacy_root": os.fsdecode(root),
        "partitions": sorted(by_partition),
        "files_in_tree": len(entries),
        "ledger_rows": len(ledger),
        "outcomes": {o: outcomes[o] for o in ("migrated", "skipped", "unsafe", "failed")},
        "objects_checked": len(migrated),
        "problem_count": len(problems),
        "problems": problems[:MAX_PROBLEMS_LISTED],
    }


def _unrecorded_versions(engine: Engine, client, objects: set[tuple[str, str]]) -> list[tuple[tuple[str, str], str]]:
    """Versions at migrated keys that no `file_metadata` row records (what an interrupted run could duplicate)."""
    if not objects:
        return []
    listed = versions_by_key(client, objects)
    with engine.connect() as conn:
        rows = conn.execute(
            text(
                "SELECT s3_bucket, s3_key, version_id FROM file_metadata "
                "WHERE (s3_bucket, s3_key) IN (SELECT * FROM unnest(CAST(:b AS text[]), CAST(:k AS text[])))"
            ),
            {"b": [b for b, _ in objects], "k": [k for _, k in objects]},
        )
        recorded = {(r.s3_bucket, r.s3_key, r.version_id) for r in rows}
    return [(obj, v) for obj, versions in sorted(listed.items()) for v in versions if (*obj, v) not in recorded]
