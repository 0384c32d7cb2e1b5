"""The rules behind the scene assets' checks, each shown failing on the fault it exists for, at its severity."""

from __future__ import annotations

import io
import uuid

import av
import numpy as np
import pytest
from PIL import Image
from sqlalchemy import text

from t2m_pipeline.pipeline import object_checks as oc
from t2m_pipeline.storage.s3 import ObjectOwner


def make_video(path, *, width=854, height=480, seconds=1.0, fps=15) -> None:
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        for i in range(int(seconds * fps)):
            frame = np.zeros((height, width, 3), dtype=np.uint8)
            frame[:, : (i + 1) * width // int(seconds * fps)] = (200, 80, 40)
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def jpeg(width=64, height=36, flat=False, fmt="JPEG") -> bytes:
    image = Image.new("RGB", (width, height), (10, 20, 30))
    if not flat:
        image.paste((250, 250, 250), (0, 0, width // 2, height))
    out = io.BytesIO()
    image.save(out, format=fmt)
    return out.getvalue()


def by_name(outcomes):
    return {o.check: o for o in outcomes}


@pytest.fixture
def stored(storage, buckets, make_user, tmp_path):
    user_id, _ = make_user()
    owner = ObjectOwner(str(user_id), "thumbnail")
    return storage.put_bytes(buckets["thumbnails"], f"checks/{uuid.uuid4()}/t.jpg", jpeg(), owner=owner, content_type="image/jpeg")


def test_row_checks_pass_then_fail_when_the_row_disagrees_or_is_gone(storage, engine, stored):
    with oc.read_back(storage, stored) as path:
        assert all(o.passed for o in oc.row_checks(engine, stored, path))
        with engine.begin() as conn:
            conn.execute(text("UPDATE file_metadata SET checksum = :c WHERE s3_key = :k"), {"c": "0" * 64, "k": stored.key})
        mismatch = by_name(oc.row_checks(engine, stored, path))
        assert mismatch["row_recorded"].passed
        assert not mismatch["object_matches_row"].passed and mismatch["object_matches_row"].severity == oc.ERROR
        with engine.begin() as conn:
            conn.execute(text("DELETE FROM file_metadata WHERE s3_key = :k"), {"k": stored.key})
        gone = by_name(oc.row_checks(engine, stored, path))
    assert not gone["row_recorded"].passed and gone["row_recorded"].severity == oc.ERROR
    unreadable = by_name(oc.row_checks(engine, stored, None, "NoSuchVersion"))
    assert not unreadable["object_matches_row"].passed and "NoSuchVersion" in unreadable["object_matches_row"].description


def test_video_checks(tmp_path):
    video = tmp_path / "v.mp4"
    make_video(video)
    good = by_name(oc.video_checks(video, quality="low", max_duration_s=300))
    assert good["video_probes"].passed and good["video_size"].passed
    wrong_size = by_name(oc.video_checks(video, quality="high"))
    assert good["video_probes"].passed and not wrong_size["video_size"].passed and wrong_size["video_size"].severity == oc.WARN
    short = by_name(oc.video_checks(video, quality="low", expected_duration_s=3.0))
    assert not short["video_probes"].passed and short["video_probes"].severity == oc.ERROR and "expected 3.00 s" in short["video_probes"].description
    too_long = by_name(oc.video_checks(video, quality="low", max_duration_s=0.5))
    assert not too_long["video_probes"].passed
    garbage = tmp_path / "g.mp4"
    garbage.write_bytes(b"not a video" * 100)
    broken = by_name(oc.video_checks(garbage, quality="low"))
    assert not broken["video_probes"].passed and broken["video_probes"].severity == oc.ERROR
    assert oc.video_preview(video).startswith("data:image/webp;base64,") and oc.video_preview(garbage) is None


def test_image_checks(tmp_path):
    path = tmp_path / "t.jpg"
    path.write_bytes(jpeg())
    good = by_name(oc.image_checks(path, width=64, height=36))
    assert good["thumbnail_decodes"].passed and good["thumbnail_not_blank"].passed
    assert not by_name(oc.image_checks(path, width=854, height=480))["thumbnail_decodes"].passed
    path.write_bytes(jpeg(flat=True))
    blank = by_name(oc.image_checks(path, width=64, height=36))
    assert blank["thumbnail_decodes"].passed and not blank["thumbnail_not_blank"].passed and blank["thumbnail_not_blank"].severity == oc.WARN
    path.write_bytes(jpeg(fmt="PNG"))
    assert "not JPEG" in by_name(oc.image_checks(path, width=64, height=36))["thumbnail_decodes"].description
    path.write_bytes(jpeg()[:40])
    truncated = by_name(oc.image_checks(path, width=64, height=36))
    assert not truncated["thumbnail_decodes"].passed and truncated["thumbnail_decodes"].severity == oc.ERROR


def test_code_checks(tmp_path):
    path = tmp_path / "scene.py"
    path.write_text("from manim import *\n\nclass Scene001(Scene):\n    def construct(self):\n        pass\n")
    assert oc.code_checks(path, "Scene001")[0].passed
    assert not oc.code_checks(path, "Scene002")[0].passed
    path.write_text("class Scene001(:\n")
    (broken,) = oc.code_checks(path, "Scene001")
    assert not broken.passed and broken.severity == oc.ERROR


def test_a_preview_fits_the_uis_inline_budget_at_the_largest_width_that_does():
    uri = oc.preview_data_uri(jpeg(width=1920, height=1080))
    assert uri.startswith("data:image/webp;base64,") and len(uri) <= oc.PREVIEW_BUDGET
    image = Image.open(io.BytesIO(__import__("base64").b64decode(uri.split(",", 1)[1])))
    assert image.width == 240  # a simple frame fits at the largest size
    blocks = np.random.default_rng(1).integers(0, 255, (135, 240, 3), dtype=np.uint8)  # noise that survives scaling
    noisy = Image.fromarray(blocks).resize((1920, 1080), Image.NEAREST)
    out = io.BytesIO()
    noisy.save(out, format="JPEG")
    smaller = Image.open(io.BytesIO(__import__("base64").b64decode(oc.preview_data_uri(out.getvalue()).split(",", 1)[1])))
    assert smaller.width < 240  # a busy one shrinks until it fits (or is the smallest)
