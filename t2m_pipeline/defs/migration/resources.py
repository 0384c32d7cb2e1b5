"""Where the legacy data is: the legacy root (`T2M_LEGACY_ROOT`) and its Redis (`T2M_REDIS_URL`)."""

from __future__ import annotations

import dagster as dg

from t2m_pipeline.defs.resources import SettingsResource
from t2m_pipeline.migration.legacy_redis import legacy_redis_client


class LegacySourcesResource(SettingsResource):
    """The legacy platform's data: a directory holding `output/` and `storage/`, and its Redis."""

    legacy_root: str | None = None
    redis_url: str | None = None
    workers: int = 32

    @classmethod
    def extra_variables(cls) -> dict[str, str]:
        return {"legacy_root": "T2M_LEGACY_ROOT"}

    @classmethod
    def deployment_only(cls) -> frozenset[str]:
        return frozenset({"legacy_root", "redis_url"})  # which legacy data is migrated

    def root(self) -> str:
        if not self.legacy_root:
            raise dg.Failure("T2M_LEGACY_ROOT is not set: expected the directory holding the legacy output/ and storage/")
        return self.legacy_root

    def redis(self):
        if not self.redis_url:
            raise dg.Failure("T2M_REDIS_URL is not set: expected redis://host:port/db of the legacy Redis")
        return legacy_redis_client(self.redis_url, "bulk")


@dg.definitions
def legacy_resources() -> dg.Definitions:
    return dg.Definitions(resources={"legacy": LegacySourcesResource.from_environment()})
