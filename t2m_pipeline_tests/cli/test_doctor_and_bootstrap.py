import json
import os
import subprocess
import sys

import pytest


def t2m(*args, env):
    return subprocess.run([sys.executable, "-m", "t2m_pipeline.cli", *args], env=env, capture_output=True, text=True, timeout=120)


@pytest.fixture
def prod_like_env(service_env):
    """Its own environment's buckets (prod, another account) on the moto server."""
    return {**os.environ, **service_env, "T2M_ENV": "prod", "AWS_ACCOUNT_ID": "333333333333"}


def test_doctor_fails_before_bootstrap_and_passes_after(prod_like_env):
    before = t2m("doctor", "--json", env=prod_like_env)
    assert before.returncode == 1
    checks = {c["check"]: c for c in json.loads(before.stdout)}
    assert checks["database"]["ok"] and not checks["bucket videos"]["ok"]
    assert "does not exist" in checks["bucket videos"]["detail"]

    boot = t2m("infra", "bootstrap", "--json", env=prod_like_env)
    assert boot.returncode == 0, boot.stderr
    assert {b["bucket"] for b in json.loads(boot.stdout)} == {f"prod-t2m-{k}-us-east-1-333333333333" for k in ("videos", "code", "thumbnails", "temp")}

    after = t2m("doctor", "--json", env=prod_like_env)
    assert after.returncode == 0, after.stdout
    assert all(c["ok"] for c in json.loads(after.stdout))


def test_doctor_reports_an_unmigrated_database_and_unreachable_redis(prod_like_env):
    env = {**prod_like_env, "T2M_DATABASE_URL": "postgresql+psycopg://postgres@127.0.0.1:5432/t2m_never_created_db",
           "T2M_REDIS_URL": "redis://127.0.0.1:9/0"}
    result = t2m("doctor", "--json", env=env)
    assert result.returncode == 1
    checks = {c["check"]: c for c in json.loads(result.stdout)}
    assert not checks["database"]["ok"] and not checks["redis"]["ok"]


def test_storage_errors_are_one_line_for_the_user(prod_like_env):
    env = {**prod_like_env, "AWS_ENDPOINT_URL": "http://127.0.0.1:9", "T2M_S3_MAX_ATTEMPTS": "1"}
    result = t2m("infra", "bootstrap", env=env)
    assert result.returncode == 2
    assert result.stderr.startswith("t2m: error: S3 endpoint unreachable") and result.stderr.count("\n") == 1
