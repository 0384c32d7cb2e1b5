"""`t2m` finds the local stack through the stack file `make dev` writes, in a fresh environment (env -i)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid

import pytest
from sqlalchemy import text

from t2m_pipeline import config
from t2m_pipeline.config import ConfigError, apply_local_stack_file, local_stack_file, read_stack_file


def fresh_env(tmp_path, **extra) -> dict[str, str]:
    """What a new terminal has: PATH and HOME only (no AWS or T2M variables)."""
    return {"PATH": os.environ["PATH"], "HOME": str(tmp_path), **extra}


def write_stack_file(path, service_env) -> None:
    names = ("AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_REGION", "T2M_DATABASE_URL")
    path.write_text("# written by the local stack\n" + "".join(f"{n}={service_env[n]}\n" for n in names))


def submit(env) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "t2m_pipeline.cli", "jobs", "submit", "--user", f"user_{uuid.uuid4().hex[:8]}",
         "--email", "a@example.com", "--topic", "Stack file", "--json"],
        env=env, capture_output=True, text=True, timeout=120,
    )


def test_a_fresh_terminal_reaches_the_stack_through_its_file(service_env, engine, tmp_path):
    stack_file = tmp_path / "stack.env"
    write_stack_file(stack_file, service_env)
    done = submit(fresh_env(tmp_path, T2M_LOCAL_STACK_FILE=str(stack_file)))
    assert done.returncode == 0, done.stderr
    job_id = json.loads(done.stdout)["job_id"]
    with engine.connect() as conn:
        assert conn.execute(text("SELECT status FROM jobs WHERE id = :j"), {"j": job_id}).scalar() == "queued"


def test_control_without_the_file_the_same_terminal_is_told_to_configure_aws(tmp_path):
    refused = submit(fresh_env(tmp_path, T2M_LOCAL_STACK_FILE=""))
    assert refused.returncode == 2
    assert refused.stderr.strip() == "t2m: error: AWS_ACCOUNT_ID is required against real AWS: expected 12 digits (or set AWS_ENDPOINT_URL)"


def test_the_environment_wins_over_the_file(tmp_path):
    stack_file = tmp_path / "stack.env"
    stack_file.write_text("T2M_ENV=staging\nAWS_REGION=eu-west-1\n")
    environ = {"T2M_LOCAL_STACK_FILE": str(stack_file), "AWS_REGION": "us-east-2"}
    assert apply_local_stack_file(environ) == stack_file
    assert environ["T2M_ENV"] == "staging" and environ["AWS_REGION"] == "us-east-2"


def test_the_checkout_file_is_read_only_when_it_exists_and_never_when_disabled(tmp_path, monkeypatch):
    default = tmp_path / ".local" / "stack.env"
    monkeypatch.setattr(config, "LOCAL_STACK_FILE", default)
    assert local_stack_file({}) is None
    default.parent.mkdir()
    default.write_text("T2M_ENV=dev\n")
    assert local_stack_file({}) == default
    assert local_stack_file({"T2M_LOCAL_STACK_FILE": ""}) is None


def test_a_broken_or_missing_file_is_one_line(tmp_path):
    bad = tmp_path / "stack.env"
    bad.write_text("this is not a setting\n")
    with pytest.raises(ConfigError, match=r"stack.env:1 is invalid: expected NAME=value"):
        read_stack_file(bad)
    with pytest.raises(ConfigError, match="cannot be read"):
        read_stack_file(tmp_path / "missing.env")
