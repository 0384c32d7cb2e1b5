"""The machine's render cores: at most one local render per core at once, however many runs and steps want one.

A job's scenes render in parallel inside one step (`defs/scenes/assets.py`), and several steps may run at once (two
jobs, a backfill, a re-run from the UI): each local render first holds one of the machine's cores, a lock file of
its own (`flock`, so a worker that dies gives its core back with its last file descriptor). Renders never
oversubscribe the cores, and a free core is taken within `POLL_S` by whoever waits for one.

ECS renders (`render/ecs.py`) run on tasks of their own and take no core here.
"""

from __future__ import annotations

import fcntl
import os
import stat
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

POLL_S = 0.05
DIRECTORY_NAME = "t2m-render-cores"


class RenderCoresError(RuntimeError):
    """The lock directory is not this worker's own (another user made it, or it is a link): renders fail closed."""


def machine_cores() -> int:
    """The cores this process may run on (its CPU affinity, which a container's cpuset narrows)."""
    return max(1, len(os.sched_getaffinity(0)))


def _directory(root: str | Path | None) -> int:
    """The lock directory, made 0700 if missing; refused unless it is a real directory owned by us and closed to others."""
    path = Path(root or tempfile.gettempdir()) / DIRECTORY_NAME
    try:
        path.mkdir(mode=0o700)
    except FileExistsError:
        pass
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    info = os.fstat(fd)
    if info.st_uid != os.geteuid() or stat.S_IMODE(info.st_mode) & 0o077:
        os.close(fd)
        raise RenderCoresError(f"{path} is not this worker's own directory (owner uid {info.st_uid}, mode {stat.S_IMODE(info.st_mode):o})")
    return fd


@contextmanager
def render_core(cores: int | None = None, root: str | Path | None = None) -> Iterator[int]:
    """Hold one of the machine's `cores` (default: `machine_cores()`) for the block; yields its number."""
    count = cores or machine_cores()
    directory = _directory(root)
    try:
        while True:
            for number in range(count):
                fd = os.open(f"core-{number}", os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600, dir_fd=directory)
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    os.close(fd)
                    continue
                try:
                    yield number
                finally:
                    os.close(fd)  # releases the lock
                return
            time.sleep(POLL_S)
    finally:
        os.close(directory)
