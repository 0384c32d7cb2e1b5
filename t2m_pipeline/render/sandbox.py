"""The local render boundary: generated code runs as nobody, sees almost nothing, and cannot outlive its render.

Built for a worker that runs as root (CI, the dev VM) and holds database and S3 credentials:

1. A render slot `t2m-render-XXXX/` (root, 0711) under the work root, with `work/`: the render's only writable
   directory, a size-limited tmpfs owned by a fresh unprivileged uid (1.7e9 + random, in no passwd), mode 0700.
2. A per-render cgroup (v1 `memory` + `pids` hierarchies, or cgroup v2 where the worker's cgroup delegates them)
   nested under the worker's own cgroup, so limits add to whatever already applies. Where neither exists the
   rlimits below still hold per process and per user namespace, and `t2m doctor` says which is in force.
3. Stage one, as root: `unshare --mount` (a private mount namespace, nothing leaks to the host), join the cgroups,
   bind what the sandbox must see (the Python prefix, the venv) under the slot where the unprivileged uid can reach
   them (/root is 0700), set rlimits (`prlimit`), then `setpriv` to the render uid with no groups, an empty
   bounding set, no ambient or inheritable capabilities and no_new_privs.
4. Stage two, unprivileged: bubblewrap builds the view: its own user (mapped to that uid; no capabilities, nested
   user namespaces disabled), mount, pid, network (loopback only), ipc, uts and cgroup namespaces; read-only /usr
   (without /usr/local), the few /etc files libraries need, fonts, the interpreter and its packages; the scene code
   and the entrypoint as read-only data; /t2m-render writable; a small /tmp; an environment built from an
   allowlist. Not there: /root, /home, the repository, DAGSTER_HOME, the legacy root, other renders, /run, /sys.
5. The entrypoint is pid 2 under bubblewrap's init: when it exits, or when we kill that init on timeout, the kernel
   kills every process in the namespace (setsid'ed grandchildren included); the cgroup is swept too.

Every protection has a name in PROTECTIONS. Tests switch one off (`protections=PROTECTIONS - {"network"}`) for a
control run that shows its attack getting through; no setting does. Unconfined rendering is a different backend,
chosen only with T2M_RENDER_SANDBOX=unconfined-local-only.
"""

from __future__ import annotations

import ctypes
import json
import logging
import os
import pwd
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

MIB = 1 << 20
GIB = 1 << 30
PROTECTIONS = frozenset({"unprivileged", "filesystem", "network", "process_tree", "environment", "limits", "disk"})
INSIDE_WORK = "/t2m-render"  # the writable directory, as the sandbox sees it
INSIDE_CODE = "/t2m-code/scene.py"
INSIDE_ENTRYPOINT = "/t2m-entry/entrypoint.py"
UID_BASE, UID_SPAN = 1_700_000_000, 100_000_000
SYSTEM_READ_ONLY = (
    "/usr",
    "/etc/fonts",
    "/etc/ld.so.cache",
    "/etc/ld.so.conf",
    "/etc/ld.so.conf.d",
    "/etc/alternatives",
    "/etc/localtime",
    "/var/cache/fontconfig",
)
MERGED_USR_LINKS = ("bin", "sbin", "lib", "lib32", "lib64", "libx32")
ENV_ALLOWLIST = {
    "PATH": "/usr/bin:/bin",
    "LANG": "C.UTF-8",
    "LC_ALL": "C.UTF-8",
    "PYTHONDONTWRITEBYTECODE": "1",
    "PYTHONNOUSERSITE": "1",
    "OMP_NUM_THREADS": "1",
    "OPENBLAS_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
}
PIPES_ENV = ("DAGSTER_PIPES_CONTEXT", "DAGSTER_PIPES_MESSAGES")
MAX_LINE_BYTES = 256 * 1024
MAX_STDOUT_BYTES = 16 * MIB
MAX_STDERR_BYTES = 64 * 1024
SAMPLE_S = 0.05  # how often a running render's task count is sampled (its peak is reported)
PUMP_JOIN_S = 2.0  # after the tree is dead its pipes close at once; only a survivor (no sandbox) holds one open
_STAGE_ONE = r"""set -eu
while [ "$1" != "--binds" ]; do echo $$ > "$1"; shift; done; shift
while [ "$1" != "--" ]; do mount --bind "$1" "$2"; shift 2; done; shift
exec "$@"
"""


class SandboxUnavailableError(RuntimeError):
    """The sandbox cannot be built or did not start here; the message is the one line to show."""


@dataclass(frozen=True)
class RenderLimits:
    """What one render may use. Memory, processes and disk are the cgroup and tmpfs limits; the rlimits hold per
    process (and, for processes, per user namespace) where no cgroup is available."""

    memory_bytes: int = 2 * GIB
    processes: int = 256  # tasks: threads count
    file_bytes: int = 1 * GIB  # RLIMIT_FSIZE: the largest file any process may write
    disk_bytes: int = 1 * GIB  # the tmpfs behind the writable directory
    disk_inodes: int = 20_000
    open_files: int = 512
    cpu_seconds: int = 1800  # RLIMIT_CPU per process
    address_space_bytes: int = 16 * GIB  # RLIMIT_AS per process: a backstop (numpy and pango map a lot)
    tmp_bytes: int = 64 * MIB  # /tmp inside


@dataclass
class Usage:
    """Measured from outside the sandbox, after the render: what it used of its limits."""

    limits_mode: str = "none"
    memory_peak_bytes: int | None = None
    memory_limit_bytes: int | None = None
    oom_kills: int = 0
    memory_limit_hits: int = 0
    processes_refused: int = 0
    processes_limit: int | None = None
    processes_peak: int | None = None
    disk_used_bytes: int | None = None
    disk_limit_bytes: int | None = None

    def describe(self) -> str:
        parts = [f"limits: {self.limits_mode}"]
        if self.memory_peak_bytes is not None:
            parts.append(f"memory peak {self.memory_peak_bytes // MIB} MiB of {(self.memory_limit_bytes or 0) // MIB} MiB")
        if self.oom_kills or self.memory_limit_hits:
            parts.append(f"memory limit reached ({self.oom_kills} killed)")
        if self.processes_limit is not None:
            peak = f"peak {self.processes_peak} of {self.processes_limit}" if self.processes_peak else f"limit {self.processes_limit}"
            parts.append(f"processes {peak}, {self.processes_refused} refused by the cgroup")
        if self.disk_used_bytes is not None:
            parts.append(f"disk {self.disk_used_bytes // MIB} MiB of {(self.disk_limit_bytes or 0) // MIB} MiB")
        return "; ".join(parts)


@dataclass
class SandboxResult:
    returncode: int | None
    timed_out: bool
    seconds: float
    stderr_tail: str
    usage: Usage
    stdout_bytes: int = 0
    stdout_dropped: int = 0


# -- what exists on this machine ----------------------------------------------------------------------------------


def _libc():
    return ctypes.CDLL(None, use_errno=True)


def is_root() -> bool:
    return os.geteuid() == 0


def _proc_cgroups() -> dict[str, str]:
    """controller -> this process's cgroup path ('' -> the v2 path)."""
    paths = {}
    with suppress(OSError):
        for line in Path("/proc/self/cgroup").read_text().splitlines():
            _, controllers, path = line.split(":", 2)
            for controller in controllers.split(",") if controllers else [""]:
                paths[controller] = path
    return paths


def _cgroup_mounts() -> dict[str, str]:
    """controller -> mount point ('' -> the cgroup2 mount)."""
    mounts = {}
    with suppress(OSError):
        for line in Path("/proc/self/mountinfo").read_text().splitlines():
            left, _, right = line.partition(" - ")
            fields, rest = left.split(), right.split()
            if len(fields) < 5 or len(rest) < 3:
                continue
            fstype, options = rest[0], rest[2].split(",")
            if fstype == "cgroup2":
                mounts.setdefault("", fields[4])
            elif fstype == "cgroup":
                for option in options:
                    if option in ("memory", "pids", "freezer"):
                        mounts[option] = fields[4]
    return mounts


@dataclass
class RenderCgroup:
    """One render's cgroup(s): the files stage one writes its pid into, limits written, usage read, tree killed."""

    mode: str  # "cgroup-v1" | "cgroup-v2"
    dirs: dict[str, Path]  # "memory", "pids", "freezer" (v1) or "" (v2) -> directory

    @property
    def procs_files(self) -> list[str]:
        return [str(d / "cgroup.procs") for d in self.dirs.values()]

    def current_tasks(self) -> int:
        d = self.dirs.get("pids") or self.dirs.get("")
        return (_read_int(d / "pids.current") or 0) if d else 0

    def pids(self) -> set[int]:
        found = set()
        for d in self.dirs.values():
            with suppress(OSError, ValueError):
                found |= {int(x) for x in (d / "cgroup.procs").read_text().split()}
        return found

    def kill_all(self, timeout_s: float = 10.0) -> None:
        """SIGKILL everything in the cgroup (frozen first where a freezer exists, so nothing forks in between)."""
        if self.mode == "cgroup-v2":
            with suppress(OSError):
                (self.dirs[""] / "cgroup.kill").write_text("1")
        freezer = self.dirs.get("freezer")
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            pids = self.pids()
            if not pids:
                break
            if freezer:
                with suppress(OSError):
                    (freezer / "freezer.state").write_text("FROZEN")
            for pid in pids:
                with suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, signal.SIGKILL)
            if freezer:
                with suppress(OSError):
                    (freezer / "freezer.state").write_text("THAWED")
            time.sleep(0.02)

    def usage(self, limits: RenderLimits) -> Usage:
        usage = Usage(limits_mode=self.mode, memory_limit_bytes=limits.memory_bytes, processes_limit=limits.processes)
        if self.mode == "cgroup-v1":
            memory, pids = self.dirs["memory"], self.dirs["pids"]
            usage.memory_peak_bytes = _read_int(memory / "memory.max_usage_in_bytes")
            usage.memory_limit_hits = _read_int(memory / "memory.failcnt") or 0
            usage.oom_kills = _keyed(memory / "memory.oom_control", "oom_kill")
            usage.processes_refused = _keyed(pids / "pids.events", "max")
        else:
            d = self.dirs[""]
            usage.memory_peak_bytes = _read_int(d / "memory.peak")
            usage.oom_kills = _keyed(d / "memory.events", "oom_kill")
            usage.memory_limit_hits = _keyed(d / "memory.events", "max")
            usage.processes_refused = _keyed(d / "pids.events", "max")
        return usage

    def remove(self) -> None:
        for d in self.dirs.values():
            for _ in range(50):
                try:
                    d.rmdir()
                    break
                except FileNotFoundError:
                    break
                except OSError:
                    time.sleep(0.02)


def _read_int(path: Path) -> int | None:
    try:
        return int(path.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def _keyed(path: Path, key: str) -> int:
    with suppress(OSError, ValueError):
        for line in path.read_text().splitlines():
            name, _, value = line.partition(" ")
            if name == key:
                return int(value)
    return 0


def cgroup_support() -> tuple[str, str]:
    """(mode, detail): where per-render cgroups can be made here; mode 'rlimit' when nowhere."""
    own, mounts = _proc_cgroups(), _cgroup_mounts()
    if "memory" in mounts and "pids" in mounts and "memory" in own and "pids" in own:
        dirs = [Path(mounts[c] + own[c]) for c in ("memory", "pids")]
        if all(os.access(d, os.W_OK) for d in dirs):
            return "cgroup-v1", f"memory under {dirs[0]}, pids under {dirs[1]}"
    if "" in mounts and "" in own:
        base = Path(mounts[""] + own[""])
        with suppress(OSError):
            controllers = (base / "cgroup.subtree_control").read_text().split()
            if {"memory", "pids"} <= set(controllers) and os.access(base, os.W_OK):
                return "cgroup-v2", f"under {base}"
    return "rlimit", "no writable cgroup with memory and pids controllers: per-process rlimits only"


def create_cgroup(name: str, limits: RenderLimits, parent: RenderCgroup | None = None) -> RenderCgroup | None:
    """A per-render cgroup with the limits written (under `parent`'s, a warm renderer's, if given), or None when
    this machine has none to give."""
    mode, _ = cgroup_support()
    own, mounts = _proc_cgroups(), _cgroup_mounts()
    dirs: dict[str, Path] = {}

    def base(controller: str) -> Path | None:
        if parent is not None:
            return parent.dirs.get(controller)
        return Path(mounts[controller] + own[controller]) if controller in mounts and controller in own else None

    try:
        if parent is not None and parent.mode != mode:
            return None
        if mode == "cgroup-v1":
            for controller in ("memory", "pids", "freezer"):
                if (where := base(controller)) is not None:
                    d = where / name
                    if controller == "freezer" and not os.access(d.parent, os.W_OK):
                        continue
                    d.mkdir()
                    dirs[controller] = d
            (dirs["memory"] / "memory.limit_in_bytes").write_text(str(limits.memory_bytes))
            memsw = dirs["memory"] / "memory.memsw.limit_in_bytes"
            if memsw.exists():
                memsw.write_text(str(limits.memory_bytes))
            (dirs["pids"] / "pids.max").write_text(str(limits.processes))
        elif mode == "cgroup-v2":
            if parent is not None:  # a v2 cgroup with processes in it cannot hold child cgroups with limits
                return None
            d = base("") / name
            d.mkdir()
            dirs[""] = d
            (d / "memory.max").write_text(str(limits.memory_bytes))
            if (d / "memory.swap.max").exists():
                (d / "memory.swap.max").write_text("0")
            (d / "pids.max").write_text(str(limits.processes))
        else:
            return None
    except OSError as exc:
        log.warning("per-render cgroup unavailable (%s): rlimits only", exc)
        RenderCgroup(mode, dirs).remove()
        return None
    return RenderCgroup(mode, dirs)


@dataclass(frozen=True)
class SandboxStatus:
    """What `t2m doctor` reports: can the sandbox be built here, and how."""

    available: bool
    detail: str
    bwrap: str | None = None
    privileged: bool = False
    limits_mode: str = "rlimit"
    disk: str = "per-file cap only"


def sandbox_status() -> SandboxStatus:
    bwrap = shutil.which("bwrap")
    if bwrap is None:
        return SandboxStatus(False, "bubblewrap (bwrap) is not installed")
    for tool in ("unshare", "setpriv", "prlimit"):
        if is_root() and shutil.which(tool) is None:
            return SandboxStatus(False, f"{tool} (util-linux) is not installed", bwrap)
    mode, detail = cgroup_support()
    return SandboxStatus(
        True,
        f"bubblewrap at {bwrap}; {'unprivileged uid per render' if is_root() else 'rootless (your own uid)'}; {detail}",
        bwrap,
        privileged=is_root(),
        limits_mode=mode,
        disk="size-limited tmpfs" if is_root() else "per-file cap only (not root: no tmpfs)",
    )


# -- the render slot ------------------------------------------------------------------------------------------------


def fresh_uid() -> int:
    for _ in range(100):
        uid = UID_BASE + secrets.randbelow(UID_SPAN)
        try:
            pwd.getpwuid(uid)
        except KeyError:
            return uid
    raise SandboxUnavailableError("no free uid for the render")


MS_NOSUID, MS_NODEV, MNT_DETACH, UMOUNT_NOFOLLOW = 2, 4, 2, 8
OWNER_MARK = "owner"  # in a slot's root: the pid and start time of the process that made it
SWEEP_ORPHANS = True  # a test turns it off: the control


@dataclass
class RenderSlot:
    """A render's own directories on the host; `work` is what the sandbox sees as /t2m-render."""

    root: Path
    work: Path
    stage: Path
    uid: int
    tmpfs: bool = False
    lanes: tuple[Path, ...] = ()  # a warm renderer's: one directory, with its own tmpfs, per render at once

    def inside(self, path: str, protections: frozenset[str] = PROTECTIONS) -> str:
        """Where the sandbox sees one of the INSIDE_* paths. With the whole host visible (a control: the old
        runner's view) nothing can be made at /, so the work directory keeps its host path, like the old runner."""
        if "filesystem" in protections:
            return path
        return {INSIDE_WORK: str(self.work), INSIDE_CODE: str(self.stage / "scene.py"), INSIDE_ENTRYPOINT: str(self.stage / "entrypoint.py")}[path]

    def disk_used(self, where: Path | None = None) -> int | None:
        """Bytes used on the tmpfs of the work directory, or of one of its lanes."""
        if not self.tmpfs:
            return None
        st = os.statvfs(where or self.work)
        return (st.f_blocks - st.f_bfree) * st.f_frsize


@contextmanager
def render_slot(
    work_root: str | Path | None = None,
    *,
    limits: RenderLimits | None = None,
    protections: frozenset[str] = PROTECTIONS,
    confined: bool = True,
    lanes: int = 0,
    lane_disks: bool = True,
) -> Iterator[RenderSlot]:
    """A fresh slot; removed (tmpfs unmounted first) when the block ends, whatever happened inside. `lanes`
    directories under the work directory each get a tmpfs of their own, `limits.disk_bytes` each: the renders a warm
    renderer runs at once, so that one render filling its disk leaves its siblings' room alone (`lane_disks=False`:
    plain directories sharing the work directory's tmpfs, a control in tests)."""
    limits = limits or RenderLimits()
    if SWEEP_ORPHANS and confined and is_root() and "disk" in protections:
        sweep_orphaned_slots(work_root)
    root = Path(tempfile.mkdtemp(prefix="t2m-render-", dir=work_root))
    slot = RenderSlot(root=root, work=root / "work", stage=root / "stage", uid=os.geteuid())
    try:
        os.chmod(root, 0o711)
        _write_owner_mark(root)
        slot.work.mkdir(mode=0o700)
        unprivileged = confined and is_root() and "unprivileged" in protections
        if unprivileged:
            slot.uid = fresh_uid()
            blocked = _blocked_parent(str(root / "work"))
            if blocked:
                raise SandboxUnavailableError(f"the render work root {root.parent} is not reachable by the render's uid: {blocked} is not o+x")
        disk = confined and is_root() and "disk" in protections
        if disk:
            _mount_tmpfs(slot.work, limits, slot.uid)
            slot.tmpfs = True
        else:
            os.chown(slot.work, slot.uid, slot.uid)
        for name in ("home", "tmp", "media", "out"):
            d = slot.work / name
            d.mkdir(mode=0o700)
            os.chown(d, slot.uid, slot.uid)
        for i in range(lanes):
            lane = slot.work / f"lane-{i}"
            lane.mkdir(mode=0o700)
            slot.lanes += (lane,)
            if disk and lane_disks:
                _mount_tmpfs(lane, limits, slot.uid)
            else:
                os.chown(lane, slot.uid, slot.uid)
        slot.stage.mkdir(mode=0o755)
        if "filesystem" not in protections:  # mount points of the read-only data, on the host (a control)
            for name in ("scene.py", "entrypoint.py"):
                (slot.stage / name).touch(mode=0o644)
        yield slot
    finally:
        if slot.tmpfs:
            for where in (*slot.lanes, slot.work):
                _libc().umount2(str(where).encode(), MNT_DETACH)
        shutil.rmtree(root, ignore_errors=True)


def _process_start(pid: int) -> str | None:
    """When process `pid` started (clock ticks since boot, /proc/PID/stat field 22); None if there is none."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return fields[19] if len(fields) > 19 else None


def _write_owner_mark(root: Path) -> None:
    fd = os.open(root / OWNER_MARK, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "w") as mark:
        mark.write(f"{os.getpid()} {_process_start(os.getpid())}\n")


def sweep_orphaned_slots(work_root: str | Path | None = None) -> list[Path]:
    """Remove the slots whose process is gone without its `finally` (a run worker killed mid-render, out of
    memory or by a signal): their disks are tmpfs mounts of the host's, which outlive it. Each is unmounted (lanes
    first) and its directory removed. Only a root-owned directory whose root-owned owner mark names a process that
    no longer exists (pid and start time) is touched, nothing is followed through a link, and a slot still being
    made (no mark yet) is left alone."""
    swept = []
    for root in Path(work_root or tempfile.gettempdir()).glob("t2m-render-*"):
        try:
            if not root.is_dir() or root.is_symlink() or root.lstat().st_uid != 0:
                continue
            mark = root / OWNER_MARK
            if mark.is_symlink() or mark.lstat().st_uid != 0:
                continue
            pid, started = mark.read_text().split()
        except (OSError, ValueError):
            continue
        if _process_start(int(pid)) == started:
            continue  # its process is alive: its own `finally` removes it
        work = str(root / "work")
        for point in sorted((m for m in _mount_points() if m == work or m.startswith(work + "/")), key=len, reverse=True):
            _libc().umount2(point.encode(), MNT_DETACH | UMOUNT_NOFOLLOW)
        shutil.rmtree(root, ignore_errors=True)
        log.warning("removed the render slot %s of process %s, gone without removing it", root, pid)
        swept.append(root)
    return swept


def _mount_points() -> list[str]:
    return [line.split()[4] for line in Path("/proc/self/mountinfo").read_text().splitlines()]


def _mount_tmpfs(where: Path, limits: RenderLimits, uid: int) -> None:
    options = f"size={limits.disk_bytes},nr_inodes={limits.disk_inodes},mode=0700,uid={uid},gid={uid}"
    if _libc().mount(b"tmpfs", str(where).encode(), b"tmpfs", MS_NOSUID | MS_NODEV, options.encode()) != 0:
        err = ctypes.get_errno()
        raise SandboxUnavailableError(f"cannot mount the render's tmpfs: {os.strerror(err)}")


# -- running a command inside ---------------------------------------------------------------------------------------


def _memfd(name: str, data: bytes) -> int:
    fd = os.memfd_create(name, 0)  # inheritable only through pass_fds
    os.write(fd, data)
    os.lseek(fd, 0, os.SEEK_SET)
    return fd


def python_paths() -> list[str]:
    """What the interpreter needs to run: its prefix and the venv (each as the realpath and as named)."""
    paths = []
    for p in (sys.base_prefix, sys.prefix, os.path.dirname(os.path.dirname(os.path.realpath(sys.executable)))):
        for candidate in (p, os.path.realpath(p)):
            if candidate and candidate not in paths and os.path.isdir(candidate):
                paths.append(candidate)
    # innermost last, so a venv inside a prefix is bound over it
    return sorted(set(paths), key=len)


def _blocked_parent(path: str) -> str | None:
    """The outermost directory above `path` that others cannot traverse (so an unprivileged uid cannot reach it)."""
    parts = Path(path).parts
    for i in range(2, len(parts)):
        parent = os.path.join(*parts[:i])
        with suppress(OSError):
            if not os.stat(parent).st_mode & 0o001:
                return parent
    return None


def work_env(work: str) -> dict[str, str]:
    return {"HOME": f"{work}/home", "TMPDIR": f"{work}/tmp", "XDG_CACHE_HOME": f"{work}/tmp"}


def _inside(path: str, parents: Sequence[str]) -> bool:
    return any(path == p or path.startswith(p.rstrip("/") + "/") for p in parents)


def bwrap_args(
    argv: Sequence[str],
    *,
    env: Mapping[str, str],
    staged: Mapping[str, str],
    slot: RenderSlot,
    data_fds: Mapping[str, int],
    info_fd: int,
    limits: RenderLimits,
    protections: frozenset[str],
) -> list[str]:
    """bubblewrap's options (read from an fd): the view, the namespaces, the environment; `argv` follows them."""
    args = ["--die-with-parent", "--new-session", "--info-fd", str(info_fd)]
    unprivileged = "unprivileged" in protections
    if unprivileged:
        args += ["--unshare-user", "--disable-userns", "--cap-drop", "ALL"]
    args += ["--unshare-ipc", "--unshare-uts", "--hostname", "t2m-render", "--unshare-cgroup-try"]
    if "process_tree" in protections:
        args += ["--unshare-pid"]
    if "network" in protections:
        args += ["--unshare-net"]
    if "filesystem" in protections:
        args += ["--ro-bind", "/usr", "/usr"]
        python = python_paths()
        if not _inside("/usr/local", python):
            args += ["--tmpfs", "/usr/local", "--remount-ro", "/usr/local"]
        for name in MERGED_USR_LINKS:
            target = os.readlink(f"/{name}") if os.path.islink(f"/{name}") else None
            if target:
                args += ["--symlink", target, f"/{name}"]
            elif os.path.isdir(f"/{name}"):
                args += ["--ro-bind", f"/{name}", f"/{name}"]
        for path in SYSTEM_READ_ONLY[1:]:
            args += ["--ro-bind-try", path, path]
        # The fresh /tmp before the interpreter's binds: a venv under the host's /tmp (a checkout in /tmp) is bound
        # into it instead of being hidden by it.
        args += ["--perms", "1777", "--size", str(limits.tmp_bytes), "--tmpfs", "/tmp"]
        for where, outside in staged.items():
            args += ["--ro-bind", outside, where]
    else:
        args += ["--ro-bind", "/", "/"]
        for where, outside in staged.items():  # where the uid could not reach the interpreter (/root is 0700)
            blocked = _blocked_parent(where) if outside != where else None
            if blocked:
                args += ["--tmpfs", blocked]
            if outside != where:
                args += ["--ro-bind", outside, where]
    if "process_tree" in protections:
        args += ["--proc", "/proc"]
    else:
        args += ["--dev-bind", "/proc", "/proc"]
    args += ["--dev", "/dev"]
    args += ["--bind", str(slot.work), slot.inside(INSIDE_WORK, protections)]
    for path, fd in data_fds.items():
        args += ["--ro-bind-data", str(fd), slot.inside(path, protections)]
    if "filesystem" in protections:
        args += ["--remount-ro", "/"]
    args += ["--chdir", slot.inside(INSIDE_WORK, protections), "--clearenv"]
    for name, value in env.items():
        args += ["--setenv", name, value]
    return args


def sandbox_env(
    extra: Mapping[str, str], protections: frozenset[str], host_env: Mapping[str, str] | None = None, *, work: str = INSIDE_WORK
) -> dict[str, str]:
    """The allowlist (plus the Pipes bootstrap variables); with `environment` off, the worker's whole environment."""
    base = {**ENV_ALLOWLIST, **work_env(work)}
    if "environment" not in protections:
        return {**(os.environ if host_env is None else host_env), **base, **extra}
    return {**base, **{k: v for k, v in extra.items() if k in PIPES_ENV}}


class _LinePump(threading.Thread):
    """Reads a pipe to its end in bounded lines: each line (at most MAX_LINE_BYTES, longer ones cut) to `on_line`,
    nothing after MAX_STDOUT_BYTES (still drained, so the writer never blocks)."""

    def __init__(self, stream, on_line: Callable[[bytes], None]):
        super().__init__(daemon=True)
        self.stream, self.on_line = stream, on_line
        self.total = self.dropped = 0

    def run(self) -> None:
        while True:
            line = self.stream.readline(MAX_LINE_BYTES)
            if not line:
                return
            self.total += len(line)
            cut = not line.endswith(b"\n")
            while cut:  # the rest of an over-long line
                more = self.stream.readline(MAX_LINE_BYTES)
                if not more:
                    break
                self.total += len(more)
                cut = not more.endswith(b"\n")
            if self.total > MAX_STDOUT_BYTES:
                self.dropped += 1
                continue
            try:
                self.on_line(line)
            except Exception:  # noqa: BLE001 - a bad line never stops the pump
                log.exception("sandbox output line handler failed")


class _TailPump(threading.Thread):
    def __init__(self, stream, limit: int = MAX_STDERR_BYTES):
        super().__init__(daemon=True)
        self.stream, self.limit, self.data = stream, limit, b""

    def run(self) -> None:
        while chunk := self.stream.read(65536):
            self.data = (self.data + chunk)[-self.limit :]


def _rlimit_args(limits: RenderLimits, *, fresh_uid: bool) -> list[str]:
    """prlimit's options. RLIMIT_NPROC only for a fresh uid: it counts every process of the uid outside the user
    namespace bubblewrap is about to create, which for your own uid (rootless) is your whole session."""

    def pair(v: int) -> str:
        return f"{v}:{v}"

    return [
        *([f"--nproc={pair(limits.processes)}"] if fresh_uid else []),
        f"--fsize={pair(limits.file_bytes)}",
        f"--nofile={pair(limits.open_files)}",
        f"--cpu={pair(limits.cpu_seconds)}",
        f"--as={pair(limits.address_space_bytes)}",
        "--core=0:0",
    ]


def run_sandboxed(
    argv: Sequence[str],
    *,
    slot: RenderSlot,
    env: Mapping[str, str],
    files: Mapping[str, bytes],
    timeout_s: float,
    on_line: Callable[[bytes], None],
    limits: RenderLimits | None = None,
    protections: frozenset[str] = PROTECTIONS,
    stop: threading.Event | None = None,
    inherit_fds: Sequence[int] = (),
    on_start: Callable[[RenderCgroup | None], None] | None = None,
) -> SandboxResult:
    """Run `argv` inside the sandbox (cwd /t2m-render); `files` appear read-only at their inside paths. Raises
    SandboxUnavailableError when the sandbox cannot be built; otherwise returns however the command ended. Setting
    `stop` ends it like a timeout. `inherit_fds` are handed to the command under their numbers (and closed here once
    it has them: the sandbox holds the only copies). `on_start(cgroup)` is called once the sandbox runs, with its
    cgroup (None where there is none)."""
    limits = limits or RenderLimits()
    bwrap = shutil.which("bwrap")
    if bwrap is None:
        raise SandboxUnavailableError("the render sandbox is unavailable: bubblewrap (bwrap) is not installed")
    root = is_root()
    unprivileged = root and "unprivileged" in protections
    cgroup = create_cgroup(f"{slot.root.name}", limits) if "limits" in protections else None
    fds: list[int] = []
    handed = list(inherit_fds)  # closed here whatever happens: after Popen the sandbox holds the only copies
    try:
        data_fds = {inside: _memfd(f"t2m-{i}", data) for i, (inside, data) in enumerate(files.items())}
        fds += data_fds.values()
        info_read, info_write = os.pipe()
        fds += [info_read, info_write]
        staged: dict[str, str] = {}
        binds: list[str] = []
        for i, path in enumerate(python_paths()):
            if unprivileged:
                mount_point = slot.stage / f"p{i}"
                mount_point.mkdir(mode=0o755)
                binds += [path, str(mount_point)]
                staged[path] = str(mount_point)
            else:
                staged[path] = path
        args = bwrap_args(
            argv, env=env, staged=staged, slot=slot, data_fds=data_fds, info_fd=info_write,
            limits=limits, protections=protections,
        )
        args_fd = _memfd("t2m-args", b"".join(a.encode() + b"\0" for a in args))
        fds.append(args_fd)
        command = [bwrap, "--args", str(args_fd), "--", *argv]
        if root:
            command = (
                ["unshare", "--mount", "--propagation", "private", "--", "/bin/sh", "-c", _STAGE_ONE, "t2m-stage-one"]
                + (cgroup.procs_files if cgroup else [])
                + ["--binds", *binds, "--"]
                + (["prlimit", *_rlimit_args(limits, fresh_uid=unprivileged), "--"] if "limits" in protections else [])
                + (
                    [
                        "setpriv", f"--reuid={slot.uid}", f"--regid={slot.uid}", "--clear-groups",
                        "--inh-caps=-all", "--ambient-caps=-all", "--bounding-set=-all", "--no-new-privs", "--",
                    ]
                    if unprivileged
                    else []
                )
                + command
            )
        elif "limits" in protections:
            command = ["prlimit", *_rlimit_args(limits, fresh_uid=False), "--", *command]
        started = time.monotonic()
        proc = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin"},
            cwd=slot.root,
            pass_fds=(*fds, *inherit_fds),
            start_new_session=True,
        )
        while handed:
            os.close(handed.pop())
        os.close(info_write)
        fds.remove(info_write)
        out, err = _LinePump(proc.stdout, on_line), _TailPump(proc.stderr)
        out.start()
        err.start()
        inner = _open_child(info_read, proc.pid)
        if inner is not None:
            fds.append(inner)
        if on_start is not None:
            on_start(cgroup)
        timed_out, peak = False, 0
        try:
            deadline = started + timeout_s
            while (returncode := proc.poll()) is None:
                if time.monotonic() >= deadline or (stop is not None and stop.is_set()):
                    timed_out = True
                    break
                if cgroup:
                    peak = max(peak, cgroup.current_tasks())
                time.sleep(SAMPLE_S)
        finally:
            _kill_tree(proc, inner, cgroup, protections)
        if timed_out:
            proc.wait()
        seconds = time.monotonic() - started
        out.join(PUMP_JOIN_S)
        err.join(PUMP_JOIN_S)
        usage = cgroup.usage(limits) if cgroup else Usage(limits_mode="rlimit" if "limits" in protections else "none")
        usage.processes_peak = peak or None
        usage.disk_used_bytes, usage.disk_limit_bytes = slot.disk_used(), (limits.disk_bytes if slot.tmpfs else None)
        return SandboxResult(
            returncode=returncode,
            timed_out=timed_out,
            seconds=seconds,
            stderr_tail=err.data.decode("utf-8", "replace"),
            usage=usage,
            stdout_bytes=out.total,
            stdout_dropped=out.dropped,
        )
    finally:
        for fd in fds + handed:
            with suppress(OSError):
                os.close(fd)
        if cgroup:
            if "process_tree" in protections:
                cgroup.kill_all()
            cgroup.remove()


def _open_child(fd: int, parent: int) -> int | None:
    """A pidfd of the sandbox's init, from bubblewrap's --info-fd ({"child-pid": N}), taken only while N is still
    bubblewrap's child: a pidfd names that process for good, so a later kill can never hit a reused pid."""
    data = b""
    while len(data) < 65536:
        chunk = os.read(fd, 4096)
        if not chunk:
            break
        data += chunk
    try:
        pid = int(json.loads(data)["child-pid"])
        pidfd = os.pidfd_open(pid)
    except (ValueError, KeyError, TypeError, OSError):
        return None
    try:
        ppid = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, ValueError, IndexError):
        ppid = -1
    if ppid != parent:
        os.close(pidfd)
        return None
    return pidfd


def _kill_tree(proc: subprocess.Popen, inner: int | None, cgroup: RenderCgroup | None, protections: frozenset[str]) -> None:
    """Everything the render started dies: its pid namespace (through its init), its cgroup, bubblewrap."""
    if "process_tree" in protections:
        if inner is not None:
            with suppress(ProcessLookupError, PermissionError, OSError):
                signal.pidfd_send_signal(inner, signal.SIGKILL)
        if cgroup:
            cgroup.kill_all()
    if proc.poll() is None:
        with suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        with suppress(ProcessLookupError):
            proc.kill()


def run_unconfined(
    argv: Sequence[str],
    *,
    cwd: Path,
    env: Mapping[str, str],
    timeout_s: float,
    on_line: Callable[[bytes], None],
) -> SandboxResult:
    """No boundary at all (T2M_RENDER_SANDBOX=unconfined-local-only): the command runs as the worker, in `cwd`,
    with the allowlisted environment; a timeout kills its process group (a setsid'ed grandchild escapes that)."""
    started = time.monotonic()
    proc = subprocess.Popen(
        list(argv), cwd=cwd, env=dict(env), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        start_new_session=True,
    )
    out, err = _LinePump(proc.stdout, on_line), _TailPump(proc.stderr)
    out.start()
    err.start()
    timed_out = False
    try:
        returncode = proc.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        timed_out, returncode = True, None
        with suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    out.join(PUMP_JOIN_S)
    err.join(PUMP_JOIN_S)
    return SandboxResult(
        returncode=returncode, timed_out=timed_out, seconds=time.monotonic() - started,
        stderr_tail=err.data.decode("utf-8", "replace"), usage=Usage(limits_mode="none"),
        stdout_bytes=out.total, stdout_dropped=out.dropped,
    )
