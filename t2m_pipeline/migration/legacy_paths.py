"""The legacy system's naming rules, in one place: topic slugs, scene/version file names, upload names, and how a
legacy path (raw bytes on disk) is written as text in the ledger.

Ledger text form: the path relative to the legacy root, `/`-separated, UTF-8; every byte that is not valid UTF-8,
every control character and `%` itself are written as `%XX`, so the text form is unambiguous and reversible
(`ledger_path`: except for the rare path whose text form is over 2,000 bytes, which is cut and hashed).
A server-side copy of a file for another job (attribution's copy rule) has a ledger row of its own, keyed
`{path}%@copy/{job id}` (`copy_ledger_path`): `%@` is in no path's text form, so it names no other file.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

_ESCAPE_CHARS = {chr(c) for c in range(0x20)} | {"\x7f", "%"}
_UPLOAD_NAME = re.compile(
    r"^(?P<clerk>.+)_(?P<stamp>\d{8}_\d{6})_(?P<md5>[0-9a-f]{8})(?P<ext>\.[^./]{1,16})?$", re.DOTALL
)
QUALITY_FOLDERS = ("480p15", "720p30", "1080p60", "1440p60")  # low -> production
UPLOAD_FILE_TYPES = ("image", "video", "audio", "document", "archive")
CLERK_ID = re.compile(r"^[A-Za-z0-9_-]{1,255}$")
MAX_LEDGER_PATH_BYTES = 2000


def slugify(topic: str) -> str:
    """The legacy folder rule: `re.sub(r'[^a-z0-9_]+', '_', topic.lower())`."""
    return re.sub(r"[^a-z0-9_]+", "_", topic.lower())


def path_text(raw: bytes) -> str:
    """Raw path bytes -> the ledger's text form (see the module docstring)."""
    if raw.isascii() and raw.decode("ascii").isprintable() and b"%" not in raw:
        return raw.decode("ascii")  # nothing to escape (ASCII's unprintables are exactly its control characters)
    return _escaped_path_text(raw)


def _escaped_path_text(raw: bytes) -> str:
    out = []
    for ch in raw.decode("utf-8", "surrogateescape"):
        code = ord(ch)
        if 0xDC80 <= code <= 0xDCFF:  # a byte that was not UTF-8
            out.append(f"%{code - 0xDC00:02X}")
        elif ch in _ESCAPE_CHARS:
            out.append(f"%{code:02X}")
        else:
            out.append(ch)
    return "".join(out)


def ledger_path(raw: bytes, limit: int = MAX_LEDGER_PATH_BYTES) -> str:
    """The ledger's key for a raw path (or Redis key): `path_text`, cut when too long for a unique index.

    PostgreSQL's btree index holds at most 2,704 bytes per row, and one path over it used to fail the ledger write
    of the whole run. A deep tree of non-UTF-8 names (each byte written `%XX`) gets there; the legacy platform never
    did. Such a path keeps its first bytes and ends with `%~` and the SHA-256 of the raw path: still unique, never
    the text form of another path (there `%` is always followed by two hex digits), but not reversible.
    """
    text = path_text(raw)
    if len(text.encode()) <= limit:
        return text
    head = text.encode()[: limit - 80].decode("utf-8", "ignore")
    return f"{head}%~{hashlib.sha256(raw).hexdigest()}"


COPY_MARK = "%@copy/"


def copy_ledger_path(legacy_path: str, job_id: object) -> str:
    """The ledger key of the copy of `legacy_path` made for job `job_id`."""
    return f"{legacy_path}{COPY_MARK}{job_id}"


def split_copy_path(ledger_key: str) -> tuple[str, str | None]:
    """A ledger key -> (the legacy path, the job id of the copy or None for the file's own row)."""
    path, mark, job = ledger_key.partition(COPY_MARK)
    return (path, job) if mark else (ledger_key, None)


def path_bytes(text: str) -> bytes:
    """The inverse of `path_text`."""
    out = bytearray()
    i = 0
    while i < len(text):
        if text[i] == "%" and i + 3 <= len(text) and re.match(r"[0-9A-F]{2}", text[i + 1 : i + 3]):
            out.append(int(text[i + 1 : i + 3], 16))
            i += 3
        else:
            out += text[i].encode("utf-8")
            i += 1
    return bytes(out)


def display_name(raw: bytes) -> str:
    """A file name as text for metadata (`original_filename`): undecodable bytes become U+FFFD."""
    return raw.decode("utf-8", "replace")


def _exact(pattern: str, text: str) -> re.Match | None:
    return re.fullmatch(pattern, text, re.DOTALL)


def scene_folder_number(name: str) -> int | None:
    """`scene{N}` exactly (so `scene1` never matches `scene10`), N from 1 to 999."""
    m = _exact(r"scene([1-9][0-9]{0,2})", name)
    return int(m.group(1)) if m else None


def code_version(slug: str, scene: int, name: str) -> int | None:
    m = _exact(rf"{re.escape(slug)}_scene{scene}_v([0-9]+)\.py", name)
    return int(m.group(1)) if m else None


def is_scene_log(slug: str, scene: int, name: str) -> bool:
    base = rf"{re.escape(slug)}_scene{scene}_v[0-9]+"
    return bool(_exact(rf"{base}_error_[0-9]+\.log", name) or _exact(rf"{base}_(v?fix_log)\.txt", name))


def media_version(slug: str, name: str) -> tuple[int, int] | None:
    """`{slug}_scene{N}_v{K}` (a media/videos folder) -> (N, K)."""
    m = _exact(rf"{re.escape(slug)}_scene([1-9][0-9]{{0,2}})_v([0-9]+)", name)
    return (int(m.group(1)), int(m.group(2))) if m else None


def is_failed_plan(data: bytes) -> bool:
    """An implementation plan whose text starts with `# Scene N - Error:` is a failed plan."""
    return bool(re.match(rb"\s*# Scene [0-9]+ - Error:", data[:200]))


@dataclass(frozen=True)
class UploadName:
    clerk_user_id: str
    stamp: str
    name_md5: str
    file_id: str
    ext: str


def parse_upload_name(name: str) -> UploadName | None:
    """`{clerk}_{YYYYmmdd_HHMMSS}_{md5[:8]}{ext}`; the file id is the name without its extension."""
    m = _UPLOAD_NAME.match(name)
    if not m or not CLERK_ID.match(m.group("clerk")):
        return None
    ext = m.group("ext") or ""
    return UploadName(m.group("clerk"), m.group("stamp"), m.group("md5"), name[: len(name) - len(ext)], ext)
