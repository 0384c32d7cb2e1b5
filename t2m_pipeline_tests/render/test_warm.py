"""The warm renderer (`render.warm`): one sandbox per scenes step, manim imported once, a fork per render.

Its attacks (bombs held per render, nothing left running, the Pipes channel out of reach) are in the render attack
suite (`faults/test_render_attacks.py`), which drives the real pipeline through it; here: that each render is its
own, and that a renderer a scene killed leaves the others to the cold way."""

from __future__ import annotations

import threading

import dagster as dg
import pytest

from t2m_pipeline.render.backends import LocalSandboxBackend, RenderRequest
from t2m_pipeline.render.sandbox import sandbox_status

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not sandbox_status().available, reason="needs bubblewrap"),
]

SCENE = """from manim import *

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


def scene(number: int, word: str, before: str = "pass") -> RenderRequest:
    cls = f"Scene{number:03d}"
    return RenderRequest(SCENE.format(cls=cls, word=word, before=before), cls, "low", 60.0, label=f"u/j/{number:03d}")


def render_in_one_step(batches: list[list[RenderRequest]]) -> tuple[list[dict], dict]:
    """Each batch rendered at once through one warm renderer, batch after batch, inside a real asset step."""
    seen: list[dict] = []
    state: dict = {}

    @dg.asset
    def warm_renders(context) -> dg.MaterializeResult:
        with LocalSandboxBackend().warm(renders_at_once=2) as renderer:

            def one(request: RenderRequest) -> None:
                with renderer.render(context, request) as output:
                    seen.append({"class": request.class_name, "failure": output.failure, "video": output.video is not None,
                                 "log": output.log, "backend": output.backend})

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
