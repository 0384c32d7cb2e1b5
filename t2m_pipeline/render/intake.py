"""Taking files out of a render directory the render controlled: nothing it wrote is trusted until checked.

A file is taken only when every component of its path, from the render directory down, is a real directory or,
last, a regular file with one link: each opened relative to its parent's descriptor with O_NOFOLLOW (no symlink at
any level, no `..`), the final one O_NONBLOCK too (a FIFO never blocks us), its resolved path inside the directory,
its size under the cap. It is copied through that descriptor into a directory of the worker's own, so what is
probed and uploaded is what was checked, whatever the render does afterwards.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from t2m_pipeline.render.media import MediaError, VideoInfo, probe_video

MAX_VIDEO_BYTES = 1 << 30
MAX_LOG_BYTES = 1_000_000
MAX_DURATION_S = 3600.0
MAX_PIXELS = 7680 * 4320
_CHUNK = 1 << 20


class IntakeError(ValueError):
    """A render output that is not taken; the message says why in one line."""


@dataclass(frozen=True)
class TakenFile:
    path: Path  # the worker's copy
    size: int


def _components(relative: str) -> list[str]:
    parts = PurePosixPath(relative).parts
    if not parts or PurePosixPath(relative).is_absolute() or any(p in ("", ".", "..") for p in parts):
        raise IntakeError(f"{relative!r} is not a plain relative path")
    return list(parts)


def open_inside(root: Path, relative: str) -> int:
    """A read-only descriptor of root/relative, refusing symlinks at every level and anything but a regular file."""
    parts = _components(relative)
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        dir_fd = os.open(root, flags | os.O_DIRECTORY)
    except OSError as exc:
        raise IntakeError(f"render directory unreadable: {exc.strerror}") from None
    try:
        for part in parts[:-1]:
            try:
                next_fd = os.open(part, flags | os.O_DIRECTORY, dir_fd=dir_fd)
            except OSError as exc:
                raise IntakeError(f"{relative}: {part} is not a directory of the render ({exc.strerror})") from None
            os.close(dir_fd)
            dir_fd = next_fd
        try:
            fd = os.open(parts[-1], flags | os.O_NONBLOCK | os.O_NOCTTY, dir_fd=dir_fd)
        except OSError as exc:
            raise IntakeError(f"{relative}: not a regular file of the render ({exc.strerror})") from None
    finally:
        os.close(dir_fd)
    st = os.fstat(fd)
    resolved = os.path.realpath(f"/proc/self/fd/{fd}")
    real_root = os.path.realpath(root)
    if not stat.S_ISREG(st.st_mode) or st.st_nlink != 1 or not resolved.startswith(real_root.rstrip("/") + "/"):
        os.close(fd)
        raise IntakeError(f"{relative}: not a regular file of the render")
    return fd


def take_file(root: Path, relative: str, dest: Path, *, max_bytes: int, tail: bool = False, checked: bool = True) -> TakenFile:
    """Copy root/relative to `dest` (a path of the worker's). Over `max_bytes`: refused, or with `tail` the last
    `max_bytes` bytes. `checked=False` is the naive intake (follows links), for controls in tests only."""
    fd = open_inside(root, relative) if checked else os.open(root / relative, os.O_RDONLY | os.O_CLOEXEC)
    try:
        size = os.fstat(fd).st_size
        if size > max_bytes:
            if not tail:
                raise IntakeError(f"{relative}: {size} bytes, over the limit of {max_bytes}")
            os.lseek(fd, size - max_bytes, os.SEEK_SET)
        written = 0
        with open(dest, "xb") as out:
            while written < max_bytes:
                chunk = os.read(fd, min(_CHUNK, max_bytes - written))
                if not chunk:
                    break
                out.write(chunk)
                written += len(chunk)
        return TakenFile(dest, written)
    finally:
        os.close(fd)


def check_video(path: Path) -> VideoInfo:
    """Probe the worker's copy: a readable video stream of sane size and length, else IntakeError."""
    try:
        info = probe_video(path)
    except MediaError as exc:
        raise IntakeError(f"the render's output is not a readable video: {str(exc).split(': ', 1)[-1][:200]}") from None
    if info.width <= 0 or info.height <= 0 or info.width * info.height > MAX_PIXELS:
        raise IntakeError(f"the render's video has an implausible size {info.width}x{info.height}")
    if not 0 < info.duration_s <= MAX_DURATION_S:
        raise IntakeError(f"the render's video lasts {info.duration_s} s: expected more than 0 and at most {MAX_DURATION_S:g}")
    return info


def read_log(root: Path, relative: str, scratch: Path, *, max_bytes: int = MAX_LOG_BYTES, checked: bool = True) -> str:
    """The render log's last `max_bytes` bytes as text, or one line saying why there is none."""
    dest = scratch / "render.log"
    try:
        taken = take_file(root, relative, dest, max_bytes=max_bytes, tail=True, checked=checked)
    except (IntakeError, OSError) as exc:
        return f"(no render log: {exc})\n"
    text = taken.path.read_bytes().decode("utf-8", "replace")
    dest.unlink()
    return text
