"""The S3 key layout (architecture.md's table), in one place.

Keys are built from ids (UUIDs, scene numbers, file ids); file names only ever pass through `sanitize_name`, whose
output cannot contain `/`, a `.`/`..` segment or control characters. Every builder checks the result with
`check_key`, so no key longer than S3's 1,024 bytes, with `//` or a leading `/`, can leave this module.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
import uuid
from datetime import datetime, timezone

MAX_KEY_BYTES = 1024
MAX_NAME_BYTES = 180
_SAFE_NAME_CHARS = re.compile(r"[^A-Za-z0-9._-]+")
_SAFE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,127}$")
_SAFE_EXT = re.compile(r"^\.[a-z0-9]{1,10}$")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")

UPLOAD_BUCKET_BY_TYPE = {
    "video": "videos",
    "audio": "videos",
    "image": "thumbnails",
    "document": "code",
    "archive": "code",
    "code": "code",
}


class UnsafeKeyError(ValueError):
    """A key or key component would break the layout's guarantees."""


def check_key(key: str) -> str:
    if not key or key.startswith("/") or "//" in key:
        raise UnsafeKeyError(f"unsafe S3 key {key!r}: empty, leading '/' or '//'")
    if _CONTROL.search(key):
        raise UnsafeKeyError(f"unsafe S3 key {key!r}: control character")
    if any(part in (".", "..") for part in key.split("/")):
        raise UnsafeKeyError(f"unsafe S3 key {key!r}: '.' or '..' segment")
    if len(key.encode("utf-8")) > MAX_KEY_BYTES:
        raise UnsafeKeyError(f"unsafe S3 key: {len(key.encode())} bytes, over S3's {MAX_KEY_BYTES}")
    return key


def canonical_uuid(value: object, what: str = "id") -> str:
    try:
        return str(uuid.UUID(str(value)))
    except (ValueError, TypeError, AttributeError):
        raise UnsafeKeyError(f"{what} {value!r} is not a UUID") from None


def scene_segment(scene_number: int) -> str:
    if isinstance(scene_number, bool) or not isinstance(scene_number, int) or not 1 <= scene_number <= 999:
        raise UnsafeKeyError(f"scene number {scene_number!r} must be an integer from 1 to 999")
    return f"scene_{scene_number:03d}"


def sanitize_name(name: str | bytes) -> str:
    """A file name reduced to `[A-Za-z0-9._-]`; when anything changed, a short hash of the original keeps it unique.

    The original goes into the object's metadata, never into the key.
    """
    raw = name if isinstance(name, bytes) else str(name).encode("utf-8", "surrogateescape")
    text = raw.decode("utf-8", "replace")
    ascii_text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode("ascii")
    cleaned = _SAFE_NAME_CHARS.sub("_", ascii_text).strip("._-")
    stem, dot, ext = cleaned.rpartition(".")
    if not dot:
        stem, ext = cleaned, ""
    ext = ext[:16]
    changed = cleaned != text or not cleaned
    stem = stem[: MAX_NAME_BYTES - 32] or "file"
    if changed:
        stem = f"{stem}-{hashlib.sha256(raw).hexdigest()[:10]}"
    result = f"{stem}.{ext}" if ext else stem
    return result


def _check_id(value: str, what: str) -> str:
    if not isinstance(value, str) or not _SAFE_ID.fullmatch(value):
        raise UnsafeKeyError(f"{what} {value!r} must match {_SAFE_ID.pattern}")
    return value


def _job_prefix(user_id: object, job_id: object) -> str:
    return f"users/{canonical_uuid(user_id, 'user id')}/jobs/{canonical_uuid(job_id, 'job id')}"


def scene_code_key(user_id: object, job_id: object, scene_number: int) -> str:
    return check_key(f"{_job_prefix(user_id, job_id)}/code/{scene_segment(scene_number)}/scene.py")


def scene_plan_key(user_id: object, job_id: object, scene_number: int, name: str) -> str:
    return check_key(f"{_job_prefix(user_id, job_id)}/code/{scene_segment(scene_number)}/plans/{sanitize_name(name)}")


def scene_log_key(user_id: object, job_id: object, scene_number: int, name: str) -> str:
    return check_key(f"{_job_prefix(user_id, job_id)}/code/{scene_segment(scene_number)}/logs/{sanitize_name(name)}")


def job_plan_key(user_id: object, job_id: object, name: str) -> str:
    return check_key(f"{_job_prefix(user_id, job_id)}/code/plans/{sanitize_name(name)}")


def scene_video_key(user_id: object, job_id: object, scene_number: int, subtitles: bool = False) -> str:
    name = "output.srt" if subtitles else "output.mp4"
    return check_key(f"{_job_prefix(user_id, job_id)}/videos/{scene_segment(scene_number)}/{name}")


def combined_video_key(user_id: object, job_id: object, subtitles: bool = False) -> str:
    name = "output.srt" if subtitles else "output.mp4"
    return check_key(f"{_job_prefix(user_id, job_id)}/videos/combined/{name}")


def thumbnail_key(user_id: object, job_id: object, scene_number: int) -> str:
    return check_key(f"{_job_prefix(user_id, job_id)}/thumbnails/{scene_segment(scene_number)}/thumbnail.jpg")


def temp_key(session_id: str, timestamp: datetime, name: str) -> str:
    if timestamp.tzinfo is None:
        raise UnsafeKeyError("temp key timestamps must be timezone-aware")
    stamp = timestamp.astimezone(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    return check_key(f"temp/{_check_id(session_id, 'session id')}/{stamp}/{sanitize_name(name)}")


REPORTS_PREFIX = "reports/"


def report_key(kind: str, batch_id: object, name: str) -> str:
    """`reports/{kind}/{batch_id}/{name}` in the code bucket: a report built from the metadata (a migration batch's
    CSV). Derived and rebuildable, owned by the platform, not a user: no `file_metadata` row, and the reconcile
    audit passes the prefix over."""
    return check_key(f"{REPORTS_PREFIX}{_check_id(kind, 'report kind')}/{canonical_uuid(batch_id, 'batch id')}/{sanitize_name(name)}")


def is_report_key(key: str) -> bool:
    return key.startswith(REPORTS_PREFIX)


def upload_key(user_id: object, file_id: str, ext: str) -> str:
    ext = ext.lower()
    if ext and not _SAFE_EXT.fullmatch(ext):
        raise UnsafeKeyError(f"extension {ext!r} must match {_SAFE_EXT.pattern}")
    return check_key(f"users/{canonical_uuid(user_id, 'user id')}/uploads/{_check_id(file_id, 'file id')}{ext}")


def upload_bucket_kind(file_type: str) -> str:
    try:
        return UPLOAD_BUCKET_BY_TYPE[file_type]
    except KeyError:
        raise UnsafeKeyError(f"upload file type {file_type!r}: expected one of {'|'.join(UPLOAD_BUCKET_BY_TYPE)}") from None


def unattributed_key(slug: str, path_parts: list[str | bytes]) -> str:
    """`legacy/unattributed/{slug}/{path in the topic folder}`, every segment sanitized. A path too deep for an S3 key
    becomes `legacy/unattributed/{slug}/long-paths/{hash of the path}-{its name}` (the path itself is in metadata)."""
    if not path_parts:
        raise UnsafeKeyError("an unattributed legacy key needs a path inside the topic folder")
    segments = [sanitize_name(slug)] + [sanitize_name(part) for part in path_parts]
    key = "legacy/unattributed/" + "/".join(segments)
    if len(key.encode("utf-8")) > MAX_KEY_BYTES:
        raw = b"/".join(p if isinstance(p, bytes) else str(p).encode("utf-8", "surrogateescape") for p in path_parts)
        key = f"legacy/unattributed/{segments[0]}/long-paths/{hashlib.sha256(raw).hexdigest()[:32]}-{segments[-1][:120]}"
    return check_key(key)
