"""The warm renderer (`render.warm`): one sandbox per scenes step, manim imported once, a fork per render.

Its attacks (bombs held per render, nothing left running, the Pipes channel out of reach) are in the render attack
suite (`faults/test_render_attacks.py`), which drives the real pipeline through it; here: that each render is its
own (its log, its disk, its time), and that a renderer a scene killed leaves the others to the cold way."""

from __future__ import annotations

import threading

import dagster as dg
import pytest

from t2m_pipeline.render import warm
from t2m_pipeline.render.backends import LocalSandboxBackend, RenderRequest
from t2m_pipeline.render.sandbox import (
    PROTECTIONS,
    RenderLimits,
    is_root,
    sandbox_status,
)

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not sandbox_status().available, reason="needs bubblewrap"),
]

SCENE = """import time
from manim import *

class {cls}(Scene):
    def construct(self):
        print("{cls} renders {word}")
        {before}
        self.play(Create(Square()), run_time=0.3)
"""
# Kills the warm renderer: the render's parent's parent (the fork that serves it, then the renderer itself).
KILL_RENDERER = (
    "import os, signal\n        parent = int(open(f'/proc/{os.getppid()}/status').read().split('PPid:')[1].split()[0])\n"
    "        os.kill(parent, signal.SIGKILL)\n        os.kill(os.getppid(), signal.SIGKILL)"
)


# Fills the render's disk, tells its sibling (through the sandbox's /tmp, which the job's renders share), holds it.
FILL_DISK = (
    "written = 0\n        try:\n            with open('fill.bin', 'wb') as fh:\n                while True:\n"
    "                    fh.write(b'x' * (1 << 20)); fh.flush(); written += 1\n        except OSError:\n            pass\n"
    "        open('/tmp/t2m-filled', 'w').close()\n        print(f'filled {written} MiB')\n        time.sleep(4)"
)
# Waits for the sibling's fill, then needs 8 MiB of its own.
AFTER_FILL = (
    "import os\n        for _ in range(200):\n            if os.path.exists('/tmp/t2m-filled'):\n                break\n"
    "            time.sleep(0.05)\n        open('room.bin', 'wb').write(b'y' * (8 << 20))"
)
DISK = RenderLimits(disk_bytes=64 << 20)
STOP_SERVING_FORK = "import os, signal\n        os.kill(os.getppid(), signal.SIGSTOP)\n        time.sleep(60)"


def scene(number: int, word: str, before: str = "pass", timeout_s: float = 60.0) -> RenderRequest:
    cls = f"Scene{number:03d}"
    return RenderRequest(SCENE.format(cls=cls, word=word, before=before), cls, "low", timeout_s, label=f"u/j/{number:03d}")


def render_in_one_step(batches: list[list[RenderRequest]], backend: LocalSandboxBackend | None = None, **options) -> tuple[list[dict], dict]:
    """Each batch rendered at once through one warm renderer, batch after batch, inside a real asset step."""
    seen: list[dict] = []
    state: dict = {}

    @dg.asset
    def warm_renders(context) -> dg.MaterializeResult:
        with (backend or LocalSandboxBackend()).warm(**{"renders_at_once": 2, **options}) as renderer:

            def one(request: RenderRequest) -> None:
                with renderer.render(context, request) as output:
                    seen.append({"class": request.class_name, "failure": output.failure, "video": output.video is not None,
                                 "log": output.log, "backend": output.backend, "timed_out": output.timed_out})

            for batch in batches:
                threads = [threading.Thread(target=one, args=(request,)) for request in batch]
                for thread in threads:
                    thread.start()
                for thread in threads:
                    thread.join()
            state.update(renders=renderer.renders, failure=renderer.failure)
        return dg.MaterializeResult()  # the Pipes sessions ask for a result

    assert dg.materialize([warm_renders]).success
    return seen, state


def test_a_steps_renders_share_one_warm_renderer_each_with_its_own_video_log_and_limits():
    seen, state = render_in_one_step([[scene(1, "alpha"), scene(2, "beta"), scene(3, "gamma")]])
    assert state == {"renders": 3, "failure": None}
    by_class = {s["class"]: s for s in seen}
    for cls, word in (("Scene001", "alpha"), ("Scene002", "beta"), ("Scene003", "gamma")):
        render = by_class[cls]
        assert render["failure"] is None and render["video"], render["log"][-600:]
        assert f"{cls} renders {word}" in render["log"]
        others = {"alpha", "beta", "gamma"} - {word}
        assert not any(f"renders {other}" in render["log"] for other in others)  # its own log only
        assert "warm renderer" in render["log"] and "processes peak" in render["log"]  # its own cgroup's figures


def test_a_scene_that_kills_the_warm_renderer_fails_alone_and_the_next_scenes_render_cold():
    seen, state = render_in_one_step([[scene(1, "killer", KILL_RENDERER)], [scene(2, "after"), scene(3, "after")]])
    by_class = {s["class"]: s for s in seen}
    assert by_class["Scene001"]["failure"] is not None
    assert state["renders"] == 1 and state["failure"]
    for cls in ("Scene002", "Scene003"):
        assert by_class[cls]["failure"] is None and by_class[cls]["video"], by_class[cls]["log"][-600:]
        assert "warm renderer" not in by_class[cls]["log"]  # rendered the cold way


def filled_beside(**options) -> dict:
    seen, _ = render_in_one_step([[scene(1, "filler", FILL_DISK), scene(2, "neighbour", AFTER_FILL)]], LocalSandboxBackend(limits=DISK), **options)
    return {s["class"]: s for s in seen}


@pytest.mark.skipif(not is_root(), reason="a render's disk is a tmpfs only as root")
def test_a_render_that_fills_its_disk_leaves_its_siblings_room():
    by_class = filled_beside()
    assert "filled 6" in by_class["Scene001"]["log"]  # about its 64 MiB: 6x MiB
    neighbour = by_class["Scene002"]
    assert neighbour["failure"] is None and neighbour["video"], neighbour["log"][-600:]
    assert "warm renderer" in neighbour["log"]


@pytest.mark.skipif(not is_root(), reason="a render's disk is a tmpfs only as root")
def test_control_one_disk_for_the_renders_a_render_that_fills_it_spoils_its_sibling():
    neighbour = filled_beside(own_disks=False)["Scene002"]
    # its own 8 MiB write fails (the traceback's end is lost too: its log is on the same full disk)
    assert neighbour["failure"] is not None and "failed (exit 1)" in neighbour["failure"], neighbour["log"][-600:]


def overrun_beside(backend: LocalSandboxBackend, monkeypatch) -> tuple[dict, dict]:
    """Scene 1 outlives its 2 s while scene 2, which takes about 6 s, renders beside it; then scene 3. Scene 1 stops
    the fork that serves it first, whose own timeout would end it otherwise: the worker's deadline is what ends it."""
    monkeypatch.setattr(warm, "STARTUP_GRACE_S", 1.0)
    overrun = scene(1, "overrun", STOP_SERVING_FORK, timeout_s=2.0)
    seen, state = render_in_one_step([[overrun, scene(2, "slow", "time.sleep(6)")], [scene(3, "later")]], backend)
    return {s["class"]: s for s in seen}, state


def test_a_render_that_outlives_its_time_ends_alone_and_the_renderer_goes_on(monkeypatch):
    by_class, state = overrun_beside(LocalSandboxBackend(), monkeypatch)
    assert by_class["Scene001"]["timed_out"], (by_class["Scene001"]["failure"], by_class["Scene001"]["log"][-800:])
    assert "timed out after 2 s" in by_class["Scene001"]["failure"]
    for cls in ("Scene002", "Scene003"):
        assert by_class[cls]["failure"] is None and by_class[cls]["video"], by_class[cls]["log"][-600:]
        assert "warm renderer" in by_class[cls]["log"]  # rendered warm, beside and after the overrun
    assert state == {"renders": 3, "failure": None}


def test_control_no_cgroup_the_overrun_ends_the_renderer_and_its_sibling_renders_again_cold(monkeypatch):
    by_class, state = overrun_beside(LocalSandboxBackend(protections=PROTECTIONS - {"limits"}), monkeypatch)
    assert by_class["Scene001"]["timed_out"]
    assert "outlived its time" in state["failure"]
    for cls in ("Scene002", "Scene003"):  # cut short, then rendered again the cold way; the next one cold too
        assert by_class[cls]["failure"] is None and by_class[cls]["video"], by_class[cls]["log"][-600:]
        assert "warm renderer" not in by_class[cls]["log"]


def test_a_prestarted_renderer_is_the_one_the_step_opens():
    """A run worker starts its scenes step's renderer ahead (`prestart_warm`); the step adopts it."""
    LocalSandboxBackend().prestart_warm(renders_at_once=2)
    ahead = warm._prestarted
    seen, state = render_in_one_step([[scene(1, "ahead"), scene(2, "ahead")]])
    assert warm._prestarted is None and state == {"renders": 2, "failure": None}
    assert ahead.renders == 2  # the prestarted one rendered them
    for render in seen:
        assert render["failure"] is None and "started with the run" in render["log"], render["log"][-600:]


def test_control_a_renderer_prestarted_for_other_options_is_closed_and_the_step_starts_its_own():
    LocalSandboxBackend().prestart_warm(renders_at_once=1)
    ahead = warm._prestarted
    seen, _ = render_in_one_step([[scene(1, "own"), scene(2, "own")]])
    assert ahead.renders == 0 and ahead._ended.is_set()
    for render in seen:
        assert render["failure"] is None and "warm renderer" in render["log"]
        assert "started with the run" not in render["log"]


@pytest.mark.skipif(not is_root(), reason="a render's disk is a tmpfs only as root")
def test_a_lane_goes_to_the_next_render_empty_whatever_the_last_one_left_in_it():
    """One lane, two renders one after the other: the first leaves 40 MiB beside its own folder, in the lane; the
    next needs 40 MiB of the lane's 64."""
    leave = "open('../left-behind.bin', 'wb').write(b'z' * (40 << 20))"
    need = "open('room.bin', 'wb').write(b'y' * (40 << 20))"
    seen, _ = render_in_one_step([[scene(1, "litter", leave)], [scene(2, "next", need)]], LocalSandboxBackend(limits=DISK), renders_at_once=1)
    by_class = {s["class"]: s for s in seen}
    assert by_class["Scene001"]["failure"] is None
    assert by_class["Scene002"]["failure"] is None and by_class["Scene002"]["video"], by_class["Scene002"]["log"][-600:]
