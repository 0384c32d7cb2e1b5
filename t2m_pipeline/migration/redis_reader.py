"""Reading the legacy Redis: SCAN (never KEYS), then pipelined value reads per page of keys.

Durable keys come back as `RawKey`s; cache and counter keys are only counted. Values stay bytes here: decoding (and
quarantining what does not decode) is the caller's job.
"""

from __future__ import annotations

import zlib
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field

from t2m_pipeline.migration.records import BadRecord, uuid_value

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
    scanned: int = 0  # every key the SCAN returned, this shard's or not: the progress through the keyspace
    keys_seen: int = 0  # this shard's keys
    durable: Counter = field(default_factory=Counter)
    cache: Counter = field(default_factory=Counter)
    other: int = 0

    def add(self, shard: ScanCounts) -> None:
        """Another shard's counts of its own keys (`scanned` is the keyspace's: not summed)."""
        self.keys_seen += shard.keys_seen
        self.durable.update(shard.durable)
        self.cache.update(shard.cache)
        self.other += shard.other


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


def _read(client, durable: list[tuple[bytes, str, tuple[str, ...]]]) -> list[RawKey]:
    """Each key read as the type its prefix expects (the string keys in one MGET, the others one command a key, all
    pipelined). Only the keys whose answer was not that (WRONGTYPE; or nothing: gone since the scan, another type's
    nil in the MGET or its empty answer) are asked their TYPE and read again as what they are; a key whose TYPE is
    `none` is gone and left out, as a key never scanned would be."""
    pipe = client.pipeline(transaction=False)
    strings = [key for key, _, expected in durable if expected[0] == "string"]
    if strings:  # one MGET for the page's string keys (a key of another type answers nil: asked its TYPE below)
        pipe.mget(strings)
    for key, _, expected in durable:
        if expected[0] != "string":
            _READERS[expected[0]](pipe, key)
    answers = pipe.execute(raise_on_error=False)
    fetched = answers.pop(0) if strings else []
    if not isinstance(fetched, list):  # the MGET failed as a whole: each of its keys answers that error
        fetched = [fetched] * len(strings)
    by_string, others = iter(fetched), iter(answers)
    values = [next(by_string) if expected[0] == "string" else next(others) for _, _, expected in durable]
    out: list[RawKey | None] = []
    retry = []
    for (key, kind, expected), value in zip(durable, values):
        wrong_type = isinstance(value, Exception) and "WRONGTYPE" in str(value)
        nothing = not isinstance(value, Exception) and (value is None if expected[0] == "string" else not value)
        if wrong_type or nothing:  # Redis holds no empty set, hash or list: an empty answer is a key that is gone
            retry.append((len(out), key, kind, expected))
            out.append(None)
        else:
            out.append(RawKey(key, kind, expected[0], expected, None if isinstance(value, Exception) else value))
    if retry:
        pipe = client.pipeline(transaction=False)
        for _, key, _, _ in retry:
            pipe.type(key)
        types = [t.decode() if isinstance(t, bytes) else str(t) for t in pipe.execute()]
        pipe = client.pipeline(transaction=False)
        readable = []
        for (at, key, kind, expected), redis_type in zip(retry, types):
            if redis_type in _READERS:
                _READERS[redis_type](pipe, key)
                readable.append((at, key, kind, expected, redis_type))
        for (at, key, kind, expected, redis_type), value in zip(readable, pipe.execute(raise_on_error=False)):
            out[at] = RawKey(key, kind, redis_type, expected, None if isinstance(value, Exception) else value)
    return [raw for raw in out if raw is not None]


def shard_of(key: bytes, shards: int) -> int:
    """A stable hash of the key, so shards never share a key; a job's key by its id in canonical form (the rule
    `records.uuid_value` applies to it), so the spellings of one id (`jobs:ABC…`, `jobs:{abc…}`, `jobs:urn:uuid:abc…`)
    that all name one `jobs` row land in one shard and never upsert it from two processes at once."""
    if key.startswith(b"jobs:"):
        suffix = key[5:]
        canonical = len(suffix) == 36 and suffix == suffix.lower() and suffix[8:24:5] == b"----"
        if not canonical:  # (a canonical-looking id that is not hex names no row another spelling could name)
            try:
                suffix = str(uuid_value(suffix.decode("utf-8"), "the key's job id")).encode()
            except (UnicodeDecodeError, BadRecord):
                pass  # quarantined by whichever shard has it
        key = b"jobs:" + suffix
    return zlib.crc32(key) % shards


def in_shard(key: bytes, shard: int, shards: int) -> bool:
    return shards == 1 or shard_of(key, shards) == shard


def scan_durable(client, counts: ScanCounts, page: int = 1000, shard: int = 0, shards: int = 1) -> Iterator[list[RawKey]]:
    """Pages of the shard's durable keys with their values (every key is one shard's: SCAN runs over the whole
    keyspace in each); `client` must not decode responses (values stay bytes)."""
    cursor = 0
    while True:
        cursor, keys = client.scan(cursor=cursor, count=page)
        counts.scanned += len(keys)
        keys = [key for key in keys if in_shard(key, shard, shards)]
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
            page_out = _read(client, durable)
            if page_out:
                yield page_out
        if cursor == 0:
            return
