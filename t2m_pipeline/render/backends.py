"""One render interface, one code path above it, and the backends below: where untrusted scene code runs.

`backend.render(context, request)` is a context manager yielding a `RenderOutput`: the worker's own checked copy
of the video (or a one-line failure), the render log (size-capped) and what the render used. Above it the step
stores the video and the log the same way whatever the backend; below it:

- `LocalSandboxBackend` (`T2M_RENDER_BACKEND=local`, the default): the entrypoint runs in the local sandbox
  (`render.sandbox`) as a Dagster Pipes subprocess; its messages come back over its stdout. Each local render
  holds one of the machine's cores (`render.cores`) while it runs.
- `EcsRenderBackend` (`T2M_RENDER_BACKEND=ecs`, `render.ecs`): each render is its own ECS task launched with
  dagster-aws' PipesECSClient; the worker that holds the credentials never runs the code.
- `UnconfinedBackend` (`T2M_RENDER_SANDBOX=unconfined-local-only`): the entrypoint runs as the worker itself. For
  local experiments only; every render says so in the run's log, and `t2m doctor` fails.

Both confined backends use the same entrypoint, the same Pipes messages (bounded by `render.messages`) and the
same intake (`render.intake`): the video is taken only as a regular file of the render directory, then probed.
"""

from __future__ import annotations

import logging
import sys
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from dagster import PipesEnvContextInjector, open_pipes_session

from t2m_pipeline.render import entrypoint
from t2m_pipeline.render.cores import render_core
from t2m_pipeline.render.intake import MAX_LOG_BYTES, MAX_VIDEO_BYTES, IntakeError, check_video, read_log, take_file
from t2m_pipeline.render.media import VideoInfo
from t2m_pipeline.render.messages import MessageStats, SandboxStdioMessageReader, clean_line
from t2m_pipeline.render.sandbox import (
    ENV_ALLOWLIST,
    INSIDE_CODE,
    INSIDE_ENTRYPOINT,
    INSIDE_WORK,
    PROTECTIONS,
    RenderLimits,
    SandboxResult,
    SandboxUnavailableError,
    Usage,
    render_slot,
    run_sandboxed,
    run_unconfined,
    sandbox_env,
    sandbox_status,
    work_env,
)

log = logging.getLogger(__name__)

QUALITIES = tuple(entrypoint.QUALITY_FLAGS)
STARTUP_GRACE_S = 20.0  # on top of the render's own timeout: interpreter start, uploads, shutdown
UNCONFINED_WARNING = (
    "UNCONFINED RENDER (T2M_RENDER_SANDBOX=unconfined-local-only): generated scene code runs with this worker's "
    "privileges, files and network. Never use this with credentials or data that matter."
)
OUTPUT_VIDEO = "/".join(entrypoint.OUTPUT)
MAX_STDERR_IN_LOG = 8192


class RenderError(RuntimeError):
    """The render produced no usable video; the message is one line, `log` the render log (bounded)."""

    def __init__(self, message: str, log: str, *, timed_out: bool = False):
        super().__init__(message)
        self.log = log
        self.timed_out = timed_out


@dataclass(frozen=True)
class RenderRequest:
    code: str
    class_name: str
    quality: str
    timeout_s: float
    label: str = ""  # the scene's partition key, for tags and logs
    stop: threading.Event | None = field(default=None, compare=False)  # set: the render ends as on a timeout


@dataclass
class RenderOutput:
    backend: str
    video: Path | None  # the worker's checked copy, valid inside the render() block
    info: VideoInfo | None
    log: str  # what the owner may read: the worker's header, then the render's own log (capped)
    failure: str | None
    seconds: float
    timed_out: bool = False
    usage: Usage | None = None
    messages: MessageStats = field(default_factory=MessageStats)

    def raise_for_failure(self) -> None:
        if self.failure is not None:
            raise RenderError(self.failure, self.log, timed_out=self.timed_out)


class RenderBackend(Protocol):
    name: str

    def render(self, context, request: RenderRequest): ...  # a context manager of RenderOutput

    def describe(self) -> str: ...


def check_request(request: RenderRequest) -> None:
    if request.quality not in QUALITIES:
        raise ValueError(f"quality {request.quality!r}: expected one of {'|'.join(QUALITIES)}")


def render_extras(request: RenderRequest) -> dict:
    return {"class_name": request.class_name, "quality": request.quality, "timeout_s": float(request.timeout_s)}


def conclude(
    backend: str,
    request: RenderRequest,
    out_dir: Path,
    scratch: Path,
    *,
    returncode: int | None,
    timed_out: bool,
    seconds: float,
    stats: MessageStats,
    usage: Usage | None = None,
    describe: str = "",
    checked: bool = True,
    max_video_bytes: int = MAX_VIDEO_BYTES,
    stderr_tail: str = "",
    max_log_bytes: int = MAX_LOG_BYTES,
    missing_video: str | None = None,
    subdir: str = "",
) -> RenderOutput:
    """What every backend does with a finished render: read its log, take and probe its video, say why not
    (`missing_video`: why the backend has no video to offer, when it knows better than the intake). `subdir`: the
    render's own directory under `out_dir` (a warm renderer's), taken through `out_dir` like every other level."""
    inside = f"{subdir}/" if subdir else ""
    render_log = read_log(out_dir, inside + entrypoint.LOG_NAME, scratch, max_bytes=max_log_bytes, checked=checked)
    result = stats.result or {}
    failure = None
    video = info = None
    if timed_out or result.get("timed_out"):
        failure = f"manim render of {request.class_name} timed out after {request.timeout_s:g} s"
    elif usage is not None and usage.oom_kills:
        failure = f"manim render of {request.class_name} stopped: memory limit of {usage.memory_limit_bytes // (1 << 20)} MiB reached"
    else:
        try:
            taken = take_file(out_dir, inside + OUTPUT_VIDEO, scratch / "video.mp4", max_bytes=max_video_bytes, checked=checked)
            info = check_video(taken.path)
            video = taken.path
        except (IntakeError, OSError) as exc:
            last = next((line.strip() for line in reversed(render_log.splitlines()) if line.strip()), "")
            manim_status = result.get("returncode")
            if not stats.accepted.get("opened") and not stats.total and not last:
                failure = f"manim render of {request.class_name} failed: the render did not start (exit {returncode})"
            elif manim_status not in (0, None):
                failure = f"manim render of {request.class_name} failed (exit {manim_status}): {clean_line(last or 'no output', 300)}"
            else:
                reason = clean_line(missing_video or str(exc), 200) + (f"; last output: {clean_line(last, 200)}" if last else "")
                failure = f"manim render of {request.class_name} produced no usable video: {reason}"
    header = [
        f"backend: {describe or backend}",
        f"render: {request.class_name} quality {request.quality}, {seconds:.1f} s, exit {returncode}"
        + (", timed out" if timed_out else ""),
    ]
    if usage is not None:
        header.append(usage.describe())
    if stats.rejected:
        header.append(f"messages refused: {stats.describe_rejected()}")
    if failure:
        header.append(f"failure: {failure}")
    if failure and stderr_tail.strip():
        header.append("entrypoint stderr (last lines):\n" + stderr_tail[-MAX_STDERR_IN_LOG:])
    return RenderOutput(
        backend=backend,
        video=video,
        info=info,
        log="\n".join(header) + "\n\n" + render_log,
        failure=failure,
        seconds=seconds,
        timed_out=timed_out,
        usage=usage,
        messages=stats,
    )


def _sandbox_failure(result: SandboxResult, stats: MessageStats) -> str | None:
    """One line when the sandbox itself broke (bubblewrap or stage one refused): nothing of the render ran."""
    if stats.accepted.get("opened") or result.timed_out:
        return None
    lines = [line.strip() for line in result.stderr_tail.splitlines() if line.strip()]
    tool_lines = [line for line in lines if line.startswith(("bwrap:", "unshare:", "setpriv:", "prlimit:", "mount:"))]
    if not tool_lines:
        return None
    return f"the render sandbox failed to start: {clean_line(tool_lines[-1], 300)}"


ENTRYPOINT_SOURCE = Path(entrypoint.__file__).read_bytes()


@dataclass
class LocalSandboxBackend:
    """Renders in the local sandbox. `limits`, `protections`, `checked_intake`, `isolated_forks` exist for tests: a
    control run switches one protection off; no setting reaches them."""

    limits: RenderLimits = field(default_factory=RenderLimits)
    protections: frozenset[str] = PROTECTIONS
    work_root: str | None = None
    checked_intake: bool = True
    guarded_messages: bool = True
    max_log_bytes: int = MAX_LOG_BYTES
    isolated_forks: bool = True  # a warm renderer's forks are not dumpable (`render.warm`)
    name: str = "sandbox"

    def describe(self) -> str:
        status = sandbox_status()
        off = sorted(PROTECTIONS - self.protections)
        return f"local sandbox ({status.detail})" + (f"; OFF FOR A CONTROL: {', '.join(off)}" if off else "")

    def warm(self, **options):
        """A context manager of a warm renderer (`render.warm`) over this backend: one sandbox, manim imported once,
        for the renders of one job's scenes step."""
        from t2m_pipeline.render.warm import warm_renderer

        return warm_renderer(self, **{"isolated_forks": self.isolated_forks, **options})

    def prestart_warm(self, **options) -> None:
        """Start now the warm renderer that a later `warm(**options)` will adopt (a run worker's head start)."""
        from t2m_pipeline.render.warm import prestart

        prestart(self, **{"isolated_forks": self.isolated_forks, **options})

    @contextmanager
    def render(self, context, request: RenderRequest) -> Iterator[RenderOutput]:
        check_request(request)
        status = sandbox_status()
        if not status.available:
            raise SandboxUnavailableError(
                f"the render sandbox is unavailable: {status.detail} (T2M_RENDER_SANDBOX=unconfined-local-only "
                "renders without it, for local experiments only)"
            )
        reader = SandboxStdioMessageReader(guarded=self.guarded_messages)
        with (
            render_core(root=self.work_root),
            render_slot(self.work_root, limits=self.limits, protections=self.protections) as slot,
            tempfile.TemporaryDirectory(prefix="t2m-intake-") as scratch,
        ):
            work = slot.inside(INSIDE_WORK, self.protections)
            extras = {**render_extras(request), "code_path": slot.inside(INSIDE_CODE, self.protections), "work_dir": work}
            with open_pipes_session(context=context, context_injector=PipesEnvContextInjector(), message_reader=reader, extras=extras) as session:
                result = run_sandboxed(
                    [sys.executable, "-I", "-u", slot.inside(INSIDE_ENTRYPOINT, self.protections)],
                    slot=slot,
                    env=sandbox_env(session.get_bootstrap_env_vars(), self.protections, work=work),
                    files={INSIDE_CODE: request.code.encode("utf-8", "surrogatepass"), INSIDE_ENTRYPOINT: ENTRYPOINT_SOURCE},
                    timeout_s=request.timeout_s + STARTUP_GRACE_S,
                    on_line=reader.feed,
                    limits=self.limits,
                    protections=self.protections,
                    stop=request.stop,
                )
                broken = _sandbox_failure(result, reader.stats)
                if broken:
                    raise SandboxUnavailableError(broken)
                yield conclude(
                    self.name, request, slot.work, Path(scratch),
                    returncode=result.returncode, timed_out=result.timed_out, seconds=result.seconds,
                    stats=reader.stats, usage=result.usage, describe=self.describe(), checked=self.checked_intake,
                    stderr_tail=result.stderr_tail, max_log_bytes=self.max_log_bytes,
                )


@dataclass
class UnconfinedBackend:
    """No boundary: the entrypoint runs as the worker (T2M_RENDER_SANDBOX=unconfined-local-only)."""

    work_root: str | None = None
    name: str = "unconfined"

    def describe(self) -> str:
        return "UNCONFINED (T2M_RENDER_SANDBOX=unconfined-local-only): no sandbox at all"

    @contextmanager
    def render(self, context, request: RenderRequest) -> Iterator[RenderOutput]:
        check_request(request)
        context.log.warning(UNCONFINED_WARNING)
        log.warning(UNCONFINED_WARNING)
        reader = SandboxStdioMessageReader()
        with (
            render_core(root=self.work_root),
            render_slot(self.work_root, confined=False) as slot,
            tempfile.TemporaryDirectory(prefix="t2m-intake-") as scratch,
        ):
            source = slot.work / "scene.py"
            source.write_text(request.code, encoding="utf-8", errors="surrogatepass")
            extras = {**render_extras(request), "code_path": str(source), "work_dir": str(slot.work)}
            with open_pipes_session(context=context, context_injector=PipesEnvContextInjector(), message_reader=reader, extras=extras) as session:
                env = {**ENV_ALLOWLIST, **work_env(str(slot.work))}
                result = run_unconfined(
                    [sys.executable, "-I", "-u", entrypoint.__file__],
                    cwd=slot.work,
                    env={**env, **session.get_bootstrap_env_vars()},
                    timeout_s=request.timeout_s + STARTUP_GRACE_S,
                    on_line=reader.feed,
                )
                yield conclude(
                    self.name, request, slot.work, Path(scratch),
                    returncode=result.returncode, timed_out=result.timed_out, seconds=result.seconds,
                    stats=reader.stats, usage=result.usage, describe=self.describe(), stderr_tail=result.stderr_tail,
                )


def make_render_backend(settings, storage=None) -> RenderBackend:
    """The backend the settings ask for: T2M_RENDER_BACKEND (local | ecs) and T2M_RENDER_SANDBOX."""
    if settings.render_backend == "ecs":
        from t2m_pipeline.render.ecs import EcsRenderBackend

        if storage is None:
            raise ValueError("the ecs render backend needs the storage layer")
        return EcsRenderBackend.from_settings(settings, storage)
    if settings.render_sandbox == "unconfined-local-only":
        return UnconfinedBackend()
    return LocalSandboxBackend()


__all__ = [
    "LocalSandboxBackend",
    "RenderBackend",
    "RenderError",
    "RenderOutput",
    "RenderRequest",
    "SandboxUnavailableError",
    "UnconfinedBackend",
    "make_render_backend",
]
