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
from collections import defaultdict
from datetime import datetime, timezone

from sqlalchemy import Engine, text
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError

from t2m_pipeline.config import Settings
from t2m_pipeline.db.engine import in_transaction
from t2m_pipeline.db.models import Base
from t2m_pipeline.migration.batches import created_rows
from t2m_pipeline.migration.files_import import INTENT
from t2m_pipeline.storage.errors import ObjectNotFoundError
from t2m_pipeline.storage.versions import version_ids_by_key
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
    """Versions an interrupted run of this batch uploaded but never recorded: those no row claims that carry the
    write id of one of its intents (`S3Storage.versions_of_write`, the rule the rerun's adoption uses too). A version
    with the same bytes and legacy path under another write id is another write's and stays. An intent written before
    the ledger had write ids names no write: what it uploaded (if anything landed) is left, unrecorded, for the
    objects audit to report."""
    with engine.connect() as conn:
        intents = conn.execute(
            text(
                "SELECT bucket, key, write_id FROM migration_ledger "
                "WHERE batch_id = :b AND outcome = 'failed' AND reason = :r AND write_id IS NOT NULL"
            ),
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
    heads: dict[tuple[str, str], dict[str, dict]] = defaultdict(dict)  # each version read once, however many intents
    for intent in intents:
        where = (intent.bucket, intent.key)
        unclaimed = [v for v in listed[where] if (*where, v) not in claimed]
        ours = storage.versions_of_write(intent.bucket, intent.key, intent.write_id, listed=unclaimed, heads=heads[where])
        out += [(*where, v) for v in ours]
    return out


def recreate_write_id(batch_id: uuid.UUID, row_id: uuid.UUID | str) -> str:
    """The write id of the copy that makes a removed row's object again when `batch_id` is rolled back: derived, not
    drawn, so a rerun of an interrupted rollback knows the write its first run made. A batch is rolled back once,
    and a row is removed at most once per batch, so it names one logical write."""
    return uuid.uuid5(batch_id, f"recreate/{row_id}").hex


def _recreate_removed(
    storage: S3Storage, engine: Engine, batch_id: uuid.UUID, removed: list[dict]
) -> tuple[list[dict], list[str]]:
    """The objects a batch removed when their files moved, made again from the version holding the same bytes (before
    that version is itself rolled back). Returns the row images with their new version ids, and what could not be
    made again (the bytes are gone, or were different). A version left by an interrupted rollback is taken again.

    Two questions are asked here, answered by two rules. "Does the replacement hold the removed row's bytes" is one of
    content: the batch's images (`replaced_by_sha256` against the row's `checksum`), then `S3Storage.copy_version`,
    which checks S3's own SHA-256 of the copy. "Is this version the copy an interrupted run of this rollback made" is
    "was this version produced by this write", so like every such question it is answered by the write id
    (`recreate_write_id`, carried by the copy), not by the version's sha256 and legacy path metadata: any other
    unclaimed version with those bytes and that name (an unrecorded upload of the file, a hand copy) is another
    write's and is not taken. A rollback interrupted before copies carried these write ids, run again now, does not recognise its
    copies: it copies again while the source is there, else reports the object not restorable (its bytes are in the
    earlier copy, which the objects audit reports)."""
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
        write_id = recreate_write_id(batch_id, img["id"])
        unclaimed = [v for v in version_ids_by_key(storage.client, {(bucket, key)})[(bucket, key)] if (bucket, key, v) not in claimed]
        made = storage.versions_of_write(bucket, key, write_id, listed=unclaimed)
        version_id = made[-1] if made else None  # the newest, as the storage layer keeps of a write's versions
        if version_id is None:
            owner = ObjectOwner(user_id=img["user_id"], file_type=img["file_type"], job_id=img.get("job_id"),
                                scene_number=meta.get("scene_number"))
            try:
                version_id = storage.copy_version(
                    tuple(source), bucket, key, sha256=img["checksum"], size=img["file_size"], owner=owner,
                    content_type=img.get("content_type") or "application/octet-stream", original_name=meta.get("legacy_path"),
                    write_id=write_id,
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
            text("SELECT source, status, rolled_back_at FROM migration_batches WHERE id = :b"), {"b": batch_id}
        ).one_or_none()
        if batch is None:
            raise RollbackError(f"no migration batch {batch_id}")
        if batch.rolled_back_at is not None:
            raise RollbackError(f"batch {batch_id} was already rolled back at {batch.rolled_back_at.isoformat()}")
        rows = created_rows(conn, batch_id)
        _check_untouched(conn, batch_id, rows)

    storage = S3Storage(settings, None)
    # first what it removed (made again from versions it may itself have written), then what it wrote
    removed, lost = _recreate_removed(storage, engine, batch_id, _first_images(rows.get("file_metadata_removed", []), "id"))
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
