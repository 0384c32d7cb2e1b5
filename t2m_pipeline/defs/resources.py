"""Resources shared by every domain: the metadata database and the S3 storage layer, configured from the environment."""

from __future__ import annotations

import os
from functools import cached_property

import dagster as dg
from sqlalchemy import Engine

from t2m_pipeline.config import load_settings
from t2m_pipeline.db.engine import shared_engine
from t2m_pipeline.storage.s3 import S3Storage


class PostgresResource(dg.ConfigurableResource):
    """The metadata database: a pooled engine with pre-ping, shared per process.

    `database_url` is an `EnvVar` so the URL (which may carry a password) never appears in the UI or run config.
    """

    database_url: str | None = None

    @property
    def engine(self) -> Engine:
        return shared_engine(self.database_url or load_settings().database_url)


class S3StorageResource(dg.ConfigurableResource):
    """The S3 storage layer; every write records its `file_metadata` row through `database`."""

    database: PostgresResource

    @cached_property
    def _storage(self) -> S3Storage:
        return S3Storage(load_settings(), self.database.engine)

    def get(self) -> S3Storage:
        return self._storage


def default_resources() -> dict:
    url = dg.EnvVar("T2M_DATABASE_URL") if os.environ.get("T2M_DATABASE_URL") else None
    database = PostgresResource(database_url=url)
    return {
        "database": database,
        "storage": S3StorageResource(database=database),
    }


@dg.definitions
def shared_resources() -> dg.Definitions:
    return dg.Definitions(resources=default_resources())
