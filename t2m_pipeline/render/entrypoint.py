"""The render entrypoint: what runs inside the render boundary (the local sandbox, or the ECS render task).

It speaks Dagster Pipes: the context (which scene class, which quality, the time limit, and on ECS where to fetch
the code and where to upload the results) comes from the environment; its messages go to stdout, which the worker
reads (locally through the sandbox's pipe, on ECS through CloudWatch Logs). manim runs as a child whose output goes
to `render.log`, never to stdout, so stdout carries only Pipes messages from us. Everything here is as untrusted as
the scene code it runs next to: the worker checks every file and bounds every message it gets back.

Self-contained on purpose (the standard library and `dagster_pipes` only): locally the sandbox sees this one file,
not the package; in the production image it is `python -m t2m_pipeline.render.entrypoint`.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

QUALITY_FLAGS = {"low": "-ql", "medium": "-qm", "high": "-qh", "ultra": "-qp"}
LOG_NAME = "render.log"
OUTPUT = ("out", "output.mp4")  # where the worker looks for the video, relative to the work directory
RESULT_KIND = "t2m_render"
_CLASS_NAME = re.compile(r"^Scene\d{3}$")
MAX_CODE_BYTES = 200_000


def manim_command(python: str, quality: str, class_name: str, media_dir: str | Path, source: str | Path = "scene.py") -> list[str]:
    """The one manim command line: `class_name` from `source`, mp4 under `media_dir`, no cache, no progress bars."""
    return [
        python, "-m", "manim", "render", QUALITY_FLAGS[quality],
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


def run_manim(source: Path, class_name: str, quality: str, timeout_s: float, work: Path) -> tuple[int | None, bool, float]:
    """(exit status, timed out, seconds) of manim, its output in work/render.log; a timeout kills its process group."""
    started = time.monotonic()
    with open(work / LOG_NAME, "ab") as log:
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


def render(pipes) -> dict:
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
    else:
        source = Path(extras["code_path"])
    returncode, timed_out, seconds = run_manim(source, class_name, quality, timeout_s, work)
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


def main() -> int:
    from dagster_pipes import PipesDefaultContextLoader, PipesDefaultMessageWriter, open_dagster_pipes

    with open_dagster_pipes(context_loader=PipesDefaultContextLoader(), message_writer=PipesDefaultMessageWriter()) as pipes:
        render(pipes)
    return 0


if __name__ == "__main__":
    sys.exit(main())
