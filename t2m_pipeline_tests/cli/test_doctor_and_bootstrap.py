import json
import os
import shutil
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


@pytest.mark.skipif(os.geteuid() != 0, reason="the strict sandbox is built for a worker that runs as root")
def test_doctor_reports_the_render_backend_and_proves_the_sandbox_holds(prod_like_env):
    result = t2m("doctor", "--json", env=prod_like_env)
    render = {c["check"]: c for c in json.loads(result.stdout)}["render backend"]
    assert render["ok"], render
    assert render["detail"].startswith("local sandbox: bubblewrap, uid 17") and "was refused" in render["detail"]


def test_doctor_fails_without_bubblewrap_and_when_unconfined(prod_like_env, tmp_path):
    # a PATH with everything the platform needs but bwrap
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("sh", "unshare", "setpriv", "prlimit", "mount", "ps"):
        found = shutil.which(tool)
        if found:
            (bin_dir / tool).symlink_to(found)
    missing = t2m("doctor", "--json", env={**prod_like_env, "PATH": str(bin_dir)})
    render = {c["check"]: c for c in json.loads(missing.stdout)}["render backend"]
    assert missing.returncode == 1 and not render["ok"] and "bubblewrap (bwrap) is not installed" in render["detail"]
    unconfined = t2m("doctor", "--json", env={**prod_like_env, "T2M_RENDER_SANDBOX": "unconfined-local-only"})
    render = {c["check"]: c for c in json.loads(unconfined.stdout)}["render backend"]
    assert unconfined.returncode == 1 and not render["ok"] and render["detail"].startswith("UNCONFINED")


@pytest.mark.skipif(os.geteuid() != 0, reason="the strict sandbox is built for a worker that runs as root")
@pytest.mark.parametrize(
    "off,escape",
    [
        ({"filesystem"}, "read a file outside"),
        ({"network"}, "reached the host's loopback"),
        ({"unprivileged"}, "remounted / read-write"),
    ],
)
def test_control_the_probe_catches_a_sandbox_that_does_not_hold(off, escape):
    from t2m_pipeline.render.probe import probe_sandbox
    from t2m_pipeline.render.sandbox import PROTECTIONS

    probe = probe_sandbox(PROTECTIONS - off)
    assert not probe.ok and escape in probe.detail, probe.detail
