"""The storage layer and `file_metadata` writes load boto3 and the ORM only when used: a files migration, whose
PUTs go through `direct_puts` and whose rows through `record_files`, never does (0.27 s of a run's start-up)."""

from __future__ import annotations

import subprocess
import sys

import pytest

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
    done = subprocess.run([sys.executable, "-c", PROBE, case], capture_output=True, text=True, timeout=120, env=env, check=False)
    assert done.returncode == 0, done.stderr
    return done.stdout.splitlines()


def test_importing_the_storage_layer_loads_neither_boto3_nor_the_orm():
    assert probe("import") == ["[]"]


def test_control_the_client_loads_boto3_when_asked_for():
    assert probe("client") == ["[]", "['boto3', 's3transfer']"]


DIRECT_PUTS_PROBE = """
import sys
from t2m_pipeline.config import load_settings
from t2m_pipeline.storage.direct_puts import DirectPuts
puts = DirectPuts(load_settings())
print(puts.has_credentials, sorted(m for m in ("botocore.session", "botocore.credentials", "s3transfer", "urllib3") if m in sys.modules))
"""


def direct_puts_probe(env: dict) -> str:
    base = {"T2M_LOCAL_STACK_FILE": "", "AWS_CONFIG_FILE": "/nonexistent", "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent",
            "AWS_EC2_METADATA_DISABLED": "true"}
    done = subprocess.run([sys.executable, "-c", DIRECT_PUTS_PROBE], check=False, capture_output=True, text=True, timeout=120, env={**base, **env})
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_direct_puts_with_keys_in_the_environment_over_http_load_no_botocore_session():
    """A files migration's PUTs start without botocore's session (about 0.2 s before the first PUT) when the chain's
    first provider, the environment, holds the keys and plain HTTP needs no CA bundle."""
    env = {"AWS_ENDPOINT_URL": "http://127.0.0.1:9", "AWS_ACCESS_KEY_ID": "x", "AWS_SECRET_ACCESS_KEY": "y"}
    assert direct_puts_probe(env) == "True []"


@pytest.mark.parametrize("case", ["no keys", "tls"])
def test_control_direct_puts_ask_botocores_chain_otherwise(case):
    """Control: with no keys in the environment the chain itself is asked (here it finds none), and over TLS the
    session is loaded for its CA bundle."""
    env = {"AWS_ENDPOINT_URL": "https://127.0.0.1:9"} if case == "tls" else {"AWS_ENDPOINT_URL": "http://127.0.0.1:9"}
    if case == "tls":
        env.update(AWS_ACCESS_KEY_ID="x", AWS_SECRET_ACCESS_KEY="y")
    loaded = direct_puts_probe(env)
    assert loaded.startswith("True" if case == "tls" else "False") and "botocore.session" in loaded
