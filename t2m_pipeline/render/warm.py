"""A warm renderer: one sandbox for the renders of one scenes step (one job, so one user), manim imported once.

A cold render starts bubblewrap, an interpreter and manim: about 0.8 s of a 1.4 s low-quality render here. A scenes
step holds the scenes of one job only (`defs/scenes/assets.one_job`), so it opens one sandbox for them, built as a
cold render's is (`render.sandbox`: a fresh uid, the same view, namespaces, environment allowlist; the limits scaled
to the renders it runs at once), whose entrypoint imports manim while the step still writes the scenes' code, then
forks one render per request (`entrypoint.serve`). Each render still holds one of the machine's cores, has its own
Pipes channel (a pipe passed with the request), a cgroup with one render's limits, a lane (a directory on a tmpfs of
its own, one render's disk), and its video goes through the same checked intake; whatever it leaves running is
killed when it ends, and a render that outlives its time is killed alone (its cgroup emptied).

What it changes, and why that is acceptable: one job's scenes share a uid and a sandbox, so a hostile scene can reach
its sibling scenes on purpose (the same user's job, code from the same topic), never another job, user or the host.
The forks are not dumpable: none reads another's descriptors or memory. Where a render cannot be ended alone (no
cgroup), the whole sandbox is (fail closed). A render cut short by the renderer's end, and every render after it, goes
the cold way: a scene is judged on its own render, never on a sibling's.
"""

from __future__ import annotations

import atexit
import itertools
import json
import logging
import os
import queue
import shutil
import socket
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path

from dagster import PipesEnvContextInjector, open_pipes_session

from t2m_pipeline.render import entrypoint
from t2m_pipeline.render.backends import (
    ENTRYPOINT_SOURCE,
    STARTUP_GRACE_S,
    LocalSandboxBackend,
    RenderOutput,
    RenderRequest,
    check_request,
    conclude,
    render_extras,
)
from t2m_pipeline.render.cores import machine_cores, render_core
from t2m_pipeline.render.messages import SandboxStdioMessageReader
from t2m_pipeline.render.sandbox import (
    INSIDE_ENTRYPOINT,
    INSIDE_WORK,
    PUMP_JOIN_S,
    SAMPLE_S,
    RenderCgroup,
    RenderLimits,
    RenderSlot,
    SandboxResult,
    Usage,
    _LinePump,
    _memfd,
    cgroup_support,
    create_cgroup,
    render_slot,
    run_sandboxed,
    sandbox_env,
)

log = logging.getLogger(__name__)

READY_TIMEOUT_S = 60.0  # manim's import, under load
LIFETIME_S = 7 * 24 * 3600.0  # the step closes it; this is only a backstop
CLOSE_JOIN_S = 30.0
PLACE_TIMEOUT_S = 30.0  # a fork telling its pid, so that it gets its cgroup
RENDERER_MEMORY_BYTES = 512 << 20  # the renderer itself: an interpreter with manim imported
RENDERER_PROCESSES = 16


def warm_limits(limits: RenderLimits, renders_at_once: int) -> RenderLimits:
    """The whole sandbox's limits: each render has its own cgroup with a render's limits inside it, so this only
    bounds the sum (the renders at once, and the renderer). The disk is one render's: the job's renders share it,
    each render's directory removed as soon as its video is taken."""
    n = max(1, renders_at_once)
    return replace(
        limits,
        memory_bytes=limits.memory_bytes * n + RENDERER_MEMORY_BYTES,
        processes=limits.processes * n + RENDERER_PROCESSES,
    )


@dataclass
class WarmRenderer:
    """The render backend of one scenes step while it is open (`LocalSandboxBackend.warm`). `isolated_forks=False`
    and `own_disks=False` only for controls in tests (the forks may then read each other's descriptors; the renders
    share one disk)."""

    cold: LocalSandboxBackend
    renders_at_once: int = field(default_factory=machine_cores)
    isolated_forks: bool = True
    own_disks: bool = True
    name: str = "sandbox-warm"  # the render_backend a video's metadata names
    failure: str | None = None  # why it is not (or no longer) used
    result: SandboxResult | None = None  # how its sandbox ended
    slot: RenderSlot | None = None

    def __post_init__(self) -> None:
        self.limits = warm_limits(self.cold.limits, self.renders_at_once)
        self._ready, self._ended = threading.Event(), threading.Event()
        self._stop_sandbox, self._release = threading.Event(), threading.Event()
        self._send = threading.Lock()
        self._ids = itertools.count(1)
        self._control, inside = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self._inside_fd = inside.detach()
        self._thread = threading.Thread(target=self._serve, name="warm-renderer", daemon=True)
        self.renders = 0  # served warm
        self.prestarted = False  # started ahead of its step (`prestart`), with `options`
        self.options: dict = {}
        self._lanes: queue.SimpleQueue[Path] = queue.SimpleQueue()  # free lanes: at most renders_at_once at once
        self._cgroup: RenderCgroup | None = None  # the whole sandbox's; each render gets one of its own inside

    def describe(self) -> str:
        ahead = ", started with the run" if self.prestarted else ""
        return f"{self.cold.describe()}; warm renderer (one sandbox for the job's scenes, manim imported once{ahead})"

    # -- the sandbox ----------------------------------------------------------------------------------------------

    def start(self) -> WarmRenderer:
        atexit.register(self.close)  # a renderer its owner never closed still unmounts its disks at exit
        if "limits" in self.cold.protections and cgroup_support()[0] == "cgroup-v2":
            # a v2 cgroup that holds the renderer cannot hold the renders' own cgroups: each render goes cold
            self.failure = "per-render limits under a warm renderer need cgroup v1 or no cgroup at all here"
            self._ended.set()
            return self
        self._thread.start()
        return self

    def _serve(self) -> None:
        fd, self._inside_fd = self._inside_fd, None
        try:
            lanes = {"lanes": self.renders_at_once, "lane_disks": self.own_disks}
            with render_slot(self.cold.work_root, limits=self.limits, protections=self.cold.protections, **lanes) as slot:
                self.slot = slot
                for lane in slot.lanes:
                    self._lanes.put(lane)
                try:
                    argv = [sys.executable, "-I", "-u", slot.inside(INSIDE_ENTRYPOINT, self.cold.protections), "--warm", str(fd)]
                    argv += [] if self.isolated_forks else ["--dumpable"]
                    argv += [] if "process_tree" in self.cold.protections else ["--no-reap"]
                    handed, fd = fd, None  # run_sandboxed closes it, whatever happens
                    self.result = run_sandboxed(
                        argv,
                        slot=slot,
                        env=sandbox_env({}, self.cold.protections, work=self.work_inside),
                        files={INSIDE_ENTRYPOINT: ENTRYPOINT_SOURCE},
                        timeout_s=LIFETIME_S,
                        on_line=self._line,
                        limits=self.limits,
                        protections=self.cold.protections,
                        stop=self._stop_sandbox,
                        inherit_fds=[handed],
                        on_start=self._started,
                    )
                finally:
                    self._ended.set()
                    if self.failure is None:
                        tail = self.result.stderr_tail.strip().splitlines()[-1:] if self.result else []
                        self.failure = "the warm renderer ended" + (f": {tail[0][:200]}" if tail else "")
                    self._release.wait()  # the renders' directories stay until the step is done with them
        except Exception as exc:  # noqa: BLE001 - the sandbox could not be built: renders go the cold way, which says why
            self.failure = self.failure or f"the warm renderer did not start: {exc}"
            log.warning("%s", self.failure)
        finally:
            if fd is not None:
                os.close(fd)
            self._ended.set()

    def _started(self, cgroup: RenderCgroup | None) -> None:
        self._cgroup = cgroup

    def _line(self, line: bytes) -> None:
        if line.strip() == entrypoint.WARM_READY.encode():
            self._ready.set()

    @property
    def work_inside(self) -> str:
        return self.slot.inside(INSIDE_WORK, self.cold.protections)

    def usable(self) -> bool:
        return self._ready.is_set() and not self._ended.is_set() and not self._stop_sandbox.is_set()

    def _wait_ready(self) -> bool:
        deadline = time.monotonic() + READY_TIMEOUT_S
        while not self._ready.wait(0.05):
            if self._ended.is_set() or time.monotonic() >= deadline:
                if self.failure is None:
                    self.failure = "the warm renderer was not ready in time"
                return False
        return self.usable()

    def kill(self, reason: str) -> None:
        """End the sandbox and every render in it (fail closed); later renders go the cold way."""
        if self.failure is None:
            self.failure = reason
        self._stop_sandbox.set()

    def close(self) -> None:
        atexit.unregister(self.close)
        with self._send:
            self._control.close()  # the renderer's loop ends
        self._stop_sandbox.set()
        self._release.set()
        if self._thread.is_alive():
            self._thread.join(CLOSE_JOIN_S)
        if self._inside_fd is not None:  # never started
            os.close(self._inside_fd)
            self._inside_fd = None

    # -- renders --------------------------------------------------------------------------------------------------

    @contextmanager
    def render(self, context, request: RenderRequest) -> Iterator[RenderOutput]:
        check_request(request)
        with ExitStack() as stack:
            output = self._render_warm(context, request, stack)
            if output is not None:
                yield output
                return
        if self.failure:
            context.log.info(f"scene {request.label or request.class_name} renders the cold way: {self.failure}")
        with self.cold.render(context, request) as output:
            yield output

    def _render_warm(self, context, request: RenderRequest, stack: ExitStack) -> RenderOutput | None:
        if not self._wait_ready():
            return None
        stack.enter_context(render_core(root=self.cold.work_root))
        lane = self._take_lane()
        if lane is None:
            return None
        stack.callback(self._lanes.put, lane)
        stack.callback(_empty, lane)  # whatever the render left in its lane, before the lane goes back
        name = f"r{next(self._ids):03d}"
        sub = f"{lane.name}/{name}"
        scratch = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="t2m-intake-")))
        work = f"{self.work_inside}/{sub}"
        reader = SandboxStdioMessageReader(guarded=self.cold.guarded_messages)
        extras = {**render_extras(request), "work_dir": work}
        session = stack.enter_context(
            open_pipes_session(context=context, context_injector=PipesEnvContextInjector(), message_reader=reader, extras=extras)
        )
        started = time.monotonic()
        placed = self._start(session.get_bootstrap_env_vars(), request, work, name)
        if placed is None:
            return None
        read_fd, cgroup = placed
        if cgroup is not None:
            stack.callback(self._sweep, cgroup)
        self.renders += 1
        timed_out, peak = False, 0
        with os.fdopen(read_fd, "rb") as messages:
            pump = _LinePump(messages, reader.feed)
            pump.start()
            deadline = started + request.timeout_s + STARTUP_GRACE_S
            while pump.is_alive():
                pump.join(SAMPLE_S)
                if cgroup is not None:
                    peak = max(peak, cgroup.current_tasks())
                if pump.is_alive() and (time.monotonic() >= deadline or (request.stop is not None and request.stop.is_set())):
                    timed_out = True
                    self._end_render(cgroup, request)
                    pump.join(PUMP_JOIN_S)
                    if pump.is_alive():  # something still holds its channel: end them all
                        self.kill(f"scene {request.label or request.class_name} outlived its time and kept its channel open")
                        pump.join(PUMP_JOIN_S)
                    break
        if not timed_out and reader.stats.result is None and not self.usable():
            return None  # cut short by the renderer's end, which may be a sibling's doing: rendered again, cold
        seconds = time.monotonic() - started
        usage = cgroup.usage(self.cold.limits) if cgroup else Usage(limits_mode="rlimit" if "limits" in self.cold.protections else "none")
        usage.processes_peak = peak or None
        usage.disk_used_bytes = self.slot.disk_used(lane)
        usage.disk_limit_bytes = self.cold.limits.disk_bytes if self.slot.tmpfs else None
        output = conclude(
            self.name, request, self.slot.work, scratch,
            returncode=0 if reader.stats.result else None, timed_out=timed_out, seconds=seconds,
            stats=reader.stats, usage=usage, describe=self.describe(), checked=self.cold.checked_intake,
            max_log_bytes=self.cold.max_log_bytes, subdir=sub,
        )
        return output

    def _take_lane(self) -> Path | None:
        while self.usable():
            try:
                return self._lanes.get(timeout=SAMPLE_S)
            except queue.Empty:
                continue
        return None

    def _end_render(self, cgroup: RenderCgroup | None, request: RenderRequest) -> None:
        """A render that outlived its time (or whose step is stopped): its cgroup emptied, its siblings untouched;
        without a cgroup, or when something of it is left, the whole sandbox ends (fail closed)."""
        label = request.label or request.class_name
        if cgroup is None:
            self.kill(f"scene {label} outlived its time: the warm renderer was ended (no cgroup to end it alone)")
            return
        cgroup.kill_all()
        if cgroup.pids():
            self.kill(f"scene {label} outlived its time and its cgroup could not be emptied: the warm renderer was ended")

    def _start(self, env: dict, request: RenderRequest, work: str, name: str) -> tuple[int, RenderCgroup | None] | None:
        """Send the render to the renderer and place its fork in a cgroup of its own (the render's limits) before
        any of the scene runs: (the render's message pipe, its cgroup), or None when the renderer cannot take it."""
        read_fd, write_fd = os.pipe()
        code_fd = _memfd("t2m-code", request.code.encode("utf-8", "surrogatepass"))
        hello, hello_inside = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        cgroup = None
        try:
            with hello:
                try:
                    with self._send:
                        socket.send_fds(self._control, [json.dumps({"env": env, "work_dir": work}).encode()], [write_fd, code_fd, hello_inside.fileno()])
                finally:
                    for fd in (write_fd, code_fd):
                        os.close(fd)
                    hello_inside.close()
                hello.settimeout(PLACE_TIMEOUT_S)
                pid = int(hello.recv(32) or b"0")
                cgroup = self._place(pid, name)
                hello.sendall(b"1")
            return read_fd, cgroup
        except (OSError, ValueError) as exc:
            os.close(read_fd)
            if cgroup is not None:
                self._sweep(cgroup)
            self.kill(f"the warm renderer could not take a render ({getattr(exc, 'strerror', None) or exc})")
            return None

    def _place(self, pid: int, name: str) -> RenderCgroup | None:
        """The render's own cgroup, holding its fork (found by the pid it sees in the sandbox); None where the
        sandbox has no cgroup (rlimits only, as for a cold render). Raises OSError when it cannot be placed."""
        if self._cgroup is None:
            return None
        host = next((h for h in self._cgroup.pids() if _inner_pid(h) == pid), None)
        cgroup = create_cgroup(name, self.cold.limits, parent=self._cgroup)
        if host is None or cgroup is None:
            if cgroup is not None:
                cgroup.remove()
            raise OSError(f"the render's fork (pid {pid} inside) could not get a cgroup of its own")
        try:
            for procs in cgroup.procs_files:
                Path(procs).write_text(str(host))
        except OSError:
            cgroup.remove()
            raise
        return cgroup

    def _sweep(self, cgroup: RenderCgroup) -> None:
        if "process_tree" in self.cold.protections:
            cgroup.kill_all()
        cgroup.remove()


def _empty(lane: Path) -> None:
    """Remove everything in a lane, not following links (a render may have left anything there)."""
    for entry in list(lane.iterdir()):
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)


def _inner_pid(host_pid: int) -> int | None:
    """The pid a process has in its innermost pid namespace (NSpid's last field)."""
    try:
        for line in Path(f"/proc/{host_pid}/status").read_text().splitlines():
            if line.startswith("NSpid:"):
                return int(line.split()[-1])
    except (OSError, ValueError, IndexError):
        pass
    return None


_prestarted: WarmRenderer | None = None  # started ahead of the step that will use it (one per run worker)
_prestarted_lock = threading.Lock()


def prestart(cold: LocalSandboxBackend, **options) -> WarmRenderer:
    """Start a warm renderer now, for the next `warm_renderer` asked for with the same backend and options to adopt
    (a run worker starts its scenes step's while Dagster opens the run). Closed when its run ends if nothing
    adopted it (`close_prestarted`, the code location's `finish_run`)."""
    global _prestarted
    renderer = WarmRenderer(cold, **options).start()
    renderer.prestarted, renderer.options = True, dict(options)
    with _prestarted_lock:
        previous, _prestarted = _prestarted, renderer
    if previous is not None:
        previous.close()
    return renderer


def close_prestarted() -> bool:
    """Close the prestarted renderer nothing adopted (its run never reached a warm step): a run worker ends with
    `os._exit`, which skips `atexit`, and its disks are mounts of the host's. True if there was one."""
    global _prestarted
    with _prestarted_lock:
        left, _prestarted = _prestarted, None
    if left is not None:
        left.close()
    return left is not None


def _adopt(cold: LocalSandboxBackend, options: dict) -> WarmRenderer | None:
    """The prestarted renderer, if it was made for exactly this (else it is closed): None otherwise."""
    global _prestarted
    with _prestarted_lock:
        candidate, _prestarted = _prestarted, None
    if candidate is None:
        return None
    if candidate.cold == cold and candidate.options == options and not candidate._ended.is_set():
        return candidate
    candidate.close()
    return None


@contextmanager
def warm_renderer(cold: LocalSandboxBackend, **options) -> Iterator[WarmRenderer]:
    """A warm renderer for the block: the one prestarted for it, or one started at once (manim's import runs while
    the caller goes on)."""
    renderer = _adopt(cold, options) or WarmRenderer(cold, **options).start()
    try:
        yield renderer
    finally:
        renderer.close()
