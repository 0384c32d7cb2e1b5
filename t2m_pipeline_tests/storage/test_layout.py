import re
import uuid
from datetime import datetime, timezone

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from t2m_pipeline.storage import layout

USER = uuid.UUID("11111111-2222-3333-4444-555555555555")
JOB = uuid.UUID("66666666-7777-8888-9999-000000000000")
names = st.one_of(st.text(max_size=2000), st.binary(max_size=600))
ids = st.one_of(st.uuids(), st.text(max_size=60))


def assert_safe(key: str) -> None:
    assert not key.startswith("/")
    assert "//" not in key
    assert not re.search(r"[\x00-\x1f\x7f]", key)
    assert all(part not in (".", "..") for part in key.split("/"))
    assert len(key.encode("utf-8")) <= layout.MAX_KEY_BYTES


def test_layout_table_rows():
    u, j = str(USER), str(JOB)
    assert layout.scene_code_key(USER, JOB, 1) == f"users/{u}/jobs/{j}/code/scene_001/scene.py"
    assert layout.scene_plan_key(u, j, 12, "outline.txt") == f"users/{u}/jobs/{j}/code/scene_012/plans/outline.txt"
    assert layout.scene_log_key(u, j, 3, "render.log") == f"users/{u}/jobs/{j}/code/scene_003/logs/render.log"
    assert layout.job_plan_key(u, j, "scene_outline.txt") == f"users/{u}/jobs/{j}/code/plans/scene_outline.txt"
    assert layout.scene_video_key(u, j, 7) == f"users/{u}/jobs/{j}/videos/scene_007/output.mp4"
    assert layout.scene_video_key(u, j, 7, subtitles=True).endswith("videos/scene_007/output.srt")
    assert layout.combined_video_key(u, j) == f"users/{u}/jobs/{j}/videos/combined/output.mp4"
    assert layout.thumbnail_key(u, j, 2) == f"users/{u}/jobs/{j}/thumbnails/scene_002/thumbnail.jpg"
    stamp = datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone.utc)
    assert layout.temp_key("sess-1", stamp, "a.txt") == "temp/sess-1/20260102T030405Z/a.txt"
    assert layout.upload_key(u, "user_2abc_20240101_120000_deadbeef", ".mp4") == (
        f"users/{u}/uploads/user_2abc_20240101_120000_deadbeef.mp4"
    )
    assert layout.unattributed_key("pythagorean_theorem", ["scene1", "code", "x_v1.py"]) == (
        "legacy/unattributed/pythagorean_theorem/scene1/code/x_v1.py"
    )
    # a path deeper than an S3 key can be: one segment named by its hash, still under the folder, still unique
    deep = [f"{'d' * 150}{i}" for i in range(10)] + ["notes.txt"]
    other = [*deep[:-2], "x", "notes.txt"]
    key = layout.unattributed_key("pythagorean_theorem", deep)
    assert key.startswith("legacy/unattributed/pythagorean_theorem/long-paths/") and key.endswith("-notes.txt")
    assert len(key) <= layout.MAX_KEY_BYTES and key != layout.unattributed_key("pythagorean_theorem", other)


def test_upload_bucket_by_type():
    assert [layout.upload_bucket_kind(t) for t in ("video", "audio", "image", "document", "archive")] == [
        "videos", "videos", "thumbnails", "code", "code"
    ]
    with pytest.raises(layout.UnsafeKeyError):
        layout.upload_bucket_kind("exe")


@pytest.mark.parametrize("bad", ["..", "../../etc/passwd", "a/b", "", "\x00", "x" * 5000])
def test_hostile_names_stay_inside_their_prefix(bad):
    key = layout.scene_plan_key(USER, JOB, 1, bad)
    prefix = f"users/{USER}/jobs/{JOB}/code/scene_001/plans/"
    assert key.startswith(prefix) and "/" not in key[len(prefix):]
    assert_safe(key)


def test_sanitized_names_that_collide_get_distinct_keys():
    assert layout.sanitize_name("a b.txt") != layout.sanitize_name("a_b.txt")
    assert layout.sanitize_name("report.pdf") == "report.pdf"


@pytest.mark.parametrize("bad", ["not-a-uuid", "../x", "", None])
def test_ids_must_be_uuids(bad):
    with pytest.raises(layout.UnsafeKeyError):
        layout.scene_code_key(bad, JOB, 1)


@pytest.mark.parametrize("n", [0, 1000, -1, True, 1.5])
def test_scene_numbers_are_bounded(n):
    with pytest.raises(layout.UnsafeKeyError):
        layout.scene_video_key(USER, JOB, n)


def test_naive_temp_timestamp_refused():
    with pytest.raises(layout.UnsafeKeyError):
        layout.temp_key("s", datetime(2026, 1, 1), "x")


@settings(max_examples=300, deadline=None)
@given(user=ids, job=ids, scene=st.integers(-5, 1200), name=names)
def test_every_builder_yields_safe_keys_or_refuses(user, job, scene, name):
    builders = [
        lambda: layout.scene_code_key(user, job, scene),
        lambda: layout.scene_plan_key(user, job, scene, name),
        lambda: layout.scene_log_key(user, job, scene, name),
        lambda: layout.job_plan_key(user, job, name),
        lambda: layout.scene_video_key(user, job, scene),
        lambda: layout.combined_video_key(user, job),
        lambda: layout.thumbnail_key(user, job, scene),
    ]
    for build in builders:
        try:
            key = build()
        except layout.UnsafeKeyError:
            continue
        assert_safe(key)
        assert key.startswith(f"users/{uuid.UUID(str(user))}/jobs/{uuid.UUID(str(job))}/")


@settings(max_examples=300, deadline=None)
@given(slug=names, parts=st.lists(names, min_size=1, max_size=12), session=st.text(max_size=200), file_id=st.text(max_size=200))
def test_legacy_temp_and_upload_keys_are_safe(slug, parts, session, file_id):
    for build in (
        lambda: layout.unattributed_key(slug, parts),
        lambda: layout.temp_key(session, datetime.now(timezone.utc), parts[0]),
        lambda: layout.upload_key(USER, file_id, ".mp4"),
    ):
        try:
            key = build()
        except layout.UnsafeKeyError:
            continue
        assert_safe(key)


@settings(max_examples=300, deadline=None)
@given(name=names)
def test_sanitized_name_is_a_single_safe_segment(name):
    out = layout.sanitize_name(name)
    assert re.fullmatch(r"[A-Za-z0-9._-]+", out)
    assert out not in (".", "..") and not out.startswith(".")
    assert len(out.encode()) <= layout.MAX_NAME_BYTES
