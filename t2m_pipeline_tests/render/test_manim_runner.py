"""The manim runner with real manim: output, its own temp directory, a stripped environment, timeouts."""

import json
import time
from pathlib import Path

import pytest

from t2m_pipeline.render.codegen import TemplateCodeGenerator
from t2m_pipeline.render.manim_runner import QUALITY_FLAGS, RenderError, manim_command, render_scene, sandbox_env
from t2m_pipeline.render.media import probe_video
from t2m_pipeline.render.outline import JobSpec, plan_outline

SPY_SCENE = """
import json, os, sys
from manim import *

class Scene001(Scene):
    def construct(self):
        print("SPY" + json.dumps({"env": dict(os.environ), "cwd": os.getcwd()}), flush=True)
        raise RuntimeError("boom from the scene")
"""

SLEEPY_SCENE = """
import time
from manim import *

class Scene001(Scene):
    def construct(self):
        time.sleep(60)
"""


def test_renders_template_code_to_a_short_video_and_cleans_up():
    outline = plan_outline(JobSpec("Prime numbers", "Only divisible by one and themselves.", scene_count=1))
    code = TemplateCodeGenerator().generate(outline, outline.scene(1))
    with render_scene(code.code, code.class_name, quality="low", timeout_s=120) as result:
        info = probe_video(result.video_path)
        workdir = result.video_path.parents[4]
        assert workdir.name.startswith("t2m-render-") and (workdir / "scene.py").read_text() == code.code
    assert (info.width, info.height, info.fps) == (854, 480, 15.0)
    assert 1.0 <= info.duration_s <= 3.0
    assert not workdir.exists()


def test_untrusted_code_sees_no_credentials_and_its_failure_keeps_the_log(monkeypatch):
    secrets = {
        "AWS_SECRET_ACCESS_KEY": "aws-secret-value",
        "AWS_ACCESS_KEY_ID": "AKIAEXAMPLE",
        "T2M_DATABASE_URL": "postgresql+psycopg://postgres:pw@127.0.0.1/t2m",
        "T2M_REDIS_URL": "redis://127.0.0.1:6379/0",
        "T2M_LLM_API_KEY": "sk-llm-secret",
        "DAGSTER_HOME": "/secret/dagster",
        "PGPASSWORD": "pg-secret",
        "MY_SERVICE_TOKEN": "token-secret",
        "SOME_CONNECTION": "postgresql://user:hunter2@db/prod",
    }
    for name, value in secrets.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("LANG", "C.UTF-8")
    with pytest.raises(RenderError) as info:
        with render_scene(SPY_SCENE, "Scene001", timeout_s=120):
            pass
    error = info.value
    assert error.returncode not in (0, None) and not error.timed_out
    assert "boom from the scene" in error.log
    spy = json.loads(next(line for line in error.log.splitlines() if line.startswith("SPY"))[3:])
    for name, value in secrets.items():
        assert name not in spy["env"]
        assert value not in json.dumps(spy["env"])
    assert spy["env"]["LANG"] == "C.UTF-8"
    assert Path(spy["cwd"]).name.startswith("t2m-render-")
    assert spy["env"]["HOME"].startswith(spy["cwd"])


def test_timeout_kills_the_render():
    started = time.monotonic()
    with pytest.raises(RenderError, match="timed out") as info:
        with render_scene(SLEEPY_SCENE, "Scene001", timeout_s=4):
            pass
    assert info.value.timed_out and time.monotonic() - started < 30


def test_sandbox_env_rules():
    env = sandbox_env(
        {"PATH": "/usr/bin", "AWS_PROFILE": "prod", "PGHOST": "db", "GITHUB_TOKEN": "t", "api_key": "k", "X": "https://u:p@h/"},
        Path("/tmp/home"),
    )
    assert env["PATH"] == "/usr/bin" and env["HOME"] == "/tmp/home"
    assert not {"AWS_PROFILE", "PGHOST", "GITHUB_TOKEN", "api_key", "X"} & set(env)


def test_quality_flags_and_bad_quality():
    assert [QUALITY_FLAGS[q] for q in ("low", "medium", "high", "ultra")] == ["-ql", "-qm", "-qh", "-qp"]
    assert "-qh" in manim_command("python", "high", "Scene001", Path("/m"))
    with pytest.raises(ValueError):
        with render_scene("x", "Scene001", quality="8k"):
            pass
