"""Listing object versions: the one place that pages ListObjectVersions.

S3 answers in key order, but splits each page into two lists (versions, delete markers); merged back they are one
key-ordered sequence again. One page is in memory at a time, however large the bucket.
"""

from __future__ import annotations

import heapq
from collections import defaultdict
from collections.abc import Iterable, Iterator
from typing import Any


def iter_versions(
    client: Any, bucket: str, prefix: str = "", *, page_size: int = 1000, delete_markers: bool = False
) -> Iterator[dict]:
    """Every version under `prefix` in key order, as S3 describes it (`Key`, `VersionId`, `Size`, `IsLatest`,
    `LastModified`, ...); with `delete_markers`, the markers too, flagged `IsDeleteMarker`. botocore errors pass
    through: the caller says what the listing was for."""
    args = {"Bucket": bucket, "PaginationConfig": {"PageSize": page_size}}
    if prefix:
        args["Prefix"] = prefix
    for page in client.get_paginator("list_object_versions").paginate(**args):
        versions = ({**v, "IsDeleteMarker": False} for v in page.get("Versions", ()))
        if not delete_markers:
            yield from versions
            continue
        markers = ({**m, "IsDeleteMarker": True} for m in page.get("DeleteMarkers", ()))
        yield from heapq.merge(versions, markers, key=lambda v: v["Key"])


def key_versions(client: Any, bucket: str, key: str) -> list[dict]:
    """The versions (not delete markers) of exactly `key` (`scene1` is a prefix of `scene10`: matched exactly)."""
    return [v for v in iter_versions(client, bucket, key) if v["Key"] == key]


def version_ids_by_key(client: Any, objects: Iterable[tuple[str, str]]) -> dict[tuple[str, str], list[str]]:
    """Version ids of each (bucket, key), listed once per folder rather than once per key (fewer, larger listings)."""
    objects = set(objects)
    folders: dict[tuple[str, str], set[str]] = defaultdict(set)
    for bucket, key in objects:
        folders[(bucket, key.rsplit("/", 1)[0] + "/")].add(key)
    out: dict[tuple[str, str], list[str]] = {obj: [] for obj in objects}
    for (bucket, folder), keys in folders.items():
        for version in iter_versions(client, bucket, folder):
            if version["Key"] in keys:
                out[(bucket, version["Key"])].append(version["VersionId"])
    return out
