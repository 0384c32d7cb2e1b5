"""Dagster Pipes messages from a render are hostile input: only what a render may say gets through, bounded.

A render may open and close its session once each, log a bounded number of short lines, and report one result
(the entrypoint's `t2m_render` custom message, validated field by field). Everything else (asset materializations,
asset checks, external log streams, a closing exception's text, unknown methods, over-long or extra messages,
anything after the close) is dropped and counted; nothing of it reaches Dagster's event log.

The scene code runs as the entrypoint's uid and can take the entrypoint's stdout descriptor, so even the result
may be forged: it only words a failure. Whether a render succeeded is decided by the intake (a regular file of
the render directory that probes as a video), never by a message. The two readers are the two backends' channels:
the local sandbox's stdout, and on ECS the render task's CloudWatch log stream.
"""

from __future__ import annotations

import json
import math
import re
import threading
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from dagster._core.pipes.client import PipesMessageReader, PipesParams
from dagster_pipes import PIPES_PROTOCOL_VERSION, PIPES_PROTOCOL_VERSION_FIELD, PipesDefaultMessageWriter

MAX_MESSAGES = 400
MAX_LOG_MESSAGES = 100
MAX_LOG_CHARS = 1000
MAX_MESSAGE_BYTES = 64 * 1024
MAX_CHANNEL_BYTES = 8 * 1024 * 1024
LOG_LEVELS = ("debug", "info", "warning", "error")
RESULT_KIND = "t2m_render"
_UNPRINTABLE = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u2028\u2029]")


def clean_line(text: str, limit: int) -> str:
    """Printable, one line, at most `limit` characters."""
    text = _UNPRINTABLE.sub(" ", text.replace("\n", " ").replace("\r", " "))
    return text if len(text) <= limit else text[: limit - 1] + "…"


def validate_result(payload: Any) -> dict | None:
    """The entrypoint's result if it has exactly the expected shape (types and ranges), else None."""
    if not isinstance(payload, dict) or payload.get("kind") != RESULT_KIND:
        return None
    returncode, timed_out, seconds, video = (payload.get(k) for k in ("returncode", "timed_out", "seconds", "video"))
    uploaded = payload.get("uploaded", {})
    if returncode is not None and (isinstance(returncode, bool) or not isinstance(returncode, int) or not -255 <= returncode <= 255):
        return None
    if not isinstance(timed_out, bool) or not isinstance(video, bool):
        return None
    if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or not math.isfinite(seconds) or not 0 <= seconds < 1e6:
        return None
    if not isinstance(uploaded, dict) or not set(uploaded) <= {"video", "log"}:
        return None
    if any(isinstance(v, bool) or not isinstance(v, int) or not 0 <= v < 1 << 40 for v in uploaded.values()):
        return None
    return {"returncode": returncode, "timed_out": timed_out, "seconds": float(seconds), "video": video, "uploaded": dict(uploaded)}


@dataclass
class MessageStats:
    accepted: Counter = field(default_factory=Counter)
    rejected: Counter = field(default_factory=Counter)
    result: dict | None = None
    closed_with_exception: bool = False
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def total(self) -> int:
        return sum(self.accepted.values()) + sum(self.rejected.values())

    def describe_rejected(self) -> str:
        return ", ".join(f"{n} {why}" for why, n in sorted(self.rejected.items())) or "none"


class GuardedHandler:
    """Stands between a message reader and Dagster's PipesMessageHandler (which trusts what it is given)."""

    def __init__(self, handler, stats: MessageStats):
        self._handler = handler
        self.stats = stats

    @property
    def _context(self):  # the threaded readers log warnings through it
        return self._handler._context  # noqa: SLF001

    @property
    def received_opened_message(self) -> bool:
        return self._handler.received_opened_message

    @property
    def received_closed_message(self) -> bool:
        return self._handler.received_closed_message

    def report_pipes_framework_exception(self, origin: str, exc_info) -> None:
        self._handler.report_pipes_framework_exception(origin, exc_info)

    def _reject(self, why: str) -> None:
        self.stats.rejected[why] += 1

    def handle_message(self, message: Any) -> None:
        with self.stats.lock:
            self._handle(message)

    def _handle(self, message: Any) -> None:
        if not isinstance(message, dict) or message.get(PIPES_PROTOCOL_VERSION_FIELD) != PIPES_PROTOCOL_VERSION:
            return self._reject("not a pipes message")
        method, params = message.get("method"), message.get("params")
        if params is not None and not isinstance(params, dict):
            return self._reject("malformed")
        params = params or {}
        base = {PIPES_PROTOCOL_VERSION_FIELD: PIPES_PROTOCOL_VERSION, "method": method}
        if self.stats.accepted["closed"]:
            return self._reject("after the close")
        if method == "opened":  # the entrypoint opens before the scene code runs: a later open is forged
            if self.stats.accepted["opened"]:
                return self._reject("repeated open")
            self.stats.accepted[method] += 1
            return self._handler.handle_message({**base, "params": {"extras": {}}})
        if method == "closed":
            self.stats.closed_with_exception = "exception" in params
            self.stats.accepted[method] += 1
            return self._handler.handle_message({**base, "params": {}})  # the exception's text stays out
        if self.stats.total >= MAX_MESSAGES:
            return self._reject("beyond the message limit")
        if method == "log":
            text, level = params.get("message"), params.get("level", "info")
            if not isinstance(text, str) or level not in LOG_LEVELS:
                return self._reject("malformed log")
            if self.stats.accepted["log"] >= MAX_LOG_MESSAGES:
                return self._reject("beyond the log limit")
            self.stats.accepted[method] += 1
            return self._handler.handle_message({**base, "params": {"message": "[render] " + clean_line(text, MAX_LOG_CHARS), "level": level}})
        if method == "report_custom_message":
            result = validate_result(params.get("payload"))
            if result is None or self.stats.result is not None:
                return self._reject("unexpected result" if result is None else "repeated result")
            self.stats.accepted[method] += 1
            self.stats.result = result
            return None
        return self._reject(f"method {clean_line(str(method), 40)!s} not allowed")


def parse_line(line: bytes | str) -> Any | None:
    """A Pipes message from one channel line, or None for anything else (output that is not a message)."""
    if isinstance(line, bytes):
        if len(line) > MAX_MESSAGE_BYTES:
            return None
        line = line.decode("utf-8", "replace")
    line = line.strip()
    if not line.startswith("{") or len(line) > MAX_MESSAGE_BYTES:
        return None
    try:
        message = json.loads(line)
    except (ValueError, RecursionError):
        return None
    return message if isinstance(message, dict) and PIPES_PROTOCOL_VERSION_FIELD in message else None


class SandboxStdioMessageReader(PipesMessageReader):
    """The local backend's channel: the entrypoint writes messages to its stdout; the sandbox runner feeds each
    (bounded) line here."""

    def __init__(self, guarded: bool = True):
        self.stats = MessageStats()
        self.guarded = guarded  # False only in tests: the control that lets every message through
        self._guard = None
        self.stray_lines = 0

    @contextmanager
    def read_messages(self, handler) -> Iterator[PipesParams]:
        self._guard = GuardedHandler(handler, self.stats) if self.guarded else handler
        try:
            yield {PipesDefaultMessageWriter.STDIO_KEY: PipesDefaultMessageWriter.STDOUT}
        finally:
            self._guard = None

    @property
    def expected_writer_count(self) -> int:  # one entrypoint writes (and the base property warns it is preview)
        return 1

    def feed(self, line: bytes) -> None:
        message = parse_line(line)
        if message is None:
            self.stray_lines += 1
            return
        if self._guard is not None:
            self._guard.handle_message(message)

    def no_messages_debug_text(self) -> str:
        return "Attempted to read messages from the render sandbox's stdout."
