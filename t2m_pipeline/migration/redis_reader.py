"""Reading the legacy Redis: SCAN (never KEYS), then pipelined TYPE and value reads per page of keys.

Durable keys come back as `RawKey`s; cache and counter keys are only counted. Values stay bytes here: decoding (and
quarantining what does not decode) is the caller's job.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field

# key prefix -> (kind, the Redis types the legacy code wrote)
DURABLE_PREFIXES: tuple[tuple[bytes, str, tuple[str, ...]], ...] = (
    (b"jobs:", "job", ("string", "hash")),
    (b"user_jobs:", "user_jobs", ("set",)),
    (b"videos:job_", "video", ("string",)),
    (b"files:", "file", ("string",)),
    (b"user_files:", "user_files", ("set",)),
    (b"batch:", "batch", ("string",)),
    (b"user_batches:", "user_batches", ("set",)),
)
QUEUE_KEY = b"job_queue"
CACHE_PREFIXES = ("job_status", "queue", "cache", "file_cache", "rate_limit", "pipeline")


@dataclass
class RawKey:
    key: bytes
    kind: str
    redis_type: str
    expected: tuple[str, ...]
    value: object  # bytes | dict[bytes, bytes] | set[bytes] | list[bytes] | None

    @property
    def wrong_type(self) -> bool:
        return self.redis_type not in self.expected

    @property
    def suffix(self) -> bytes:
        for prefix, kind, _ in DURABLE_PREFIXES:
            if kind == self.kind:
                return self.key[len(prefix) :]
        return self.key


@dataclass
class ScanCounts:
    keys_seen: int = 0
    durable: Counter = field(default_factory=Counter)
    cache: Counter = field(default_factory=Counter)
    other: int = 0


def classify(key: bytes) -> tuple[str, tuple[str, ...]] | None:
    if key == QUEUE_KEY:
        return "job_queue", ("list",)
    for prefix, kind, types in DURABLE_PREFIXES:
        if key.startswith(prefix) and len(key) > len(prefix):
            return kind, types
    return None


def cache_prefix(key: bytes) -> str | None:
    head = key.split(b":", 1)[0].decode("utf-8", "replace")
    return head if head in CACHE_PREFIXES and b":" in key else None


_READERS = {
    "string": lambda p, k: p.get(k),
    "hash": lambda p, k: p.hgetall(k),
    "set": lambda p, k: p.smembers(k),
    "list": lambda p, k: p.lrange(k, 0, -1),
    "zset": lambda p, k: p.zrange(k, 0, -1),
    "stream": lambda p, k: p.xrange(k),
}


def scan_durable(client, counts: ScanCounts, page: int = 1000) -> Iterator[list[RawKey]]:
    """Pages of durable keys with their values; `client` must not decode responses (values stay bytes)."""
    cursor = 0
    while True:
        cursor, keys = client.scan(cursor=cursor, count=page)
        counts.keys_seen += len(keys)
        durable: list[tuple[bytes, str, tuple[str, ...]]] = []
        for key in keys:
            kind = classify(key)
            if kind:
                durable.append((key, *kind))
                counts.durable[kind[0]] += 1
            elif (prefix := cache_prefix(key)) is not None:
                counts.cache[prefix] += 1
            else:
                counts.other += 1
        if durable:
            pipe = client.pipeline(transaction=False)
            for key, _, _ in durable:
                pipe.type(key)
            types = [t.decode() if isinstance(t, bytes) else str(t) for t in pipe.execute()]
            pipe = client.pipeline(transaction=False)
            readable = []
            for (key, kind, expected), redis_type in zip(durable, types):
                if redis_type in _READERS:
                    _READERS[redis_type](pipe, key)
                    readable.append((key, kind, expected, redis_type))
            values = pipe.execute(raise_on_error=False)
            page_out = [
                RawKey(key, kind, redis_type, expected, None if isinstance(value, Exception) else value)
                for (key, kind, expected, redis_type), value in zip(readable, values)
            ]
            if page_out:
                yield page_out
        if cursor == 0:
            return
