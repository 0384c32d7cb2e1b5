"""The mapping rules on their own (no services): legacy entry -> layout key, or a skip reason."""

import uuid

import pytest

from t2m_pipeline.migration.attribution import Attribution, AttributionIndex, JobRef
from t2m_pipeline.migration.discovery import Entry, partition_of, topic_partition
from t2m_pipeline.migration.mapping import Skip, map_loose_entry, map_topic_entry, map_upload_entry
from t2m_pipeline.storage import layout

USER, JOB, OTHER, SYSTEM = (uuid.uuid4() for _ in range(4))
OWNED = Attribution(JobRef(JOB, USER), (JobRef(OTHER, USER),), reason="produced by job (test)")


def target(rel: str, attribution=OWNED):
    return map_topic_entry(Entry(rel.encode(), "file", 10), attribution, SYSTEM)


def test_layout_keys_for_every_kind_of_topic_file():
    assert target("output/t/scene3/code/t_scene3_v2.py").key == layout.scene_code_key(USER, JOB, 3)
    assert target("output/t/scene3/code/t_scene3_v2.py").order == (2,)
    video = target("output/t/media/videos/t_scene3_v4/1080p60/Scene3.mp4")
    assert (video.key, video.order, video.check) == (layout.scene_video_key(USER, JOB, 3), (4, 2), "video")
    assert target("output/t/t_combined.srt").key == layout.combined_video_key(USER, JOB, subtitles=True)
    assert target("output/t/scene3/code/t_scene3_v2_error_1.log").key == layout.scene_log_key(USER, JOB, 3, "t_scene3_v2_error_1.log")
    assert target("output/t/scene3/rag_cache/q.json").key == layout.scene_plan_key(USER, JOB, 3, "rag_cache__q.json")
    other = target("output/t/scene3/notes.txt")
    assert other.metadata["unrecognised"] and other.key == layout.scene_plan_key(USER, JOB, 3, "legacy__notes.txt")
    assert target("output/t/scene3/code/t_scene3_v2.py").metadata["attribution"] == "produced by job (test)"
    # Scene1.mp4 in a scene10 folder is not scene 1's video
    assert target("output/t/media/videos/t_scene10_v1/480p15/Scene1.mp4").metadata.get("unrecognised")


def test_a_render_cache_hit_is_the_scenes_video():
    """The cached video copied as {slug}_scene{N}_v{K}.mp4 (no Scene{N}.mp4, no .srt, no code file): scene N's video."""
    hit = target("output/t/media/videos/t_scene2_v3/1080p60/t_scene2_v3.mp4")
    assert (hit.key, hit.file_type, hit.scene_number, hit.order, hit.check) == (
        layout.scene_video_key(USER, JOB, 2), "scene_video", 2, (3, 2), "video")
    assert not hit.metadata.get("unrecognised")
    # the name must be the folder's own: another scene's or version's cached name is not this scene's video
    assert target("output/t/media/videos/t_scene2_v3/1080p60/t_scene2_v2.mp4").metadata.get("unrecognised")
    assert target("output/t/media/videos/t_scene2_v3/1080p60/t_scene1_v3.mp4").metadata.get("unrecognised")


def test_caches_and_markers_are_skipped_with_a_reason():
    for rel, reason in (
        ("output/t/media/Tex/x.svg", "manim cache"),
        ("output/t/media/videos/t_scene1_v1/480p15/partial_movie_files/Scene1/0.mp4", "intermediate"),
        ("output/t/scene1/succ_rendered.txt", "success marker"),
        ("output/t/session_id.txt", "session id"),
    ):
        with pytest.raises(Skip, match=reason):
            target(rel)
    with pytest.raises(Skip, match="render cache"):
        map_loose_entry(Entry(b"output/.render_cache/abc_low.mp4", "file", 1))


def test_unattributed_folders_and_uploads():
    why = Attribution(None, reason="unattributed: file time lies within no job's run", candidates=({"job_id": str(OTHER)},))
    orphan = target("output/t/scene1/code/t_scene1_v1.py", why)
    assert orphan.key == "legacy/unattributed/t/scene1/code/t_scene1_v1.py" and orphan.user_id == SYSTEM
    assert orphan.metadata["candidate_jobs"] == [{"job_id": str(OTHER)}] and "within no job" in orphan.metadata["attribution"]
    index = AttributionIndex(owner_by_file_id={}, file_records={})
    name = "user_a_20240101_101010_0123abcd.PNG"
    up = map_upload_entry(Entry(f"storage/uploads/image/{name}".encode(), "file", 5), index, {"user_a": USER}, SYSTEM)
    assert up.key == layout.upload_key(USER, name[:-4], ".png") and up.bucket_kind == "thumbnails"
    stranger = map_upload_entry(Entry(b"storage/uploads/image/odd name.png", "file", 5), index, {}, SYSTEM)
    assert stranger.key.startswith("legacy/unattributed/storage-uploads/image/") and stranger.user_id == SYSTEM


def test_partitions():
    shards = {"image": 3}
    assert partition_of(b"output/my_slug/scene1/x", shards) == topic_partition(b"my_slug") == "topic/my_slug"
    assert partition_of(b"output/.render_cache/x.mp4", shards) == "loose" == partition_of(b"output/session_id.txt", shards)
    found = {partition_of(f"storage/uploads/image/{n}.png".encode(), shards) for n in range(200)}
    assert found == {"uploads/image/0", "uploads/image/1", "uploads/image/2"}  # as many as decided, spread by hash
    assert partition_of(b"storage/uploads/audio/a.mp3", shards) == "uploads/audio/0"  # not decided yet: one
    assert partition_of(b"storage/uploads/weird/a.bin", shards) == "uploads/other"
    assert topic_partition(b"caf\xe9 topic").startswith("topic/caf") and " " not in topic_partition(b"caf\xe9 topic")


@pytest.mark.parametrize("mime", ["text/plain\n", "image/日本", "text/plain; x", ""])
def test_a_legacy_mime_type_that_is_no_clean_header_value_gives_way_to_the_extension(mime):
    """The record's mime type becomes the object's Content-Type: one with a newline or a non-ASCII letter would be
    refused at the request (or signed as other bytes than sent), so the file's extension decides instead. Control: a
    clean one is kept."""
    name = "user_a_20240101_101010_0123abcd.png"
    file_id = name.rsplit(".", 1)[0]
    for record_mime, expected in ((mime, "image/png"), ("image/x-custom", "image/x-custom")):
        index = AttributionIndex(owner_by_file_id={}, file_records={file_id: {"mime_type": record_mime}})
        up = map_upload_entry(Entry(f"storage/uploads/image/{name}".encode(), "file", 5), index, {"user_a": USER}, SYSTEM)
        assert up.content_type == expected
