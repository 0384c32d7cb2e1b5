"""A legacy world of shared topic folders, as the legacy code left them (legacy-system.md, "Topic collisions"):

- `binary_search_{tag}`: alice's job `a1` ran and wrote everything (scene 2 a render-cache hit: its video under the
  cached name, no code file, an empty `code/`); bob's job `a2`, days later, completed by reusing the folder; carol's
  `a3` is a queued re-submission of the same topic that never ran (it is in `job_queue`).
- `graph_coloring_{tag}`: two runs wrote into one folder: dave's `b1` failed after the outline, scene 1's code v1
  and its error log; erin's `b2` re-ran, reused those, and wrote code v2, the scene video and the combined video.
- `lonely_{tag}`: a folder no job record names.

Times: each job's `started_at`..`completed_at` (or `updated_at`) brackets the mtimes of the files its run wrote.
`videos:job_{id}` records name the combined video of the jobs that completed.
"""

from __future__ import annotations

import json
import os
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import pytest

from t2m_pipeline_tests.migration.legacy_world import CLAIM_KEY, _job, _write, video_record

USERS = ("alice", "bob", "carol", "dave", "erin")


@dataclass
class OwnershipWorld:
    root: Path
    tag: str
    redis_url: str
    clerks: dict[str, str]
    jobs: dict[str, str]
    slugs: dict[str, str]  # "a", "b", "c" -> folder
    files: dict[str, str] = field(default_factory=dict)  # short name -> legacy path (text form)

    def names(self) -> dict[str, str]:
        """Every id and tag in this world -> a stable name, to compare worlds built with other ids."""
        return {**{v: f"job:{k}" for k, v in self.jobs.items()}, self.tag: "TAG"}


def ts(month: int, day: int, hour: int, minute: int = 0, second: int = 0) -> str:
    return str(datetime(2024, month, day, hour, minute, second))


def _mtime(root: Path, rel: str, when: str) -> None:
    moment = datetime.fromisoformat(when).replace(tzinfo=timezone.utc).timestamp()
    os.utime(os.path.join(os.fsencode(root), rel.encode()), (moment, moment))


def build_ownership_world(root: Path, redis_url: str, mp4s: list[bytes], tag: str | None = None) -> OwnershipWorld:
    import redis

    tag = tag or uuid.uuid4().hex[:8]
    r = redis.Redis.from_url(redis_url)
    r.flushdb()
    r.set(CLAIM_KEY, str(os.getpid()), ex=3600)
    clerks = {u: f"user_{tag}{u}" for u in USERS}
    jobs = {name: str(uuid.uuid4()) for name in ("a1", "a2", "a3", "b1", "b2")}
    slugs = {"a": f"binary_search_{tag}", "b": f"graph_coloring_{tag}", "c": f"lonely_{tag}"}
    world = OwnershipWorld(root, tag, redis_url, clerks, jobs, slugs)

    def job(name, clerk, topic, status, created, updated, **extra):
        r.set(f"jobs:{jobs[name]}", json.dumps(_job(jobs[name], clerks[clerk], topic, status, created, updated, **extra)))
        r.sadd(f"user_jobs:{clerks[clerk]}", jobs[name])

    def write(key: str, rel: str, data: bytes, when: str) -> None:
        _write(root, f"output/{rel}", data)
        _mtime(root, f"output/{rel}", when)
        world.files[key] = f"output/{rel}"

    # -- binary_search: a1 wrote it (Mar 1, 10:00-10:10), a2 reused it (Mar 5), a3 never ran ------------------------
    a, topic_a = slugs["a"], f"Binary Search {tag}"
    job("a1", "alice", topic_a, "completed", ts(3, 1, 9, 55), ts(3, 1, 10, 10), started_at=ts(3, 1, 10), completed_at=ts(3, 1, 10, 10))
    job("a2", "bob", topic_a, "completed", ts(3, 5, 8, 59), ts(3, 5, 9, 0, 30), started_at=ts(3, 5, 9), completed_at=ts(3, 5, 9, 0, 30))
    job("a3", "carol", topic_a, "queued", ts(3, 9, 12), ts(3, 9, 12))
    write("a_outline", f"{a}/{a}_scene_outline.txt", b"<SCENE_OUTLINE><SCENE_1>x</SCENE_1><SCENE_2>y</SCENE_2></SCENE_OUTLINE>", ts(3, 1, 10, 1))
    write("a_plan1", f"{a}/scene1/{a}_scene1_implementation_plan.txt", b"# Scene 1\nplan", ts(3, 1, 10, 2))
    write("a_trace1", f"{a}/scene1/subplans/scene_trace_id.txt", b"trace-1", ts(3, 1, 10, 2, 10))
    write("a_code1v1", f"{a}/scene1/code/{a}_scene1_v1.py", b"# a scene 1 v1\n", ts(3, 1, 10, 3))
    write("a_log1", f"{a}/scene1/code/{a}_scene1_v1_error_0.log", b"Traceback: v1", ts(3, 1, 10, 3, 30))
    write("a_code1v2", f"{a}/scene1/code/{a}_scene1_v2.py", b"# a scene 1 v2\n", ts(3, 1, 10, 4))
    write("a_video1", f"{a}/media/videos/{a}_scene1_v2/720p30/Scene1.mp4", mp4s[0], ts(3, 1, 10, 5))
    write("a_srt1", f"{a}/media/videos/{a}_scene1_v2/720p30/Scene1.srt", b"1\n00:00:00,000 --> 00:00:01,000\nhi\n", ts(3, 1, 10, 5))
    write("a_plan2", f"{a}/scene2/{a}_scene2_implementation_plan.txt", b"# Scene 2\nplan", ts(3, 1, 10, 6))
    write("a_hit2", f"{a}/media/videos/{a}_scene2_v1/1080p60/{a}_scene2_v1.mp4", mp4s[1], ts(3, 1, 10, 7))  # cache hit
    os.makedirs(root / "output" / a / "scene2" / "code", exist_ok=True)  # an empty code/: the code was never written
    write("a_combined", f"{a}/{a}_combined.mp4", mp4s[2], ts(3, 1, 10, 9))
    write("a_combined_srt", f"{a}/{a}_combined.srt", b"1\n00:00:00,000 --> 00:00:01,000\nhi\n", ts(3, 1, 10, 9))
    r.set(f"videos:job_{jobs['a1']}", video_record(a, ts(3, 1, 10, 10), mp4s[2]))
    r.set(f"videos:job_{jobs['a2']}", video_record(a, ts(3, 5, 9, 0, 30), mp4s[2], width=854, height=480))

    # -- graph_coloring: b1 failed (Mar 2, 10:00-10:05), b2 re-ran and finished it (Mar 3, 10:00-10:20) ------------
    b, topic_b = slugs["b"], f"Graph Coloring {tag}"
    job("b1", "dave", topic_b, "failed", ts(3, 2, 9, 59), ts(3, 2, 10, 5), started_at=ts(3, 2, 10),
        error={"error_code": "RENDER", "error_message": "manim exited 1", "retry_count": 3, "max_retries": 3})
    job("b2", "erin", topic_b, "completed", ts(3, 3, 9, 59), ts(3, 3, 10, 20), started_at=ts(3, 3, 10), completed_at=ts(3, 3, 10, 20))
    write("b_outline", f"{b}/{b}_scene_outline.txt", b"<SCENE_OUTLINE><SCENE_1>x</SCENE_1></SCENE_OUTLINE>", ts(3, 2, 10, 0, 30))
    write("b_code1v1", f"{b}/scene1/code/{b}_scene1_v1.py", b"# b scene 1 v1\n", ts(3, 2, 10, 1))
    write("b_log1", f"{b}/scene1/code/{b}_scene1_v1_error_0.log", b"Traceback: b v1", ts(3, 2, 10, 2))
    write("b_code1v2", f"{b}/scene1/code/{b}_scene1_v2.py", b"# b scene 1 v2\n", ts(3, 3, 10, 5))
    write("b_video1", f"{b}/media/videos/{b}_scene1_v2/720p30/Scene1.mp4", mp4s[3], ts(3, 3, 10, 6))
    write("b_combined", f"{b}/{b}_combined.mp4", mp4s[3], ts(3, 3, 10, 10))
    r.set(f"videos:job_{jobs['b2']}", video_record(b, ts(3, 3, 10, 20), mp4s[3]))

    # -- lonely: no job names it ---------------------------------------------------------------------------------
    write("c_code", f"{slugs['c']}/scene1/code/{slugs['c']}_scene1_v1.py", b"# lonely\n", ts(3, 4, 10))

    r.rpush("job_queue", jobs["a3"])
    r.close()
    return world


@pytest.fixture
def ownership_world(tmp_path, redis_db, mp4s) -> OwnershipWorld:
    root = tmp_path / "legacy"
    root.mkdir()
    return build_ownership_world(root, redis_db, mp4s)
