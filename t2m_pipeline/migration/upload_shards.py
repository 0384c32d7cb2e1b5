"""How many partitions each legacy upload type folder is split into: sized by its work when the folder is first
discovered (`discovery.shards_for` of its file count), then kept in `legacy_upload_shards`, so a file's partition
never changes (a rerun, a cut-over tick that finds more files, another worker: all see the same partitions). Types
migrated before shards were sized by work keep the 8 they had (Alembic 0010)."""

from __future__ import annotations

from sqlalchemy import Engine, text
from sqlalchemy.engine import Connection

from t2m_pipeline.db.engine import in_transaction
from t2m_pipeline.migration.discovery import count_uploads, shards_for, upload_types


def _recorded(conn: Connection) -> dict[str, int]:
    return dict(conn.execute(text("SELECT file_type, shards FROM legacy_upload_shards")).tuples().all())


def upload_shards(engine: Engine, legacy_root, *, record: bool = True) -> dict[str, int]:
    """Shards per upload type: as recorded; a type folder seen for the first time is counted and decided (recorded
    unless `record` is false: verify reads, it does not decide). Two workers deciding at once agree: the first
    recorded decision wins, and both read it back."""
    recorded = in_transaction(engine, _recorded)
    missing = [kind for kind in upload_types(legacy_root) if kind not in recorded]
    if not missing:
        return recorded
    # An empty or unreadable folder is left undecided (one shard meanwhile: it has no upload to place), so a folder
    # just made, or not yet readable, is sized by its files once they are there.
    counted = {kind: n for kind, n in count_uploads(legacy_root, missing).items() if n}
    if not record:
        return {**recorded, **{kind: shards_for(n) for kind, n in counted.items()}}
    if not counted:
        return recorded

    def decide(conn: Connection) -> dict[str, int]:
        conn.execute(
            text(
                "INSERT INTO legacy_upload_shards (file_type, shards, files_counted) "
                "SELECT * FROM unnest(CAST(:k AS text[]), CAST(:s AS int[]), CAST(:n AS int[])) ON CONFLICT DO NOTHING"
            ),
            {"k": list(counted), "s": [shards_for(n) for n in counted.values()], "n": list(counted.values())},
        )
        return _recorded(conn)

    return in_transaction(engine, decide)
