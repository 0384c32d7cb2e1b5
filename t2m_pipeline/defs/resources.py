"""Resources shared by every domain: the metadata database (with the cut-over's legacy mirror) and the S3 storage
layer.

Configuration reaches the Dagster layer through these typed fields and nothing else. `from_environment` binds each
field to its variable (`config.SETTING_VARIABLES`) with `dg.EnvVar` when the code location loads with it set, so the
UI names the variable and never shows a password; a field left unset holds the settings class's default. A run
worker loads the same code location in the same environment, and these resources read nothing else from it. The
storage layer's `settings()` goes through the validation the CLI uses (`load_settings`), so both build the same
`S3Storage`. A run's config may not configure a resource that has `deployment_only` fields at all.

`from_environment(environ)`: `environ` only decides which fields are bound (those whose variable it sets); the bound
values are read from the process's environment when a run starts, as Dagster resolves every `EnvVar`.
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
    """A resource whose fields are platform settings, named as `config.Settings` names them (None: the default).

    The launchpad can override any resource field in a run's config, and Dagster then replaces the resource's whole
    configuration (a field the run leaves out falls back to the class default, not to the deployment's value). Fields
    that say where data goes or how it is protected (`deployment_only`) are the deployment's alone, so setup refuses
    a run whose config touches a resource that has any: a UI user cannot send objects, rows or status writes
    elsewhere, read scene code from another endpoint, or reset the bucket names by tuning a timeout."""

    @classmethod
    def deployment_only(cls) -> frozenset[str]:
        return frozenset()

    def setup_for_execution(self, context: dg.InitResourceContext) -> None:
        if type(self).deployment_only():
            refuse_run_overrides(frozenset(type(self).model_fields), context)

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


def refuse_run_overrides(fields: frozenset[str], context: dg.InitResourceContext | None) -> None:
    """Fail closed when the run's config sets any of `fields` on any resource (sensors have no run: nothing to do).
    Field names are matched, not resource keys, which a resource does not know: a false alarm fails closed."""
    run = getattr(context, "dagster_run", None) if context is not None else None
    if run is None or not fields:
        return
    for key, entry in ((run.run_config or {}).get("resources") or {}).items():
        config = entry.get("config") if isinstance(entry, dict) else None
        chosen = sorted(fields & set(config)) if isinstance(config, dict) else []
        if chosen:
            raise dg.Failure(
                f"the run's config sets resources.{key}.config.{chosen[0]}: this resource says where data goes and how "
                "it is protected, which is the deployment's to set (the code location's environment), never a run's"
            )


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

    @classmethod
    def deployment_only(cls) -> frozenset[str]:
        return frozenset({"legacy_redis_mirror", "redis_url"})

    def setup_for_execution(self, context: dg.InitResourceContext) -> None:
        super().setup_for_execution(context)
        enable_mirror(self.settings())


class PostgresResource(SettingsResource):
    """The metadata database: a pooled engine with pre-ping, shared per process."""

    database_url: str | None = None
    legacy_mirror: LegacyMirrorResource | None = None  # None: no mirror (a test's or a script's database)

    @classmethod
    def deployment_only(cls) -> frozenset[str]:
        return frozenset({"database_url"})

    def setup_for_execution(self, context: dg.InitResourceContext) -> None:
        super().setup_for_execution(context)
        if self.legacy_mirror is None:  # this process's status writes follow this database's (absent) mirror
            enable_mirror(Settings())

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

    @classmethod
    def deployment_only(cls) -> frozenset[str]:
        return frozenset({"env", "region", "account_id", "endpoint_url", "sse_algorithm", "kms_key_id", "noncurrent_version_days"})

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
