"""The legacy tree -> partitions -> entries.

`--legacy-root` holds `output/` and `storage/`. Partitions (the `legacy_sources` dynamic partitions):
- `topic/{folder}`: one per folder under `output/` (odd folder names get a sanitized, hash-suffixed key);
- `uploads/{file_type}/{shard}`: `storage/uploads/{file_type}/...` split by a hash of the path into as many shards as
  its work needs (`shards_for`: about `UPLOAD_FILES_PER_SHARD` files each), decided when the type folder is first
  discovered and kept (`upload_shards`), so a file never changes partition; other type folders: `uploads/other`;
- `loose`: everything else (files at the output root, `.render_cache`, `storage/` outside `uploads/`, the root).

The walk works on bytes (names need not be UTF-8) and never follows a symlink: a symlink is an entry of its own.
"""

from __future__ import annotations

import hashlib
import os
import re
import stat
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from functools import cached_property
from pathlib import Path

from t2m_pipeline.migration.legacy_paths import UPLOAD_FILE_TYPES, ledger_path
from t2m_pipeline.storage.layout import sanitize_name

UPLOAD_FILES_PER_SHARD = 1000  # an upload partition's work: a few seconds of a run, as a large topic folder's
MAX_UPLOAD_SHARDS = 999  # partition keys allow three digits
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


def shards_for(files: int) -> int:
    """How many partitions an upload type folder of `files` files gets."""
    return max(1, min(MAX_UPLOAD_SHARDS, -(-files // UPLOAD_FILES_PER_SHARD)))


def upload_partition(file_type: bytes, rel_in_type: bytes, shards: Mapping[str, int]) -> str:
    """`shards`: the type folders' shard counts (`upload_shards`); a type folder that appeared since is one shard."""
    kind = file_type.decode("utf-8", "replace")
    if kind not in UPLOAD_FILE_TYPES:
        return "uploads/other"
    shard = int(hashlib.md5(rel_in_type).hexdigest()[:8], 16) % shards.get(kind, 1)
    return f"uploads/{kind}/{shard}"


def upload_keys(kind: str, shards: Mapping[str, int]) -> list[str]:
    return [f"uploads/{kind}/{s}" for s in range(shards.get(kind, 1))] if kind in UPLOAD_FILE_TYPES else ["uploads/other"]


def count_uploads(legacy_root, kinds: Iterable[str]) -> dict[str, int]:
    """Files (every entry) under each of these upload type folders that can be read: the work its shards share."""
    root = root_bytes(legacy_root)
    rels = {kind: b"storage/uploads/" + os.fsencode(kind) for kind in kinds}
    return {kind: sum(1 for _ in _walk(root, rel)) for kind, rel in rels.items() if _readable(os.path.join(root, rel))}


def upload_types(legacy_root) -> list[str]:
    """The known upload types with a folder under `storage/uploads/`."""
    found = _folders_in(root_bytes(legacy_root), b"storage/uploads")
    return [c.name.decode() for c in found if _is_real_dir(c) and c.name.decode("utf-8", "replace") in UPLOAD_FILE_TYPES]


def _walk(root: bytes, rel: bytes, prune=lambda rel: False) -> Iterator[Entry]:
    """Every entry under root/rel, sorted, without following symlinks; a directory `prune` accepts is left out
    (another walk unit covers it)."""
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
            if not prune(child_rel):
                yield from _walk(root, child_rel, prune)
        elif stat.S_ISREG(st.st_mode):
            yield Entry(child_rel, "file", st.st_size, st.st_mtime_ns, st.st_ino)
        else:
            yield Entry(child_rel, "special", None)


def _children(path: bytes) -> list[os.DirEntry]:
    try:
        with os.scandir(path) as it:
            return sorted(it, key=lambda e: e.name)
    except OSError:  # missing, not a folder, unreadable: the loose walk meets it, and reports it
        return []


def _folders_in(root: bytes, rel: bytes) -> list[os.DirEntry]:
    """The children of root/rel when every folder on the way is a real one: `output`, `storage` or `storage/uploads`
    as a symlink is the loose walk's entry (never followed), and its target no partition's."""
    path = root
    for part in rel.split(b"/"):
        path = os.path.join(path, part)
        try:
            if not stat.S_ISDIR(os.lstat(path).st_mode):
                return []
        except OSError:
            return []
    return _children(path)


def _is_real_dir(entry: os.DirEntry) -> bool:
    return entry.is_dir(follow_symlinks=False)


def partition_of(rel: bytes, shards: Mapping[str, int]) -> str:
    """The partition an entry (by its path relative to the legacy root) belongs to."""
    parts = rel.split(b"/")
    if parts[0] == b"output" and len(parts) >= 3 and parts[1] != RENDER_CACHE:
        return topic_partition(parts[1])
    if parts[:2] == [b"storage", b"uploads"] and len(parts) >= 4:
        return upload_partition(parts[2], b"/".join(parts[3:]), shards)
    return LOOSE


def entry_partition(entry: Entry, shards: Mapping[str, int]) -> str:
    """The partition of an entry the walk found: `partition_of` its path, except that a topic folder it could not
    read (`output/{topic}` itself) belongs to that topic, where that topic's own walk reports it."""
    parts = entry.rel.split(b"/")
    if entry.kind == "unreadable" and len(parts) == 2 and parts[0] == b"output" and parts[1] != RENDER_CACHE:
        return topic_partition(parts[1])
    return partition_of(entry.rel, shards)


def discover_sources(legacy_root, shards: Mapping[str, int]) -> list[str]:
    """The partition keys present under the legacy root (cheap: folder names only, no file walk)."""
    root = root_bytes(legacy_root)
    if not os.path.isdir(root):
        raise FileNotFoundError(f"legacy root {os.fsdecode(root)!r} is not a directory")
    keys: list[str] = []
    for child in _folders_in(root, b"output"):
        if _is_real_dir(child) and child.name != RENDER_CACHE:
            keys.append(topic_partition(child.name))
    for child in _folders_in(root, b"storage/uploads"):
        if _is_real_dir(child):
            kind = child.name.decode("utf-8", "replace")
            keys.extend(upload_keys(kind, shards))
    keys.append(LOOSE)
    return sorted(set(keys))


def _readable(path: bytes) -> bool:
    try:
        with os.scandir(path):
            return True
    except OSError:
        return False


def _walk_units(root: bytes, shards: Mapping[str, int]) -> Iterator[tuple[list[str], Iterator[Entry]]]:
    """The tree in walk units, each with the partitions it completes: a topic folder (its partition), an upload
    type folder (its shards; unknown types together: `uploads/other`), then the rest (`loose`). Each directory is
    read by one unit only (an upload type folder that cannot be read is a loose entry: the loose walk meets it)."""
    elsewhere: set[bytes] = set()  # the directories the topic and upload units walk
    topics: dict[str, list[bytes]] = {}
    for child in _folders_in(root, b"output"):
        if _is_real_dir(child) and child.name != RENDER_CACHE:
            topics.setdefault(topic_partition(child.name), []).append(b"output/" + child.name)
    types: dict[str, list[bytes]] = {}
    for child in _folders_in(root, b"storage/uploads"):
        if _is_real_dir(child):
            kind = child.name.decode("utf-8", "replace")
            rels = types.setdefault(kind if kind in UPLOAD_FILE_TYPES else "other", [])
            if _readable(child.path):  # else the loose walk meets it, and reports it
                rels.append(b"storage/uploads/" + child.name)
    for key, rels in sorted(topics.items()):
        elsewhere.update(rels)
        yield [key], (e for rel in rels for e in _walk(root, rel))
    for kind, rels in sorted(types.items()):
        elsewhere.update(rels)
        keys = upload_keys(kind, shards)
        yield keys, (e for rel in rels for e in _walk(root, rel))
    yield [LOOSE], _walk(root, b"", elsewhere.__contains__)


def iter_partitions(
    legacy_root, shards: Mapping[str, int], partitions: list[str] | None = None
) -> Iterator[tuple[str, list[Entry]]]:
    """Each partition (all discovered, or `partitions`) with its entries, one walk unit at a time: memory holds one
    topic folder's or one upload type's entries, not the tree's, so a run over the whole tree can go partition by
    partition. Partitions asked for and not found come last, empty. Each directory is read once (walking partition
    by partition read each upload type's folder once per shard, and the whole tree for the loose files)."""
    root = root_bytes(legacy_root)
    wanted = None if partitions is None else set(partitions)
    for key in wanted or ():
        if not (key.startswith(("topic/", "uploads/")) or key == LOOSE):
            raise ValueError(f"unknown legacy partition {key!r}: expected topic/..., uploads/... or loose")
    strays: list[Entry] = []  # a unit's entries of another partition: a folder that became unreadable meanwhile
    for keys, entries in _walk_units(root, shards):
        keys = [k for k in keys if wanted is None or k in wanted]
        if not keys:
            continue
        found: dict[str, list[Entry]] = {key: [] for key in keys}
        for entry in entries:
            found.get(entry_partition(entry, shards), strays).append(entry)
        if LOOSE in found:
            found[LOOSE] = [e for e in strays if entry_partition(e, shards) == LOOSE] + found[LOOSE]
        for key in keys:
            yield key, found[key]
            if wanted is not None:
                wanted.discard(key)
    for key in sorted(wanted or ()):
        yield key, []


def partition_entries(legacy_root, partition_key: str, shards: Mapping[str, int]) -> list[Entry]:
    """Every entry of one partition."""
    return dict(iter_partitions(legacy_root, shards, [partition_key]))[partition_key]


def all_entries(legacy_root, shards: Mapping[str, int], partitions: list[str] | None = None) -> dict[str, list[Entry]]:
    """Every entry by partition (the whole tree in memory: for a bounded set of partitions, or a small tree)."""
    return dict(iter_partitions(legacy_root, shards, partitions))
