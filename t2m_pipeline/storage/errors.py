"""Storage errors that say what went wrong and where, mapped from botocore's exceptions."""

from __future__ import annotations

from botocore.exceptions import (
    ClientError,
    ConnectTimeoutError,
    EndpointConnectionError,
    NoCredentialsError,
    PartialCredentialsError,
)


class StorageError(RuntimeError):
    """Base of every storage failure; the message names the bucket and key."""

    def __init__(self, message: str, bucket: str | None = None, key: str | None = None):
        super().__init__(message)
        self.bucket = bucket
        self.key = key


class BucketNotFoundError(StorageError):
    pass


class ObjectNotFoundError(StorageError):
    pass


class AccessDeniedError(StorageError):
    pass


class InvalidCredentialsError(AccessDeniedError):
    pass


class CredentialsMissingError(StorageError):
    pass


class EndpointUnreachableError(StorageError):
    pass


class ChecksumMismatchError(StorageError):
    pass


class NotOwnerError(PermissionError):
    """A user asked for a URL to an object that is not theirs; nothing was signed."""


def _where(bucket: str | None, key: str | None) -> str:
    return f"s3://{bucket or '?'}/{key}" if key else f"bucket {bucket or '?'}"


def map_error(exc: BaseException, bucket: str | None, key: str | None = None) -> StorageError:
    """The domain error for a botocore exception (unknown errors keep their code in a plain StorageError)."""
    where = _where(bucket, key)
    if isinstance(exc, (NoCredentialsError, PartialCredentialsError)):
        return CredentialsMissingError(
            f"no AWS credentials found for {where}: set AWS_PROFILE, AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY or use an instance role",
            bucket,
            key,
        )
    if isinstance(exc, (EndpointConnectionError, ConnectTimeoutError)):
        return EndpointUnreachableError(f"S3 endpoint unreachable for {where}: {exc}", bucket, key)
    if isinstance(exc, ClientError):
        error = exc.response.get("Error", {})
        code = str(error.get("Code", ""))
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        if code == "NoSuchBucket":
            return BucketNotFoundError(f"bucket {bucket} does not exist (needed for {where}); run `t2m infra bootstrap`", bucket, key)
        if code in ("NoSuchKey", "NoSuchVersion") or (code == "404" and key):
            return ObjectNotFoundError(f"object {where} not found", bucket, key)
        if code == "404":
            return BucketNotFoundError(f"bucket {bucket} does not exist; run `t2m infra bootstrap`", bucket, key)
        if code in ("InvalidAccessKeyId", "SignatureDoesNotMatch", "ExpiredToken", "InvalidToken"):
            return InvalidCredentialsError(f"AWS credentials were rejected for {where} ({code})", bucket, key)
        if code in ("AccessDenied", "403", "AllAccessDisabled") or status == 403:
            return AccessDeniedError(f"access denied to {where} ({code or status})", bucket, key)
        if code in ("BadDigest", "InvalidDigest", "XAmzContentSHA256Mismatch") or "checksum" in code.lower():
            return ChecksumMismatchError(f"S3 rejected the body of {where}: checksum mismatch ({code})", bucket, key)
        return StorageError(f"S3 error on {where}: {code or status}: {error.get('Message', '')}".rstrip(": "), bucket, key)
    return StorageError(f"S3 failure on {where}: {type(exc).__name__}: {exc}", bucket, key)
