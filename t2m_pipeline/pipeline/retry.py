"""Which failures are worth retrying: the one rule the assets' retry policy and the sensors share."""

from __future__ import annotations

from sqlalchemy.exc import DBAPIError

from t2m_pipeline.db.engine import DatabaseUnavailableError, is_transient as db_is_transient
from t2m_pipeline.render.codegen import CodeGenerationError
from t2m_pipeline.storage.errors import (
    AccessDeniedError,
    BucketNotFoundError,
    CredentialsMissingError,
    ObjectNotFoundError,
    StorageError,
)

_PERMANENT_STORAGE = (ObjectNotFoundError, BucketNotFoundError, AccessDeniedError, CredentialsMissingError)


def is_transient(exc: BaseException) -> bool:
    """S3 throttling/5xx/unreachable, a database restart or failover, a code endpoint that is down or busy."""
    if isinstance(exc, StorageError):
        return not isinstance(exc, _PERMANENT_STORAGE)
    if isinstance(exc, DatabaseUnavailableError):
        return True
    if isinstance(exc, DBAPIError):
        return db_is_transient(exc)
    if isinstance(exc, CodeGenerationError):
        return exc.transient
    return isinstance(exc, (ConnectionError, TimeoutError))
