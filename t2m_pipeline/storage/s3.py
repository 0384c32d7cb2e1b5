"""The S3 storage layer: uploads with integrity, reads, version deletes and owner-checked presigned URLs.

Every write sends a SHA-256 checksum (S3 rejects a body that does not match), applies server-side encryption,
attaches user metadata, and, when the storage has an engine, records the version's `file_metadata` row.
"""

from __future__ import annotations

import base64
import hashlib
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import IO, Any
from urllib.parse import quote

import boto3
from boto3.s3.transfer import TransferConfig
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError
from sqlalchemy import Engine

from t2m_pipeline.config import Settings
from t2m_pipeline.db.engine import in_transaction
from t2m_pipeline.db.files import FileRecord, find_file, record_file
from t2m_pipeline.storage.errors import NotOwnerError, ObjectNotFoundError, StorageError, map_error

MIB = 1024 * 1024
MULTIPART_CHUNK_BYTES = 8 * MIB
METADATA_LIMIT_BYTES = 2048
DEFAULT_URL_SECONDS = 3600
VIDEO_STREAM_URL_SECONDS = 7200
MAX_URL_SECONDS = 7 * 24 * 3600


def make_s3_client(settings: Settings, *, max_attempts: int | None = None, read_timeout: float = 60.0):
    """A client with explicit retries and timeouts; credentials come from boto3's default chain only."""
    config = Config(
        region_name=settings.region,
        signature_version="s3v4",
        retries={"mode": "standard", "total_max_attempts": max_attempts or settings.s3_max_attempts},
        connect_timeout=5,
        read_timeout=read_timeout,
        max_pool_connections=settings.s3_max_pool_connections,
        s3={"addressing_style": "path"} if settings.endpoint_url else None,
        request_checksum_calculation="when_required",
        response_checksum_validation="when_required",
    )
    return boto3.session.Session().client("s3", endpoint_url=settings.endpoint_url, config=config)


@dataclass(frozen=True)
class ObjectOwner:
    """Who an object belongs to and what it is; goes into S3 user metadata and the `file_metadata` row."""

    user_id: uuid.UUID | str
    file_type: str
    job_id: uuid.UUID | str | None = None
    scene_number: int | None = None
    extra: dict = field(default_factory=dict)


@dataclass(frozen=True)
class StoredObject:
    bucket: str
    key: str
    version_id: str | None
    size: int
    sha256: str
    content_type: str
    file_id: uuid.UUID | None = None

    @property
    def uri(self) -> str:
        return f"s3://{self.bucket}/{self.key}"


def object_metadata(owner: ObjectOwner, sha256: str, original_name: str | None, now: datetime) -> dict[str, str]:
    """S3 user metadata, ASCII only, kept under S3's 2 KB limit by shortening the original name last."""
    meta = {
        "user-id": str(owner.user_id),
        "file-type": owner.file_type,
        "sha256": sha256,
        "uploaded-at": now.isoformat(timespec="seconds"),
    }
    if owner.job_id:
        meta["job-id"] = str(owner.job_id)
    if owner.scene_number is not None:
        meta["scene-number"] = str(owner.scene_number)
    if original_name:
        budget = METADATA_LIMIT_BYTES - sum(len(k) + len(v) for k, v in meta.items()) - len("original-name")
        quoted = quote(original_name, safe="")
        if len(quoted) > budget:
            quoted = quoted[:budget]
            tail = quoted.rfind("%")
            if tail >= len(quoted) - 2 and tail != -1:  # do not leave half an escape
                quoted = quoted[:tail]
        meta["original-name"] = quoted
    return meta


class _HashingReader:
    """Wraps a binary stream, hashing what is read."""

    def __init__(self, raw: IO[bytes]):
        self.raw = raw
        self.digest = hashlib.sha256()
        self.size = 0

    def read(self, n: int = -1) -> bytes:
        chunk = self.raw.read(n)
        self.digest.update(chunk)
        self.size += len(chunk)
        return chunk


def sha256_file(path: Path) -> tuple[str, int]:
    digest, size = hashlib.sha256(), 0
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(MIB), b""):
            digest.update(chunk)
            size += len(chunk)
    return digest.hexdigest(), size


class S3Storage:
    """S3 operations for the platform's buckets; with an engine, every write also records its metadata row."""

    def __init__(self, settings: Settings, engine: Engine | None = None, client: Any = None):
        self.settings = settings
        self.engine = engine
        self.client = client or make_s3_client(settings)
        self.transfer_config = TransferConfig(
            multipart_threshold=settings.multipart_threshold_mib * MIB,
            multipart_chunksize=MULTIPART_CHUNK_BYTES,
            max_concurrency=8,
            use_threads=True,
        )

    # -- writes -------------------------------------------------------------------------------------------------

    def _encryption_args(self) -> dict[str, str]:
        args = {"ServerSideEncryption": self.settings.sse_algorithm}
        if self.settings.sse_algorithm == "aws:kms" and self.settings.kms_key_id:
            args["SSEKMSKeyId"] = self.settings.kms_key_id
        return args

    def put_bytes(
        self,
        bucket: str,
        key: str,
        data: bytes,
        *,
        owner: ObjectOwner,
        content_type: str,
        original_name: str | None = None,
    ) -> StoredObject:
        digest = hashlib.sha256(data).digest()
        return self._put_single(bucket, key, data, digest, len(data), owner, content_type, original_name)

    def put_file(
        self,
        bucket: str,
        key: str,
        path: str | Path,
        *,
        owner: ObjectOwner,
        content_type: str,
        original_name: str | None = None,
    ) -> StoredObject:
        path = Path(path)
        sha_hex, size = sha256_file(path)
        if size < self.transfer_config.multipart_threshold:
            with open(path, "rb") as fh:
                return self._put_single(bucket, key, fh, bytes.fromhex(sha_hex), size, owner, content_type, original_name)
        return self._put_multipart(bucket, key, path, sha_hex, size, owner, content_type, original_name)

    def put_stream(
        self,
        bucket: str,
        key: str,
        stream: IO[bytes],
        *,
        owner: ObjectOwner,
        content_type: str,
        original_name: str | None = None,
    ) -> StoredObject:
        """A stream of unknown length: spooled (hashing as it goes) so a retried request can resend the body."""
        with tempfile.SpooledTemporaryFile(max_size=self.transfer_config.multipart_threshold) as spool:
            reader = _HashingReader(stream)
            shutil.copyfileobj(reader, spool, MIB)
            spool.seek(0)
            sha_hex = reader.digest.hexdigest()
            if reader.size < self.transfer_config.multipart_threshold:
                return self._put_single(bucket, key, spool, bytes.fromhex(sha_hex), reader.size, owner, content_type, original_name)
            spool.rollover()  # type: ignore[attr-defined]
            return self._put_multipart(bucket, key, spool, sha_hex, reader.size, owner, content_type, original_name)

    def _put_single(self, bucket, key, body, digest: bytes, size: int, owner, content_type, original_name) -> StoredObject:
        sha_hex = digest.hex()
        meta = object_metadata(owner, sha_hex, original_name, datetime.now(timezone.utc))
        try:
            response = self.client.put_object(
                Bucket=bucket,
                Key=key,
                Body=body,
                ContentType=content_type,
                ContentLength=size,
                Metadata=meta,
                ChecksumAlgorithm="SHA256",
                ChecksumSHA256=base64.b64encode(digest).decode(),
                **self._encryption_args(),
            )
        except (ClientError, BotoCoreError) as exc:
            raise map_error(exc, bucket, key) from exc
        return self._record(bucket, key, response.get("VersionId"), size, sha_hex, owner, content_type, original_name)

    def _put_multipart(self, bucket, key, source, sha_hex: str, size: int, owner, content_type, original_name) -> StoredObject:
        """Above the threshold: s3transfer's multipart upload, each part checksummed with SHA-256 by S3."""
        meta = object_metadata(owner, sha_hex, original_name, datetime.now(timezone.utc))
        extra = {"ContentType": content_type, "Metadata": meta, "ChecksumAlgorithm": "SHA256", **self._encryption_args()}
        try:
            if isinstance(source, Path):
                self.client.upload_file(str(source), bucket, key, ExtraArgs=extra, Config=self.transfer_config)
            else:
                self.client.upload_fileobj(source, bucket, key, ExtraArgs=extra, Config=self.transfer_config)
            head = self.client.head_object(Bucket=bucket, Key=key)
        except (ClientError, BotoCoreError) as exc:
            raise map_error(exc, bucket, key) from exc
        if head.get("Metadata", {}).get("sha256") != sha_hex or head.get("ContentLength") != size:
            raise StorageError(f"s3://{bucket}/{key}: the newest version is not the one just uploaded", bucket, key)
        return self._record(bucket, key, head.get("VersionId"), size, sha_hex, owner, content_type, original_name)

    def _record(self, bucket, key, version_id, size, sha_hex, owner: ObjectOwner, content_type, original_name) -> StoredObject:
        file_id = None
        if self.engine is not None:
            record = FileRecord(
                user_id=owner.user_id,
                job_id=owner.job_id,
                file_type=owner.file_type,
                bucket=bucket,
                key=key,
                version_id=version_id,
                size=size,
                sha256=sha_hex,
                content_type=content_type,
                original_filename=original_name,
                extra={**owner.extra, **({"scene_number": owner.scene_number} if owner.scene_number is not None else {})},
            )
            file_id = in_transaction(self.engine, lambda conn: record_file(conn, record))
        return StoredObject(bucket, key, version_id, size, sha_hex, content_type, file_id)

    # -- reads and deletes ---------------------------------------------------------------------------------------

    def _get(self, bucket: str, key: str, version_id: str | None) -> dict:
        args = {"Bucket": bucket, "Key": key}
        if version_id:
            args["VersionId"] = version_id
        try:
            return self.client.get_object(**args)
        except (ClientError, BotoCoreError) as exc:
            raise map_error(exc, bucket, key) from exc

    def get_bytes(self, bucket: str, key: str, version_id: str | None = None) -> bytes:
        body = self._get(bucket, key, version_id)["Body"]
        try:
            return body.read()
        finally:
            body.close()

    def iter_chunks(self, bucket: str, key: str, version_id: str | None = None, chunk_size: int = MIB) -> Iterator[bytes]:
        """Stream an object without holding it in memory."""
        body = self._get(bucket, key, version_id)["Body"]
        try:
            yield from body.iter_chunks(chunk_size)
        finally:
            body.close()

    def download_file(self, bucket: str, key: str, path: str | Path, version_id: str | None = None) -> str:
        """Write the object to `path`; returns its sha256 hex."""
        digest = hashlib.sha256()
        with open(path, "wb") as out:
            for chunk in self.iter_chunks(bucket, key, version_id):
                digest.update(chunk)
                out.write(chunk)
        return digest.hexdigest()

    def head(self, bucket: str, key: str, version_id: str | None = None) -> dict:
        args = {"Bucket": bucket, "Key": key}
        if version_id:
            args["VersionId"] = version_id
        try:
            return self.client.head_object(**args)
        except (ClientError, BotoCoreError) as exc:
            raise map_error(exc, bucket, key) from exc

    def delete_version(self, bucket: str, key: str, version_id: str) -> None:
        """Delete one specific version (never a bare delete, which would only add a delete marker)."""
        if not version_id:
            raise ValueError("delete_version needs a version id")
        try:
            self.client.delete_object(Bucket=bucket, Key=key, VersionId=version_id)
        except (ClientError, BotoCoreError) as exc:
            raise map_error(exc, bucket, key) from exc

    # -- presigned URLs ------------------------------------------------------------------------------------------

    def presigned_get(self, bucket: str, key: str, *, expires: int, version_id: str | None = None) -> str:
        if not 1 <= expires <= MAX_URL_SECONDS:
            raise ValueError(f"presigned URL lifetime {expires}s: expected 1 to {MAX_URL_SECONDS} (7 days)")
        params = {"Bucket": bucket, "Key": key}
        if version_id:
            params["VersionId"] = version_id
        try:
            return self.client.generate_presigned_url("get_object", Params=params, ExpiresIn=expires)
        except (ClientError, BotoCoreError) as exc:
            raise map_error(exc, bucket, key) from exc

    def url_for_owner(
        self,
        requester_user_id: uuid.UUID | str,
        bucket: str,
        key: str,
        *,
        version_id: str | None = None,
        expires: int | None = None,
    ) -> str:
        """A presigned GET for the object's owner only; anyone else gets NotOwnerError and nothing is signed."""
        if self.engine is None:
            raise StorageError("owner-checked URLs need the metadata database", bucket, key)
        with self.engine.connect() as conn:
            row = find_file(conn, bucket, key, version_id)
        if row is None:
            raise ObjectNotFoundError(f"no file_metadata row for s3://{bucket}/{key}", bucket, key)
        if str(row.user_id) != str(requester_user_id):
            raise NotOwnerError(f"user {requester_user_id} does not own s3://{bucket}/{key}: no URL issued")
        if expires is None:
            expires = VIDEO_STREAM_URL_SECONDS if (row.content_type or "").startswith("video/") else DEFAULT_URL_SECONDS
        return self.presigned_get(bucket, key, expires=expires, version_id=row.version_id)
