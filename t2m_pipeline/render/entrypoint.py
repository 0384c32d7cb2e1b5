"""The render entrypoint: what runs inside the render boundary (the local sandbox, or the ECS render task).

It speaks Dagster Pipes: the context (which scene class, which quality, the time limit, and on ECS where to fetch
the code and where to upload the results) comes from the environment; its messages go to stdout, which the worker
reads (locally through the sandbox's pipe, on ECS through CloudWatch Logs). manim runs as a child whose output goes
to `render.log`, never to stdout, so stdout carries only Pipes messages from us. Everything here is as untrusted as
the scene code it runs next to: the worker checks every file and bounds every message it gets back.

Warm (`--warm FD`, the local backend's warm renderer): it imports manim once, then serves the renders of one
scenes step (one job, one user) sent over the control socket FD: each a fork with its own Pipes channel (a pipe
passed with the request) and its own directory; manim runs in a fork of that, as its command line would, without
starting Python and importing manim again. Forks are not dumpable (no sibling reads another's descriptors or memory)
and whatever a render leaves running is killed when it ends.

Self-contained on purpose (the standard library and `dagster_pipes` only): locally the sandbox sees this one file,
not the package; in the production image it is `python -m t2m_pipeline.render.entrypoint`.
"""

from __future__ import annotations

import json
import os
import re
import select
import signal
import socket
import subprocess
import sys
import time
import traceback
import urllib.request
from pathlib import Path

QUALITY_FLAGS = {"low": "-ql", "medium": "-qm", "high": "-qh", "ultra": "-qp"}
LOG_NAME = "render.log"
OUTPUT = ("out", "output.mp4")  # where the worker looks for the video, relative to the work directory
RESULT_KIND = "t2m_render"
_CLASS_NAME = re.compile(r"^Scene\d{3}$")
MAX_CODE_BYTES = 200_000
WARM_READY = "t2m_warm_ready"  # the line a warm renderer prints once manim is imported
PIPES_ENV = ("DAGSTER_PIPES_CONTEXT", "DAGSTER_PIPES_MESSAGES")
PR_SET_NAME, PR_SET_DUMPABLE, PR_SET_CHILD_SUBREAPER = 15, 4, 36
REAP_EVERY_S = 0.2


def manim_command(python: str, quality: str, class_name: str, media_dir: str | Path, source: str | Path = "scene.py") -> list[str]:
    """The one manim command line: `class_name` from `source`, mp4 under `media_dir`, no cache, no progress bars."""
    return [python, "-m", "manim", *manim_arguments(quality, class_name, media_dir, source)]


def manim_arguments(quality: str, class_name: str, media_dir: str | Path, source: str | Path) -> list[str]:
    """Its arguments after `manim` (what a warm renderer hands manim's imported command line)."""
    return [
        "render", QUALITY_FLAGS[quality],
        "--media_dir", str(media_dir), "--disable_caching", "--progress_bar", "none",
        "--format", "mp4", "-o", "output", str(source), class_name,
    ]


def find_video(media_dir: Path) -> Path | None:
    """manim's finished video (never a partial movie file), found without following symlinks."""
    for root, dirs, files in os.walk(media_dir, followlinks=False):
        dirs[:] = sorted(d for d in dirs if d != "partial_movie_files")
        if "output.mp4" in files:
            return Path(root) / "output.mp4"
    return None


def _fetch(url: str, limit: int) -> bytes:
    with urllib.request.urlopen(url, timeout=60) as response:  # noqa: S310 - a presigned https URL from the worker
        data = response.read(limit + 1)
    if len(data) > limit:
        raise ValueError(f"scene code is over {limit} bytes")
    return data


def _put(url: str, path: Path, limit: int, tail: bool = False) -> int:
    size = path.stat().st_size
    with open(path, "rb") as fh:
        if tail and size > limit:
            fh.seek(size - limit)
        data = fh.read(limit)
    headers = {"Content-Length": str(len(data)), "Content-Type": "application/octet-stream"}
    request = urllib.request.Request(url, data=data, method="PUT", headers=headers)
    with urllib.request.urlopen(request, timeout=120) as response:  # noqa: S310 - a presigned https URL
        response.read()
    return len(data)


def run_manim(
    source: Path, class_name: str, quality: str, timeout_s: float, work: Path, warm_cli=None
) -> tuple[int | None, bool, float]:
    """(exit status, timed out, seconds) of manim, its output in work/render.log; a timeout kills its process group.
    `warm_cli`: manim's imported command line, run in a fork instead of a new interpreter."""
    started = time.monotonic()
    with open(work / LOG_NAME, "ab") as log:
        if warm_cli is not None:
            pid = _fork_manim(warm_cli, manim_arguments(quality, class_name, work / "media", source), work, log)
            return (*_wait_fork(pid, timeout_s), time.monotonic() - started)
        proc = subprocess.Popen(
            manim_command(sys.executable, quality, class_name, work / "media", source),
            cwd=work, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )
        try:
            return proc.wait(timeout=timeout_s), False, time.monotonic() - started
        except subprocess.TimeoutExpired:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            proc.wait()
            return None, True, time.monotonic() - started


def _fork_manim(warm_cli, args: list[str], work: Path, log) -> int:
    """manim's command line, in a fork of this process (its own session, output to the log)."""
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid:
        return pid
    code = 1
    try:
        _prctl(PR_SET_NAME, b"manim")  # what `ps` shows for it, as for manim's own command
        os.setsid()
        os.dup2(log.fileno(), 1)
        os.dup2(log.fileno(), 2)
        os.close(0)
        os.chdir(work)
        warm_cli.main(args=args, prog_name="manim", standalone_mode=False)
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except BaseException:  # noqa: BLE001 - the render's own failure, for its log
        traceback.print_exc()
    finally:
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        finally:
            os._exit(code)


def _wait_fork(pid: int, timeout_s: float) -> tuple[int | None, bool]:
    """(exit status, timed out) of a forked child; at the timeout its process group is killed."""
    pidfd = os.pidfd_open(pid)
    try:
        ready, _, _ = select.select([pidfd], [], [], max(0.0, timeout_s))
    finally:
        os.close(pidfd)
    if not ready:
        try:
            os.killpg(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        os.waitpid(pid, 0)
        return None, True
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status), False


def render(pipes, code: bytes | None = None, warm_cli=None) -> dict:
    extras = pipes.extras
    class_name, quality = extras["class_name"], extras["quality"]
    if not (isinstance(class_name, str) and _CLASS_NAME.match(class_name)) or quality not in QUALITY_FLAGS:
        raise ValueError("bad render request: class_name or quality")
    timeout_s = float(extras["timeout_s"])
    work = Path(extras.get("work_dir") or os.getcwd())
    for name in ("media", "out", "home", "tmp"):
        (work / name).mkdir(exist_ok=True)
    if extras.get("code_url"):
        source = work / "scene.py"
        source.write_bytes(_fetch(extras["code_url"], MAX_CODE_BYTES))
    elif code is not None:  # a warm render: the code came with the request
        source = work / "scene.py"
        source.write_bytes(code)
    else:
        source = Path(extras["code_path"])
    returncode, timed_out, seconds = run_manim(source, class_name, quality, timeout_s, work, warm_cli)
    video = find_video(work / "media") if returncode == 0 else None
    output = work.joinpath(*OUTPUT)
    if video is not None:
        os.replace(video, output)
    uploads = extras.get("upload_urls") or {}
    uploaded = {}
    max_video = int(extras.get("max_video_bytes", 1 << 30))
    if uploads.get("video") and output.is_file() and output.stat().st_size <= max_video:  # the worker refuses more anyway
        uploaded["video"] = _put(uploads["video"], output, max_video)
    if uploads.get("log") and (work / LOG_NAME).is_file():
        uploaded["log"] = _put(uploads["log"], work / LOG_NAME, int(extras.get("max_log_bytes", 1 << 20)), tail=True)
    result = {
        "kind": RESULT_KIND,
        "returncode": returncode,
        "timed_out": timed_out,
        "seconds": round(seconds, 3),
        "video": output.is_file(),
        "uploaded": uploaded,
    }
    pipes.report_custom_message(result)
    return result


def main(code: bytes | None = None, warm_cli=None) -> int:
    from dagster_pipes import PipesDefaultContextLoader, PipesDefaultMessageWriter, open_dagster_pipes

    with open_dagster_pipes(context_loader=PipesDefaultContextLoader(), message_writer=PipesDefaultMessageWriter()) as pipes:
        render(pipes, code, warm_cli)
    return 0


# -- warm: one import of manim, a fork per render ---------------------------------------------------------------


def _prctl(option: int, value: int | bytes) -> None:
    import ctypes

    argument = ctypes.c_char_p(value) if isinstance(value, bytes) else ctypes.c_ulong(value)
    if ctypes.CDLL(None, use_errno=True).prctl(option, argument, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), f"prctl({option}) failed")


def _children() -> set[int]:
    found = set()
    for task in os.listdir("/proc/self/task"):
        try:
            with open(f"/proc/self/task/{task}/children") as fh:
                found |= {int(pid) for pid in fh.read().split()}
        except OSError:
            pass
    return found


def _kill_children(keep: set[int] = frozenset()) -> None:
    """SIGKILL every child but `keep`, and reap them. As a subreaper this process inherits whatever its
    descendants orphaned, so, repeated until none is left, this ends every process a render left behind."""
    for _ in range(100):
        strays = _children() - keep
        if not strays:
            return
        for pid in strays:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        for pid in strays:
            try:
                os.waitpid(pid, 0)
            except ChildProcessError:
                pass


def _serve_one(request: dict, fds: list[int], warm_cli) -> int:
    """One render, in a fork of the warm renderer: its Pipes channel is the first descriptor (as stdout), its code
    the second; over the third it tells the worker its pid and waits to be placed in the render's own cgroup."""
    messages_fd, code_fd, hello_fd = fds
    with socket.socket(fileno=hello_fd) as hello:
        hello.sendall(str(os.getpid()).encode())
        if hello.recv(1) != b"1":
            return 1  # not placed: nothing of the scene runs
    os.setsid()
    os.dup2(messages_fd, 1)
    os.close(messages_fd)
    with os.fdopen(code_fd, "rb") as fh:
        code = fh.read(MAX_CODE_BYTES + 1)
    if len(code) > MAX_CODE_BYTES:
        raise ValueError(f"scene code is over {MAX_CODE_BYTES} bytes")
    env = request["env"]
    for name in PIPES_ENV:
        os.environ[name] = str(env[name])
    work = Path(request["work_dir"])
    work.mkdir(mode=0o700)
    os.chdir(work)
    if not request["reap"]:  # a control in tests: what the scene leaves running outlives its render
        return main(code, warm_cli)
    _prctl(PR_SET_CHILD_SUBREAPER, 1)
    try:
        return main(code, warm_cli)
    finally:
        _kill_children()  # what the scene left running, orphaned or not


def serve(control_fd: int, *, dumpable: bool = False, reap: bool = True) -> int:
    """The warm renderer: manim imported once, then one fork per render request until the control socket closes.
    `dumpable`, or not `reap`, only for controls in tests: the forks could then read each other's descriptors, or
    leave processes running."""
    if not dumpable:
        _prctl(PR_SET_DUMPABLE, 0)
    if reap:
        _prctl(PR_SET_CHILD_SUBREAPER, 1)
    import dagster_pipes  # noqa: F401 - imported before the forks, like manim
    import manim.__main__ as warm_cli

    control = socket.socket(fileno=control_fd)
    print(WARM_READY, flush=True)
    renders: set[int] = set()
    while True:
        readable, _, _ = select.select([control], [], [], REAP_EVERY_S)
        for pid in list(renders):  # finished renders
            if os.waitpid(pid, os.WNOHANG)[0]:
                renders.discard(pid)
        if reap:
            _kill_children(keep=renders)  # processes of a render that was killed, reparented here
        if not readable:
            continue
        message, fds, _, _ = socket.recv_fds(control, 65536, 3)
        if not message:
            break  # the worker closed the socket: the step is over
        try:
            request = {**json.loads(message), "reap": reap}
            if len(fds) != 3:
                raise ValueError("a render request carries its message pipe, its code and its handshake")
        except ValueError as exc:
            print(f"warm renderer: request refused: {exc}", file=sys.stderr, flush=True)
            for fd in fds:
                os.close(fd)
            continue
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                control.close()
                code = _serve_one(request, fds, warm_cli)
            except BaseException:  # noqa: BLE001 - to the sandbox's stderr; the worker sees no result
                traceback.print_exc()
            finally:
                os._exit(code)
        renders.add(pid)
        for fd in fds:
            os.close(fd)
    if reap:
        _kill_children()
    return 0


if __name__ == "__main__":
    if len(sys.argv) >= 3 and sys.argv[1] == "--warm":
        sys.exit(serve(int(sys.argv[2]), dumpable="--dumpable" in sys.argv[3:], reap="--no-reap" not in sys.argv[3:]))
    sys.exit(main())
