"""A fault-injecting HTTP proxy for S3 (moto) on loopback: the faults real deployments see, on demand.

Each request is classified as an S3 operation (PutObject, UploadPart, GetObject, ...). For the n-th request of an
operation the proxy decides, from `(seed, operation, n)` alone, whether to inject a fault and which one, so a run is
reproducible whatever the thread interleaving of other operations. Fault kinds:

- `slowdown`      503 SlowDown with S3's XML error body; nothing forwarded.
- `internal`      500 InternalError with S3's XML error body; nothing forwarded.
- `reset-before`  the request is read, then the connection is reset (TCP RST); nothing forwarded.
- `reset-after`   the request is forwarded (the write happens), then the connection is reset: the answer is lost.
- `delay`         the request is forwarded, the answer is held `delay_seconds` (past the client's read timeout).
- `late-write`    the request is held `delay_seconds`, then forwarded: it lands after the client gave up (and,
                  usually, after the client's retry); the answer goes nowhere.

Only path-style addressing is understood (what the storage layer uses against an endpoint URL).

Run: `python -m devtools.fault_proxy --target http://127.0.0.1:5000 --rate 0.2 --faults slowdown,reset-after
--seed 7 [--operations PutObject,UploadPart] [--delay 3] [--port 0]`; on exit it prints what it injected as JSON.
"""

from __future__ import annotations

import argparse
import hashlib
import http.client
import io
import json
import signal
import socket
import struct
import sys
import threading
import time
from collections import Counter
from contextlib import contextmanager
from dataclasses import dataclass, field
from enum import Enum
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qsl, urlsplit
from xml.sax.saxutils import escape


class FaultKind(str, Enum):
    SLOWDOWN = "slowdown"
    INTERNAL = "internal"
    RESET_BEFORE = "reset-before"
    RESET_AFTER = "reset-after"
    DELAY = "delay"
    LATE_WRITE = "late-write"


ALL_KINDS: tuple[FaultKind, ...] = tuple(FaultKind)
# Kinds after which the request may still have been carried out by S3 (the client cannot know).
WRITE_MAY_HAVE_HAPPENED = frozenset({FaultKind.RESET_AFTER, FaultKind.DELAY, FaultKind.LATE_WRITE})
NEVER_FAULTED = frozenset({"MotoApi"})
_HOP_BY_HOP = frozenset(
    {"connection", "keep-alive", "proxy-connection", "transfer-encoding", "te", "trailer", "upgrade", "expect"}
)
_ERRORS = {
    FaultKind.SLOWDOWN: (503, "SlowDown", "Please reduce your request rate."),
    FaultKind.INTERNAL: (500, "InternalError", "We encountered an internal error. Please try again."),
}


def parse_kinds(text: str) -> tuple[FaultKind, ...]:
    """`slowdown,reset-after` or `all` -> kinds; an unknown name is a ValueError naming the valid ones."""
    if text.strip() in ("", "all", "mixed"):
        return ALL_KINDS
    kinds = []
    for name in text.split(","):
        try:
            kinds.append(FaultKind(name.strip()))
        except ValueError:
            raise ValueError(f"unknown fault kind {name.strip()!r}: expected {'|'.join(k.value for k in FaultKind)}") from None
    return tuple(kinds)


@dataclass(frozen=True)
class FaultPlan:
    """What to inject: `rate` of the requests of `operations` (None: every operation) get one of `kinds`."""

    rate: float = 0.0
    kinds: tuple[FaultKind, ...] = ALL_KINDS
    operations: frozenset[str] | None = None
    seed: int = 0
    delay_seconds: float = 2.0

    def __post_init__(self):
        if not 0.0 <= self.rate <= 1.0:
            raise ValueError(f"fault rate {self.rate}: expected 0 to 1")
        if not self.kinds:
            raise ValueError("a fault plan needs at least one fault kind")
        object.__setattr__(self, "kinds", tuple(FaultKind(k) for k in self.kinds))
        if self.operations is not None:
            object.__setattr__(self, "operations", frozenset(self.operations))

    def decide(self, operation: str, index: int) -> FaultKind | None:
        """The fault (or None) for the `index`-th request of `operation`: a pure function of the plan."""
        if operation in NEVER_FAULTED or (self.operations is not None and operation not in self.operations):
            return None
        digest = hashlib.sha256(f"{self.seed}/{operation}/{index}".encode()).digest()
        draw = int.from_bytes(digest[:8], "big") / 2**64
        if draw >= self.rate:
            return None
        return self.kinds[int.from_bytes(digest[8:12], "big") % len(self.kinds)]


def classify(method: str, target: str, headers: dict[str, str] | None = None) -> str:
    """The S3 operation of a path-style request (`/bucket/key?query`), named as in the S3 API."""
    headers = {k.lower(): v for k, v in (headers or {}).items()}
    parts = urlsplit(target)
    path = parts.path
    query = dict(parse_qsl(parts.query, keep_blank_values=True))
    if path.startswith("/moto-api"):
        return "MotoApi"
    bucket, _, key = path.lstrip("/").partition("/")
    method = method.upper()
    if not bucket:
        return "ListBuckets" if method == "GET" else f"{method.title()}Service"
    if not key:
        if "versions" in query and method == "GET":
            return "ListObjectVersions"
        if "uploads" in query and method == "GET":
            return "ListMultipartUploads"
        if "delete" in query and method == "POST":
            return "DeleteObjects"
        sub = next((q for q in query if q not in ("prefix", "delimiter", "max-keys", "marker", "encoding-type",
                                                 "continuation-token", "start-after", "fetch-owner")), None)
        if sub == "list-type":
            return "ListObjectsV2"
        if sub:
            verb = {"GET": "Get", "PUT": "Put", "DELETE": "Delete"}.get(method, method.title())
            return f"{verb}Bucket{sub.replace('-', ' ').title().replace(' ', '')}"
        return {"GET": "ListObjects", "HEAD": "HeadBucket", "PUT": "CreateBucket", "DELETE": "DeleteBucket"}.get(
            method, f"{method.title()}Bucket"
        )
    copy = "x-amz-copy-source" in headers
    if method == "PUT":
        if "partNumber" in query and "uploadId" in query:
            return "UploadPartCopy" if copy else "UploadPart"
        for sub, name in (("tagging", "PutObjectTagging"), ("acl", "PutObjectAcl"), ("retention", "PutObjectRetention")):
            if sub in query:
                return name
        return "CopyObject" if copy else "PutObject"
    if method == "POST":
        if "uploads" in query:
            return "CreateMultipartUpload"
        if "uploadId" in query:
            return "CompleteMultipartUpload"
        return "PostObject"
    if method == "DELETE":
        if "uploadId" in query:
            return "AbortMultipartUpload"
        return "DeleteObjectTagging" if "tagging" in query else "DeleteObject"
    if method == "GET":
        if "uploadId" in query:
            return "ListParts"
        for sub, name in (("tagging", "GetObjectTagging"), ("acl", "GetObjectAcl"), ("attributes", "GetObjectAttributes")):
            if sub in query:
                return name
        return "GetObject"
    if method == "HEAD":
        return "HeadObject"
    return f"{method.title()}Object"


@dataclass(frozen=True)
class FaultEvent:
    operation: str
    index: int
    kind: FaultKind | None
    method: str
    path: str


@dataclass
class FaultStats:
    """What the proxy saw and did, by operation."""

    requests: Counter = field(default_factory=Counter)
    injected: Counter = field(default_factory=Counter)  # (operation, kind value) -> count
    forwarded: Counter = field(default_factory=Counter)
    upstream_errors: int = 0

    def injected_total(self, operation: str | None = None, kind: FaultKind | str | None = None) -> int:
        kind_value = FaultKind(kind).value if kind is not None else None
        return sum(
            n for (op, k), n in self.injected.items()
            if (operation is None or op == operation) and (kind_value is None or k == kind_value)
        )

    def as_dict(self) -> dict:
        return {
            "requests": dict(self.requests),
            "forwarded": dict(self.forwarded),
            "injected": {f"{op}:{kind}": n for (op, kind), n in sorted(self.injected.items())},
            "injected_total": self.injected_total(),
            "upstream_errors": self.upstream_errors,
        }


def _error_body(code: str, message: str, resource: str, request_id: str) -> bytes:
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        f"<Error><Code>{code}</Code><Message>{escape(message)}</Message><Resource>{escape(resource)}</Resource>"
        f"<RequestId>{request_id}</RequestId><HostId>t2m-fault-proxy</HostId></Error>"
    ).encode()


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, and `Expect: 100-continue` is answered before the body is read
    timeout = 120
    server: "_ProxyServer"

    def log_message(self, format, *args):  # noqa: A002 - the proxy is quiet; FaultStats says what happened
        return

    def do_GET(self):
        self._handle()

    do_PUT = do_POST = do_DELETE = do_HEAD = do_OPTIONS = do_PATCH = do_GET

    def _read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass  # trailers
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _handle(self):
        proxy = self.server.proxy
        body = self._read_body()
        operation = classify(self.command, self.path, dict(self.headers.items()))
        kind, index = proxy._decide(operation, self.command, self.path)
        with proxy._tracking():
            if kind in _ERRORS:
                status, code, message = _ERRORS[kind]
                self._answer_error(status, code, message, f"fault-{operation}-{index}")
            elif kind is FaultKind.RESET_BEFORE:
                self._reset()
            elif kind is FaultKind.LATE_WRITE:
                time.sleep(proxy.plan.delay_seconds)
                self._forward(operation, body)  # the client has gone; writing its answer fails quietly
                self._reset()
            else:
                response = self._forward(operation, body)
                if kind is FaultKind.RESET_AFTER:
                    self._reset()
                    return
                if kind is FaultKind.DELAY:
                    time.sleep(proxy.plan.delay_seconds)
                if response is None:
                    self._answer_error(502, "BadGateway", "the proxy could not reach its target", f"upstream-{index}")
                else:
                    self._answer(*response)

    def _forward(self, operation: str, body: bytes) -> tuple[int, str, list[tuple[str, str]], bytes] | None:
        proxy = self.server.proxy
        headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP_BY_HOP}
        headers["Content-Length"] = str(len(body))
        conn = http.client.HTTPConnection(proxy.target_host, proxy.target_port, timeout=120)
        try:
            conn.request(self.command, self.path, body=body, headers=headers)
            upstream = conn.getresponse()
            data = upstream.read()
            result = (upstream.status, upstream.reason, upstream.getheaders(), data)
        except (OSError, http.client.HTTPException):
            with proxy._lock:
                proxy.stats.upstream_errors += 1
            return None
        finally:
            conn.close()
        with proxy._lock:
            proxy.stats.forwarded[operation] += 1
        return result

    def _answer(self, status: int, reason: str, headers: list[tuple[str, str]], data: bytes) -> None:
        try:
            self.send_response_only(status, reason)
            has_length = False
            for name, value in headers:
                lower = name.lower()
                if lower in _HOP_BY_HOP:
                    continue
                if lower == "content-length":
                    has_length = True
                    if self.command != "HEAD":
                        value = str(len(data))
                self.send_header(name, value)
            if not has_length:
                self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            if self.command != "HEAD" and status not in (204, 304):
                self.wfile.write(data)
            self.wfile.flush()
        except OSError:
            self.close_connection = True  # the client gave up (a delayed answer after its timeout)

    def _answer_error(self, status: int, code: str, message: str, request_id: str) -> None:
        data = b"" if self.command == "HEAD" else _error_body(code, message, self.path.split("?")[0], request_id)
        self._answer(status, code, [("Content-Type", "application/xml"), ("x-amz-request-id", request_id)], data)

    def _reset(self) -> None:
        """Abort the connection with a TCP RST: the client sees `connection reset by peer`, never an answer."""
        self.close_connection = True
        try:
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        except OSError:
            pass
        for stream in (self.rfile, self.wfile):
            try:
                stream.close()
            except OSError:
                pass
        try:
            self.connection.close()
        except OSError:
            pass
        # BaseHTTPRequestHandler flushes wfile after the handler returns: give it something harmless to flush.
        self.rfile, self.wfile = io.BytesIO(), io.BytesIO()


class _ProxyServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128

    def __init__(self, address, proxy: "FaultProxy"):
        self.proxy = proxy
        super().__init__(address, _Handler)

    def handle_error(self, request, client_address):  # noqa: D401 - a client that vanished is not news
        exc = sys.exc_info()[1]
        if isinstance(exc, (OSError, ValueError)):
            return
        super().handle_error(request, client_address)


class FaultProxy:
    """The proxy, in a background thread. Use as a context manager; `url` is the endpoint to give S3 clients.

    `set_plan` changes what is injected (and restarts the per-operation counters, so a plan always starts from its
    seed); `stats` counts requests and faults; `wait_idle` waits until held requests (delays, late writes) are done.
    """

    def __init__(self, target: str, plan: FaultPlan | None = None, *, host: str = "127.0.0.1", port: int = 0):
        parsed = urlsplit(target)
        if parsed.scheme != "http" or not parsed.hostname:
            raise ValueError(f"fault proxy target {target!r}: expected http://host:port")
        self.target = target.rstrip("/")
        self.target_host = parsed.hostname
        self.target_port = parsed.port or 80
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)
        self._active = 0
        self._counters: Counter = Counter()
        self.plan = plan or FaultPlan()
        self.stats = FaultStats()
        self.events: list[FaultEvent] = []
        self._server = _ProxyServer((host, port), self)
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> "FaultProxy":
        self._thread = threading.Thread(target=self._server.serve_forever, name="fault-proxy", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        if self._thread:
            self._thread.join(10)

    def __enter__(self) -> "FaultProxy":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def set_plan(self, plan: FaultPlan, *, reset_stats: bool = True) -> None:
        with self._lock:
            self.plan = plan
            self._counters = Counter()
            if reset_stats:
                self.stats = FaultStats()
                self.events = []

    def _decide(self, operation: str, method: str, path: str) -> tuple[FaultKind | None, int]:
        with self._lock:
            index = self._counters[operation]
            self._counters[operation] += 1
            kind = self.plan.decide(operation, index)
            self.stats.requests[operation] += 1
            if kind is not None:
                self.stats.injected[(operation, kind.value)] += 1
            self.events.append(FaultEvent(operation, index, kind, method, path.split("?")[0]))
        return kind, index

    @contextmanager
    def _tracking(self):
        """Counts a request as in the proxy while it is handled (held answers and late writes included)."""
        with self._lock:
            self._active += 1
        try:
            yield
        finally:
            with self._lock:
                self._active -= 1
                self._idle.notify_all()

    def wait_idle(self, timeout: float = 30.0) -> bool:
        """Wait until no request is in the proxy (held answers sent, late writes landed). False on timeout."""
        deadline = time.monotonic() + timeout
        with self._lock:
            while self._active:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._idle.wait(remaining)
        return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m devtools.fault_proxy", description=__doc__.splitlines()[0])
    parser.add_argument("--target", required=True, help="the S3 endpoint to forward to, e.g. http://127.0.0.1:5000")
    parser.add_argument("--rate", type=float, default=0.2, help="share of requests to fault, 0 to 1")
    parser.add_argument("--faults", default="all", help=f"comma-separated kinds or 'all': {','.join(k.value for k in FaultKind)}")
    parser.add_argument("--operations", default="", help="comma-separated S3 operations to fault (default: all)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--delay", type=float, default=2.0, help="seconds a delayed answer or late write is held")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args(argv)
    try:
        plan = FaultPlan(
            rate=args.rate,
            kinds=parse_kinds(args.faults),
            operations=frozenset(o.strip() for o in args.operations.split(",") if o.strip()) or None,
            seed=args.seed,
            delay_seconds=args.delay,
        )
        proxy = FaultProxy(args.target, plan, host=args.host, port=args.port)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    with proxy:
        print(f"fault proxy on {proxy.url} -> {proxy.target} (rate {plan.rate}, {','.join(k.value for k in plan.kinds)}, "
              f"seed {plan.seed})", flush=True)
        while not stop.wait(0.2):
            pass
        proxy.wait_idle(plan.delay_seconds + 5)
    print(json.dumps(proxy.stats.as_dict(), sort_keys=True), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
