"""Video facts, thumbnails and concatenation on videos whose every frame says which frame it is."""

import io
from fractions import Fraction

import av
import numpy as np
import pytest
from PIL import Image

from t2m_pipeline.render.media import MediaError, concat_videos, extract_thumbnail, probe_video, thumbnail_time


def make_video(path, frames, *, fps=15, size=(160, 96), level=lambda i: i * 8 % 256):
    """An H.264 MP4 whose frame i is a flat grey of `level(i)`: a decoded frame tells its own index."""
    with av.open(str(path), "w", format="mp4") as out:
        stream = out.add_stream("libx264", rate=Fraction(fps))
        stream.width, stream.height, stream.pix_fmt = size[0], size[1], "yuv420p"
        stream.options = {"crf": "10"}
        for i in range(frames):
            pixels = np.full((size[1], size[0], 3), level(i), dtype=np.uint8)
            frame = av.VideoFrame.from_ndarray(pixels, format="rgb24")
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    return path


def grey_levels(path):
    with av.open(str(path)) as container:
        return [int(frame.to_ndarray(format="gray").mean().round()) for frame in container.decode(video=0)]


def test_probe_reports_duration_resolution_and_rate(tmp_path):
    info = probe_video(make_video(tmp_path / "a.mp4", 30))
    assert (info.width, info.height, info.fps, info.codec, info.frames) == (160, 96, 15.0, "h264", 30)
    assert info.duration_s == pytest.approx(2.0, abs=0.07) and info.resolution == "160x96"


def test_thumbnail_is_the_frame_at_mid_video_for_short_videos(tmp_path):
    path = make_video(tmp_path / "a.mp4", 30)  # 2 s: the thumbnail is at 1 s = frame 15
    thumb = extract_thumbnail(path)
    image = Image.open(io.BytesIO(thumb.jpeg))
    assert image.format == "JPEG" and image.size == (thumb.width, thumb.height) == (160, 96)
    assert thumb.at_seconds == pytest.approx(1.0, abs=0.07)
    assert np.asarray(image.convert("L")).mean() == pytest.approx(15 * 8, abs=3)


def test_thumbnail_is_at_five_seconds_for_long_videos(tmp_path):
    path = make_video(tmp_path / "long.mp4", 12 * 15, level=lambda i: i)  # 12 s: frame 75 is 5 s in
    thumb = extract_thumbnail(path, max_width=80)
    assert thumbnail_time(12.0) == 5.0 and thumb.at_seconds == pytest.approx(5.0, abs=0.07)
    assert (thumb.width, thumb.height) == (80, 48)
    assert np.asarray(Image.open(io.BytesIO(thumb.jpeg)).convert("L")).mean() == pytest.approx(75, abs=3)


def test_concat_copies_packets_in_order(tmp_path):
    a = make_video(tmp_path / "a.mp4", 20, level=lambda i: 10 + i * 5)
    b = make_video(tmp_path / "b.mp4", 10, level=lambda i: 200 + i * 3)
    info = concat_videos([a, b], tmp_path / "out.mp4")
    assert info.frames == 30 and info.duration_s == pytest.approx(2.0, abs=0.07)
    levels = grey_levels(tmp_path / "out.mp4")
    expected = [10 + i * 5 for i in range(20)] + [200 + i * 3 for i in range(10)]
    assert len(levels) == 30 and all(abs(x - y) <= 3 for x, y in zip(levels, expected))


def test_concat_reencodes_videos_of_different_sizes(tmp_path):
    a = make_video(tmp_path / "a.mp4", 15, level=lambda i: 40)
    b = make_video(tmp_path / "b.mp4", 15, size=(320, 192), level=lambda i: 220)
    info = concat_videos([a, b], tmp_path / "out.mp4")
    assert (info.width, info.height, info.frames) == (160, 96, 30)
    levels = grey_levels(tmp_path / "out.mp4")
    assert all(abs(x - 40) <= 4 for x in levels[:15]) and all(abs(x - 220) <= 4 for x in levels[15:])


def test_unreadable_files_are_clear_errors(tmp_path):
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"not a video at all" * 10)
    with pytest.raises(MediaError, match="bad.mp4"):
        probe_video(bad)
    with pytest.raises(MediaError):
        concat_videos([bad], tmp_path / "out.mp4")
    with pytest.raises(MediaError):
        concat_videos([], tmp_path / "out.mp4")
