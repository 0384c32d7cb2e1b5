"""Undo one migration batch exactly: the S3 versions it wrote, the rows it inserted, the rows it changed (restored
from the images it recorded), the objects it removed when a file moved to another owner (made again by a
server-side copy of the version that holds the same bytes: same content, a new version id), and nothing else.

Refused, with one clear line, when something has changed those rows since (a later batch or the new system): a
rollback never silently discards newer work. S3 versions go first, then the rows in one transaction, so an
interrupted rollback can simply be run again.
"""

from __future__ import annotations

import json
import uuid
from datetime import datetime, timezone

from sqlalchemy import Engine, text
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError

from t2m_pipeline.config import Settings
from t2m_pipeline.db.engine import in_transaction
from t2m_pipeline.db.models import Base
from t2m_pipeline.migration.files_import import INTENT, carries_legacy_path
from t2m_pipeline.storage.versions import version_ids_by_key
from t2m_pipeline.migration.legacy_paths import split_copy_path
from t2m_pipeline.storage.errors import ObjectNotFoundError
from t2m_pipeline.storage.s3 import ObjectOwner, S3Storage


class RollbackError(ValueError):
    """The batch cannot be rolled back as asked; the message says why in one line."""


def _first_images(images: list[dict], pk: str) -> list[dict]:
    seen, out = set(), []
    for image in images:
        if image[pk] not in seen:
            seen.add(image[pk])
            out.append(image)
    return out


def _restore(conn: Connection, table: str, pk: str, images: list[dict]) -> None:
    if not images:
        return
    columns = [c.name for c in Base.metadata.tables[table].columns if c.name != pk]
    sets = ", ".join(f'"{c}" = r."{c}"' for c in columns)
    conn.execute(
        text(f"UPDATE {table} t SET {sets} FROM jsonb_populate_recordset(NULL::{table}, CAST(:imgs AS jsonb)) r WHERE t.{pk} = r.{pk}"),
        {"imgs": json.dumps(_first_images(images, pk))},
    )


def _insert(conn: Connection, table: str, images: list[dict]) -> None:
    """Put back rows a batch deleted, from their images."""
    if images:
        columns = ", ".join(f'"{c.name}"' for c in Base.metadata.tables[table].columns)
        conn.execute(
            text(f"INSERT INTO {table} ({columns}) SELECT {columns} FROM jsonb_populate_recordset(NULL::{table}, CAST(:imgs AS jsonb))"),
            {"imgs": json.dumps(images, default=str)},
        )


def _orphan_versions(storage: S3Storage, engine: Engine, batch_id: uuid.UUID) -> list[tuple[str, str, str]]:
    """Versions an interrupted run of this batch uploaded but never recorded (its intents)."""
    with engine.connect() as conn:
        intents = conn.execute(
            text("SELECT legacy_path, sha256, bucket, key FROM migration_ledger WHERE batch_id = :b AND outcome = 'failed' AND reason = :r"),
            {"b": batch_id, "r": INTENT},
        ).all()
        claimed = {
            (r.s3_bucket, r.s3_key, r.version_id)
            for r in conn.execute(
                text("SELECT s3_bucket, s3_key, version_id FROM file_metadata WHERE s3_key = ANY(:k)"),
                {"k": [i.key for i in intents]},
            )
        }
    listed = version_ids_by_key(storage.client, {(i.bucket, i.key) for i in intents})
    out = []
    for intent in intents:
        for version_id in listed[(intent.bucket, intent.key)]:
            if (intent.bucket, intent.key, version_id) in claimed:
                continue
            meta = storage.head(intent.bucket, intent.key, version_id).get("Metadata", {})
            if meta.get("sha256") == intent.sha256 and carries_legacy_path(meta, split_copy_path(intent.legacy_path)[0]):
                out.append((intent.bucket, intent.key, version_id))
    return out


def _recreate_removed(storage: S3Storage, engine: Engine, removed: list[dict]) -> tuple[list[dict], list[str]]:
    """The objects a batch removed when their files moved, made again from the version holding the same bytes (before
    that version is itself rolled back). Returns the row images with their new version ids, and what could not be
    made again (the bytes are gone, or were different). A version left by an interrupted rollback is taken again."""
    restored, lost = [], []
    with engine.connect() as conn:
        claimed = {
            (r.s3_bucket, r.s3_key, r.version_id)
            for r in conn.execute(
                text("SELECT s3_bucket, s3_key, version_id FROM file_metadata WHERE s3_key = ANY(:k)"),
                {"k": [img["s3_key"] for img in removed]},
            )
        }
    for img in removed:
        bucket, key, meta = img["s3_bucket"], img["s3_key"], img.get("metadata") or {}
        source = img.get("replaced_by")
        if not source or img.get("replaced_by_sha256") != img.get("checksum"):
            lost.append(f"s3://{bucket}/{key}")
            continue
        version_id = None
        for candidate in version_ids_by_key(storage.client, {(bucket, key)})[(bucket, key)]:
            if (bucket, key, candidate) in claimed:
                continue
            head = storage.head(bucket, key, candidate).get("Metadata", {})
            if head.get("sha256") == img["checksum"] and carries_legacy_path(head, meta.get("legacy_path", "")):
                version_id = candidate
                break
        if version_id is None:
            owner = ObjectOwner(user_id=img["user_id"], file_type=img["file_type"], job_id=img.get("job_id"),
                                scene_number=meta.get("scene_number"))
            try:
                version_id = storage.copy_version(
                    tuple(source), bucket, key, sha256=img["checksum"], size=img["file_size"], owner=owner,
                    content_type=img.get("content_type") or "application/octet-stream", original_name=meta.get("legacy_path"),
                ).version_id
            except ObjectNotFoundError:
                lost.append(f"s3://{bucket}/{key}")
                continue
        claimed.add((bucket, key, version_id))
        restored.append({**{k: v for k, v in img.items() if not k.startswith("replaced_by")}, "version_id": version_id})
    return restored, lost


def _check_untouched(conn: Connection, batch_id: uuid.UUID, rows: dict) -> None:
    ledger_ids = rows.get("ledger", [])
    before_paths = [img["legacy_path"] for img in rows.get("ledger_before", [])]
    changed = conn.execute(
        text("SELECT count(*) FROM migration_ledger WHERE (id = ANY(:ids) OR legacy_path = ANY(:paths)) AND batch_id IS DISTINCT FROM :b"),
        {"ids": [uuid.UUID(i) for i in ledger_ids], "paths": before_paths, "b": batch_id},
    ).scalar_one()
    jobs = rows.get("jobs", [])
    if jobs:
        changed += conn.execute(
            text(
                "SELECT count(*) FROM jobs j JOIN unnest(CAST(:ids AS uuid[]), CAST(:ts AS timestamptz[])) AS w(id, ts) "
                "ON w.id = j.id WHERE j.updated_at <> w.ts"
            ),
            {"ids": [uuid.UUID(i) for i, _ in jobs], "ts": [datetime.fromisoformat(t) for _, t in jobs]},
        ).scalar_one()
    records = rows.get("legacy_records", []) + [img["source_key"] for img in rows.get("legacy_records_before", [])]
    if records:
        changed += conn.execute(
            text("SELECT count(*) FROM migration_legacy_records WHERE source_key = ANY(:k) AND batch_id IS DISTINCT FROM :b"),
            {"k": records, "b": batch_id},
        ).scalar_one()
    if changed:
        raise RollbackError(
            f"batch {batch_id}: {changed} of its rows were changed since by a later batch or the new system; "
            "roll back the later batches first"
        )


def rollback_batch(settings: Settings, engine: Engine, batch_id: uuid.UUID | str) -> dict:
    try:
        batch_id = uuid.UUID(str(batch_id))
    except ValueError:
        raise RollbackError(f"batch id {batch_id!r} is not a UUID") from None
    with engine.connect() as conn:
        batch = conn.execute(
            text("SELECT source, status, rolled_back_at, created_rows FROM migration_batches WHERE id = :b"), {"b": batch_id}
        ).one_or_none()
        if batch is None:
            raise RollbackError(f"no migration batch {batch_id}")
        if batch.rolled_back_at is not None:
            raise RollbackError(f"batch {batch_id} was already rolled back at {batch.rolled_back_at.isoformat()}")
        rows = batch.created_rows or {}
        _check_untouched(conn, batch_id, rows)

    storage = S3Storage(settings, None)
    # first what it removed (made again from versions it may itself have written), then what it wrote
    removed, lost = _recreate_removed(storage, engine, _first_images(rows.get("file_metadata_removed", []), "id"))
    new_version = {img["id"]: img["version_id"] for img in removed}
    versions = {tuple(v) for v in rows.get("s3_versions", [])} | set(_orphan_versions(storage, engine, batch_id))
    for bucket, key, version in sorted(versions):
        if version is None:
            continue
        try:
            storage.delete_version(bucket, key, version)
        except ObjectNotFoundError:
            pass  # already gone (a rollback that was interrupted and is run again)

    inserted_jobs = {i for i, _ in rows.get("jobs", [])} - {img["id"] for img in rows.get("jobs_before", [])}

    def work(conn: Connection) -> dict:
        ids = lambda name: [uuid.UUID(i) for i in rows.get(name, [])]  # noqa: E731
        conn.execute(text("DELETE FROM migration_ledger WHERE id = ANY(:ids)"), {"ids": ids("ledger")})
        _insert(conn, "file_metadata", removed)
        def remade(images: list[dict]) -> list[dict]:  # ledger images pointing at a row made again: its new version
            return [{**img, "version_id": new_version.get(img.get("file_metadata_id"), img.get("version_id"))} for img in images]

        _restore(conn, "migration_ledger", "id", remade(rows.get("ledger_before", [])))
        _insert(conn, "migration_ledger", remade(rows.get("ledger_removed", [])))
        conn.execute(text("DELETE FROM file_metadata WHERE id = ANY(:ids)"), {"ids": ids("file_metadata")})
        _restore(conn, "file_metadata", "id", rows.get("file_metadata_before", []))
        conn.execute(text("DELETE FROM job_queue WHERE id = ANY(:ids)"), {"ids": ids("job_queue")})
        _restore(conn, "jobs", "id", rows.get("jobs_before", []))
        conn.execute(text("DELETE FROM jobs WHERE id = ANY(:ids)"), {"ids": [uuid.UUID(i) for i in inserted_jobs]})
        conn.execute(text("DELETE FROM migration_quarantine WHERE id = ANY(:ids)"), {"ids": ids("quarantine")})
        conn.execute(text("DELETE FROM migration_legacy_records WHERE source_key = ANY(:k)"), {"k": rows.get("legacy_records", [])})
        _restore(conn, "migration_legacy_records", "source_key", rows.get("legacy_records_before", []))
        conn.execute(text("DELETE FROM users WHERE id = ANY(:ids)"), {"ids": ids("users")})
        conn.execute(
            text("UPDATE migration_batches SET status = 'rolled_back', rolled_back_at = :t WHERE id = :b"),
            {"t": datetime.now(timezone.utc), "b": batch_id},
        )
        return {
            "batch_id": str(batch_id),
            "source": batch.source,
            "s3_versions_deleted": len([v for v in versions if v[2]]),
            "rows_deleted": {
                "migration_ledger": len(rows.get("ledger", [])),
                "file_metadata": len(rows.get("file_metadata", [])),
                "job_queue": len(rows.get("job_queue", [])),
                "jobs": len(inserted_jobs),
                "migration_quarantine": len(rows.get("quarantine", [])),
                "migration_legacy_records": len(rows.get("legacy_records", [])),
                "users": len(rows.get("users", [])),
            },
            "objects_made_again": len(removed),
            "objects_not_restorable": lost,
            "rows_restored": {
                "file_metadata": len(removed) + len(_first_images(rows.get("file_metadata_before", []), "id")),
                "migration_ledger": len(_first_images(rows.get("ledger_before", []), "id")) + len(rows.get("ledger_removed", [])),
                "jobs": len(_first_images(rows.get("jobs_before", []), "id")),
                "migration_legacy_records": len(_first_images(rows.get("legacy_records_before", []), "source_key")),
            },
        }

    try:
        return in_transaction(engine, work)
    except IntegrityError as exc:
        raise RollbackError(
            f"batch {batch_id}: rows it created are referenced by later data ({str(exc.orig).splitlines()[0]}); "
            "roll back the later batches (files before redis) first"
        ) from None
