"""The one way to a client of the legacy Redis, with a timeout for each use (its URL form is `config.REDIS_URL`).

A bulk read (the migration, the Dagster asset) waits for large replies; the cut-over mirror runs inside a status
write and must never hold a step; a probe (`t2m doctor`, the CLI's check before a migration) answers quickly or not
at all. Values stay bytes: decoding is the reader's job.
"""

from __future__ import annotations

from typing import Literal

Use = Literal["bulk", "mirror", "probe"]
TIMEOUTS: dict[str, tuple[float, float]] = {  # use -> (connect, each reply) in seconds
    "bulk": (5.0, 30.0),
    "mirror": (2.0, 2.0),
    "probe": (3.0, 3.0),
}


def legacy_redis_client(url: str, use: Use = "bulk"):
    """A client of the legacy Redis at `url` (checked against `config.REDIS_URL` by the settings or the caller)."""
    import redis  # only commands that talk to Redis pay for the import

    connect, reply = TIMEOUTS[use]
    return redis.Redis.from_url(url, socket_connect_timeout=connect, socket_timeout=reply, decode_responses=False)
