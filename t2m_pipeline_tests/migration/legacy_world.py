"""A legacy world for the migration tests: an output tree with real tiny MP4s (PyAV), uploads, and a Redis database
with every quirk legacy-system.md lists.

Each world is tagged so several can share one metadata database and S3 endpoint (slugs and Clerk ids carry the
tag). Tests that migrate use their own scratch database (`migration_db`), since ledger paths are relative to the
legacy root and every world has an `output/session_id.txt`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import os
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import pytest

REDIS_URL_BASE = os.environ.get("T2M_TEST_REDIS", "redis://127.0.0.1:6379")
CLAIM_KEY = "t2m_redis_db_claim"  # the benchmarks claim databases with the same key


def make_mp4(seed: int, frames: int = 12, size: int = 64) -> bytes:
    """A real H.264 MP4 (a few KB) whose pixels depend on `seed`."""
    import av
    import numpy as np

    buf = io.BytesIO()
    with av.open(buf, "w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=12)
        stream.width = stream.height = size
        stream.pix_fmt = "yuv420p"
        rng = np.random.default_rng(seed)
        for _ in range(frames):
            image = rng.integers(0, 255, (size, size, 3), dtype=np.uint8)
            for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return buf.getvalue()


@pytest.fixture(scope="session")
def mp4s() -> list[bytes]:
    """Four distinct tiny videos, made once per session."""
    videos = [make_mp4(seed) for seed in range(4)]
    assert all(len(v) > 1024 for v in videos) and len(set(videos)) == 4
    return videos


@pytest.fixture(scope="session")
def redis_db():
    """A Redis database of our own (5..15), claimed with SET NX and flushed; db 0 is never touched."""
    import redis

    for db in range(5, 16):
        client = redis.Redis.from_url(f"{REDIS_URL_BASE}/{db}")
        if client.set(CLAIM_KEY, str(os.getpid()), nx=True, ex=3600):
            client.flushdb()
            client.set(CLAIM_KEY, str(os.getpid()), ex=3600)
            yield f"{REDIS_URL_BASE}/{db}"
            client.flushdb()
            client.close()
            return
        client.close()
    pytest.fail("no free Redis database among 5..15 (each test run claims one)")


@pytest.fixture
def migration_db(service_env, settings):
    """A scratch metadata database (migrated) for one test; returns (settings for it, engine)."""
    from t2m_pipeline.db.engine import drop_database, make_engine
    from t2m_pipeline.db.migrate import upgrade

    url = service_env["T2M_DATABASE_URL"].rsplit("/", 1)[0] + f"/t2m_mig_{uuid.uuid4().hex[:10]}"
    upgrade(url)
    engine = make_engine(url)
    yield dataclasses.replace(settings, database_url=url), engine
    engine.dispose()
    drop_database(url)


def _redis(url: str):
    import redis

    return redis.Redis.from_url(url)


def legacy_ts(day: int, micro: int = 0, hour: int = 10, month: int = 1, minute: int = 0) -> str:
    from datetime import datetime

    return str(datetime(2024, month, day, hour, minute, 0, micro))


def stamp_folder(root: Path, folder: str, start: str, step_s: float = 1.0) -> None:
    """Give every file under `output/{folder}` a modification time inside a legacy run, from `start` (a legacy
    timestamp, naive UTC) on, one step apart in sorted path order: what the legacy generator's run left on disk."""
    from datetime import datetime, timezone

    when = datetime.fromisoformat(start.replace(" ", "T")).replace(tzinfo=timezone.utc).timestamp()
    base = os.path.join(os.fsencode(root), b"output", os.fsencode(folder))
    for path in sorted(os.path.join(d, f) for d, _, files in os.walk(base) for f in files):
        if not os.path.islink(path):
            os.utime(path, (when, when), follow_symlinks=False)
            when += step_s


def video_record(slug: str, created_at: str, data: bytes, **extra) -> str:
    """A `videos:job_{id}` record naming the folder's combined video, as the legacy app wrote it."""
    return json.dumps({
        "filename": f"{slug}_combined.mp4", "file_path": f"/srv/t2m/output/{slug}/{slug}_combined.mp4",
        "file_size": len(data), "file_hash": hashlib.sha256(data).hexdigest(), "duration_seconds": 1.0,
        "width": 1280, "height": 720, "format": "mp4", "status": "ready", "thumbnails": [], "subtitle_tracks": [],
        "created_at": created_at, **extra,
    })


@dataclass
class World:
    root: Path
    tag: str
    redis_url: str
    slug_shared: str
    slug_queued: str
    slug_orphan: str
    clerks: dict[str, str]
    jobs: dict[str, str]  # name -> job id
    files: dict[str, bytes]  # name -> file id (uploads)
    code_versions: dict[int, bytes] = field(default_factory=dict)
    expected_quarantine: set[str] = field(default_factory=set)  # source keys
    missing_queue_id: str = ""
    upload_ids: dict[str, str] = field(default_factory=dict)

    def path(self, rel: str | bytes) -> bytes:
        rel = rel if isinstance(rel, bytes) else rel.encode()
        return os.path.join(os.fsencode(self.root), rel)


def _write(root: Path, rel: str | bytes, data: bytes) -> None:
    path = os.path.join(os.fsencode(root), rel if isinstance(rel, bytes) else rel.encode())
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as fh:
        fh.write(data)


def _job(job_id, clerk, topic, status, created, updated, **extra) -> dict:
    record = {
        "id": job_id,
        "user_id": clerk,
        "job_type": "video_generation",
        "priority": "normal",
        "status": status,
        "configuration": {"topic": topic, "context": f"About {topic}", "quality": "low", "use_rag": False},
        # a job that never left the queue completed no stage (the legacy API had no worker)
        "progress": {"percentage": 100.0 if status == "completed" else 0.0, "current_stage": "done" if status == "completed" else None,
                     "stages_completed": [] if status.lower().endswith(("queued", "cancelled")) else ["planning"],
                     "estimated_completion": None, "processing_time_seconds": 12.5},
        "error": None,
        "metrics": {"cpu_usage_percent": 50.0},
        "created_at": created,
        "updated_at": updated,
        "is_deleted": False,
    }
    record.update(extra)
    return record


def build_world(root: Path, redis_url: str, mp4s: list[bytes], tag: str | None = None) -> World:
    tag = tag or uuid.uuid4().hex[:8]
    r = _redis(redis_url)
    r.flushdb()
    r.set(CLAIM_KEY, str(os.getpid()), ex=3600)
    shared = f"pythagorean_theorem_{tag}"
    queued_slug = f"fourier_series_{tag}"
    orphan = f"orphan_topic_{tag}"
    clerks = {name: f"user_{tag}{name}" for name in ("alice", "bob", "carol", "dave", "erin")}
    jobs = {name: str(uuid.uuid4()) for name in ("old", "new", "queued", "deleted", "processing", "unlisted", "noupdated")}
    world = World(root, tag, redis_url, shared, queued_slug, orphan, clerks, jobs, {})

    # -- Redis: jobs in both forms and every quirk -------------------------------------------------------------
    topic = f"Pythagorean Theorem {tag}"
    # alice's job produced the shared folder (its run: 09:40 to 10:00); bob's, a month later, reused it
    r.set(f"jobs:{jobs['old']}", json.dumps(_job(jobs["old"], clerks["alice"], topic, "completed", legacy_ts(1, hour=9), legacy_ts(1, 123456),
                                                 started_at=legacy_ts(1, hour=9, minute=40), completed_at=legacy_ts(1, 123456))))
    newer = _job(jobs["new"], clerks["bob"], topic, "JobStatus.COMPLETED", "2024-02-01T09:00:00", "2024-02-01T09:30:00.500000",
                 priority="JobPriority.HIGH", started_at="2024-02-01T09:29:00", completed_at="2024-02-01T09:30:00.500000")
    r.hset(f"jobs:{jobs['new']}", mapping={k: json.dumps(v) for k, v in newer.items()})
    r.set(f"jobs:{jobs['queued']}", json.dumps(_job(jobs["queued"], clerks["alice"], f"Fourier Series {tag}", "queued", legacy_ts(3), legacy_ts(3), priority="urgent")))
    r.set(f"jobs:{jobs['deleted']}", json.dumps(_job(jobs["deleted"], clerks["carol"], f"Deleted {tag}", "queued", legacy_ts(4), legacy_ts(5),
                                                     is_deleted=True, deleted_at=legacy_ts(5))))
    processing = _job(jobs["processing"], clerks["carol"], f"Busy {tag}", "processing", legacy_ts(6, 5), legacy_ts(6, 7), started_at=legacy_ts(6, 6))
    del processing["priority"], processing["job_type"]
    r.set(f"jobs:{jobs['processing']}", json.dumps(processing))
    r.set(f"jobs:{jobs['unlisted']}", json.dumps(_job(jobs["unlisted"], clerks["dave"], f"Unlisted {tag}", "JobStatus.QUEUED", legacy_ts(7), legacy_ts(7))))
    no_updated = _job(jobs["noupdated"], clerks["dave"], f"No updated {tag}", "failed", legacy_ts(8), None,
                      error={"error_code": "RENDER", "error_message": "boom", "retry_count": 3, "max_retries": 3})
    del no_updated["updated_at"]
    r.set(f"jobs:{jobs['noupdated']}", json.dumps(no_updated))
    # bad records
    bad = {
        f"jobs:{uuid.uuid4()}": "{not json",
        f"jobs:{uuid.uuid4()}": None,  # missing user_id (filled below)
        f"jobs:{uuid.uuid4()}": None,  # unknown status
        "jobs:not-a-uuid": None,
        f"jobs:{uuid.uuid4()}": None,  # progress out of range
        f"jobs:{uuid.uuid4()}": None,  # bad batch uuid
    }
    keys = list(bad)
    r.set(keys[0], bad[keys[0]])
    missing_user = _job(keys[1][5:], clerks["alice"], "x", "queued", legacy_ts(2), legacy_ts(2))
    del missing_user["user_id"]
    r.set(keys[1], json.dumps(missing_user))
    r.set(keys[2], json.dumps(_job(keys[2][5:], clerks["alice"], "x", "exploded", legacy_ts(2), legacy_ts(2))))
    r.set(keys[3], json.dumps(_job("not-a-uuid", clerks["alice"], "x", "queued", legacy_ts(2), legacy_ts(2))))
    over = _job(keys[4][5:], clerks["alice"], "x", "queued", legacy_ts(2), legacy_ts(2))
    over["progress"]["percentage"] = 150
    r.set(keys[4], json.dumps(over))
    r.set(keys[5], json.dumps(_job(keys[5][5:], clerks["alice"], "x", "queued", legacy_ts(2), legacy_ts(2), batch_id="batch-7")))
    wrong_type = f"jobs:{uuid.uuid4()}"
    r.rpush(wrong_type, "a", "b")
    r.set("files:wrongtype_" + tag, "\xff not json")
    r.set(b"jobs:\xff" + tag.encode(), b"{}")  # a key that is not UTF-8
    world.expected_quarantine = set(keys) | {wrong_type, "files:wrongtype_" + tag, f"jobs:%FF{tag}"}

    # queue: head first; a duplicate, an id with no job, a deleted job, a finished job, garbage
    world.missing_queue_id = str(uuid.uuid4())
    r.rpush("job_queue", jobs["queued"], jobs["processing"], jobs["queued"], world.missing_queue_id, jobs["deleted"], jobs["old"], "garbage")
    r.sadd(f"user_jobs:{clerks['alice']}", jobs["old"], jobs["queued"])
    r.sadd(f"user_jobs:{clerks['bob']}", jobs["new"])
    r.sadd(f"user_jobs:{clerks['erin']}", str(uuid.uuid4()))  # a user known only from a set
    batch_id = str(uuid.uuid4())
    r.set(f"batch:{batch_id}", json.dumps({"batch_id": batch_id, "user_id": clerks["alice"], "total_jobs": 2, "created_jobs": 2,
                                           "failed_jobs": 0, "batch_priority": "normal", "created_at": "2024-01-02T08:00:00",
                                           "job_ids": [jobs["old"], jobs["queued"]]}))
    r.sadd(f"user_batches:{clerks['alice']}", batch_id)
    r.set(f"videos:job_{jobs['old']}", video_record(shared, legacy_ts(1), mp4s[3]))
    r.set(f"videos:job_{jobs['new']}", video_record(shared, "2024-02-01 09:30:00", mp4s[3], width=640, height=360))
    # caches and counters: counted, not migrated
    r.set(f"job_status:{jobs['old']}", "completed")
    r.hset("queue:stats", mapping={"depth": 3})
    r.set("cache:topic:x", "1")
    r.set("cache:topic:y", "2")
    r.set("file_cache:abc", "1")
    r.incr(f"rate_limit:{clerks['alice']}")
    r.lpush("pipeline:events", "e1")

    # -- output tree ----------------------------------------------------------------------------------------------
    out = "output"
    _write(root, f"{out}/session_id.txt", str(uuid.uuid4()).encode())
    _write(root, f"{out}/.render_cache/{hashlib.md5(b'c').hexdigest()}_low.mp4", mp4s[0])
    s = shared
    _write(root, f"{out}/{s}/session_id.txt", b"sess")
    _write(root, f"{out}/{s}/{s}_scene_outline.txt", b"<SCENE_OUTLINE><SCENE_1>a</SCENE_1><SCENE_2>b</SCENE_2><SCENE_10>c</SCENE_10></SCENE_OUTLINE>")
    _write(root, f"{out}/{s}/{s}_combined.mp4", mp4s[3])
    _write(root, f"{out}/{s}/{s}_combined.srt", b"1\n00:00:00,000 --> 00:00:01,000\nhello\n")
    for k in (1, 2, 3):
        code = f"# scene 1 version {k}\nfrom manim import *\nclass Scene1(Scene):\n    pass\n".encode()
        world.code_versions[k] = code
        _write(root, f"{out}/{s}/scene1/code/{s}_scene1_v{k}.py", code)
    _write(root, f"{out}/{s}/scene1/code/{s}_scene1_v1_error_0.log", b"Traceback: boom")
    _write(root, f"{out}/{s}/scene1/code/{s}_scene1_v1_fix_log.txt", b"fixed")
    _write(root, f"{out}/{s}/scene1/code/{s}_scene1_v2_vfix_log.txt", b"visual fix")
    _write(root, f"{out}/{s}/scene1/{s}_scene1_implementation_plan.txt", b"# Scene 1\nA plan")
    _write(root, f"{out}/{s}/scene1/succ_rendered.txt", b"ok")
    _write(root, f"{out}/{s}/scene1/subplans/scene_trace_id.txt", b"trace")
    _write(root, f"{out}/{s}/scene1/subplans/{s}_scene1_vision_storyboard_plan.txt", b"story")
    _write(root, f"{out}/{s}/scene1/subplans/notes with spaces \u00fc.txt".encode(), b"odd name")
    _write(root, f"{out}/{s}/scene1/rag_cache/rag_queries_1.json", b'{"q": 1}')
    _write(root, f"{out}/{s}/scene2/{s}_scene2_implementation_plan.txt", b"# Scene 2 - Error: the model refused\n")
    _write(root, f"{out}/{s}/scene2/code/{s}_scene2_v1.py", b"# scene 2\n")
    _write(root, f"{out}/{s}/scene10/code/{s}_scene10_v1.py", b"# scene 10 v1\n")
    _write(root, f"{out}/{s}/scene10/code/{s}_scene10_v2.py", b"# scene 10 v2\n")
    _write(root, f"{out}/{s}/media/videos/{s}_scene1_v1/480p15/Scene1.mp4", mp4s[0])
    _write(root, f"{out}/{s}/media/videos/{s}_scene1_v1/480p15/Scene1.srt", b"1\n00:00:00,000 --> 00:00:01,000\nv1\n")
    _write(root, f"{out}/{s}/media/videos/{s}_scene1_v2/480p15/Scene1.mp4", mp4s[1])
    _write(root, f"{out}/{s}/media/videos/{s}_scene1_v2/480p15/partial_movie_files/Scene1/000.mp4", mp4s[2])
    _write(root, f"{out}/{s}/media/videos/{s}_scene2_v1/480p15/Scene2.mp4", mp4s[2][:600])  # under 1 KB: invalid
    _write(root, f"{out}/{s}/media/videos/{s}_scene10_v1/720p30/Scene10.mp4", mp4s[2])
    _write(root, f"{out}/{s}/media/images/{s}/frame.png", b"\x89PNG cache")
    _write(root, f"{out}/{s}/media/Tex/abc.svg", b"<svg/>")
    _write(root, f"{out}/{s}/media/texts/def.svg", b"<svg/>")
    _write(root, f"{out}/{s}/".encode() + b"bad\xffname.py", b"# not utf-8 name")
    _write(root, f"{out}/{s}/ctrl\x01char.txt".encode(), b"control char")
    outside = root.parent / f"outside-{tag}.txt"
    outside.write_bytes(b"secret outside the tree")
    os.symlink(outside, root / out / s / "scene1" / "code" / "link_outside.py")
    os.symlink(root.parent, root / out / s / "linked_dir")
    os.symlink(root.parent, root / out / f"linked_topic_{tag}")

    # scene 3: a render-cache hit (the cached video under its own name, no code file, an empty code/)
    _write(root, f"{out}/{s}/scene3/{s}_scene3_implementation_plan.txt", b"# Scene 3\nCached")
    _write(root, f"{out}/{s}/media/videos/{s}_scene3_v1/1080p60/{s}_scene3_v1.mp4", mp4s[1])
    os.makedirs(os.path.join(os.fsencode(root), f"{out}/{s}/scene3/code".encode()), exist_ok=True)
    stamp_folder(root, s, legacy_ts(1, hour=9, minute=41))

    _write(root, f"{out}/{queued_slug}/scene1/code/{queued_slug}_scene1_v1.py", b"# fourier\n")
    _write(root, f"{out}/{orphan}/scene1/code/{orphan}_scene1_v1.py", b"# orphan\n")
    _write(root, f"{out}/{orphan}/media/videos/{orphan}_scene1_v1/480p15/Scene1.mp4", mp4s[1])
    _write(root, f"{out}/caf\u00e9 {tag}/notes.txt".encode(), b"unicode folder")
    _write(root, f"{out}/".encode() + b"raw\xe9" + tag.encode() + b"/x.txt", b"non-utf-8 folder")

    # -- uploads ----------------------------------------------------------------------------------------------------
    def upload(kind: str, clerk: str, original: str, data: bytes, ext: str, sub: str = "") -> str:
        file_id = f"{clerk}_20240105_101010_{hashlib.md5(original.encode()).hexdigest()[:8]}"
        _write(root, f"storage/uploads/{kind}/{sub}{file_id}{ext}", data)
        return file_id

    f_ok = upload("image", clerks["carol"], "holiday.png", b"\x89PNG holiday", ".png")
    f_bad = upload("video", clerks["alice"], "talk.mp4", mp4s[1], ".mp4", sub="2024/")
    f_none = upload("document", clerks["dave"], "thesis.pdf", b"%PDF-1.4 thesis", ".pdf")
    f_stranger = upload("audio", f"user_{tag}frank", "song.mp3", b"ID3 song", ".mp3")
    world.upload_ids = {"ok": f_ok, "bad": f_bad, "none": f_none, "stranger": f_stranger}
    _write(root, f"storage/uploads/image/weird name {tag}.png", b"\x89PNG weird")
    _write(root, "storage/notes.txt", b"not an upload")

    def file_record(file_id, original, mime, kind, data, checksum=None):
        r.set(f"files:{file_id}", json.dumps({
            "filename": file_id, "original_filename": original, "file_path": f"/srv/storage/{file_id}", "file_size": len(data),
            "mime_type": mime, "file_type": kind, "checksum": checksum or hashlib.sha256(data).hexdigest(),
            "created_at": "2024-01-05 10:10:10", "metadata": {},
        }))

    file_record(f_ok, "holiday.png", "image/png", "image", b"\x89PNG holiday")
    file_record(f_bad, "talk.mp4", "video/mp4", "video", mp4s[1], checksum="0" * 64)
    r.sadd(f"user_files:{clerks['carol']}", f_ok)
    r.sadd(f"user_files:{clerks['alice']}", f_bad)
    r.close()
    return world


@pytest.fixture
def world(tmp_path, redis_db, mp4s) -> World:
    root = tmp_path / "legacy"
    root.mkdir()
    return build_world(root, redis_db, mp4s)
