"""The local stack `make dev` and `make demo` stand up: an S3 endpoint, PostgreSQL, migrations, buckets, and a
DAGSTER_HOME whose instance stores Dagster's own data in a PostgreSQL database of its own.

Every process started here is started in its own process group and stopped by `Stack.stop()`, by group id.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
LOCAL_S3_HOST, LOCAL_S3_PORT = "127.0.0.1", 4566
DEFAULT_DATABASE_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/t2m"
DEFAULT_DAGSTER_PG_URL = "postgresql+psycopg2://postgres@127.0.0.1:5432/t2m_dagster"
DAGSTER_HOME = REPO / ".dagster_home"
LOGS = REPO / ".local" / "logs"


def say(message: str) -> None:
    print(f"[t2m] {message}", flush=True)


def real_aws_configured(env: dict[str, str]) -> bool:
    """Credentials for real AWS named in the environment or the usual files (no network look-up)."""
    if any(env.get(name) for name in ("AWS_ACCESS_KEY_ID", "AWS_PROFILE", "AWS_WEB_IDENTITY_TOKEN_FILE", "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI")):
        return True
    home = Path(env.get("HOME", "~")).expanduser()
    return (home / ".aws" / "credentials").exists() or (home / ".aws" / "config").exists()


def port_open(host: str, port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex((host, port)) == 0


def wait_http(url: str, seconds: float, proc: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(url, timeout=2).read()
            return
        except urllib.error.HTTPError:
            return  # it answers
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            if proc is not None and proc.poll() is not None:
                raise RuntimeError(f"the process serving {url} exited with {proc.returncode}")
            time.sleep(0.3)
    raise RuntimeError(f"{url} did not answer within {seconds:.0f} s")


@dataclass
class Stack:
    env: dict[str, str]
    started: list[tuple[str, subprocess.Popen]] = field(default_factory=list)

    def spawn(self, name: str, args: list[str], *, log_name: str | None = None, foreground: bool = False) -> subprocess.Popen:
        """A child in its own process group (so it and everything it starts can be stopped together)."""
        LOGS.mkdir(parents=True, exist_ok=True)
        out = None if foreground else open(LOGS / (log_name or f"{name}.log"), "ab")
        proc = subprocess.Popen(
            args, cwd=REPO, env=self.env, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT if out else None,
            start_new_session=True,
        )
        self.started.append((name, proc))
        return proc

    def stop(self) -> None:
        for name, proc in reversed(self.started):
            if proc.poll() is None:
                say(f"stopping {name} (pid {proc.pid})")
                try:
                    os.killpg(proc.pid, signal.SIGTERM)
                    proc.wait(30)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait(10)
                except ProcessLookupError:
                    pass
        self.started.clear()

    def t2m(self, *args: str, check: bool = True, capture: bool = False) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "t2m_pipeline.cli", *args], cwd=REPO, env=self.env, check=check,
            text=True, capture_output=capture,
        )


def ensure_postgres(env: dict[str, str]) -> None:
    """PostgreSQL on 127.0.0.1:5432 (started with the local cluster's tools when it is down)."""
    if subprocess.run(["pg_isready", "-q", "-h", "127.0.0.1", "-p", "5432"]).returncode == 0:
        return
    versions = sorted(Path("/etc/postgresql").glob("*")) if Path("/etc/postgresql").exists() else []
    if not versions or not shutil.which("pg_ctlcluster"):
        raise SystemExit("[t2m] PostgreSQL is not running on 127.0.0.1:5432 and no local cluster was found to start")
    say(f"starting PostgreSQL {versions[-1].name}")
    subprocess.run(["pg_ctlcluster", "--skip-systemctl-redirect", versions[-1].name, "main", "start"], check=True)
    for _ in range(60):
        if subprocess.run(["pg_isready", "-q", "-h", "127.0.0.1", "-p", "5432"]).returncode == 0:
            return
        time.sleep(1)
    raise SystemExit("[t2m] PostgreSQL did not become ready")


def start(*, s3_port: int = LOCAL_S3_PORT) -> Stack:
    """Environment, S3 endpoint, PostgreSQL, migrations, buckets, Dagster's database and home."""
    env = dict(os.environ)
    env.setdefault("T2M_DATABASE_URL", DEFAULT_DATABASE_URL)
    env.setdefault("T2M_DAGSTER_PG_URL", DEFAULT_DAGSTER_PG_URL)
    env["AWS_EC2_METADATA_DISABLED"] = "true"  # never ask an instance metadata endpoint from a laptop
    stack = Stack(env)

    local_endpoint = f"http://{LOCAL_S3_HOST}:{s3_port}"
    endpoint = env.get("AWS_ENDPOINT_URL")
    if endpoint in (None, "", local_endpoint) and not (endpoint is None and real_aws_configured(env)):
        env["AWS_ENDPOINT_URL"] = local_endpoint
        # moto accepts any credentials; these are not secrets and only ever reach the local endpoint.
        env.setdefault("AWS_ACCESS_KEY_ID", "local")
        env.setdefault("AWS_SECRET_ACCESS_KEY", "local")
        env.setdefault("AWS_REGION", "us-east-1")
        if port_open(LOCAL_S3_HOST, s3_port):
            say(f"using the S3 endpoint already on {local_endpoint}")
        else:
            say(f"starting a local S3 endpoint on {local_endpoint}")
            proc = stack.spawn("local-s3", [sys.executable, "-m", "devtools.local_s3", "-H", LOCAL_S3_HOST, "-p", str(s3_port)])
            wait_http(f"{local_endpoint}/moto-api/", 30, proc)
    elif endpoint:
        say(f"using the S3 endpoint {endpoint}")
    else:
        say("using AWS S3 (credentials from the environment or ~/.aws)")

    try:
        ensure_postgres(env)
        say("migrating the metadata database")
        stack.t2m("db", "upgrade")
        say("bootstrapping the buckets")
        stack.t2m("infra", "bootstrap")
        from t2m_pipeline.db.engine import ensure_database

        if ensure_database(env["T2M_DAGSTER_PG_URL"]):
            say("created Dagster's storage database")
        DAGSTER_HOME.mkdir(exist_ok=True)
        shutil.copy(REPO / "dagster.yaml", DAGSTER_HOME / "dagster.yaml")
        env["DAGSTER_HOME"] = str(DAGSTER_HOME)
    except BaseException:
        stack.stop()
        raise
    return stack
