"""Upload partitions sized by work: a type folder's shard count comes from its file count when first discovered and
never changes after, so no file changes partition as the tree grows."""

from sqlalchemy import text

from t2m_pipeline.migration.discovery import (
    MAX_UPLOAD_SHARDS,
    UPLOAD_FILES_PER_SHARD,
    discover_sources,
    iter_partitions,
    shards_for,
)
from t2m_pipeline.migration.upload_shards import upload_shards


def fill(root, kind: str, files: int, start: int = 0) -> None:
    folder = root / "storage" / "uploads" / kind
    folder.mkdir(parents=True, exist_ok=True)
    for n in range(start, start + files):
        (folder / f"user_u{n}_20240101_101010_{n:08x}.bin").write_bytes(b"x")


def test_shards_follow_the_work():
    assert [shards_for(n) for n in (0, 1, UPLOAD_FILES_PER_SHARD, UPLOAD_FILES_PER_SHARD + 1)] == [1, 1, 1, 2]
    assert shards_for(10**9) == MAX_UPLOAD_SHARDS


def test_decided_once_by_size_then_kept_as_the_tree_grows(migration_db, tmp_path):
    _, engine = migration_db
    fill(tmp_path, "image", 2 * UPLOAD_FILES_PER_SHARD + 1)
    fill(tmp_path, "audio", 4)
    (tmp_path / "storage" / "uploads" / "video").mkdir()  # just made: empty, left undecided
    (tmp_path / "output" / "topic_a").mkdir(parents=True)
    assert upload_shards(engine, tmp_path, record=False) == {"image": 3, "audio": 1}
    with engine.connect() as conn:  # verify's reading decides nothing
        assert conn.execute(text("SELECT count(*) FROM legacy_upload_shards")).scalar_one() == 0
    shards = upload_shards(engine, tmp_path)
    assert shards == {"image": 3, "audio": 1}
    keys = discover_sources(tmp_path, shards)
    assert [k for k in keys if k.startswith("uploads/")] == ["uploads/audio/0", "uploads/image/0", "uploads/image/1", "uploads/image/2", "uploads/video/0"]
    before = {e.legacy_path: key for key, entries in iter_partitions(tmp_path, shards) for e in entries}

    fill(tmp_path, "image", 5 * UPLOAD_FILES_PER_SHARD, start=10**6)  # the legacy app wrote more during the cut-over
    fill(tmp_path, "video", UPLOAD_FILES_PER_SHARD + 1)
    later = upload_shards(engine, tmp_path)
    assert later == {"image": 3, "audio": 1, "video": 2}  # image kept; the folder that was empty sized by its files now
    after = {e.legacy_path: key for key, entries in iter_partitions(tmp_path, later) for e in entries}
    assert {path: after[path] for path in before} == before  # no file changed partition
    with engine.connect() as conn:
        counted = dict(conn.execute(text("SELECT file_type, files_counted FROM legacy_upload_shards")).tuples().all())
    assert counted == {"image": 2 * UPLOAD_FILES_PER_SHARD + 1, "audio": 4, "video": UPLOAD_FILES_PER_SHARD + 1}
