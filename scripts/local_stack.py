"""The local stack `make dev` and `make demo` stand up: an S3 endpoint whose state persists, PostgreSQL, migrations,
buckets, and a DAGSTER_HOME whose instance stores Dagster's own data in a PostgreSQL database of its own.

Three stores hold one world: the local S3 state (`.local/s3`), the metadata database and Dagster's database. They
are kept together: the local S3 saves every write before answering it (devtools/local_s3.py), and on every start
the stack checks that the three still belong together (one stack id in each) and that every `file_metadata` row's
version is in S3. When they do not (a state removed or unreadable, a database dropped), all three are emptied
together and the stack says so loudly: never S3 silently behind PostgreSQL.

The stack writes `.local/stack.env` (the endpoint, local credentials, database URLs), which `t2m` reads when it is
present, so the printed commands work in any terminal.

Every process started here is started in its own process group and stopped by `Stack.stop()`, by group id.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # devtools/ sits beside the package, not installed

from devtools.dagster_daemon import stop_process_group  # noqa: E402
from devtools.local_s3 import UNREADABLE_STATE_EXIT, LocalS3Error, start_local_s3  # noqa: E402

BIN = Path(sys.executable).parent
LOCAL_S3_HOST, LOCAL_S3_PORT = "127.0.0.1", 4566
DEFAULT_DATABASE_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/t2m"
DEFAULT_DAGSTER_PG_URL = "postgresql+psycopg2://postgres@127.0.0.1:5432/t2m_dagster"
DEFAULT_LOCAL_DIR = REPO / ".local"
STACK_FILE_NAME = "stack.env"
STACK_ID_FILE = "stack-id"
STOP_GRACE_S = 6.0  # then SIGKILL: `make dev` stops within 10 s
STACK_ID_PREFIX = "t2m-local-stack:"


def say(message: str) -> None:
    print(f"[t2m] {message}", flush=True)


def shout(message: str) -> None:
    bar = "!" * 100
    print(f"[t2m] {bar}\n[t2m] {message}\n[t2m] {bar}", flush=True)


def real_aws_configured(env: dict[str, str]) -> bool:
    """Credentials for real AWS named in the environment or the usual files (no network look-up)."""
    if any(env.get(name) for name in ("AWS_ACCESS_KEY_ID", "AWS_PROFILE", "AWS_WEB_IDENTITY_TOKEN_FILE", "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI")):
        return True
    home = Path(env.get("HOME", "~")).expanduser()
    return (home / ".aws" / "credentials").exists() or (home / ".aws" / "config").exists()


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
    local_dir: Path = DEFAULT_LOCAL_DIR
    started: list[tuple[str, object]] = field(default_factory=list)

    @property
    def logs(self) -> Path:
        return self.local_dir / "logs"

    @property
    def dagster_home(self) -> Path:
        return self.local_dir / "dagster_home"

    @property
    def stack_file(self) -> Path:
        return self.local_dir / STACK_FILE_NAME

    def spawn(
        self, name: str, args: list[str], *, log_name: str | None = None, foreground: bool = False, cwd: Path = REPO
    ) -> subprocess.Popen:
        """A child in its own process group (so it and everything it starts can be stopped together)."""
        self.logs.mkdir(parents=True, exist_ok=True)
        out = None if foreground else open(self.logs / (log_name or f"{name}.log"), "ab")
        proc = subprocess.Popen(
            args, cwd=cwd, env=self.env, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT if out else None,
            start_new_session=True,
        )
        self.started.append((name, proc))
        return proc

    def stop(self) -> None:
        """Everything this stack started, newest first, each within STOP_GRACE_S."""
        for name, child in reversed(self.started):
            if hasattr(child, "stop"):  # the local S3 server
                if child.proc.poll() is None:
                    say(f"stopping {name} (pid {child.proc.pid})")
                child.stop(timeout=STOP_GRACE_S)
            elif child.poll() is None:
                say(f"stopping {name} (pid {child.pid})")
                stop_process_group(child, timeout=STOP_GRACE_S, grace=0)  # what outlived the leader: SIGKILL
        self.started.clear()

    def t2m(self, *args: str, check: bool = True, capture: bool = False) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "t2m_pipeline.cli", *args], cwd=REPO, env=self.env, check=check,
            text=True, capture_output=capture,
        )

    def command(self, args: str) -> str:
        """A `t2m` command line that works in a fresh terminal: it finds this stack through its stack file."""
        t2m = shlex.quote(str(BIN / "t2m"))
        if self.stack_file == DEFAULT_LOCAL_DIR / STACK_FILE_NAME:
            return f"{t2m} {args}"
        return f"T2M_LOCAL_STACK_FILE={shlex.quote(str(self.stack_file))} {t2m} {args}"


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


# -- the three stores belong together -------------------------------------------------------------------------------


def _database_stack_id(url: str) -> str | None:
    """The stack id in the database's comment (None: no comment of ours, or no such database)."""
    from sqlalchemy import create_engine, make_url, text

    target = make_url(url)
    admin = create_engine(target.set(database="postgres"))
    try:
        with admin.connect() as conn:
            comment = conn.execute(
                text("SELECT shobj_description(oid, 'pg_database') FROM pg_database WHERE datname = :n"), {"n": target.database}
            ).scalar()
    finally:
        admin.dispose()
    return comment[len(STACK_ID_PREFIX):] if comment and comment.startswith(STACK_ID_PREFIX) else None


def _mark_database(url: str, stack_id: str) -> None:
    from sqlalchemy import create_engine, make_url, text

    target = make_url(url)
    admin = create_engine(target.set(database="postgres"), isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            name = conn.dialect.identifier_preparer.quote(target.database)
            conn.execute(text(f"COMMENT ON DATABASE {name} IS '{STACK_ID_PREFIX}{stack_id}'"))
    finally:
        admin.dispose()


DATA_TABLES = ("jobs", "file_metadata", "runs")  # ours, and Dagster's runs


def _holds_data(url: str) -> bool:
    """Does the database hold anything a reset would lose (jobs, file rows, Dagster runs)?"""
    from sqlalchemy import create_engine, text

    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            tables = set(conn.execute(text("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")).scalars())
            return any(conn.execute(text(f"SELECT EXISTS (SELECT 1 FROM {t})")).scalar() for t in DATA_TABLES if t in tables)
    finally:
        engine.dispose()


def missing_objects(settings, client, engine) -> list[str]:
    """`file_metadata` rows of the durable buckets whose version is not in S3 (S3 behind PostgreSQL)."""
    from sqlalchemy import select

    from t2m_pipeline.audits.reconcile import iter_s3_versions, reconciled_buckets
    from t2m_pipeline.db.models import FileMetadata

    missing = []
    for bucket in reconciled_buckets(settings):
        try:
            present = {(v.key, v.version_id) for v in iter_s3_versions(client, bucket)}
        except Exception:  # noqa: BLE001 - no such bucket: every row of it is missing
            present = set()
        with engine.connect() as conn:
            rows = conn.execute(
                select(FileMetadata.s3_key, FileMetadata.version_id).where(FileMetadata.s3_bucket == bucket)
            ).all()
        missing += [f"s3://{bucket}/{key}?versionId={vid}" for key, vid in rows if (key, vid or "null") not in present]
    return missing


@dataclass
class Stores:
    """Where the three stores of one local stack live."""

    s3_state: Path | None  # None: not the local S3 (another endpoint, or AWS): nothing of ours to keep together
    database_url: str
    dagster_url: str
    dagster_home: Path

    def owned(self, url: str) -> bool:
        """The stack's default database, or one a stack marked: a reset may empty it."""
        return url in (DEFAULT_DATABASE_URL, DEFAULT_DAGSTER_PG_URL) or bool(_database_stack_id(url))

    def reset(self, reason: str) -> None:
        from t2m_pipeline.db.engine import drop_database, safe_url

        for url, variable in ((self.database_url, "T2M_DATABASE_URL"), (self.dagster_url, "T2M_DAGSTER_PG_URL")):
            if not self.owned(url) and _holds_data(url):
                raise SystemExit(
                    f"[t2m] {reason}; {safe_url(url)} holds data and was not made by a local stack, so it is not "
                    f"emptied: empty it yourself, or point {variable} at another database"
                )
        shout(
            f"RESET: {reason}. The local S3 state, the metadata database and Dagster's database are emptied "
            "TOGETHER so they agree again: jobs, objects and run history from before are gone."
        )
        drop_database(self.database_url)
        drop_database(self.dagster_url)
        if self.s3_state is not None:
            shutil.rmtree(self.s3_state, ignore_errors=True)
        shutil.rmtree(self.dagster_home, ignore_errors=True)
        mark_stores(self)  # three new, empty stores of one new stack


def stack_ids(stores: Stores) -> dict[str, str | None]:
    s3_id = None
    if stores.s3_state is not None and (stores.s3_state / STACK_ID_FILE).exists():
        s3_id = (stores.s3_state / STACK_ID_FILE).read_text().strip() or None
    return {
        "local S3": s3_id,
        "metadata database": _database_stack_id(stores.database_url),
        "Dagster database": _database_stack_id(stores.dagster_url),
    }


def mark_stores(stores: Stores) -> str:
    """One new stack id in all three stores."""
    from t2m_pipeline.db.engine import ensure_database

    stack_id = str(uuid.uuid4())
    ensure_database(stores.database_url)
    ensure_database(stores.dagster_url)
    _mark_database(stores.database_url, stack_id)
    _mark_database(stores.dagster_url, stack_id)
    if stores.s3_state is not None:
        stores.s3_state.mkdir(parents=True, exist_ok=True)
        (stores.s3_state / STACK_ID_FILE).write_text(stack_id + "\n")
    return stack_id


def holdings(stores: Stores) -> list[str]:
    """Which of the three stores hold data."""
    held = [name for name, url in (("metadata database", stores.database_url), ("Dagster database", stores.dagster_url)) if _holds_data(url)]
    if stores.s3_state is not None and (stores.s3_state / "state.pickle").exists():
        held.append("local S3")
    return held


def mismatch(ids: dict[str, str | None], held: list[str]) -> str | None:
    """Why the three stores do not belong together, or None when they do (or all three are new and empty)."""
    present = {name: value for name, value in ids.items() if value}
    if not present:
        return None if not held else f"no local stack id vouches for the data in the {' and the '.join(held)}"
    if len(present) == len(ids) and len(set(present.values())) == 1:
        return None
    lost = [name for name in ids if name not in present]
    if lost:
        return f"the {' and the '.join(lost)} of this stack {'is' if len(lost) == 1 else 'are'} gone or new"
    return "the local S3 state, the metadata database and Dagster's database come from different stacks"


# -- start ----------------------------------------------------------------------------------------------------------


def write_stack_file(stack: Stack, names: tuple[str, ...]) -> None:
    """`.local/stack.env`: what `t2m` needs to find this stack (mode 0600: a database URL may hold a password)."""
    lines = [
        "# Written by scripts/local_stack.py (make dev / make demo): t2m reads it when present; the environment wins.",
        *(f"{name}={stack.env[name]}" for name in names if stack.env.get(name)),
    ]
    stack.local_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(stack.stack_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write("\n".join(lines) + "\n")


def start(*, s3_port: int = LOCAL_S3_PORT, local_dir: Path = DEFAULT_LOCAL_DIR, reset: bool = False) -> Stack:
    """Environment, S3 endpoint, PostgreSQL, the three stores checked together, migrations, buckets, DAGSTER_HOME."""
    env = dict(os.environ)
    env.setdefault("T2M_DATABASE_URL", DEFAULT_DATABASE_URL)
    env.setdefault("T2M_DAGSTER_PG_URL", DEFAULT_DAGSTER_PG_URL)
    env["AWS_EC2_METADATA_DISABLED"] = "true"  # never ask an instance metadata endpoint from a laptop
    env["T2M_LOCAL_STACK_FILE"] = ""  # children get the environment itself, never a stack file
    local_dir = Path(local_dir).resolve()
    stack = Stack(env, local_dir)
    dagster_home = stack.dagster_home

    local_endpoint = f"http://{LOCAL_S3_HOST}:{s3_port}"
    endpoint = env.get("AWS_ENDPOINT_URL")
    use_local_s3 = endpoint in (None, "", local_endpoint) and not (endpoint is None and real_aws_configured(env))
    stores = Stores(
        s3_state=local_dir / "s3" if use_local_s3 else None,
        database_url=env["T2M_DATABASE_URL"],
        dagster_url=env["T2M_DAGSTER_PG_URL"],
        dagster_home=dagster_home,
    )
    if use_local_s3:
        env["AWS_ENDPOINT_URL"] = local_endpoint
        # moto accepts any credentials; these are not secrets and only ever reach the local endpoint.
        env.setdefault("AWS_ACCESS_KEY_ID", "local")
        env.setdefault("AWS_SECRET_ACCESS_KEY", "local")
        env.setdefault("AWS_REGION", "us-east-1")
    try:
        ensure_postgres(env)
        from t2m_pipeline.db.engine import ensure_database

        ensure_database(stores.database_url)
        ensure_database(stores.dagster_url)
        if reset:
            stores.reset("asked for (make dev RESET=1)")
        elif stores.s3_state is not None:
            why = mismatch(stack_ids(stores), holdings(stores))
            if why:
                stores.reset(why)
            if not all(stack_ids(stores).values()):
                mark_stores(stores)

        if use_local_s3:
            say(f"starting the local S3 endpoint on {local_endpoint} (state in {stores.s3_state})")
            try:
                server = start_local_s3(stack.logs, host=LOCAL_S3_HOST, port=s3_port, state_dir=stores.s3_state, env=env)
            except LocalS3Error as exc:
                if exc.returncode != UNREADABLE_STATE_EXIT:
                    raise SystemExit(f"[t2m] {exc} (is port {s3_port} taken?)") from None
                stores.reset(f"the local S3 state in {stores.s3_state} cannot be read ({exc})")
                server = start_local_s3(stack.logs, host=LOCAL_S3_HOST, port=s3_port, state_dir=stores.s3_state, env=env)
            stack.started.append(("local-s3", server))
        elif endpoint:
            say(f"using the S3 endpoint {endpoint}")
        else:
            say("using AWS S3 (credentials from the environment or ~/.aws)")

        say("migrating the metadata database")
        stack.t2m("db", "upgrade")
        say("bootstrapping the buckets")
        stack.t2m("infra", "bootstrap", capture=True)
        if stores.s3_state is not None:
            lost = objects_behind(env)
            if lost:
                stack.stop()
                stores.reset(f"S3 is behind PostgreSQL: {len(lost)} recorded version(s) are not in the local S3 (first: {lost[0]})")
                return start(s3_port=s3_port, local_dir=local_dir)
        ensure_database(stores.dagster_url)
        dagster_home.mkdir(parents=True, exist_ok=True)
        shutil.copy(REPO / "dagster.yaml", dagster_home / "dagster.yaml")
        env["DAGSTER_HOME"] = str(dagster_home)
        # `dagster dev` is superseded by `dg dev` (dagster-dg-cli, not a dependency here): the one warning it prints.
        env["PYTHONWARNINGS"] = ",".join(filter(None, [env.get("PYTHONWARNINGS"), "ignore:Function `dev_command` is superseded"]))
        write_stack_file(stack, STACK_FILE_VARIABLES)
    except BaseException:
        stack.stop()
        raise
    return stack


STACK_FILE_VARIABLES = (
    "AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_REGION", "AWS_EC2_METADATA_DISABLED",
    "T2M_ENV", "T2M_DATABASE_URL", "T2M_DAGSTER_PG_URL", "DAGSTER_HOME",
)


def objects_behind(env: dict[str, str]) -> list[str]:
    from t2m_pipeline.config import load_settings
    from t2m_pipeline.db.engine import make_engine
    from t2m_pipeline.storage.s3 import make_s3_client

    settings = load_settings(env)
    engine = make_engine(settings.database_url)
    names = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")
    saved = {name: os.environ.get(name) for name in names}
    os.environ.update({name: env[name] for name in names})  # boto3 reads them there; put back after
    try:
        return missing_objects(settings, make_s3_client(settings), engine)
    finally:
        engine.dispose()
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
