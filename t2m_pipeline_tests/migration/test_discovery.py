"""The streamed walk (unit by unit: a topic folder, an upload type, the rest) and each partition's own walk find
exactly what the plain definition finds (walk everything, file each entry by `entry_partition`), on trees with topic
folders, the render cache, uploads of every kind, loose files, symlinks and names that are not UTF-8."""

import os
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from t2m_pipeline.migration.discovery import (
    _walk,
    all_entries,
    discover_sources,
    entry_partition,
    iter_partitions,
    partition_entries,
    root_bytes,
)

PLACES = [
    b"output/topic_a/scene1/code",
    b"output/topic_a",
    b"output/Topic B!",
    b"output/.render_cache",
    b"output",
    b"storage/uploads/image",
    b"storage/uploads/document/nested",
    b"storage/uploads/audio",
    b"storage/uploads/weird_kind",
    b"storage/uploads",
    b"storage",
    b"",
]
NAMES = st.sampled_from([b"a.txt", b"scene1_v1.py", b"x\xff.bin", b"user_u1_20240101_101010_0000abcd.png", b"zz"])
SHARDS = {"image": 3, "document": 2}  # audio: not decided yet (one shard)
ITEMS = st.lists(st.tuples(st.sampled_from(PLACES), NAMES, st.sampled_from(["file", "dir", "symlink"])), max_size=25)


def build(root: Path, items) -> None:
    base = os.fsencode(root)
    for place, name, kind in items:
        folder = os.path.join(base, place) if place else base
        path = os.path.join(folder, name)
        try:
            os.makedirs(folder, exist_ok=True)
            if kind == "file":
                with open(path, "wb") as fh:
                    fh.write(name)
            elif kind == "dir":
                os.makedirs(path, exist_ok=True)
            else:
                os.symlink(b"/etc", path)
        except (FileExistsError, NotADirectoryError, IsADirectoryError):
            pass  # the place is already something else: the tree is what it is


def per_partition(root: Path) -> dict[str, list[tuple[bytes, str]]]:
    return {key: sorted((e.rel, e.kind) for e in partition_entries(root, key, SHARDS)) for key in discover_sources(root, SHARDS)}


def one_walk(root: Path) -> dict[str, list[tuple[bytes, str]]]:
    streamed = list(iter_partitions(root, SHARDS))
    assert len({key for key, _ in streamed}) == len(streamed)  # each partition once, complete
    return {key: sorted((e.rel, e.kind) for e in entries) for key, entries in streamed}


def reference(root: Path) -> dict[str, list[tuple[bytes, str]]]:
    """The definition, with the whole tree in memory: every entry of one full walk, filed by its partition."""
    out: dict[str, list] = {key: [] for key in discover_sources(root, SHARDS)}
    for entry in _walk(root_bytes(root), b""):
        out.setdefault(entry_partition(entry, SHARDS), []).append((entry.rel, entry.kind))
    return {key: sorted(found) for key, found in out.items()}


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(items=ITEMS)
def test_one_walk_finds_what_the_partition_walks_find(tmp_path_factory, items):
    root = tmp_path_factory.mktemp("legacy")
    build(root, items)
    expected = reference(root)
    assert one_walk(root) == expected
    assert per_partition(root) == expected
    some = sorted(expected)[::2] + ["topic/not_there"]
    assert {k: sorted((e.rel, e.kind) for e in v) for k, v in all_entries(root, SHARDS, some).items()} == {k: expected.get(k, []) for k in some}


def test_a_topic_folder_that_is_a_symlink_is_a_loose_entry_in_both(tmp_path):
    build(tmp_path, [(b"output/real", b"f.txt", "file"), (b"output", b"linked", "symlink")])
    walked = one_walk(tmp_path)
    assert walked == per_partition(tmp_path) == reference(tmp_path)
    assert (b"output/linked", "symlink") in walked["loose"] and "topic/linked" not in walked


def test_output_or_uploads_as_a_symlink_is_a_loose_entry_never_followed(tmp_path):
    elsewhere = tmp_path / "elsewhere"
    build(elsewhere, [(b"topic_a", b"f.txt", "file"), (b"image", b"u.png", "file")])
    root = tmp_path / "legacy"
    (root / "storage").mkdir(parents=True)
    os.symlink(elsewhere, root / "output")
    os.symlink(elsewhere, root / "storage" / "uploads")
    walked = one_walk(root)
    assert walked == per_partition(root) == reference(root)
    assert walked == {"loose": [(b"output", "symlink"), (b"storage/uploads", "symlink")]}


def test_a_partition_key_of_no_known_form_is_refused(tmp_path):
    import pytest

    with pytest.raises(ValueError, match="unknown legacy partition"):
        all_entries(tmp_path, SHARDS, ["uplods/image/0"])
