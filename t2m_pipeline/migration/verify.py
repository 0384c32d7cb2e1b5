"""Reconcile the legacy tree, the ledger, `file_metadata` and S3: integrity and ownership.

Walks the tree again (the same discovery as the migration) and works out, read-only, where the evidence puts every
file (`files_import.expected_plans`, the migration's own planning and `attribution`). Integrity: every file has
exactly one ledger row (the ledger's unique `legacy_path` makes "more than one" impossible; "none" is a problem); no
ledger row points at a file that is gone; no `failed` outcome remains; for every `migrated` row, the legacy file
still hashes to the ledger's sha256, the `file_metadata` row agrees (bucket, key, version, size, checksum,
`legacy_path`), the S3 version exists with that size and sha256 (S3's own SHA-256 checksum when it returns one, and
the object metadata), and no S3 version of that key is unrecorded (a duplicate left by an interrupted run).

Ownership: every migrated object (each original and each copy) lies at the key the evidence names, under that user
and job, and its `file_metadata` row and its S3 metadata (`user-id`, `job-id`) name the same owner; every copy the
copy rule gives is there; no other object of a legacy file is recorded anywhere (a file under a second user's prefix
is a leak unless the copy rule put it there); no copy row remains for a job that no longer gets one.

Results are per partition too (`by_partition`), for the Dagster check that reports one result per partition.
"""

from __future__ import annotations

import base64
import hashlib
import os
from collections import Counter, defaultdict
from concurrent.futures import ThreadPoolExecutor

from sqlalchemy import Engine, text

from t2m_pipeline.config import Settings
from t2m_pipeline.migration.discovery import all_entries, root_bytes
from t2m_pipeline.migration.files_import import Planned, expected_plans
from t2m_pipeline.migration.upload_shards import upload_shards
from t2m_pipeline.storage.versions import version_ids_by_key
from t2m_pipeline.migration.legacy_paths import COPY_MARK, split_copy_path
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


def _owner(user_id, job_id) -> str:
    return f"user {user_id}, job {job_id}" if job_id else f"user {user_id}"


def verify_files(
    settings: Settings, engine: Engine, legacy_root, partitions: list[str] | None = None, *, workers: int = 32,
    progress=None,
) -> dict:
    """`progress(done, total)`, when given, is called as objects are checked (the CLI's progress bar)."""
    root = root_bytes(legacy_root)
    if not os.path.isdir(root):
        raise FileNotFoundError(f"legacy root {os.fsdecode(root)!r} is not a directory")
    by_partition = all_entries(root, upload_shards(engine, root, record=False), partitions)
    entries = {e.legacy_path: e for items in by_partition.values() for e in items}
    partition_of = {e.legacy_path: key for key, items in by_partition.items() for e in items}
    plans = {p.legacy_path: p for p in expected_plans(engine, by_partition)}
    buckets = settings.buckets
    with engine.connect() as conn:
        rows = conn.execute(
            text(
                "SELECT l.legacy_path, l.partition_key, l.outcome, l.reason, l.size, l.sha256, l.bucket, l.key, l.version_id, "
                "fm.id AS fm_id, fm.s3_bucket, fm.s3_key, fm.version_id AS fm_version, fm.file_size, fm.checksum, "
                "fm.user_id AS fm_user, fm.job_id AS fm_job, fm.metadata->>'legacy_path' AS fm_legacy_path "
                "FROM migration_ledger l LEFT JOIN file_metadata fm ON fm.id = l.file_metadata_id "
                "WHERE l.partition_key = ANY(:parts) OR l.legacy_path = ANY(:paths)"
            ),
            {"parts": sorted(by_partition), "paths": list(plans)},
        ).all()
        recorded = conn.execute(
            text(
                "SELECT metadata->>'legacy_path' AS legacy_path, s3_bucket, s3_key, user_id, job_id FROM file_metadata "
                "WHERE metadata->>'legacy_path' = ANY(:paths)"
            ),
            {"paths": list(entries)},
        ).all()
    ledger = {r.legacy_path: r for r in rows}
    problems: list[dict] = []
    outcomes: Counter = Counter()

    def problem(path: str | None, what: str, partition: str | None = None) -> None:
        if partition is None and path is not None:
            partition = partition_of.get(split_copy_path(path)[0]) or (ledger[path].partition_key if path in ledger else None)
        problems.append({"legacy_path": path, "partition": partition, "problem": what})

    for path in entries:
        if path not in ledger:
            problem(path, "not in the ledger")
    for path, row in ledger.items():
        base, copy_job = split_copy_path(path)
        if copy_job is None:
            outcomes[row.outcome] += 1
        if base not in entries:
            problem(path, "in the ledger but no longer in the legacy tree")
        elif row.outcome == "failed":
            problem(path, f"outcome failed: {row.reason}")
        elif copy_job is not None and path not in plans:
            problem(path, f"a copy for job {copy_job} that the evidence no longer gives (run the files migration again)")

    # ownership: each planned object where the evidence puts it, under that owner
    expected: dict[str, dict[tuple[str, str], Planned]] = defaultdict(dict)
    for key, plan in plans.items():
        if plan.target is None or plan.outcome is not None:
            continue
        where = (buckets[plan.target.bucket_kind], plan.target.key)
        expected[plan.source_path][where] = plan
        row = ledger.get(key)
        if row is None:
            if plan.copy_source is not None:
                problem(key, f"the copy for job {plan.target.job_id} (it completed by reusing the folder) is missing")
            continue
        if row.outcome in ("skipped", "unsafe"):
            problem(key, f"ledger outcome {row.outcome} but the rules migrate it (run the files migration again)")
        if row.outcome != "migrated":
            continue
        if (row.bucket, row.key) != where:
            problem(key, f"at s3://{row.bucket}/{row.key} but the evidence puts it at s3://{where[0]}/{where[1]} "
                         f"({_owner(plan.target.user_id, plan.target.job_id)}): {plan.attribution.reason if plan.attribution else ''}")
        elif row.fm_id is not None and (str(row.fm_user), str(row.fm_job) if row.fm_job else None) != (
            str(plan.target.user_id), str(plan.target.job_id) if plan.target.job_id else None
        ):
            problem(key, f"file_metadata names {_owner(row.fm_user, row.fm_job)}, the evidence {_owner(plan.target.user_id, plan.target.job_id)}")
    for r in recorded:
        if r.legacy_path in entries and (r.s3_bucket, r.s3_key) not in expected.get(r.legacy_path, {}):
            problem(r.legacy_path, f"also recorded at s3://{r.s3_bucket}/{r.s3_key} ({_owner(r.user_id, r.job_id)}), "
                                   "a place the evidence does not give it (neither its owner nor a copy)")

    migrated = [r for r in ledger.values() if r.outcome == "migrated" and split_copy_path(r.legacy_path)[0] in entries]
    client = make_s3_client(settings)

    def check(row) -> list[str]:
        found = []
        if row.fm_id is None:
            return ["migrated but no file_metadata row"]
        base = split_copy_path(row.legacy_path)[0]
        if (row.s3_bucket, row.s3_key, row.fm_version) != (row.bucket, row.key, row.version_id):
            found.append("file_metadata names another object or version than the ledger")
        if row.checksum != row.sha256 or row.file_size != row.size:
            found.append("file_metadata size or checksum differs from the ledger")
        if row.fm_legacy_path != base:
            found.append("file_metadata.metadata.legacy_path differs")
        if _sha256(os.path.join(root, entries[base].rel)) != row.sha256:
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
        meta = head.get("Metadata", {})
        if meta.get("sha256") != row.sha256:
            found.append("S3 metadata sha256 differs")
        if (meta.get("user-id"), meta.get("job-id")) != (str(row.fm_user), str(row.fm_job) if row.fm_job else None):
            found.append(f"S3 metadata names {_owner(meta.get('user-id'), meta.get('job-id'))}, "
                         f"file_metadata {_owner(row.fm_user, row.fm_job)}")
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
        partition = next((r.partition_key for r in migrated if (r.bucket, r.key) == (bucket, key)), None)
        problem(None, f"unrecorded S3 version {version} of s3://{bucket}/{key}", partition)

    per_partition = {
        key: {"files": len(items), "ledger_rows": 0, "objects_checked": 0, "copies": 0, "unattributed": 0, "problems": []}
        for key, items in by_partition.items()
    }
    for row in ledger.values():
        part = per_partition.get(row.partition_key)
        if part is None:
            continue
        part["ledger_rows"] += 1
        if row.outcome == "migrated" and split_copy_path(row.legacy_path)[0] in entries:
            part["objects_checked"] += 1
            part["copies"] += COPY_MARK in row.legacy_path
            part["unattributed"] += bool(row.key and row.key.startswith("legacy/unattributed/"))
    for p in problems:
        if p["partition"] in per_partition:
            per_partition[p["partition"]]["problems"].append(p)
    for part in per_partition.values():
        part["ok"] = not part["problems"]
        part["problem_count"] = len(part["problems"])
        part["problems"] = part["problems"][:MAX_PROBLEMS_LISTED]

    return {
        "ok": not problems,
        "legacy_root": os.fsdecode(root),
        "partitions": sorted(by_partition),
        "files_in_tree": len(entries),
        "ledger_rows": len(ledger),
        "outcomes": {o: outcomes[o] for o in ("migrated", "skipped", "unsafe", "failed")},
        "objects_checked": len(migrated),
        "copies_checked": sum(1 for r in migrated if COPY_MARK in r.legacy_path),
        "problem_count": len(problems),
        "problems": problems[:MAX_PROBLEMS_LISTED],
        "by_partition": per_partition,
    }


def _unrecorded_versions(engine: Engine, client, objects: set[tuple[str, str]]) -> list[tuple[tuple[str, str], str]]:
    """Versions at migrated keys that no `file_metadata` row records (what an interrupted run could duplicate)."""
    if not objects:
        return []
    listed = version_ids_by_key(client, objects)
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
