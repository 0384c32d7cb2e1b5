"""`file_metadata` rows: one per S3 object version, upserted on its natural key so repeats change nothing."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field

from sqlalchemy import select
from sqlalchemy.orm import Session
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.engine import Connection

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


def record_file(conn: Connection, record: FileRecord) -> uuid.UUID:
    """Insert or refresh the row of one object version; returns its id."""
    values = dict(
        user_id=uuid.UUID(str(record.user_id)),
        job_id=uuid.UUID(str(record.job_id)) if record.job_id else None,
        file_type=record.file_type,
        original_filename=record.original_filename,
        s3_bucket=record.bucket,
        s3_key=record.key,
        file_size=record.size,
        content_type=record.content_type,
        version_id=record.version_id,
        checksum=record.sha256,
        extra=record.extra or None,
    )
    stmt = insert(FileMetadata).values(**values)
    stmt = stmt.on_conflict_do_update(
        constraint="uq_file_metadata_object_version",
        set_={
            "file_size": stmt.excluded.file_size,
            "checksum": stmt.excluded.checksum,
            "content_type": stmt.excluded.content_type,
            "metadata": stmt.excluded.metadata,
            "original_filename": stmt.excluded.original_filename,
        },
    ).returning(FileMetadata.id)
    return conn.execute(stmt).scalar_one()


def find_file(conn: Connection, bucket: str, key: str, version_id: str | None = None) -> FileMetadata | None:
    """The row of a version, or of the newest recorded version of the key when none is named."""
    query = select(FileMetadata).where(FileMetadata.s3_bucket == bucket, FileMetadata.s3_key == key)
    if version_id is not None:
        query = query.where(FileMetadata.version_id == version_id)
    with Session(bind=conn) as session:
        return session.scalars(query.order_by(FileMetadata.created_at.desc()).limit(1)).first()
