"""Checks on what a scene asset wrote: the object read back from S3 and judged against its `file_metadata` row and
what it must be (a video that probes with the expected size and duration, a thumbnail that decodes, code that
checks). Plain functions returning `Outcome`s; the Dagster layer turns each into an asset check result.

Severity says what a failure means: ERROR when the object is missing, unreadable, not what its row records, or
not the thing it claims to be (a video that does not probe, a combined video short of a scene); WARN when it is
usable but off (another resolution than its quality promises, a blank thumbnail).
"""

from __future__ import annotations

import base64
import io
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, select, text

from t2m_pipeline.db.models import FileMetadata
from t2m_pipeline.storage.s3 import S3Storage, StoredObject, sha256_file
from t2m_pipeline.vocabulary import FileType

ERROR, WARN = "ERROR", "WARN"
PREVIEW_WIDTHS = (240, 192, 160, 128, 96)  # the largest that fits PREVIEW_BUDGET wins
PREVIEW_BUDGET = 960  # characters of data: URI, so `![preview](...)` stays under the UI's 1,000 for inline markdown
# What manim's quality flags render (manim_runner.QUALITY_FLAGS): width, height.
QUALITY_RESOLUTIONS = {"low": (854, 480), "medium": (1280, 720), "high": (1920, 1080), "ultra": (3840, 2160)}
DURATION_TOLERANCE_S = 0.25  # per scene: container rounding and a frame at 15 fps


@dataclass(frozen=True)
class Outcome:
    check: str
    passed: bool
    severity: str
    description: str
    metadata: dict[str, Any] = field(default_factory=dict)


@contextmanager
def read_back(storage: S3Storage, stored: StoredObject) -> Iterator[Path]:
    """The stored version's bytes, downloaded again from S3 into a temporary file."""
    with tempfile.TemporaryDirectory(prefix="t2m-check-") as tmp:
        path = Path(tmp) / "object"
        storage.download_file(stored.bucket, stored.key, path, version_id=stored.version_id)
        yield path


def row_of(engine: Engine, stored: StoredObject):
    with engine.connect() as conn:
        return conn.execute(
            select(FileMetadata.checksum, FileMetadata.file_size, FileMetadata.extra).where(
                FileMetadata.s3_bucket == stored.bucket,
                FileMetadata.s3_key == stored.key,
                FileMetadata.version_id.is_not_distinct_from(stored.version_id),
            )
        ).one_or_none()


def row_checks(engine: Engine, stored: StoredObject, path: Path | None, read_error: str | None = None) -> list[Outcome]:
    """`row_recorded`: the version has its file_metadata row. `object_matches_row`: S3's bytes have its sha256 and size."""
    row = row_of(engine, stored)
    where = f"s3://{stored.bucket}/{stored.key}?versionId={stored.version_id}"
    recorded = Outcome(
        "row_recorded", row is not None, ERROR,
        f"file_metadata records {where}" if row is not None else f"no file_metadata row for {where}",
    )
    if path is None:
        return [recorded, Outcome("object_matches_row", False, ERROR, f"the object could not be read back: {read_error}")]
    sha, size = sha256_file(path)
    meta = {"s3_sha256": sha, "s3_size": size}
    if row is None:
        return [recorded, Outcome("object_matches_row", False, ERROR, "no row to compare the object with", meta)]
    meta.update(row_sha256=row.checksum, row_size=row.file_size)
    agree = row.checksum == sha and row.file_size == size
    description = "the object's sha256 and size are its row's" if agree else "the object differs from its row (sha256 or size)"
    return [recorded, Outcome("object_matches_row", agree, ERROR, description, meta)]


def video_checks(
    path: Path, *, quality: str, expected_duration_s: float | None = None, tolerance_s: float = DURATION_TOLERANCE_S,
    max_duration_s: float | None = None,
) -> list[Outcome]:
    """`video_probes`: a decodable video stream with a positive duration (and the expected one, when known).
    `video_size`: the resolution its quality renders."""
    from t2m_pipeline.render.media import MediaError, probe_video

    try:
        info = probe_video(path)
    except MediaError as exc:
        return [Outcome("video_probes", False, ERROR, f"the video does not probe: {exc}"),
                Outcome("video_size", False, WARN, "no video stream to measure")]
    meta = {"duration_s": info.duration_s, "resolution": info.resolution, "fps": info.fps}
    problems = []
    if info.duration_s <= 0:
        problems.append("its duration is not positive")
    if expected_duration_s is not None and abs(info.duration_s - expected_duration_s) > tolerance_s:
        problems.append(f"it lasts {info.duration_s:.2f} s, expected {expected_duration_s:.2f} s")
    if max_duration_s is not None and info.duration_s > max_duration_s:
        problems.append(f"it lasts {info.duration_s:.2f} s, longer than {max_duration_s:.0f} s")
    if expected_duration_s is not None:
        meta["expected_duration_s"] = round(expected_duration_s, 3)
    probes = Outcome(
        "video_probes", not problems, ERROR,
        "; ".join(problems) if problems else f"a {info.duration_s:.2f} s video at {info.resolution}", meta,
    )
    expected = QUALITY_RESOLUTIONS.get(quality)
    actual = (info.width, info.height)
    size_ok = expected is None or actual == expected
    size = Outcome(
        "video_size", size_ok, WARN,
        f"{info.resolution}, as {quality} quality renders" if size_ok else f"{info.resolution}, {quality} quality renders {expected[0]}x{expected[1]}",
        {"resolution": info.resolution, "expected": f"{expected[0]}x{expected[1]}" if expected else "any"},
    )
    return [probes, size]


def image_checks(path: Path, *, width: int | None, height: int | None) -> list[Outcome]:
    """`thumbnail_decodes`: a JPEG that decodes, of the recorded size. `thumbnail_not_blank`: more than one colour."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            image.load()
            fmt, size = image.format, image.size
            extrema = image.convert("L").getextrema()
    except (UnidentifiedImageError, OSError) as exc:
        return [Outcome("thumbnail_decodes", False, ERROR, f"the image does not decode: {exc}"),
                Outcome("thumbnail_not_blank", False, WARN, "no image to look at")]
    problems = []
    if fmt != "JPEG":
        problems.append(f"it is {fmt}, not JPEG")
    if width and height and size != (width, height):
        problems.append(f"it is {size[0]}x{size[1]}, the row says {width}x{height}")
    meta = {"format": fmt or "", "size": f"{size[0]}x{size[1]}"}
    decodes = Outcome("thumbnail_decodes", not problems, ERROR, "; ".join(problems) or f"a {size[0]}x{size[1]} JPEG", meta)
    blank = extrema[0] == extrema[1]
    not_blank = Outcome(
        "thumbnail_not_blank", not blank, WARN,
        "one flat colour: the frame shows nothing" if blank else "the frame has content", {"luma_range": f"{extrema[0]}-{extrema[1]}"},
    )
    return [decodes, not_blank]


def code_checks(path: Path, class_name: str) -> list[Outcome]:
    """`code_checks`: the stored source parses and defines the scene class the renderer will run."""
    from t2m_pipeline.render.codegen import GeneratedCodeError, check_scene_code

    try:
        check_scene_code(path.read_text(encoding="utf-8"), class_name)
    except (GeneratedCodeError, UnicodeDecodeError) as exc:
        return [Outcome("code_checks", False, ERROR, f"the stored code fails the check: {exc}")]
    return [Outcome("code_checks", True, ERROR, f"parses and defines {class_name}")]


def scene_durations(engine: Engine, job_id: str) -> list[float]:
    """The recorded durations of the job's scene videos, newest version per scene, in scene order."""
    with engine.connect() as conn:
        rows = conn.execute(
            text(
                "SELECT DISTINCT ON (s3_key) (metadata->>'duration_s')::float FROM file_metadata "
                "WHERE job_id = :j AND file_type = :scene_video ORDER BY s3_key, created_at DESC"
            ),
            {"j": uuid.UUID(job_id), "scene_video": FileType.SCENE_VIDEO},
        ).scalars()
        return [float(d) for d in rows if d is not None]


# -- pictures -------------------------------------------------------------------------------------------------------


def preview_data_uri(image_bytes: bytes, budget: int = PREVIEW_BUDGET) -> str:
    """The largest small WebP of an image whose data: URI fits `budget` characters.

    The Dagster UI (1.13) renders markdown metadata inline only under 1,000 characters (longer markdown hides behind
    a "[Show Markdown]" button), and its sanitizer lets `data:` through for images: so the preview is a data: URI
    small enough to stay inline. WebP because at these sizes JPEG's tables alone would take most of the budget.
    """
    from PIL import Image

    with Image.open(io.BytesIO(image_bytes)) as opened:
        image = opened.convert("RGB")
    smallest = ""
    for width in PREVIEW_WIDTHS:
        for quality in (60, 45, 30):
            scaled = image if image.width <= width else image.resize((width, max(1, round(image.height * width / image.width))), Image.LANCZOS)
            out = io.BytesIO()
            scaled.save(out, format="WEBP", quality=quality, method=6)
            uri = "data:image/webp;base64," + base64.b64encode(out.getvalue()).decode("ascii")
            if len(uri) <= budget:
                return uri
            smallest = uri
    return smallest


def video_preview(path: Path) -> str | None:
    """A frame of the video (where its thumbnail would be taken) as a small data: URI, or None if none decodes."""
    from t2m_pipeline.render.media import MediaError, extract_thumbnail

    try:
        return preview_data_uri(extract_thumbnail(path, max_width=PREVIEW_WIDTHS[0]).jpeg)
    except MediaError:
        return None
