"""The latency benchmark's accounting (benchmarks/latency_bench.py): the stages it reads from a run's timestamps, the
wall-clock split that must add up to the job's wall time, the render-concurrency histogram, the importtime parser.
The benchmark itself needs the daemon and minutes; these are the parts whose arithmetic can be wrong silently."""

import importlib.util
import sys
from pathlib import Path

import pytest

PATH = Path(__file__).resolve().parents[1] / "benchmarks" / "latency_bench.py"
spec = importlib.util.spec_from_file_location("latency_bench", PATH)
bench = importlib.util.module_from_spec(spec)
sys.modules[spec.name] = bench  # dataclasses look their module up
spec.loader.exec_module(bench)


def render_run(job: str, created: float, offset: float, parent: str | None = None) -> "bench.RunTimes":
    """A render_scenes run of one scene: queued 1 s, process 2 s, code load 1 s, then its scenes step: code 1 s,
    render 3 s (2.5 s of it manim), thumbnail 1 s; 0.5 s teardown."""
    o = created + offset
    return bench.RunTimes(
        job, f"run-{offset}", "render_scenes", created, parent,
        marks={"starting": o + 1, "process": o + 3, "started": o + 4, "ended": o + 9.5},
        steps={"scenes": [o + 4, o + 9]},
        materializations=[("scene_code", o + 5, "u/j/001", None), ("rendered_video", o + 8, "u/j/001", 2.5), ("thumbnail", o + 9, "u/j/001", None)],
    )


def test_stages_of_one_run_follow_its_events():
    run = render_run("j", created=10.0, offset=0.0)
    stages = {name: round(b - a, 3) for name, a, b in run.intervals(trigger=7.0)}
    assert stages == {"sensor wait": 3.0, "run queue": 1.0, "process start": 2.0, "code load": 1.0, "scene_code": 1.0,
                      "rendered_video": 3.0, "thumbnail": 1.0, "in-run overhead": 0.5}


def test_trigger_is_the_materialization_the_sensor_reacts_to():
    plan = bench.RunTimes("j", "p", "plan_job", 12.0, None, marks={"ended": 20.0}, materializations=[("scene_outline", 19.0, "u/j", None)])
    render = render_run("j", created=25.0, offset=0.0)
    assert bench.trigger_of(plan, [plan, render], inserted=10.0) == 10.0  # the row's insert
    assert bench.trigger_of(render, [plan, render], inserted=10.0) == 19.0  # the outline, not the plan run's end
    retry = render_run("j", created=40.0, offset=0.0, parent=render.run_id)
    assert bench.trigger_of(retry, [plan, render, retry], inserted=10.0) == render.marks["ended"]


def test_wall_split_adds_up_and_renders_take_precedence():
    a = render_run("j", created=10.0, offset=0.0)
    b = render_run("j", created=10.0, offset=2.0)  # overlaps a: its queue and start happen while a renders
    intervals = a.intervals(8.0) + b.intervals(8.0)
    split = bench.wall_split(intervals, 8.0, 22.0)
    assert sum(split.values()) == pytest.approx(14.0)
    assert split["rendered_video"] == pytest.approx(5.0)  # a renders 15..18, b 17..20: the union
    assert split["unattributed"] == pytest.approx(0.5)  # after b ended at 21.5
    assert split["sensor wait"] == pytest.approx(2.0)  # 8..10, before either run existed
    # Summed over runs, each run pays its own stages.
    assert bench.run_seconds(intervals)["process start"] == pytest.approx(4.0)


def test_the_scenes_step_splits_per_scene_by_its_materializations():
    o = 100.0
    run = bench.RunTimes(
        "j", "r", "render_scenes", o, None, marks={"started": o, "ended": o + 7},
        steps={"scenes": [o + 1, o + 6]},
        materializations=[("scene_code", o + 2, "u/j/001", None), ("scene_code", o + 2.5, "u/j/002", None),
                          ("rendered_video", o + 4, "u/j/001", 1.5), ("rendered_video", o + 5, "u/j/002", 1.0),
                          ("thumbnail", o + 6, "u/j/002", None)],  # scene 001's thumbnail failed
    )
    stages = sorted((name, round(a - o, 2), round(b - o, 2)) for name, a, b in run.step_intervals())
    assert stages == [("rendered_video", 2.0, 4.0), ("rendered_video", 2.5, 5.0), ("scene_code", 1.0, 2.0), ("scene_code", 1.0, 2.5),
                      ("thumbnail", 5.0, 6.0)]
    assert sorted((round(a - o, 2), round(b - o, 2)) for _, a, b in run.render_intervals()) == [(2.5, 4.0), (4.0, 5.0)]


def test_concurrency_histogram_counts_overlapping_renders():
    intervals = [("rendered_video", 1.0, 4.0), ("rendered_video", 2.0, 5.0), ("scene_code", 0.0, 9.0)]
    assert bench.concurrency(intervals, "rendered_video", 0.0, 10.0) == {0: pytest.approx(6.0), 1: pytest.approx(2.0), 2: pytest.approx(2.0)}


def test_importtime_parser_finds_depths_and_importers():
    stderr = (
        "import time: self [us] | cumulative | imported package\n"
        "import time:       100 |        100 |     botocore\n"
        "import time:       200 |        300 |   boto3\n"
        "import time:        50 |        350 | t2m_pipeline.storage"
    )
    rows = bench.parse_importtime(stderr)
    assert rows == [("botocore", 100, 2, "boto3"), ("boto3", 300, 1, "t2m_pipeline.storage"), ("t2m_pipeline.storage", 350, 0, None)]
