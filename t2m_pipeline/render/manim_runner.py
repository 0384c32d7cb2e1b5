"""Rendering untrusted manim source in a subprocess: its own temp directory, a timeout, no credentials.

The child runs with its working directory and HOME inside a fresh temp directory and an environment stripped of
anything that could carry a credential or reach our services (AWS_*, database and Redis URLs, API keys, Dagster's
settings, PostgreSQL's PG* variables, any name with SECRET, TOKEN, PASSWORD, KEY or CREDENTIAL in it). On timeout the
whole process group is killed. The combined output is kept (bounded) as the render log.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)
QUALITY_FLAGS = {"low": "-ql", "medium": "-qm", "high": "-qh", "ultra": "-qp"}
MAX_LOG_BYTES = 1_000_000
_DROP_PREFIXES = ("AWS_", "T2M_", "DAGSTER_", "PG", "BOTO", "REDIS", "DATABASE_", "AZURE_", "GOOGLE_", "GCP_")
_DROP_WORDS = ("SECRET", "TOKEN", "PASSWORD", "PASSWD", "KEY", "CREDENTIAL", "AUTH", "SESSION", "COOKIE")
_URL_WITH_USERINFO = re.compile(r"^[a-z][a-z0-9+.-]*://[^/\s]*@", re.IGNORECASE)


class RenderError(RuntimeError):
    """manim failed or timed out; `log` holds its output (bounded), the reason is in the message."""

    def __init__(self, message: str, log: str, *, returncode: int | None = None, timed_out: bool = False):
        super().__init__(message)
        self.log = log
        self.returncode = returncode
        self.timed_out = timed_out


def sandbox_env(environ: Mapping[str, str], home: Path) -> dict[str, str]:
    """The parent's environment minus anything that could be a credential or a service address; HOME -> `home`."""
    env = {}
    for name, value in environ.items():
        upper = name.upper()
        if upper.startswith(_DROP_PREFIXES) or any(word in upper for word in _DROP_WORDS):
            continue
        if _URL_WITH_USERINFO.match(value.strip()):
            continue
        env[name] = value
    env["HOME"] = str(home)
    env["TMPDIR"] = str(home)
    env.pop("PYTHONSTARTUP", None)
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    return env


@dataclass(frozen=True)
class RenderResult:
    video_path: Path
    log: str
    seconds: float
    quality: str


def _tail(data: bytes, limit: int = MAX_LOG_BYTES) -> str:
    if len(data) > limit:
        data = b"[... earlier output cut ...]\n" + data[-limit:]
    return data.decode("utf-8", "replace")


def _kill_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def find_output(media_dir: Path, name: str = "output.mp4") -> Path | None:
    """manim's finished video (never one of its partial movie files)."""
    for path in sorted(media_dir.rglob(name)):
        if "partial_movie_files" not in path.parts:
            return path
    return None


@contextmanager
def render_scene(
    code: str,
    class_name: str,
    *,
    quality: str = "low",
    timeout_s: float = 300.0,
    python: str | None = None,
    work_root: str | Path | None = None,
) -> Iterator[RenderResult]:
    """Render `class_name` from `code`; yields the result while its temp directory exists, then removes it.

    Raises RenderError (with the log) when manim fails, times out or produces no video.
    """
    if quality not in QUALITY_FLAGS:
        raise ValueError(f"quality {quality!r}: expected one of {'|'.join(QUALITY_FLAGS)}")
    workdir = Path(tempfile.mkdtemp(prefix="t2m-render-", dir=work_root))
    try:
        yield _render_in(workdir, code, class_name, quality, timeout_s, python or sys.executable)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def manim_command(python: str, quality: str, class_name: str, media_dir: Path) -> list[str]:
    return [
        python, "-m", "manim", "render", QUALITY_FLAGS[quality],
        "--media_dir", str(media_dir), "--disable_caching", "--progress_bar", "none",
        "--format", "mp4", "-o", "output", "scene.py", class_name,
    ]


class SandboxUnavailableError(RuntimeError):
    """T2M_RENDER_SANDBOX=bwrap, but bubblewrap is not installed."""


def sandbox_prefix(workdir: Path, mode: str | None = None) -> list[str]:
    """The bubblewrap command that confines a render: the whole file system read-only (the venv and manim may live
    anywhere, /tmp included), only `workdir` writable, no network and its own namespaces, killed with its parent.

    Generated code is untrusted: with this it cannot write into the project, the legacy root or anywhere but its
    render directory, nor reach PostgreSQL, Redis or S3 on loopback. `auto` uses bubblewrap when installed (CI
    installs it) and otherwise logs a warning and relies on the scrubbed environment and private directory alone.
    """
    if mode is None:
        from t2m_pipeline.config import render_sandbox_mode

        mode = render_sandbox_mode()
    bwrap = shutil.which("bwrap")
    if mode == "none" or (mode == "auto" and bwrap is None):
        if mode == "auto":
            log.warning("bubblewrap not installed: manim renders without a file-system sandbox")
        return []
    if bwrap is None:
        raise SandboxUnavailableError("T2M_RENDER_SANDBOX=bwrap but bubblewrap (bwrap) is not installed")
    return [
        bwrap, "--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc",
        "--bind", str(workdir), str(workdir), "--unshare-all", "--die-with-parent", "--chdir", str(workdir),
    ]


def _render_in(workdir: Path, code: str, class_name: str, quality: str, timeout_s: float, python: str) -> RenderResult:
    source = workdir / "scene.py"
    source.write_text(code, encoding="utf-8")
    media = workdir / "media"
    home = workdir / "home"
    home.mkdir()
    log_path = workdir / "render.log"
    started = time.monotonic()
    with open(log_path, "wb") as log_file:
        proc = subprocess.Popen(
            sandbox_prefix(workdir) + manim_command(python, quality, class_name, media),
            cwd=workdir,
            env=sandbox_env(os.environ, home),
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group, so a timeout kills everything it started
        )
        try:
            returncode = proc.wait(timeout=timeout_s)
            timed_out = False
        except subprocess.TimeoutExpired:
            _kill_group(proc)
            returncode = proc.wait()
            timed_out = True
        finally:
            if proc.poll() is None:
                _kill_group(proc)
                proc.wait()
    seconds = time.monotonic() - started
    with open(log_path, "rb") as fh:
        fh.seek(max(0, log_path.stat().st_size - MAX_LOG_BYTES))
        log = _tail(fh.read())
    if timed_out:
        raise RenderError(f"manim render of {class_name} timed out after {timeout_s:g} s", log, timed_out=True)
    if returncode != 0:
        last = next((line.strip() for line in reversed(log.splitlines()) if line.strip()), "no output")
        raise RenderError(f"manim render of {class_name} failed (exit {returncode}): {last[:300]}", log, returncode=returncode)
    video = find_output(media)
    if video is None or video.stat().st_size == 0:
        raise RenderError(f"manim render of {class_name} produced no video", log, returncode=returncode)
    return RenderResult(video_path=video, log=log, seconds=seconds, quality=quality)
