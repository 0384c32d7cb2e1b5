"""Resources shared by every domain: the metadata database (with the cut-over's legacy mirror) and the S3 storage
layer.

Configuration reaches the Dagster layer through these typed fields and nothing else. `from_environment` binds each
field to its variable (`config.SETTING_VARIABLES`) with `dg.EnvVar` when the code location loads with it set, so the
UI names the variable and never shows a password; a field left unset holds the settings class's default. A run
worker loads the same code location in the same environment; nothing reads the environment after that. The storage
layer's `settings()` goes through the validation the CLI uses (`load_settings`), so both build the same `S3Storage`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from functools import cached_property
from typing import Self

import dagster as dg
from sqlalchemy import Engine

from t2m_pipeline.config import DEFAULT_DATABASE_URL, SETTING_VARIABLES, Settings, load_settings, parse_flag
from t2m_pipeline.db.engine import shared_engine
from t2m_pipeline.migration.mirror import enable_mirror
from t2m_pipeline.storage.s3 import S3Storage


class SettingsResource(dg.ConfigurableResource):
    """A resource whose fields are platform settings, named as `config.Settings` names them (None: the default)."""

    @classmethod
    def from_environment(cls, environ: Mapping[str, str] | None = None, **nested) -> Self:
        """Each setting field bound to its environment variable when that is set; `nested` gives the resources
        this one depends on."""
        environ = os.environ if environ is None else environ
        bound = {}
        for name, field in cls.model_fields.items():
            variable = SETTING_VARIABLES.get(name) or cls.extra_variables().get(name)
            if variable and environ.get(variable, "").strip():
                bound[name] = dg.EnvVar.int(variable) if field.annotation == int | None else dg.EnvVar(variable)
        return cls(**bound, **nested)

    @classmethod
    def from_settings(cls, settings: Settings, **nested) -> Self:
        """The setting fields taken from a settings object (a script's or a test's `load_settings(...)`)."""
        values = {name: getattr(settings, name) for name in cls.model_fields if name in SETTING_VARIABLES}
        values = {
            name: ",".join(value) if isinstance(value, tuple) else str(int(value)) if isinstance(value, bool) else value
            for name, value in values.items()
        }
        return cls(**values, **nested)

    @classmethod
    def extra_variables(cls) -> dict[str, str]:
        """Fields that are not platform settings but still come from a variable (the legacy root)."""
        return {}


class LegacyMirrorResource(SettingsResource):
    """The cut-over's mirror of every job status write into the legacy Redis: on when `legacy_redis_mirror` is
    1|true and `redis_url` says where.

    Set up with the database, so every step and sensor that writes a status has it: `enable_mirror` points this
    process's status-write listener at it (or turns it off)."""

    legacy_redis_mirror: str | None = None
    redis_url: str | None = None

    @property
    def enabled(self) -> bool:
        return bool(self.redis_url) and parse_flag("T2M_LEGACY_REDIS_MIRROR", self.legacy_redis_mirror or "")

    def settings(self) -> Settings:
        """The mirror's two settings (its functions read nothing else), the rest at their defaults."""
        return Settings(legacy_redis_mirror=self.enabled, redis_url=self.redis_url)

    def setup_for_execution(self, context: dg.InitResourceContext) -> None:
        enable_mirror(self.settings())


class PostgresResource(SettingsResource):
    """The metadata database: a pooled engine with pre-ping, shared per process."""

    database_url: str | None = None
    legacy_mirror: LegacyMirrorResource | None = None  # None: no mirror (a test's or a script's database)

    @property
    def engine(self) -> Engine:
        return shared_engine(self.database_url or DEFAULT_DATABASE_URL)


class S3StorageResource(SettingsResource):
    """The S3 storage layer; every write records its `file_metadata` row through `database`."""

    database: PostgresResource
    env: str | None = None
    region: str | None = None
    account_id: str | None = None
    endpoint_url: str | None = None
    sse_algorithm: str | None = None
    kms_key_id: str | None = None
    noncurrent_version_days: int | None = None
    multipart_threshold_mib: int | None = None
    s3_max_attempts: int | None = None
    s3_read_timeout_s: int | None = None
    s3_max_pool_connections: int | None = None

    def settings(self) -> Settings:
        """The settings these fields describe, validated as the CLI validates the environment."""
        values = {
            SETTING_VARIABLES[name]: str(value)
            for name in type(self).model_fields
            if name in SETTING_VARIABLES and (value := getattr(self, name)) is not None
        }
        return load_settings(values)

    @cached_property
    def _storage(self) -> S3Storage:
        return S3Storage(self.settings(), self.database.engine)

    def get(self) -> S3Storage:
        return self._storage


def default_resources(environ: Mapping[str, str] | None = None) -> dict:
    """The shared resources as the code location binds them: to the environment's variables."""
    database = PostgresResource.from_environment(environ, legacy_mirror=LegacyMirrorResource.from_environment(environ))
    return {"database": database, "storage": S3StorageResource.from_environment(environ, database=database)}


def resources_for(settings: Settings) -> dict:
    """The shared resources for a settings object (a script's or a test's), not for the environment."""
    database = PostgresResource.from_settings(settings, legacy_mirror=LegacyMirrorResource.from_settings(settings))
    return {"database": database, "storage": S3StorageResource.from_settings(settings, database=database)}


@dg.definitions
def shared_resources() -> dg.Definitions:
    return dg.Definitions(resources=default_resources())
