"""A local S3 endpoint: moto's server, taught two things.

1. Leave alone bucket-policy statements it cannot evaluate. moto 5.2 evaluates only `StringEquals` in policy
   conditions; any other condition (such as the standard TLS-only `Bool aws:SecureTransport=false` Deny) is treated
   as matching every request, so the declared policy would deny all access. We keep the declared policy stored
   unchanged (bootstrap writes it, doctor and audits compare it) and patch moto so a statement with a condition
   operator it cannot evaluate does not apply. Unconditional statements and `StringEquals` ones are still enforced.

2. With `--state-dir DIR`, keep its state on disk (`make dev`, `make demo`). moto's server holds everything in
   memory, so a restart used to empty the buckets while PostgreSQL kept their `file_metadata` rows. A replayed request
   journal would give every object a new version id (and break the rows that name them), so instead the backend
   itself is persisted: after every mutating request (PUT, POST, DELETE) and *before its answer is sent*, the S3
   backends are pickled to `DIR/state.pickle` (written aside, fsynced, renamed), with each object's bytes stored
   once, content-addressed, under `DIR/blobs/`. Version ids, timestamps, checksums, encryption, policies, lifecycle
   and versioning survive as they were. Whatever a client was told succeeded is on disk, so a `kill -9` can lose
   only a request that was never answered, one the client retries or reports: S3 cannot fall silently behind the
   rows written after its answers. Mutating requests are serialized for this (a local endpoint's concern only).
   A state that cannot be read (another moto version, a damaged file) stops the server with one line and exit 3;
   it never starts empty in its place.

3. With `--timeline FILE` (the benchmarks), append each request's start and end (wall-clock seconds) and method to
   FILE as it is answered: when the endpoint was busy, and when it waited for a client.

Run: `python -m devtools.local_s3 -H 127.0.0.1 -p 5000 [--state-dir .local/s3] [--timeline FILE]`. In Python,
`start_local_s3()` is the one way the tests, the benchmarks and the local stack start it.
"""

from __future__ import annotations

import argparse
import fcntl
import hashlib
import io
import os
import pickle
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

EVALUATED_OPERATORS = frozenset({"StringEquals"})
MUTATING_METHODS = frozenset({"PUT", "POST", "DELETE"})
STATE_FILE = "state.pickle"
BLOBS = "blobs"
STATE_FORMAT = 1
UNREADABLE_STATE_EXIT = 3
REPO = Path(__file__).resolve().parents[1]


def patch_moto_policy_conditions() -> None:
    from moto.iam import access_control

    statement_cls = access_control.IAMPolicyStatement
    if getattr(statement_cls, "_t2m_patched", False):
        return
    original = statement_cls.is_action_permitted

    def is_action_permitted(self, action, resource="*", principal=None, incoming_condition_values=None):
        conditions = self._statement.get("Condition") or {}
        if any(operator not in EVALUATED_OPERATORS for operator in conditions):
            return access_control.PermissionResult.NEUTRAL
        return original(self, action, resource, principal, incoming_condition_values)

    statement_cls.is_action_permitted = is_action_permitted
    statement_cls._t2m_patched = True


# -- durable state --------------------------------------------------------------------------------------------------


class UnreadableStateError(RuntimeError):
    """The state directory holds a snapshot this server cannot restore."""


def _fsync_write(path: Path, data: bytes) -> None:
    """`data` at `path`, atomically: written aside, flushed to disk, renamed over, the directory synced."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    with open(tmp, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def _install_value_tracking() -> None:
    """Forget a key's stored blob when its bytes change (moto sets `FakeKey.value` on create, and rarely after)."""
    from moto.s3.models import FakeKey

    if getattr(FakeKey, "_t2m_tracked", False):
        return
    prop = FakeKey.value

    def set_value(self, new_value):
        prop.fset(self, new_value)
        self.__dict__.pop("_t2m_blob", None)

    FakeKey.value = property(prop.fget, set_value)
    FakeKey._t2m_tracked = True


_restored_blobs: list[str] = []


def _restore_key(obj, state: dict) -> None:
    """pickle's state setter for a FakeKey whose bytes are in a blob (`state["_t2m_blob"]`: digest and path)."""
    digest, path = state["_t2m_blob"]
    _restored_blobs.append(digest)
    data = Path(path).read_bytes()
    if hashlib.sha256(data).hexdigest() != digest:
        raise UnreadableStateError(f"blob {path} does not hold the bytes the snapshot recorded")
    obj.__dict__.update(state)
    obj._value_buffer = tempfile.SpooledTemporaryFile(max_size=obj._max_buffer_size)
    obj._value_buffer.write(data)
    obj.lock = threading.Lock()


def _rebuild_versioned_store(cls, lists: dict):
    """A moto `_VersionedKeyStore` from its raw {key: [versions]} (its `items()` shows only the latest versions)."""
    store = cls()
    for key, versions in lists.items():
        dict.__setitem__(store, key, versions)
    return store


class DurableState:
    """moto's S3 backends on disk: one snapshot of the metadata, each object's bytes once under `blobs/`."""

    def __init__(self, state_dir: Path):
        self.dir = Path(state_dir)
        self.blobs = self.dir / BLOBS
        self.blobs.mkdir(parents=True, exist_ok=True)
        self.lock = threading.Lock()
        self._lock_file = open(self.dir / "lock", "w")
        try:
            fcntl.flock(self._lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise UnreadableStateError(f"{self.dir} is in use by another local S3 server") from None
        self._on_disk = {p.name for p in self.blobs.iterdir() if not p.name.startswith(".")}
        _install_value_tracking()

    def _blob_for(self, key) -> tuple[str, str]:
        cached = key.__dict__.get("_t2m_blob")
        if cached is not None:
            return cached
        try:
            data = key.value
        except ValueError:  # a disposed key (deleted while we looked): nothing to keep
            data = b""
        digest = hashlib.sha256(data).hexdigest()
        if digest not in self._on_disk:
            _fsync_write(self.blobs / digest, data)
            self._on_disk.add(digest)
        blob = (digest, str(self.blobs / digest))
        key.__dict__["_t2m_blob"] = blob
        return blob

    def save(self) -> None:
        """Snapshot every S3 backend now; call with the mutations quiet (under `self.lock`)."""
        from moto.s3.models import FakeKey, s3_backends
        from moto.s3.utils import _VersionedKeyStore

        referenced: set[str] = set()
        state = self

        class Pickler(pickle.Pickler):
            def reducer_override(self, obj):
                if type(obj) is FakeKey:
                    digest, path = state._blob_for(obj)
                    referenced.add(digest)
                    fields = {k: v for k, v in obj.__dict__.items() if k not in ("_value_buffer", "lock")}
                    fields["_t2m_blob"] = (digest, path)
                    return (object.__new__, (FakeKey,), fields, None, None, _restore_key)
                if type(obj) is _VersionedKeyStore:
                    return (_rebuild_versioned_store, (_VersionedKeyStore, dict(obj)))
                return NotImplemented

        backends = [
            (account_id, partition, backend)
            for account_id, per_account in list(s3_backends.items())
            for partition, backend in list(dict.items(per_account))
        ]
        buffer = io.BytesIO()
        Pickler(buffer, protocol=pickle.HIGHEST_PROTOCOL).dump(
            {"format": STATE_FORMAT, "backends": backends, "bucket_accounts": dict(s3_backends.bucket_accounts)}
        )
        _fsync_write(self.dir / STATE_FILE, buffer.getvalue())
        self._collect(referenced)

    def _collect(self, referenced: set[str]) -> None:
        """Blobs no snapshot names any more (deleted objects, a crash's leftovers) are removed."""
        for digest in self._on_disk - referenced:
            (self.blobs / digest).unlink(missing_ok=True)
        self._on_disk &= referenced

    def load(self) -> int:
        """Restore the snapshot when there is one; returns how many objects (versions) it held."""
        from moto.s3.models import s3_backends

        path = self.dir / STATE_FILE
        if not path.exists():
            return 0
        _restored_blobs.clear()
        try:
            snapshot = pickle.loads(path.read_bytes())
            if snapshot.get("format") != STATE_FORMAT:
                raise UnreadableStateError(f"format {snapshot.get('format')!r}, expected {STATE_FORMAT}")
        except UnreadableStateError:
            raise
        except Exception as exc:  # noqa: BLE001 - any failure to restore is the same answer: not this state
            raise UnreadableStateError(f"{type(exc).__name__}: {exc}") from exc
        for account_id, partition, backend in snapshot["backends"]:
            dict.__setitem__(s3_backends[account_id], partition, backend)
        s3_backends.bucket_accounts.update(snapshot["bucket_accounts"])
        self._collect(set(_restored_blobs))
        return len(_restored_blobs)


class DurableApp:
    """WSGI middleware: a mutating request runs to completion and its state is on disk before it is answered."""

    def __init__(self, app, state: DurableState):
        self.app = app
        self.state = state

    def __call__(self, environ, start_response):
        if environ.get("REQUEST_METHOD") not in MUTATING_METHODS:
            return self.app(environ, start_response)
        captured: dict = {}

        def capture(status, headers, exc_info=None):
            captured["args"] = (status, headers, exc_info)
            return lambda data: captured.setdefault("written", []).append(data)

        with self.state.lock:
            result = self.app(environ, capture)
            try:
                body = b"".join([*captured.get("written", []), *result])
            finally:
                if hasattr(result, "close"):
                    result.close()
            self.state.save()
        status, headers, exc_info = captured["args"]
        start_response(status, headers, exc_info)
        return [body]


class TimelineApp:
    """WSGI middleware: each request's start, end and method, one line appended to a file when it is answered."""

    def __init__(self, app, path: Path):
        self.app = app
        self.file = open(path, "a", buffering=1)  # a line at a time: readable while the server runs
        self.lock = threading.Lock()

    def __call__(self, environ, start_response):
        started = time.time()
        result = self.app(environ, start_response)
        try:
            body = b"".join(result)
        finally:
            if hasattr(result, "close"):
                result.close()
            with self.lock:
                self.file.write(f"{started:.6f} {time.time():.6f} {environ.get('REQUEST_METHOD')}\n")
        return [body]


def read_timeline(path: Path, since: float, until: float) -> list[tuple[float, float, str]]:
    """The requests of a `--timeline` file that started in [since, until]: (start, end, method), by start."""
    out = []
    for line in Path(path).read_text().splitlines():
        start, end, method = line.split()
        if since <= float(start) <= until:
            out.append((float(start), float(end), method))
    return sorted(out)


# -- the server -----------------------------------------------------------------------------------------------------


def serve(host: str, port: int, state_dir: Path | None, timeline: Path | None = None) -> None:
    from moto.moto_server.werkzeug_app import DomainDispatcherApplication, MotoRequestHandler, create_backend_app
    from werkzeug.serving import run_simple

    patch_moto_policy_conditions()
    os.environ.setdefault("MOTO_PORT", str(port))
    app = DomainDispatcherApplication(create_backend_app)
    state = None
    if state_dir is not None:
        state = DurableState(state_dir)
        objects = state.load()
        print(f"local S3: {objects} object version(s) restored from {state_dir}", file=sys.stderr, flush=True)
        app = DurableApp(app, state)
    if timeline is not None:
        app = TimelineApp(app, timeline)

    def stop(*_):
        if state is not None:  # let a mutation being saved finish; every answered one is already on disk
            state.lock.acquire(timeout=5)
        os._exit(0)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    run_simple(host, port, app, threaded=True, request_handler=MotoRequestHandler)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m devtools.local_s3", description="A local S3 endpoint (moto).")
    parser.add_argument("-H", "--host", default="127.0.0.1")
    parser.add_argument("-p", "--port", type=int, default=5000)
    parser.add_argument("--state-dir", type=Path, default=None, help="Keep the state here across restarts.")
    parser.add_argument("--timeline", type=Path, default=None, help="Append each request's start, end and method here.")
    args = parser.parse_args(argv)
    try:
        serve(args.host, args.port, args.state_dir, args.timeline)
    except UnreadableStateError as exc:
        print(f"local S3: cannot restore the state in {args.state_dir}: {exc}", file=sys.stderr, flush=True)
        sys.exit(UNREADABLE_STATE_EXIT)


# -- the one starter ------------------------------------------------------------------------------------------------


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


@dataclass
class LocalS3:
    """A running local S3 server (its own process group); `stop()` ends it."""

    proc: subprocess.Popen
    endpoint: str
    log_path: Path | None = None
    state_dir: Path | None = None
    _log: object = field(default=None, repr=False)

    def stop(self, timeout: float = 10) -> None:
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout)
            except ProcessLookupError:
                pass
        if self._log is not None:
            self._log.close()

    def kill(self) -> None:
        """kill -9, as a crash would."""
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)


def start_local_s3(
    log_dir: Path | None = None,
    *,
    host: str = "127.0.0.1",
    port: int | None = None,
    state_dir: Path | None = None,
    env: dict[str, str] | None = None,
    timeout: float = 30,
    timeline: Path | None = None,
) -> LocalS3:
    """Start the local S3 server (in memory, or durable in `state_dir`; its requests' times appended to `timeline`)
    and wait until it answers."""
    port = port or free_port(host)
    log_path = None
    log = subprocess.DEVNULL
    if log_dir is not None:
        Path(log_dir).mkdir(parents=True, exist_ok=True)
        log_path = Path(log_dir) / f"local-s3-{port}.log"
        log = open(log_path, "ab")
    args = [sys.executable, "-m", "devtools.local_s3", "-H", host, "-p", str(port)]
    if state_dir is not None:
        args += ["--state-dir", str(state_dir)]
    if timeline is not None:
        args += ["--timeline", str(timeline)]
    child_env = dict(os.environ if env is None else env)
    child_env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), child_env.get("PYTHONPATH")]))
    proc = subprocess.Popen(
        args, cwd=REPO, env=child_env, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
    )
    server = LocalS3(proc, f"http://{host}:{port}", log_path, state_dir, log if log_path else None)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(f"{server.endpoint}/moto-api/", timeout=2).read()
            return server
        except urllib.error.HTTPError:
            return server
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            if proc.poll() is not None:
                server.stop()
                where = f": see {log_path}" if log_path else ""
                raise LocalS3Error(f"the local S3 server exited with {proc.returncode}{where}", proc.returncode)
            time.sleep(0.1)
    server.stop()
    raise LocalS3Error(f"the local S3 server did not answer within {timeout:.0f} s", None)


class LocalS3Error(RuntimeError):
    def __init__(self, message: str, returncode: int | None):
        super().__init__(message)
        self.returncode = returncode


if __name__ == "__main__":
    main()
