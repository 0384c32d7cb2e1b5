"""`file_metadata` rows: one per S3 object version, upserted on its natural key so repeats change nothing."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field

from typing import TYPE_CHECKING

from sqlalchemy import select, text
from sqlalchemy.engine import Connection

from t2m_pipeline.db import json_text

if TYPE_CHECKING:
    from t2m_pipeline.db.models import FileMetadata


@dataclass(frozen=True)
class FileRecord:
    user_id: uuid.UUID | str
    file_type: str
    bucket: str
    key: str
    version_id: str | None
    size: int
    sha256: str
    content_type: str
    job_id: uuid.UUID | str | None = None
    original_filename: str | None = None
    extra: dict = field(default_factory=dict)


@dataclass(frozen=True)
class RecordedRow:
    id: uuid.UUID
    bucket: str
    key: str
    version_id: str | None
    inserted: bool  # False: the version had a row already, now refreshed


# The one statement that writes `file_metadata`: the storage layer's writes (one row) and the migration's (a chunk of
# rows) alike. A version recorded again refreshes what describes it; its owner, job and type never change.
_RECORD_FILES = text(
    """
    INSERT INTO file_metadata (user_id, job_id, file_type, original_filename, s3_bucket, s3_key, file_size,
                               content_type, version_id, checksum, metadata)
    SELECT u, j, ft, ofn, b, k, sz, ct, v, cs, m
    FROM jsonb_to_recordset(CAST(:rows AS jsonb))
         AS t(u uuid, j uuid, ft text, ofn text, b text, k text, sz bigint, ct text, v text, cs text, m jsonb)
    ON CONFLICT ON CONSTRAINT uq_file_metadata_object_version DO UPDATE SET
        file_size = EXCLUDED.file_size, checksum = EXCLUDED.checksum, content_type = EXCLUDED.content_type,
        metadata = EXCLUDED.metadata, original_filename = EXCLUDED.original_filename
    RETURNING id, s3_bucket, s3_key, version_id, (xmax = 0) AS inserted
    """
)


def record_files(conn: Connection, records: list[FileRecord]) -> list[RecordedRow]:
    """Insert or refresh the rows of these object versions (one statement); returns each row written."""
    if not records:
        return []
    rows = [
        {"u": str(r.user_id), "j": str(r.job_id) if r.job_id else None, "ft": str(r.file_type), "ofn": r.original_filename,
         "b": r.bucket, "k": r.key, "sz": r.size, "ct": r.content_type, "v": r.version_id, "cs": r.sha256,
         "m": r.extra or None}
        for r in records
    ]
    written = conn.execute(_RECORD_FILES, {"rows": json_text.recordset(rows)})
    return [RecordedRow(row.id, row.s3_bucket, row.s3_key, row.version_id, row.inserted) for row in written]


def record_file(conn: Connection, record: FileRecord) -> uuid.UUID:
    """Insert or refresh the row of one object version; returns its id."""
    return record_files(conn, [record])[0].id


def find_file(conn: Connection, bucket: str, key: str, version_id: str | None = None) -> FileMetadata | None:
    """The row of a version, or of the newest recorded version of the key when none is named."""
    from sqlalchemy.orm import Session  # the ORM (0.1 s to import) only here: `record_files` writes without it

    from t2m_pipeline.db.models import FileMetadata

    query = select(FileMetadata).where(FileMetadata.s3_bucket == bucket, FileMetadata.s3_key == key)
    if version_id is not None:
        query = query.where(FileMetadata.version_id == version_id)
    with Session(bind=conn) as session:
        return session.scalars(query.order_by(FileMetadata.created_at.desc()).limit(1)).first()
