"""`t2m audit` as a user runs it: a subprocess against its own account's buckets on the moto server."""

import json
import os
import random
import subprocess
import sys

import pytest
from sqlalchemy import text

from t2m_pipeline.config import load_settings
from t2m_pipeline.db.engine import in_transaction
from t2m_pipeline.storage.bootstrap import bootstrap_bucket
from t2m_pipeline.storage.bucket_settings import declared_buckets
from t2m_pipeline.storage.s3 import ObjectOwner, S3Storage, make_s3_client


def t2m(*args, env):
    return subprocess.run([sys.executable, "-m", "t2m_pipeline.cli", *args], env=env, capture_output=True, text=True, timeout=180)


@pytest.fixture
def cli_env(service_env):
    account = "3" + "".join(random.choice("0123456789") for _ in range(11))
    env = {**os.environ, **service_env, "AWS_ACCOUNT_ID": account}
    env.pop("DAGSTER_HOME", None)
    settings = load_settings(env)
    client = make_s3_client(settings)
    for spec in declared_buckets(settings):
        bootstrap_bucket(client, spec, settings.region)
    return env, settings, client


def test_audit_exits_non_zero_on_an_error_finding_and_zero_after_the_fix(cli_env, engine, make_user):
    env, settings, client = cli_env
    # Every audit, but report-only for jobs: the database is shared with the other tests.
    clean = t2m("audit", "--json", "--settle-minutes", "0", "--stuck-policy", "report", "--no-fix-queue", env=env)
    assert clean.returncode == 0, clean.stderr
    report = json.loads(clean.stdout)
    assert report["ok"] and [a["audit"] for a in report["audits"]] == ["buckets", "objects", "temp", "jobs", "partitions"]
    assert report["audits"][-1]["skipped"].startswith("no Dagster instance")

    user_id, _ = make_user()
    storage = S3Storage(settings, engine, client)
    stored = storage.put_bytes(settings.bucket("code"), f"users/{user_id}/uploads/f1.txt", b"precious", owner=ObjectOwner(user_id, "document"), content_type="text/plain")
    storage.delete_version(stored.bucket, stored.key, stored.version_id)

    broken = t2m("audit", "--json", "--only", "objects", "--settle-minutes", "0", env=env)
    assert broken.returncode == 1, broken.stderr
    report = json.loads(broken.stdout)
    [objects] = report["audits"]
    assert not report["ok"] and report["open_errors"] == 1
    [finding] = objects["findings"]["sample"]
    assert finding["check"] == "missing_object" and finding["severity"] == "ERROR"
    assert finding["subject"] == f"s3://{stored.bucket}/{stored.key}?versionId={stored.version_id}"

    table = t2m("audit", "--only", "objects", "--settle-minutes", "0", env=env)
    assert table.returncode == 1 and "missing_object" in table.stdout and "FAIL: 1 ERROR" in table.stdout

    in_transaction(engine, lambda c: c.execute(text("DELETE FROM file_metadata WHERE id = :i"), {"i": stored.file_id}))
    fixed = t2m("audit", "--json", "--only", "objects", "--settle-minutes", "0", env=env)
    assert fixed.returncode == 0
    assert json.loads(fixed.stdout)["audits"][0]["findings"]["resolved_unseen"] == 1


def test_bucket_drift_fails_the_audit(cli_env):
    env, settings, client = cli_env
    client.delete_public_access_block(Bucket=settings.bucket("videos"))
    result = t2m("audit", "--json", "--only", "buckets", env=env)
    assert result.returncode == 1
    [buckets] = json.loads(result.stdout)["audits"]
    assert set(buckets["drift"][settings.bucket("videos")]) == {"public_access_block"}


@pytest.mark.parametrize(
    "args, message",
    [
        (["--only", "everything"], "--only 'everything' is invalid"),
        (["--stuck-policy", "ignore"], "--stuck-policy 'ignore' is invalid"),
        (["--stuck-after-minutes", "0"], "stuck_after_s must be positive"),
    ],
)
def test_bad_options_are_one_line_user_errors(cli_env, args, message):
    env, _, _ = cli_env
    result = t2m("audit", *args, env=env)
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.startswith("t2m: error: ") and message in result.stderr and result.stderr.count("\n") == 1
