"""`migration_batches`: one row per migration run; its `migration_batch_rows` list what the run created or changed.

Each write transaction appends its lists' items (one chunk row per list) in that same transaction, so even a killed
run leaves an exact record for `rollback`; `created_rows` reads them back as one dict of lists. Lists: `users`, `jobs`
([id, updated_at written]), `jobs_before` (row images of jobs it updated), `job_queue`, `quarantine`,
`legacy_records`, `legacy_records_before`, `ledger`, `ledger_before`, `file_metadata`, `s3_versions` ([bucket, key,
version_id] it uploaded or copied), `file_metadata_before` (images of rows whose metadata it refreshed),
`file_metadata_removed` (images of the rows, and so the S3 versions, it removed when a file moved to another owner,
each with `replaced_by` [bucket, key, version_id] of the same bytes), and `ledger_removed` (images of the copy rows
it deleted when a job no longer gets a copy).
"""

from __future__ import annotations

import json
import uuid
from datetime import datetime, timezone

from sqlalchemy import Engine, text
from sqlalchemy.engine import Connection

from t2m_pipeline.db.engine import in_transaction
from t2m_pipeline.db import json_text

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
                "INSERT INTO migration_batches (source, status, legacy_root) VALUES (:s, 'running', :r) RETURNING id"
            ),
            {"s": source, "r": legacy_root},
        ).scalar_one(),
    )


def record_created(conn: Connection, batch_id: uuid.UUID, **lists: list) -> None:
    """Append to the batch's lists (inside the caller's transaction): one chunk row per non-empty list."""
    lists = {k: v for k, v in lists.items() if v}
    for name in lists:
        if name not in ROW_LISTS:
            raise ValueError(f"unknown created_rows list {name!r}")
    if not lists:
        return
    conn.execute(
        text(
            "INSERT INTO migration_batch_rows (batch_id, list, items) "
            "SELECT :b, n, CAST(i AS jsonb) FROM unnest(CAST(:n AS text[]), CAST(:i AS text[])) WITH ORDINALITY AS c(n, i, o) "
            "ORDER BY o"
        ),
        {"b": batch_id, "n": list(lists), "i": [json_text.dumps(items) for items in lists.values()]},
    )


def created_rows_insert(name: str, items: str) -> str:
    """SQL that appends one chunk to the batch's list `name` (bind `:batch`), its items the JSON array that the SQL
    `items` selects (`... FROM written HAVING count(*) > 0`, say): for a statement whose own RETURNING rows are the
    items, so they are recorded in it without coming back to Python."""
    if name not in ROW_LISTS:
        raise ValueError(f"unknown created_rows list {name!r}")
    return f"INSERT INTO migration_batch_rows (batch_id, list, items) SELECT :batch, '{name}', {items}"


def created_rows(conn: Connection, batch_id: uuid.UUID) -> dict[str, list]:
    """Every list the batch recorded, its items in the order written."""
    found: dict[str, list] = {}
    for name, items in conn.execute(
        text("SELECT list, items FROM migration_batch_rows WHERE batch_id = :b ORDER BY id"), {"b": batch_id}
    ):
        found.setdefault(name, []).extend(items)
    return found


def finish_batch(engine: Engine, batch_id: uuid.UUID, status: str, counts: dict) -> None:
    in_transaction(
        engine,
        lambda conn: conn.execute(
            text("UPDATE migration_batches SET status = :st, counts = CAST(:c AS jsonb), finished_at = :t WHERE id = :id"),
            {"st": status, "c": json.dumps(counts, default=str), "t": datetime.now(timezone.utc), "id": batch_id},
        ),
    )
