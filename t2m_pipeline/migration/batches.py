"""`migration_batches`: one row per migration run; `created_rows` lists what the run created or changed.

`created_rows` is appended to in the same transaction as the writes it describes, so even a killed run leaves an
exact record for `rollback`. Keys: `users`, `jobs` ([id, updated_at written]), `jobs_before` (row images of jobs it
updated), `job_queue`, `quarantine`, `legacy_records`, `legacy_records_before`, `ledger`, `ledger_before`,
`file_metadata`, `s3_versions` ([bucket, key, version_id] it uploaded or copied), `file_metadata_before` (images of
rows whose metadata it refreshed), `file_metadata_removed` (images of the rows, and so the S3 versions, it removed
when a file moved to another owner, each with `replaced_by` [bucket, key, version_id] of the same bytes), and
`ledger_removed` (images of the copy rows it deleted when a job no longer gets a copy).
"""

from __future__ import annotations

import json
import uuid
from datetime import datetime, timezone

from sqlalchemy import Engine, text
from sqlalchemy.engine import Connection

from t2m_pipeline.db.engine import in_transaction

ROW_LISTS = (
    "users", "jobs", "jobs_before", "job_queue", "quarantine", "legacy_records", "legacy_records_before",
    "ledger", "ledger_before", "file_metadata", "s3_versions", "file_metadata_before", "file_metadata_removed",
    "ledger_removed",
)


def start_batch(engine: Engine, source: str, legacy_root: str | None = None) -> uuid.UUID:
    return in_transaction(
        engine,
        lambda conn: conn.execute(
            text(
                "INSERT INTO migration_batches (source, status, legacy_root, created_rows) "
                "VALUES (:s, 'running', :r, '{}'::jsonb) RETURNING id"
            ),
            {"s": source, "r": legacy_root},
        ).scalar_one(),
    )


def record_created(conn: Connection, batch_id: uuid.UUID, **lists: list) -> None:
    """Append to the batch's `created_rows` lists (inside the caller's transaction)."""
    lists = {k: v for k, v in lists.items() if v}
    if not lists:
        return
    expr = "coalesce(created_rows, '{}'::jsonb)"
    params: dict = {"id": batch_id}
    for i, (name, items) in enumerate(lists.items()):
        if name not in ROW_LISTS:
            raise ValueError(f"unknown created_rows list {name!r}")
        expr = f"jsonb_set({expr}, '{{{name}}}', coalesce(created_rows->'{name}', '[]'::jsonb) || CAST(:v{i} AS jsonb))"
        params[f"v{i}"] = json.dumps(items, default=str)
    conn.execute(text(f"UPDATE migration_batches SET created_rows = {expr} WHERE id = :id"), params)


def finish_batch(engine: Engine, batch_id: uuid.UUID, status: str, counts: dict) -> None:
    in_transaction(
        engine,
        lambda conn: conn.execute(
            text("UPDATE migration_batches SET status = :st, counts = CAST(:c AS jsonb), finished_at = :t WHERE id = :id"),
            {"st": status, "c": json.dumps(counts, default=str), "t": datetime.now(timezone.utc), "id": batch_id},
        ),
    )
