"""The S3 storage layer: uploads with integrity, reads, version deletes and owner-checked presigned URLs.

Every write sends a SHA-256 checksum (S3 rejects a body that does not match), applies server-side encryption,
attaches user metadata, and, when the storage has an engine, records the version's `file_metadata` row.

Which versions a write produced: those carrying its `write-id` (user metadata), and only those
(`S3Storage.versions_of_write`, the one place this is decided). Each logical write carries a unique write id: a fresh
one, or the caller's (`write_id=`) when the caller must find the write's version again after a crash (the files
migration keeps it in its ledger intent, a rollback derives it from the batch).

Retried writes (RELIABILITY.md): a write whose answer was lost (connection reset, read timeout) and was then retried
may have landed twice, leaving an identical extra version. After a write that needed retries (and after every
multipart upload) the versions of the key that carry this write's `write-id`, other than the one kept, are found and
removed. A request that lands after its retry (stalled past the client's timeout) can only be found later:
`remove_duplicate_versions` is that sweep.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import logging
import re
import shutil
import tempfile
import threading
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import IO, Any
from urllib.parse import quote

from botocore.exceptions import BotoCoreError, ClientError
from sqlalchemy import Engine, select

from t2m_pipeline.config import Settings
from t2m_pipeline.db.engine import in_transaction
from t2m_pipeline.db.files import FileRecord, find_file, record_file
from t2m_pipeline.storage.errors import NotOwnerError, ObjectNotFoundError, StorageError, map_error
from t2m_pipeline.storage.layout import is_report_key
from t2m_pipeline.storage.versions import key_versions

MIB = 1024 * 1024
MULTIPART_CHUNK_BYTES = 8 * MIB
METADATA_LIMIT_BYTES = 2048
DEFAULT_URL_SECONDS = 3600
VIDEO_STREAM_URL_SECONDS = 7200
MAX_URL_SECONDS = 7 * 24 * 3600
MAX_COPY_OBJECT_BYTES = 5 * 1024 * MIB  # S3's limit for one CopyObject request
WRITE_ID_METADATA = "write-id"
WRITE_ID_PATTERN = re.compile(r"[A-Za-z0-9._-]{1,64}")
# S3 refuses a request signed more than 15 minutes away from its clock, so every version a write produced is newer
# than the write's start minus this much (by S3's clock): older versions need not be looked at.
RETRY_DUPLICATE_WINDOW = timedelta(minutes=15)
# An unrecorded copy of a recorded version is only taken for an orphan of a failed write once this old: longer than
# any request can be in flight (the window above) and than any writer takes between its PUT and its row.
UNRECORDED_TWIN_GRACE = timedelta(hours=1)

log = logging.getLogger(__name__)
# put_object's encryption arguments as the headers boto3 sends for them (`_put_headers`)
_SSE_HEADERS = {"ServerSideEncryption": "x-amz-server-side-encryption", "SSEKMSKeyId": "x-amz-server-side-encryption-aws-kms-key-id"}


@functools.cache
def _service_models():
    """One botocore data loader for the process: S3's service model and endpoint rules are read and parsed once,
    not once per client (each new session's loader reads them again: about 60 ms of CPU, 0.3 s or more under load,
    on the critical path of every run). A warm run server loads them before it forks its workers (`warm_up`)."""
    import boto3
    from botocore.loaders import Loader

    class SharedLoader(Loader):
        @property
        def search_paths(self) -> list[str]:  # each boto3 session appends its own folder: to a copy, not to ours
            return list(self._search_paths)

    return SharedLoader(extra_search_paths=[str(Path(boto3.__file__).parent / "data")])


def _s3_client(**options):
    """An S3 client on a session of its own (boto3's sessions are not thread-safe) over the shared models."""
    import boto3  # here, not at the module's top: a writer whose PUTs go through `single_puts` never loads it
    import botocore.session

    core = botocore.session.Session()
    core.register_component("data_loader", _service_models())
    return boto3.session.Session(botocore_session=core).client("s3", **options)


def load_service_models() -> None:
    """Read S3's models into the shared loader now, for a process that forks workers: a client made with placeholder
    credentials (no credential lookup, no request)."""
    _s3_client(region_name="us-east-1", aws_access_key_id="-", aws_secret_access_key="-")


def make_s3_client(settings: Settings, *, max_attempts: int | None = None, read_timeout: float | None = None):
    """A client with explicit retries and timeouts; credentials come from boto3's default chain only."""
    from botocore.config import Config

    config = Config(
        region_name=settings.region,
        signature_version="s3v4",
        retries={"mode": "standard", "total_max_attempts": max_attempts or settings.s3_max_attempts},
        connect_timeout=5,
        read_timeout=read_timeout or settings.s3_read_timeout_s,
        max_pool_connections=settings.s3_max_pool_connections,
        s3={"addressing_style": "path"} if settings.endpoint_url else None,
        request_checksum_calculation="when_required",
        response_checksum_validation="when_required",
    )
    return _s3_client(endpoint_url=settings.endpoint_url, config=config)


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


def new_write_id() -> str:
    """A token naming one logical write, shared by all its retried requests (and nothing else)."""
    return uuid.uuid4().hex


def checked_write_id(write_id: str | None) -> str:
    """The write id a write carries: the caller's (one it keeps, to find the write's version after a crash: the
    migration's ledger, a rollback's rerun), else a fresh one. ASCII letters, digits, `.`, `_`, `-`, at most 64."""
    if write_id is None:
        return new_write_id()
    if not isinstance(write_id, str) or not WRITE_ID_PATTERN.fullmatch(write_id):
        raise ValueError(f"write id {write_id!r}: expected 1 to 64 ASCII letters, digits, '.', '_' or '-'")
    return write_id


def object_metadata(
    owner: ObjectOwner, sha256: str, original_name: str | None, now: datetime, write_id: str | None = None
) -> dict[str, str]:
    """S3 user metadata, ASCII only, kept under S3's 2 KB limit by shortening the original name last."""
    meta = {
        "user-id": str(owner.user_id),
        "file-type": owner.file_type,
        "sha256": sha256,
        "uploaded-at": now.isoformat(timespec="seconds"),
    }
    if write_id:
        meta[WRITE_ID_METADATA] = write_id
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

    def __init__(
        self,
        settings: Settings,
        engine: Engine | None = None,
        client: Any = None,
        *,
        remove_retry_duplicates: bool = True,
        single_puts: Any = None,
    ):
        self.settings = settings
        self.engine = engine
        self._client = client
        # What sends a one-request PUT instead of the boto3 client (`direct_puts.DirectPuts`: signed in C, sent over http.client)
        self.single_puts = single_puts
        # Off only in tests that show what the cleanup protects against.
        self.remove_retry_duplicates = remove_retry_duplicates
        self.duplicates_removed = 0  # versions deleted by the cleanup and the sweep, for reports
        self._count_lock = threading.Lock()
        self._client_lock = threading.Lock()
        self.multipart_threshold = settings.multipart_threshold_mib * MIB  # larger bodies go multipart
        self._transfer_config = None

    @property
    def transfer_config(self):
        """s3transfer's settings for multipart uploads and copies, made when first needed (with boto3)."""
        if self._transfer_config is None:
            from boto3.s3.transfer import TransferConfig

            self._transfer_config = TransferConfig(
                multipart_threshold=self.multipart_threshold,
                multipart_chunksize=MULTIPART_CHUNK_BYTES,
                max_concurrency=8,
                use_threads=True,
            )
        return self._transfer_config

    @property
    def client(self):
        """The boto3 client, made when first used: a run whose writes all go through `single_puts` never loads
        botocore's service model (a tenth of a second of CPU)."""
        if self._client is None:
            with self._client_lock:
                if self._client is None:
                    self._client = make_s3_client(self.settings)
        return self._client

    # -- writes -------------------------------------------------------------------------------------------------

    def _encryption_args(self) -> dict[str, str]:
        args = {"ServerSideEncryption": self.settings.sse_algorithm}
        if self.settings.sse_algorithm == "aws:kms" and self.settings.kms_key_id:
            args["SSEKMSKeyId"] = self.settings.kms_key_id
        return args

    def _put_headers(self, content_type: str, meta: dict[str, str], digest: bytes) -> dict[str, str]:
        """The headers boto3 would send for put_object with these arguments (for `single_puts`)."""
        headers = {
            "Content-Type": content_type,
            "x-amz-sdk-checksum-algorithm": "SHA256",
            "x-amz-checksum-sha256": base64.b64encode(digest).decode(),
            **{_SSE_HEADERS[name]: value for name, value in self._encryption_args().items()},
            **{f"x-amz-meta-{name}": value for name, value in meta.items()},
        }
        return headers

    def put_bytes(
        self,
        bucket: str,
        key: str,
        data: bytes,
        *,
        owner: ObjectOwner,
        content_type: str,
        original_name: str | None = None,
        write_id: str | None = None,
    ) -> StoredObject:
        digest = hashlib.sha256(data).digest()
        return self._put_single(bucket, key, data, digest, len(data), owner, content_type, original_name, write_id)

    def put_file(
        self,
        bucket: str,
        key: str,
        path: str | Path,
        *,
        owner: ObjectOwner,
        content_type: str,
        original_name: str | None = None,
        write_id: str | None = None,
    ) -> StoredObject:
        path = Path(path)
        sha_hex, size = sha256_file(path)
        if size < self.multipart_threshold:
            with open(path, "rb") as fh:
                return self._put_single(bucket, key, fh, bytes.fromhex(sha_hex), size, owner, content_type, original_name, write_id)
        return self._put_multipart(bucket, key, path, sha_hex, size, owner, content_type, original_name, write_id)

    def put_stream(
        self,
        bucket: str,
        key: str,
        stream: IO[bytes],
        *,
        owner: ObjectOwner,
        content_type: str,
        original_name: str | None = None,
        write_id: str | None = None,
    ) -> StoredObject:
        """A stream of unknown length: spooled (hashing as it goes) so a retried request can resend the body."""
        with tempfile.SpooledTemporaryFile(max_size=self.multipart_threshold) as spool:
            reader = _HashingReader(stream)
            shutil.copyfileobj(reader, spool, MIB)
            spool.seek(0)
            sha_hex = reader.digest.hexdigest()
            if reader.size < self.multipart_threshold:
                return self._put_single(
                    bucket, key, spool, bytes.fromhex(sha_hex), reader.size, owner, content_type, original_name, write_id
                )
            spool.rollover()  # type: ignore[attr-defined]
            return self._put_multipart(bucket, key, spool, sha_hex, reader.size, owner, content_type, original_name, write_id)

    def _put_single(self, bucket, key, body, digest: bytes, size: int, owner, content_type, original_name, write_id) -> StoredObject:
        sha_hex = digest.hex()
        started = datetime.now(timezone.utc)
        write_id = checked_write_id(write_id)
        meta = object_metadata(owner, sha_hex, original_name, started, write_id)
        try:
            if self.single_puts is not None:
                sent = self.single_puts.put(bucket, key, body, size, self._put_headers(content_type, meta, digest))
                version_id, retried = sent.version_id, sent.attempts > 1
            else:
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
                version_id = response.get("VersionId")
                retried = bool(response.get("ResponseMetadata", {}).get("RetryAttempts", 0))
        except (ClientError, BotoCoreError) as exc:
            raise map_error(exc, bucket, key) from exc
        # One request sent means one version written; only a retried write can have landed more than once.
        if retried and version_id:
            self._remove_retry_duplicates(bucket, key, write_id, size, started, keep=version_id)
        return self._record(bucket, key, version_id, size, sha_hex, owner, content_type, original_name)

    def _put_multipart(self, bucket, key, source, sha_hex: str, size: int, owner, content_type, original_name, write_id) -> StoredObject:
        """Above the threshold: s3transfer's multipart upload, each part checksummed with SHA-256 by S3.

        s3transfer does not return the version it created: it is found by its `write-id`.
        """
        from boto3.exceptions import S3UploadFailedError

        started = datetime.now(timezone.utc)
        write_id = checked_write_id(write_id)
        meta = object_metadata(owner, sha_hex, original_name, started, write_id)
        extra = {"ContentType": content_type, "Metadata": meta, "ChecksumAlgorithm": "SHA256", **self._encryption_args()}
        try:
            if isinstance(source, Path):
                self.client.upload_file(str(source), bucket, key, ExtraArgs=extra, Config=self.transfer_config)
            else:
                self.client.upload_fileobj(source, bucket, key, ExtraArgs=extra, Config=self.transfer_config)
            ours = self.versions_of_write(bucket, key, write_id, size=size, since=started - RETRY_DUPLICATE_WINDOW)
        except (ClientError, BotoCoreError) as exc:
            raise map_error(exc, bucket, key) from exc
        except S3UploadFailedError as exc:
            cause = exc.__cause__ or exc.__context__
            if isinstance(cause, (ClientError, BotoCoreError)):
                raise map_error(cause, bucket, key) from exc
            raise StorageError(f"multipart upload of s3://{bucket}/{key} failed: {exc}", bucket, key) from exc
        if not ours:
            raise StorageError(f"s3://{bucket}/{key}: no version of the upload just completed was found", bucket, key)
        keep = ours[-1]
        if len(ours) > 1 and self.remove_retry_duplicates:
            self._delete_versions(bucket, key, [v for v in ours if v != keep])
        return self._record(bucket, key, keep, size, sha_hex, owner, content_type, original_name)

    def copy_version(
        self,
        source: tuple[str, str, str | None],
        bucket: str,
        key: str,
        *,
        sha256: str,
        size: int,
        owner: ObjectOwner,
        content_type: str,
        original_name: str | None = None,
        write_id: str | None = None,
    ) -> StoredObject:
        """A server-side copy of one version (`source` = bucket, key, version id) to `key`, as a new version there.

        The bytes never leave S3; the copy gets its owner's metadata, the platform's encryption and S3's own SHA-256,
        which must equal `sha256` (the source's), or the copy is deleted and StorageError raised. Retried copies are
        cleaned up like retried PUTs (`write-id`: `write_id`, else a fresh one); above S3's 5 GiB CopyObject limit
        s3transfer copies in parts.
        """
        src_bucket, src_key, src_version = source
        copy_source = {"Bucket": src_bucket, "Key": src_key, **({"VersionId": src_version} if src_version else {})}
        started = datetime.now(timezone.utc)
        write_id = checked_write_id(write_id)
        meta = object_metadata(owner, sha256, original_name, started, write_id)
        args = {"Metadata": meta, "MetadataDirective": "REPLACE", "ContentType": content_type, "ChecksumAlgorithm": "SHA256",
                **self._encryption_args()}
        try:
            if size <= MAX_COPY_OBJECT_BYTES:
                response = self.client.copy_object(Bucket=bucket, Key=key, CopySource=copy_source, **args)
                version_id = response.get("VersionId")
                checksum = response.get("CopyObjectResult", {}).get("ChecksumSHA256")
                if response.get("ResponseMetadata", {}).get("RetryAttempts", 0) and version_id:
                    self._remove_retry_duplicates(bucket, key, write_id, size, started, keep=version_id)
            else:
                self.client.copy(copy_source, bucket, key, ExtraArgs=args, Config=self.transfer_config)
                ours = self.versions_of_write(bucket, key, write_id, size=size, since=started - RETRY_DUPLICATE_WINDOW)
                if not ours:
                    raise StorageError(f"s3://{bucket}/{key}: no version of the copy just completed was found", bucket, key)
                version_id, checksum = ours[-1], None
                if len(ours) > 1 and self.remove_retry_duplicates:
                    self._delete_versions(bucket, key, ours[:-1])
        except (ClientError, BotoCoreError) as exc:
            raise map_error(exc, bucket, key) from exc
        if checksum and "-" not in checksum and base64.b64decode(checksum).hex() != sha256:
            if version_id:
                self.delete_version(bucket, key, version_id)
            raise StorageError(f"copy to s3://{bucket}/{key}: S3's SHA-256 differs from the source's", bucket, key)
        return self._record(bucket, key, version_id, size, sha256, owner, content_type, original_name)

    # -- duplicate versions left by retried writes ---------------------------------------------------------------

    def _key_versions(self, bucket: str, key: str, since: datetime | None = None, size: int | None = None) -> list[dict]:
        """Versions (not delete markers) of exactly `key`, optionally only those of `size` modified since `since`."""
        return [
            v for v in key_versions(self.client, bucket, key)
            if (size is None or v["Size"] == size) and (since is None or v["LastModified"] >= since)
        ]

    def _user_metadata(self, bucket: str, key: str, version_id: str) -> dict[str, str]:
        return self.client.head_object(Bucket=bucket, Key=key, VersionId=version_id).get("Metadata", {})

    def versions_of_write(
        self,
        bucket: str,
        key: str,
        write_id: str,
        *,
        size: int | None = None,
        since: datetime | None = None,
        listed: Iterable[str] | None = None,
        heads: dict[str, dict] | None = None,
    ) -> list[str]:
        """Which versions of `bucket`/`key` carry write id `write_id`: the one rule for "this version was produced by
        this write" (its retried requests, a multipart completion, the migration's upload under a ledger intent, a
        rollback's copy). Neither the bytes nor the names decide it: two writes of the same file are two writes.

        Version ids, oldest first, the current version last (S3 lists a key's versions newest first; LastModified,
        whole seconds in listings, never orders them). `size` and `since` narrow what is read with HEAD (a write's
        versions have its size and are newer than its start less `RETRY_DUPLICATE_WINDOW`). `listed`: the key's
        version ids as S3 listed them (newest first) when the caller has them already (`versions.version_ids_by_key`
        lists a folder at a time), then only those are looked at and `size` / `since` cannot apply. `heads`: HEAD
        answers by version id, filled here and reused, so a caller asking about several writes of one key (or then
        reading a version's other metadata) reads each version once.
        """
        if listed is not None and (size is not None or since is not None):
            raise TypeError("versions_of_write: `size` and `since` narrow a listing made here, not one given as `listed`")
        try:
            if listed is None:
                listed = [v["VersionId"] for v in self._key_versions(bucket, key, since=since, size=size)]
            heads = {} if heads is None else heads
            for v in listed:
                if v not in heads:
                    heads[v] = self.client.head_object(Bucket=bucket, Key=key, VersionId=v)
            ours = [v for v in listed if heads[v].get("Metadata", {}).get(WRITE_ID_METADATA) == write_id]
        except (ClientError, BotoCoreError) as exc:
            raise map_error(exc, bucket, key) from exc
        return ours[::-1]

    def _delete_versions(self, bucket: str, key: str, version_ids: list[str]) -> list[str]:
        """Delete each version on its own; returns those deleted (a failure is logged and the rest go on)."""
        deleted = []
        for version_id in version_ids:
            try:
                self.delete_version(bucket, key, version_id)
            except StorageError as exc:
                log.warning("could not remove duplicate version %s of s3://%s/%s: %s", version_id, bucket, key, exc)
                continue
            deleted.append(version_id)
            with self._count_lock:
                self.duplicates_removed += 1
        if deleted:
            log.warning("removed %d duplicate version(s) of s3://%s/%s left by a retried write", len(deleted), bucket, key)
        return deleted

    def _remove_retry_duplicates(self, bucket, key, write_id: str, size: int, started: datetime, *, keep: str) -> None:
        """After a retried write: remove the other versions this very write produced (same `write-id`)."""
        if not self.remove_retry_duplicates:
            return
        try:
            ours = self.versions_of_write(bucket, key, write_id, size=size, since=started - RETRY_DUPLICATE_WINDOW)
            self._delete_versions(bucket, key, [v for v in ours if v != keep])
        except (ClientError, BotoCoreError, StorageError) as exc:
            # The write itself succeeded and is what gets recorded; the sweep finds what is left.
            log.warning("could not look for duplicate versions of s3://%s/%s: %s", bucket, key, exc)

    def duplicate_versions(self, bucket: str, key: str, *, grace: timedelta = UNRECORDED_TWIN_GRACE) -> list[str]:
        """Identical extra versions of `key` that retried or late-landing requests left; none of them is recorded.

        Only rows whose version is still in S3 count as recorded: a copy is never taken while the version it copies
        is missing. Nothing younger than `grace` is taken unless its write is recorded: `grace` outlasts any request
        in flight (S3 refuses requests signed 15 minutes ago) and any writer between its PUT and its row, so a write
        in progress (whose own cleanup is choosing which of its versions to keep) is never touched.

        1. Versions sharing one `write-id` (a retried or late-landing request of one write: the rule of
           `versions_of_write`, for every write id of the key in one pass over its metadata): those recorded are kept
           and the others taken at once; if none is recorded and all are older than `grace`, the oldest that is not
           the current version is kept (a late-landing twin must not stay on top of a newer write). Order is S3's
           listing order (newest first), never LastModified, which listings give in whole seconds.
        2. (With an engine.) A version with a `write-id` and no row, older than `grace`, not the current version,
           whose bytes (S3's own SHA-256, else read and hashed: user metadata can lie) equal a recorded version's of
           the same key: the only landed copy of a write that failed in this layer (its answers lost on every
           attempt) and was then written again by a retry of the step. The current version is never taken by this
           rule, so what the key serves does not change; the objects audit reports such a copy.
        Versions without a `write-id` (written before it existed, or by other tools) are never listed.
        """
        now = datetime.now(timezone.utc)
        try:
            versions = self._key_versions(bucket, key)
            sizes = [v["Size"] for v in versions]
            metadata: dict[str, dict[str, str]] = {}
            for version in versions:
                if sizes.count(version["Size"]) >= 2:  # a duplicate has the size of its twin
                    metadata[version["VersionId"]] = self._user_metadata(bucket, key, version["VersionId"])
        except (ClientError, BotoCoreError) as exc:
            raise map_error(exc, bucket, key) from exc
        rows: dict[str, tuple[str | None, int | None]] = {}
        if metadata and self.engine is not None:
            from t2m_pipeline.db.models import FileMetadata  # the ORM: only for this (rare) look-up

            live = {v["VersionId"] for v in versions}
            query = select(FileMetadata.version_id, FileMetadata.checksum, FileMetadata.file_size).where(
                FileMetadata.s3_bucket == bucket, FileMetadata.s3_key == key
            )
            found = in_transaction(self.engine, lambda conn: conn.execute(query).all())
            rows = {row.version_id: (row.checksum, row.file_size) for row in found if row.version_id in live}
        settled = now - grace
        by_write: dict[str, list[dict]] = {}
        for version in versions:
            write_id = metadata.get(version["VersionId"], {}).get(WRITE_ID_METADATA)
            if write_id:
                by_write.setdefault(write_id, []).append(version)
        extra: list[str] = []
        for group in by_write.values():
            if len(group) < 2:
                continue
            kept = [v for v in group if v["VersionId"] in rows]
            if not kept:
                if any(v["LastModified"] > settled for v in group):
                    continue  # maybe a write in progress: its own cleanup decides
                kept = group[-1:]  # the oldest (S3 lists a key's versions newest first; the current one is never it)
            extra += [v["VersionId"] for v in group if v not in kept]
        recorded_content = {content for content in rows.values() if content[0]}
        for group in by_write.values():
            for version in group:
                vid = version["VersionId"]
                if vid in rows or vid in extra or version.get("IsLatest") or version["LastModified"] > settled:
                    continue
                content = (metadata[vid].get("sha256"), version["Size"])
                if content in recorded_content and self._sha256_of(bucket, key, vid) == content[0]:
                    extra.append(vid)
        return extra

    def _sha256_of(self, bucket: str, key: str, version_id: str) -> str:
        """The version's SHA-256 as S3 computed it on upload if it has one (not a multipart composite), else read."""
        try:
            head = self.client.head_object(Bucket=bucket, Key=key, VersionId=version_id, ChecksumMode="ENABLED")
            checksum = head.get("ChecksumSHA256") or ""
            composite = "-" in checksum or head.get("ChecksumType") == "COMPOSITE" or "-" in head.get("ETag", "").strip('"')
            if checksum and not composite:
                return base64.b64decode(checksum).hex()
            digest = hashlib.sha256()
            for chunk in self.iter_chunks(bucket, key, version_id):
                digest.update(chunk)
            return digest.hexdigest()
        except (ClientError, BotoCoreError) as exc:
            raise map_error(exc, bucket, key) from exc

    def remove_duplicate_versions(self, bucket: str, key: str, *, grace: timedelta = UNRECORDED_TWIN_GRACE) -> list[str]:
        """The sweep: delete `duplicate_versions(bucket, key)`; returns what was deleted."""
        return self._delete_versions(bucket, key, self.duplicate_versions(bucket, key, grace=grace))

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

    # -- reports (the code bucket's reports/ prefix): derived from the metadata, no file_metadata row --------------

    def put_report(self, key: str, data: bytes, *, content_type: str = "text/csv") -> StoredObject:
        """A platform report (`layout.report_key`): checksummed and encrypted like every write; its rows are the
        ledger's, so it records none of its own."""
        bucket = self.settings.bucket("code")
        if not is_report_key(key):
            raise StorageError(f"reports go under reports/ of the code bucket, not s3://{bucket}/{key}", bucket, key)
        digest = hashlib.sha256(data).digest()
        try:
            response = self.client.put_object(
                Bucket=bucket, Key=key, Body=data, ContentType=content_type, ContentLength=len(data),
                ChecksumAlgorithm="SHA256", ChecksumSHA256=base64.b64encode(digest).decode(), **self._encryption_args(),
            )
        except (ClientError, BotoCoreError) as exc:
            raise map_error(exc, bucket, key) from exc
        return StoredObject(bucket, key, response.get("VersionId"), len(data), digest.hex(), content_type)

    # -- scratch (the temp bucket): staging for renders, no file_metadata rows -------------------------------------

    def _scratch_bucket(self, bucket: str, key: str) -> None:
        if bucket != self.settings.bucket("temp") or not key.startswith("temp/"):
            raise StorageError(f"scratch operations are for temp/ keys of the temp bucket only, not s3://{bucket}/{key}", bucket, key)

    def put_scratch(self, bucket: str, key: str, data: bytes) -> None:
        """Scratch the temp bucket's lifecycle expires: no row (nothing a user owns), encrypted like every write."""
        self._scratch_bucket(bucket, key)
        try:
            self.client.put_object(Bucket=bucket, Key=key, Body=data, **self._encryption_args())
        except (ClientError, BotoCoreError) as exc:
            raise map_error(exc, bucket, key) from exc

    def presigned_put(self, bucket: str, key: str, *, expires: int) -> str:
        """A short-lived PUT for exactly one scratch key (what an untrusted task may write, and nothing else)."""
        self._scratch_bucket(bucket, key)
        if not 1 <= expires <= DEFAULT_URL_SECONDS:
            raise ValueError(f"presigned PUT lifetime {expires}s: expected 1 to {DEFAULT_URL_SECONDS}")
        return self.client.generate_presigned_url("put_object", Params={"Bucket": bucket, "Key": key}, ExpiresIn=expires)

    def download_capped(self, bucket: str, key: str, path: str | Path, *, max_bytes: int, tail: bool = False) -> int | None:
        """Scratch written by an untrusted task, into `path`: None when absent; over `max_bytes` refused (StorageError),
        or with `tail` only its last `max_bytes` bytes. Returns the bytes written."""
        self._scratch_bucket(bucket, key)
        try:
            size = self.client.head_object(Bucket=bucket, Key=key)["ContentLength"]
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                return None
            raise map_error(exc, bucket, key) from exc
        args: dict[str, Any] = {}
        if size > max_bytes:
            if not tail:
                raise StorageError(f"s3://{bucket}/{key} is {size} bytes, over the limit of {max_bytes}", bucket, key)
            args["Range"] = f"bytes={size - max_bytes}-"
        try:
            body = self.client.get_object(Bucket=bucket, Key=key, **args)["Body"]
            written = 0
            with open(path, "xb") as out:
                while written <= max_bytes and (chunk := body.read(MIB)):
                    out.write(chunk)
                    written += len(chunk)
        except (ClientError, BotoCoreError) as exc:
            raise map_error(exc, bucket, key) from exc
        if written > max_bytes:
            raise StorageError(f"s3://{bucket}/{key} grew past the limit of {max_bytes} while read", bucket, key)
        return written

    def delete_scratch(self, bucket: str, key: str) -> None:
        self._scratch_bucket(bucket, key)
        try:
            self.client.delete_object(Bucket=bucket, Key=key)
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
