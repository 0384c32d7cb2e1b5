"""The legacy tree -> partitions -> entries.

`--legacy-root` holds `output/` and `storage/`. Partitions (the `legacy_sources` dynamic partitions):
- `topic/{folder}`: one per folder under `output/` (odd folder names get a sanitized, hash-suffixed key);
- `uploads/{file_type}/{shard}`: `storage/uploads/{file_type}/...` split into `UPLOAD_SHARDS` by a hash of the path;
- `loose`: everything else (files at the output root, `.render_cache`, `storage/` outside `uploads/`, the root).

The walk works on bytes (names need not be UTF-8) and never follows a symlink: a symlink is an entry of its own.
"""

from __future__ import annotations

import hashlib
import os
import re
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from functools import cached_property
from pathlib import Path

from t2m_pipeline.migration.legacy_paths import UPLOAD_FILE_TYPES, ledger_path
from t2m_pipeline.storage.layout import sanitize_name

UPLOAD_SHARDS = 8
LOOSE = "loose"
RENDER_CACHE = b".render_cache"
_SLUG_FORM = re.compile(rb"^[a-z0-9_]{1,120}$")


@dataclass(frozen=True)
class Entry:
    """One thing found in the legacy tree; `rel` is relative to the legacy root."""

    rel: bytes
    kind: str  # file | symlink | special | unreadable
    size: int | None
    mtime_ns: int | None = None  # the file's modification time: evidence of which job's run wrote it
    inode: int | None = None  # with size and mtime, how a rerun knows the file is unchanged without reading it

    @cached_property
    def legacy_path(self) -> str:
        return ledger_path(self.rel)  # asked for many times per file per run: computed once

    @property
    def mtime(self) -> datetime | None:
        return datetime.fromtimestamp(self.mtime_ns / 1e9, timezone.utc) if self.mtime_ns is not None else None

    @property
    def parts(self) -> list[bytes]:
        return self.rel.split(b"/")


def root_bytes(legacy_root: str | os.PathLike | bytes) -> bytes:
    return os.fsencode(Path(os.fsdecode(legacy_root)).resolve())


def topic_partition(folder: bytes) -> str:
    if _SLUG_FORM.match(folder):
        return "topic/" + folder.decode()
    return "topic/" + sanitize_name(folder)


def upload_partition(file_type: bytes, rel_in_type: bytes) -> str:
    kind = file_type.decode("utf-8", "replace")
    if kind not in UPLOAD_FILE_TYPES:
        return "uploads/other"
    shard = int(hashlib.md5(rel_in_type).hexdigest()[:8], 16) % UPLOAD_SHARDS
    return f"uploads/{kind}/{shard}"


def _walk(root: bytes, rel: bytes) -> Iterator[Entry]:
    """Every entry under root/rel, sorted, without following symlinks."""
    try:
        with os.scandir(os.path.join(root, rel) if rel else root) as it:
            children = sorted(it, key=lambda e: e.name)
    except OSError:
        yield Entry(rel, "unreadable", None)
        return
    for child in children:
        child_rel = rel + b"/" + child.name if rel else child.name
        try:
            st = child.stat(follow_symlinks=False)
        except OSError:
            yield Entry(child_rel, "unreadable", None)
            continue
        if stat.S_ISLNK(st.st_mode):
            yield Entry(child_rel, "symlink", None)
        elif stat.S_ISDIR(st.st_mode):
            yield from _walk(root, child_rel)
        elif stat.S_ISREG(st.st_mode):
            yield Entry(child_rel, "file", st.st_size, st.st_mtime_ns, st.st_ino)
        else:
            yield Entry(child_rel, "special", None)


def _children(path: bytes) -> list[os.DirEntry]:
    try:
        with os.scandir(path) as it:
            return sorted(it, key=lambda e: e.name)
    except (FileNotFoundError, NotADirectoryError):
        return []


def _is_real_dir(entry: os.DirEntry) -> bool:
    return entry.is_dir(follow_symlinks=False)


def partition_of(rel: bytes) -> str:
    """The partition an entry (by its path relative to the legacy root) belongs to."""
    parts = rel.split(b"/")
    if parts[0] == b"output" and len(parts) >= 3 and parts[1] != RENDER_CACHE:
        return topic_partition(parts[1])
    if parts[:2] == [b"storage", b"uploads"] and len(parts) >= 4:
        return upload_partition(parts[2], b"/".join(parts[3:]))
    return LOOSE


def entry_partition(entry: Entry) -> str:
    """The partition of an entry the walk found: `partition_of` its path, except that a topic folder it could not
    read (`output/{topic}` itself) belongs to that topic, where that topic's own walk reports it."""
    parts = entry.rel.split(b"/")
    if entry.kind == "unreadable" and len(parts) == 2 and parts[0] == b"output" and parts[1] != RENDER_CACHE:
        return topic_partition(parts[1])
    return partition_of(entry.rel)


def discover_sources(legacy_root) -> list[str]:
    """The partition keys present under the legacy root (cheap: folder names only, no file walk)."""
    root = root_bytes(legacy_root)
    if not os.path.isdir(root):
        raise FileNotFoundError(f"legacy root {os.fsdecode(root)!r} is not a directory")
    keys: list[str] = []
    for child in _children(os.path.join(root, b"output")):
        if _is_real_dir(child) and child.name != RENDER_CACHE:
            keys.append(topic_partition(child.name))
    for child in _children(os.path.join(root, b"storage", b"uploads")):
        if _is_real_dir(child):
            kind = child.name.decode("utf-8", "replace")
            keys.extend([f"uploads/{kind}/{s}" for s in range(UPLOAD_SHARDS)] if kind in UPLOAD_FILE_TYPES else ["uploads/other"])
    keys.append(LOOSE)
    return sorted(set(keys))


def partition_entries(legacy_root, partition_key: str) -> list[Entry]:
    """Every entry of one partition."""
    root = root_bytes(legacy_root)
    if partition_key.startswith("topic/"):
        out = []
        for child in _children(os.path.join(root, b"output")):
            if _is_real_dir(child) and child.name != RENDER_CACHE and topic_partition(child.name) == partition_key:
                out.extend(_walk(root, b"output/" + child.name))
        return out
    if partition_key.startswith("uploads/"):
        out = []
        for child in _children(os.path.join(root, b"storage", b"uploads")):
            if _is_real_dir(child):
                type_rel = b"storage/uploads/" + child.name
                out.extend(e for e in _walk(root, type_rel) if entry_partition(e) == partition_key)
        return out
    if partition_key == LOOSE:
        return [e for e in _walk(root, b"") if entry_partition(e) == LOOSE]
    raise ValueError(f"unknown legacy partition {partition_key!r}: expected topic/..., uploads/... or loose")


def all_entries(legacy_root, partitions: list[str] | None = None) -> dict[str, list[Entry]]:
    """Every entry by partition. The whole tree (no `partitions`) is walked once and sorted into its partitions;
    walking it partition by partition read each upload shard's folder once per shard and the whole tree again for
    the loose files (about 35 walks of the uploads: most of an unchanged rerun's time)."""
    if partitions is not None:
        return {key: partition_entries(legacy_root, key) for key in partitions}
    out: dict[str, list[Entry]] = {key: [] for key in discover_sources(legacy_root)}
    for entry in _walk(root_bytes(legacy_root), b""):
        out.setdefault(entry_partition(entry), []).append(entry)
    return out
