"""Video facts, thumbnails and concatenation with PyAV (FFmpeg's libraries) and Pillow: no ffmpeg binary needed."""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av

from t2m_pipeline.render.cores import render_core

THUMBNAIL_AT_SECONDS = 5.0
JPEG_QUALITY = 85


class MediaError(RuntimeError):
    """A video could not be read, or videos could not be joined; the message names the file."""


@dataclass(frozen=True)
class VideoInfo:
    duration_s: float
    width: int
    height: int
    fps: float
    codec: str
    frames: int

    @property
    def resolution(self) -> str:
        return f"{self.width}x{self.height}"


def probe_video(path: str | Path) -> VideoInfo:
    """Duration, resolution, frame rate and codec of the first video stream."""
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise MediaError(f"{path}: no video stream")
            stream = container.streams.video[0]
            if stream.duration is not None and stream.time_base is not None:
                duration = float(stream.duration * stream.time_base)
            elif container.duration is not None:
                duration = container.duration / av.time_base
            else:
                duration = 0.0
            rate = stream.base_rate or stream.guessed_rate or stream.average_rate or 0
            return VideoInfo(
                duration_s=round(duration, 3),
                width=stream.codec_context.width,
                height=stream.codec_context.height,
                fps=round(float(rate), 3),
                codec=stream.codec_context.name,
                frames=stream.frames,
            )
    except av.error.FFmpegError as exc:
        raise MediaError(f"{path}: not a readable video: {exc}") from exc


@dataclass(frozen=True)
class Thumbnail:
    jpeg: bytes
    width: int
    height: int
    at_seconds: float


def thumbnail_time(duration_s: float) -> float:
    """5 s into the video, or its middle when it is shorter than 10 s."""
    return THUMBNAIL_AT_SECONDS if duration_s >= 2 * THUMBNAIL_AT_SECONDS else max(0.0, duration_s / 2)


def extract_thumbnail(path: str | Path, at_seconds: float | None = None, *, max_width: int | None = None) -> Thumbnail:
    """A real decoded frame at `at_seconds` (default `thumbnail_time`) as JPEG."""
    info = probe_video(path)
    target = thumbnail_time(info.duration_s) if at_seconds is None else at_seconds
    try:
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            if target > 0 and stream.time_base:
                container.seek(int(target / stream.time_base), stream=stream, backward=True, any_frame=False)
            chosen = None
            for frame in container.decode(stream):
                chosen = frame
                if frame.time is not None and frame.time >= target - 1e-6:
                    break
            if chosen is None:
                raise MediaError(f"{path}: no frame could be decoded")
            image = chosen.to_image()
            at = float(chosen.time or 0.0)
    except av.error.FFmpegError as exc:
        raise MediaError(f"{path}: could not decode a frame: {exc}") from exc
    if max_width and image.width > max_width:
        image = image.resize((max_width, round(image.height * max_width / image.width)))
    buffer = io.BytesIO()
    image.convert("RGB").save(buffer, format="JPEG", quality=JPEG_QUALITY, optimize=True)
    return Thumbnail(buffer.getvalue(), image.width, image.height, round(at, 3))


def _stream_signature(stream) -> tuple:
    ctx = stream.codec_context
    return (ctx.name, ctx.width, ctx.height, ctx.format.name if ctx.format else None, stream.time_base)


def concat_videos(paths: Sequence[str | Path], out: str | Path) -> VideoInfo:
    """Join videos in order into `out` (MP4). Same codec, size and time base: packets are copied (fast, lossless);
    otherwise frames are re-encoded to the first video's size and rate. Only video streams are kept."""
    if not paths:
        raise MediaError("nothing to concatenate")
    signatures = []
    for path in paths:
        try:
            with av.open(str(path)) as container:
                if not container.streams.video:
                    raise MediaError(f"{path}: no video stream")
                signatures.append(_stream_signature(container.streams.video[0]))
        except av.error.FFmpegError as exc:
            raise MediaError(f"{path}: not a readable video: {exc}") from exc
    if all(sig == signatures[0] for sig in signatures):
        _remux(paths, out)
    else:
        with render_core():  # encoding is a render's worth of CPU: it takes one of the machine's cores
            _reencode(paths, out)
    return probe_video(out)


def _remux(paths: Sequence[str | Path], out: str | Path) -> None:
    with av.open(str(out), "w", format="mp4") as output:
        out_stream = None
        offset = 0
        for path in paths:
            with av.open(str(path)) as container:
                stream = container.streams.video[0]
                if out_stream is None:
                    out_stream = output.add_stream_from_template(stream)
                end = offset
                for packet in container.demux(stream):
                    if packet.dts is None:
                        continue
                    pts = packet.pts if packet.pts is not None else packet.dts
                    end = max(end, offset + pts + (packet.duration or 0))
                    packet.pts = pts + offset
                    packet.dts = packet.dts + offset
                    packet.stream = out_stream
                    output.mux(packet)
                offset = end


def _reencode(paths: Sequence[str | Path], out: str | Path) -> None:
    first = probe_video(paths[0])
    fps = Fraction(first.fps).limit_denominator(1001) if first.fps else Fraction(30)
    with av.open(str(out), "w", format="mp4") as output:
        out_stream = output.add_stream("libx264", rate=fps)
        out_stream.width, out_stream.height, out_stream.pix_fmt = first.width, first.height, "yuv420p"
        out_stream.time_base = 1 / fps
        index = 0
        for path in paths:
            with av.open(str(path)) as container:
                for frame in container.decode(video=0):
                    frame = frame.reformat(width=first.width, height=first.height, format="yuv420p")
                    frame.pts, frame.time_base = index, out_stream.time_base
                    index += 1
                    for packet in out_stream.encode(frame):
                        output.mux(packet)
        for packet in out_stream.encode(None):
            output.mux(packet)
