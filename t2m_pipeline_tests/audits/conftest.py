"""An environment of its own per test (another account id, so other buckets on the same moto server).

The session's dev buckets are shared with every other test; audits that must see exactly what a test made (or
that change bucket settings, or delete temp objects) run against these instead.
"""

from __future__ import annotations

import random
import uuid
from dataclasses import dataclass

import pytest
from sqlalchemy import text

from t2m_pipeline.config import Settings, load_settings
from t2m_pipeline.storage.bootstrap import bootstrap_bucket
from t2m_pipeline.storage.bucket_settings import declared_buckets
from t2m_pipeline.storage.s3 import ObjectOwner, S3Storage, make_s3_client


@dataclass
class Env:
    settings: Settings
    client: object
    storage: S3Storage
    engine: object
    user_id: uuid.UUID

    def owner(self, file_type: str = "code", job_id=None, scene_number=None) -> ObjectOwner:
        return ObjectOwner(self.user_id, file_type, job_id=job_id, scene_number=scene_number)


def own_settings(service_env: dict, **extra: str) -> Settings:
    account = "1" + "".join(random.choice("0123456789") for _ in range(11))
    return load_settings({**service_env, "AWS_ACCOUNT_ID": account, **extra})


@pytest.fixture
def env(service_env, engine, make_user) -> Env:
    settings = own_settings(service_env)
    client = make_s3_client(settings)
    for spec in declared_buckets(settings):
        bootstrap_bucket(client, spec, settings.region)
    user_id, _ = make_user()
    return Env(settings, client, S3Storage(settings, engine, client), engine, user_id)


def findings_rows(engine, subject: str) -> list[dict]:
    """Every row (open or resolved) about one subject, oldest first."""
    with engine.connect() as conn:
        return [
            dict(row)
            for row in conn.execute(
                text("SELECT * FROM audit_findings WHERE subject = :s ORDER BY first_seen_at, id"), {"s": subject}
            ).mappings()
        ]
