"""Where the legacy data is: the legacy root (`T2M_LEGACY_ROOT`) and Redis (`T2M_REDIS_URL`), read from the environment."""

from __future__ import annotations

import os

import dagster as dg

from t2m_pipeline.config import load_settings
from t2m_pipeline.migration.legacy_redis import legacy_redis_client


class LegacySourcesResource(dg.ConfigurableResource):
    """The legacy platform's data: a directory holding `output/` and `storage/`, and its Redis."""

    legacy_root: str | None = None
    redis_url: str | None = None
    workers: int = 32

    def root(self) -> str:
        root = self.legacy_root or os.environ.get("T2M_LEGACY_ROOT")
        if not root:
            raise dg.Failure("T2M_LEGACY_ROOT is not set: expected the directory holding the legacy output/ and storage/")
        return root

    def redis(self):
        url = self.redis_url or load_settings().redis_url
        if not url:
            raise dg.Failure("T2M_REDIS_URL is not set: expected redis://host:port/db of the legacy Redis")
        return legacy_redis_client(url, "bulk")


def default_legacy_resources() -> dict:
    return {
        "legacy": LegacySourcesResource(
            legacy_root=dg.EnvVar("T2M_LEGACY_ROOT") if os.environ.get("T2M_LEGACY_ROOT") else None,
            redis_url=dg.EnvVar("T2M_REDIS_URL") if os.environ.get("T2M_REDIS_URL") else None,
        )
    }


@dg.definitions
def legacy_resources() -> dg.Definitions:
    return dg.Definitions(resources=default_legacy_resources())
