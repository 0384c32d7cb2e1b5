"""The `legacy_sources` dynamic partitions: one per topic folder, upload shard, and `loose` (see migration.discovery).

Dagster does not validate dynamic partition keys, so every key is checked here before it is registered or used.
"""

import re

import dagster as dg

LEGACY_SOURCES_NAME = "legacy_sources"
legacy_sources = dg.DynamicPartitionsDefinition(name=LEGACY_SOURCES_NAME)

_KEY = re.compile(r"^(topic/[A-Za-z0-9][A-Za-z0-9._-]{0,199}|uploads/[a-z]+/[0-9]{1,3}|uploads/other|loose)$")


class LegacySourceKeyError(ValueError):
    pass


def check_source_key(key: str) -> str:
    if not isinstance(key, str) or not _KEY.match(key):
        raise LegacySourceKeyError(f"legacy source partition {key!r}: expected topic/{{folder}}, uploads/{{type}}/{{shard}} or loose")
    return key
