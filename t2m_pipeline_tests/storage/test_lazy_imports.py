"""The storage layer and `file_metadata` writes load boto3 and the ORM only when used: a files migration, whose
PUTs go through `direct_puts` and whose rows through `record_files`, never does (0.27 s of a run's start-up)."""

from __future__ import annotations

import subprocess
import sys

PROBE = """
import sys
import t2m_pipeline.db.files, t2m_pipeline.storage.s3
from t2m_pipeline.config import load_settings
from t2m_pipeline.storage.s3 import S3Storage
storage = S3Storage(load_settings(), None)
print(sorted(m for m in ("boto3", "s3transfer", "sqlalchemy.orm", "t2m_pipeline.db.models") if m in sys.modules))
if sys.argv[1] == "client":
    storage.client
    storage.transfer_config
    print(sorted(m for m in ("boto3", "s3transfer") if m in sys.modules))
"""


def probe(case: str) -> list[str]:
    env = {"AWS_ENDPOINT_URL": "http://127.0.0.1:9", "AWS_ACCESS_KEY_ID": "x", "AWS_SECRET_ACCESS_KEY": "y", "T2M_LOCAL_STACK_FILE": ""}
    done = subprocess.run([sys.executable, "-c", PROBE, case], capture_output=True, text=True, timeout=120, env=env)
    assert done.returncode == 0, done.stderr
    return done.stdout.splitlines()


def test_importing_the_storage_layer_loads_neither_boto3_nor_the_orm():
    assert probe("import") == ["[]"]


def test_control_the_client_loads_boto3_when_asked_for():
    assert probe("client") == ["[]", "['boto3', 's3transfer']"]
