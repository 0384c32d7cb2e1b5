"""A legacy entry -> what becomes of it: a layout key (with owner, type and version order) or a skip reason.

The rules follow legacy-system.md and the layout table in architecture.md; keys come only from
`t2m_pipeline.storage.layout` builders (names pass through `sanitize_name`; the original is kept in metadata).
"""

from __future__ import annotations

import mimetypes
import re
import uuid
from dataclasses import dataclass, field

from t2m_pipeline.migration.attribution import Attribution
from t2m_pipeline.migration.discovery import RENDER_CACHE, Entry
from t2m_pipeline.migration.legacy_paths import (
    QUALITY_FOLDERS,
    code_version,
    display_name,
    is_scene_log,
    media_version,
    parse_upload_name,
    scene_folder_number,
)
from t2m_pipeline.storage import layout
from t2m_pipeline.vocabulary import FileType

MIN_VALID_VIDEO_BYTES = 1024
UNATTRIBUTED_UPLOADS = "storage-uploads"  # cannot collide with a topic slug: slugs never contain '-'
_CONTENT_TYPES = {
    ".py": "text/x-python",
    ".txt": "text/plain",
    ".log": "text/plain",
    ".json": "application/json",
    ".srt": "application/x-subrip",
    ".mp4": "video/mp4",
}
_MIME = re.compile(r"[A-Za-z0-9][\w.+-]*/[\w.+-]+", re.ASCII)  # whole value (fullmatch): no trailing newline


class Skip(Exception):
    def __init__(self, outcome: str, reason: str):
        super().__init__(reason)
        self.outcome, self.reason = outcome, reason


@dataclass
class Target:
    """Where a legacy file goes. Files with the same (bucket kind, key) become versions, oldest `order` first."""

    bucket_kind: str
    key: str
    user_id: uuid.UUID
    file_type: str
    content_type: str
    original_filename: str
    job_id: uuid.UUID | None = None
    scene_number: int | None = None
    order: tuple = ()
    check: str | None = None  # "video" (under 1 KB is invalid) or "plan" (a failed plan) or None
    legacy_checksum: str | None = None
    metadata: dict = field(default_factory=dict)


def content_type_for(name: str) -> str:
    suffix = name[name.rfind(".") :].lower() if "." in name else ""
    return _CONTENT_TYPES.get(suffix) or mimetypes.guess_type(name, strict=False)[0] or "application/octet-stream"


def _bucket_for_unattributed(name: str) -> str:
    ctype = content_type_for(name)
    if ctype.startswith(("video/", "audio/")) or name.lower().endswith(".srt"):
        return "videos"
    if ctype.startswith("image/"):
        return "thumbnails"
    return "code"


def map_topic_entry(entry: Entry, attribution: Attribution, system_user_id: uuid.UUID) -> Target:
    """A file of `output/{folder}/...` -> its target under the attribution's owner (`legacy/unattributed/` without
    one), or Skip. A copy for a job that reused the folder is the same mapping with that job as the owner."""
    parts = entry.parts[2:]  # inside the topic folder
    folder = entry.parts[1].decode("utf-8", "surrogateescape")
    names = [p.decode("utf-8", "surrogateescape") for p in parts]
    name = names[-1]
    _skip_caches(names)
    original = display_name(entry.parts[-1])
    meta: dict = {"topic_folder": display_name(entry.parts[1]), **attribution.metadata()}

    if attribution.owner is None:
        meta["unattributed"] = True
        return Target(
            _bucket_for_unattributed(name),
            layout.unattributed_key(entry.parts[1], parts),
            system_user_id,
            FileType.LEGACY_UNATTRIBUTED,
            content_type_for(name),
            original,
            check=_check_for(names),
            metadata=meta,
        )

    owner = attribution.owner
    user, job = owner.user_id, owner.job_id

    def target(kind, key, file_type, *, scene=None, order=(), check=None) -> Target:
        return Target(kind, key, user, file_type, content_type_for(name), original, job, scene, order, check, metadata=meta)

    if len(names) == 1:
        if name == f"{folder}_scene_outline.txt":
            return target("code", layout.job_plan_key(user, job, parts[-1]), FileType.JOB_PLAN)
        if name in (f"{folder}_combined.mp4", f"{folder}_combined.srt"):
            srt = name.endswith(".srt")
            return target(
                "videos", layout.combined_video_key(user, job, subtitles=srt), FileType.SUBTITLES if srt else FileType.COMBINED_VIDEO,
                check=None if srt else "video",
            )
    if names[0] == "media" and len(names) == 5 and names[1] == "videos":
        version = media_version(folder, names[2])
        # A render-cache hit: the cached video copied as `{slug}_scene{N}_v{K}.mp4` (no .srt, no code file): the
        # scene's video all the same, as the legacy combiner used it.
        cache_hit = f"{names[2]}.mp4"
        if version and names[3] in QUALITY_FOLDERS and names[4] in (f"Scene{version[0]}.mp4", f"Scene{version[0]}.srt", cache_hit):
            scene, k = version
            srt = names[4].endswith(".srt")
            return target(
                "videos", layout.scene_video_key(user, job, scene, subtitles=srt), FileType.SUBTITLES if srt else FileType.SCENE_VIDEO,
                scene=scene, order=(k, QUALITY_FOLDERS.index(names[3])), check=None if srt else "video",
            )
    scene = scene_folder_number(names[0])
    if scene is not None and len(names) >= 2:
        if len(names) == 2 and name == f"{folder}_scene{scene}_implementation_plan.txt":
            return target("code", layout.scene_plan_key(user, job, scene, parts[-1]), FileType.SCENE_PLAN, scene=scene, check="plan")
        if len(names) == 3 and names[1] == "subplans":
            return target("code", layout.scene_plan_key(user, job, scene, parts[-1]), FileType.SCENE_PLAN, scene=scene, check="plan")
        if len(names) == 3 and names[1] == "rag_cache":  # kept beside the scene's plans
            return target("code", layout.scene_plan_key(user, job, scene, b"rag_cache__" + parts[-1]), FileType.RAG_CACHE, scene=scene)
        if len(names) == 3 and names[1] == "code":
            k = code_version(folder, scene, name)
            if k is not None:
                return target("code", layout.scene_code_key(user, job, scene), FileType.SCENE_CODE, scene=scene, order=(k,))
            if is_scene_log(folder, scene, name):
                return target("code", layout.scene_log_key(user, job, scene, parts[-1]), FileType.RENDER_LOG, scene=scene)
        # Anything else inside a scene folder: kept with the scene's plans, flagged, its path in the name.
        meta["unrecognised"] = True
        inner = b"legacy__" + b"__".join(parts[1:])
        return target("code", layout.scene_plan_key(user, job, scene, inner), FileType.LEGACY_OTHER, scene=scene)
    meta["unrecognised"] = True
    return target("code", layout.job_plan_key(user, job, b"legacy__" + b"__".join(parts)), FileType.LEGACY_OTHER)


def _skip_caches(names: list[str]) -> None:
    name = names[-1]
    if len(names) == 1 and name == "session_id.txt":
        raise Skip("skipped", "session id marker (not worth migrating)")
    if len(names) == 2 and scene_folder_number(names[0]) is not None and name == "succ_rendered.txt":
        raise Skip("skipped", "success marker (rendered state comes from the media folder)")
    if names[0] == "media" and len(names) >= 2:
        if names[1] in ("images", "Tex", "texts"):
            raise Skip("skipped", f"manim cache (media/{names[1]})")
        if "partial_movie_files" in names:
            raise Skip("skipped", "manim intermediate (partial_movie_files)")


def _check_for(names: list[str]) -> str | None:
    if names[-1].lower().endswith(".mp4"):
        return "video"
    if scene_folder_number(names[0]) is not None and names[-1].endswith(".txt"):
        return "plan"
    return None


def map_loose_entry(entry: Entry) -> Target:
    parts = entry.parts
    if parts[0] == b"output" and len(parts) >= 2 and parts[1] == RENDER_CACHE:
        raise Skip("skipped", "render cache (derived)")
    if parts == [b"output", b"session_id.txt"]:
        raise Skip("skipped", "session id marker (not worth migrating)")
    if parts[0] == b"output":
        raise Skip("skipped", "a file at the output root, outside any topic folder")
    if parts[0] == b"storage":
        raise Skip("skipped", "not part of the legacy upload store (storage/uploads/{type}/)")
    raise Skip("skipped", "outside output/ and storage/")


def map_upload_entry(entry: Entry, index, users: dict[str, uuid.UUID], system_user_id: uuid.UUID) -> Target:
    """`storage/uploads/{type}/[{subdir}/]{clerk}_{stamp}_{md5}{ext}` -> `users/{user}/uploads/{file_id}{ext}`."""
    parts = entry.parts
    file_type = parts[2].decode("utf-8", "replace")
    name = parts[-1].decode("utf-8", "surrogateescape")
    parsed = parse_upload_name(name)
    record = index.file_records.get(parsed.file_id) if parsed else None
    meta: dict = {"upload_file_type": file_type}
    if len(parts) > 4:
        meta["upload_subdir"] = display_name(b"/".join(parts[3:-1]))
    clerk = parsed.clerk_user_id if parsed else None
    listed = index.owner_by_file_id.get(parsed.file_id) if parsed else None
    if clerk and listed and listed != clerk:
        meta["owner_conflict"] = {"name_prefix": clerk, "user_files": listed}
    clerk = clerk or listed
    original = (record or {}).get("original_filename")
    if not isinstance(original, str) or not original:  # another system's record may hold anything there
        original = display_name(parts[-1])
    mime = (record or {}).get("mime_type")
    ctype = mime if isinstance(mime, str) and _MIME.fullmatch(mime) else content_type_for(name)
    checksum = (record or {}).get("checksum")
    checksum = checksum.lower() if isinstance(checksum, str) and re.fullmatch(r"[0-9a-fA-F]{64}", checksum) else None
    if record is not None:
        meta["legacy_record"] = {k: record.get(k) for k in ("filename", "original_filename", "mime_type", "created_at")}
    ext = parsed.ext.lower() if parsed else ""
    try:
        if not (parsed and clerk and clerk in users and file_type in layout.UPLOAD_BUCKET_BY_TYPE):
            raise layout.UnsafeKeyError("owner or type unknown")
        key = layout.upload_key(users[clerk], parsed.file_id, ext if re.fullmatch(r"\.[a-z0-9]{1,10}", ext) else "")
        kind = layout.upload_bucket_kind(file_type)
        user = users[clerk]
    except layout.UnsafeKeyError as exc:
        meta.update(unattributed=True, why=str(exc))
        key = layout.unattributed_key(UNATTRIBUTED_UPLOADS, parts[2:])
        kind = _bucket_for_unattributed(name)
        user = system_user_id
    # The type folder's name is only trusted when it is a known type: it becomes `file_metadata.file_type` (50
    # characters) and the object's `file-type` S3 metadata (ASCII only). Any other folder name stays in metadata.
    known_type = file_type if file_type in layout.UPLOAD_BUCKET_BY_TYPE else FileType.LEGACY_OTHER
    return Target(kind, key, user, known_type, ctype, original, legacy_checksum=checksum, metadata=meta)
