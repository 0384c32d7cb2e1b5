"""`t2m jobs submit|show` and `t2m urls` as a user runs them: a subprocess against the test database and moto."""

import json
import os
import subprocess
import sys
import uuid

import pytest
import requests
from sqlalchemy import text

from t2m_pipeline.storage import layout
from t2m_pipeline.storage.s3 import ObjectOwner


def t2m(*args, env):
    return subprocess.run([sys.executable, "-m", "t2m_pipeline.cli", *args], env=env, capture_output=True, text=True, timeout=120)


@pytest.fixture
def env(service_env):
    return {**os.environ, **service_env}


def test_submit_creates_the_rows_the_sensor_reads_and_show_reports_them(env, engine):
    clerk = f"user_{uuid.uuid4().hex[:10]}"
    done = t2m("jobs", "submit", "--user", clerk, "--email", "a@example.com", "--topic", "Prime numbers",
               "--context", "Only divisible by 1 and themselves.", "--quality", "medium", "--priority", "high", "--scenes", "2", env=env)
    assert done.returncode == 0, done.stderr
    job_id = done.stdout.strip()
    with engine.connect() as conn:
        row = conn.execute(
            text("SELECT j.status, j.priority, j.configuration, q.status AS qs, u.clerk_user_id FROM jobs j "
                 "JOIN job_queue q ON q.job_id = j.id JOIN users u ON u.id = j.user_id WHERE j.id = :j"),
            {"j": job_id},
        ).mappings().one()
    assert (row["status"], row["qs"], row["priority"], row["clerk_user_id"]) == ("queued", "queued", "high", clerk)
    assert row["configuration"] == {"topic": "Prime numbers", "context": "Only divisible by 1 and themselves.", "quality": "medium", "scene_count": 2}

    shown = t2m("jobs", "show", job_id, "--json", env=env)
    assert shown.returncode == 0, shown.stderr
    summary = json.loads(shown.stdout)
    assert (summary["id"], summary["status"], summary["progress_percentage"], summary["objects"]) == (job_id, "queued", 0.0, [])
    human = t2m("jobs", "show", job_id, env=env)
    assert human.returncode == 0 and "queued" in human.stdout and "Prime numbers" in human.stdout


@pytest.mark.parametrize(
    "args,message",
    [
        (["jobs", "submit", "--user", "u", "--email", "e", "--topic", "t", "--priority", "asap"], "priority"),
        (["jobs", "submit", "--user", "u", "--email", "e", "--topic", "t", "--quality", "8k"], "quality"),
        (["jobs", "submit", "--user", "u", "--email", "e", "--topic", "t", "--scenes", "0"], "--scenes"),
        (["jobs", "show", "not-a-uuid"], "not a UUID"),
        (["jobs", "show", str(uuid.UUID(int=7))], "does not exist"),
        (["urls", str(uuid.UUID(int=7)), "--user", "nobody"], "does not exist"),
    ],
)
def test_user_errors_are_one_line(env, args, message):
    done = t2m(*args, env=env)
    assert done.returncode == 2
    assert len(done.stderr.strip().splitlines()) == 1 and message in done.stderr, done.stderr


def test_urls_only_for_the_owner_and_they_fetch_the_objects(env, engine, storage, settings):
    owner_clerk, other_clerk = f"user_{uuid.uuid4().hex[:10]}", f"user_{uuid.uuid4().hex[:10]}"
    job_id = t2m("jobs", "submit", "--user", owner_clerk, "--email", "o@example.com", "--topic", "Graphs", env=env).stdout.strip()
    t2m("jobs", "submit", "--user", other_clerk, "--email", "x@example.com", "--topic", "Other", env=env)
    with engine.connect() as conn:
        user_id = conn.execute(text("SELECT user_id FROM jobs WHERE id = :j"), {"j": job_id}).scalar_one()
    owner = ObjectOwner(user_id, "scene_code", job_id=job_id, scene_number=1)
    code_key = layout.scene_code_key(user_id, job_id, 1)
    storage.put_bytes(settings.bucket("code"), code_key, b"old version", owner=owner, content_type="text/x-python")
    storage.put_bytes(settings.bucket("code"), code_key, b"from manim import *\n", owner=owner, content_type="text/x-python")
    thumb_key = layout.thumbnail_key(user_id, job_id, 1)
    storage.put_bytes(settings.bucket("thumbnails"), thumb_key, b"\xff\xd8jpeg", owner=ObjectOwner(user_id, "thumbnail", job_id=job_id), content_type="image/jpeg")

    done = t2m("urls", job_id, "--user", owner_clerk, "--expires", "600", "--json", env=env)
    assert done.returncode == 0, done.stderr
    urls = {u["key"]: u["url"] for u in json.loads(done.stdout)}
    assert set(urls) == {code_key, thumb_key}  # one URL per object: its newest version
    assert requests.get(urls[code_key], timeout=10).content == b"from manim import *\n"
    assert requests.get(urls[thumb_key], timeout=10).content == b"\xff\xd8jpeg"
    assert "X-Amz-Expires=600" in urls[code_key]

    refused = t2m("urls", job_id, "--user", other_clerk, env=env)
    assert refused.returncode == 2 and "does not own" in refused.stderr and "http" not in refused.stdout + refused.stderr
    too_long = t2m("urls", job_id, "--user", owner_clerk, "--expires", str(8 * 24 * 3600), env=env)
    assert too_long.returncode == 2 and "--expires" in too_long.stderr

    shown = t2m("jobs", "show", job_id, env=env)
    assert shown.returncode == 0 and "scene_001" in shown.stdout


def test_show_and_urls_on_rows_the_driver_cannot_decode_print_one_line(env, make_user, engine):
    """A job the new_jobs sensor rejected (3,000-deep configuration, queued_at 'infinity'), and one whose error_info
    another system wrote 3,000 levels deep: `show` and `urls` print their lines, never a traceback."""
    user_id, clerk = make_user()
    deep = "[" * 3000 + "]" * 3000
    with engine.begin() as conn:
        rejected = conn.execute(
            text("INSERT INTO jobs (user_id, topic, status, configuration, error_info) VALUES (:u, 'Deep', 'failed', "
                 "CAST(:c AS jsonb), CAST(:e AS jsonb)) RETURNING id"),
            {"u": user_id, "c": '{"a": ' + deep + "}", "e": json.dumps({"stage": "planning", "scene": None, "message": "job row rejected: configuration is nested 3001 levels deep: expected at most 32", "log_key": None, "failed_scenes": []})},
        ).scalar_one()
        conn.execute(text("INSERT INTO job_queue (job_id, status, queued_at) VALUES (:j, 'failed', 'infinity')"), {"j": rejected})
        garbled = conn.execute(
            text("INSERT INTO jobs (user_id, topic, status, error_info, metrics) VALUES (:u, 'Garbled', 'failed', CAST(:e AS jsonb), CAST(:e AS jsonb)) RETURNING id"),
            {"u": user_id, "e": '{"message": ' + deep + "}"},
        ).scalar_one()
    shown = t2m("jobs", "show", str(rejected), env=env)
    assert shown.returncode == 0 and "Traceback" not in shown.stderr + shown.stdout, shown.stderr
    assert [line for line in shown.stdout.splitlines() if line.startswith("error in planning")] == [
        "error in planning (scene None): job row rejected: configuration is nested 3001 levels deep: expected at most 32"
    ]
    urls = t2m("urls", str(rejected), "--user", clerk, env=env)
    assert urls.returncode == 0 and urls.stderr == ""
    assert urls.stdout.splitlines() == [f"job {rejected} has no objects yet (status failed: job row rejected: configuration is nested 3001 levels deep: expected at most 32)"]
    garbled_shown = t2m("jobs", "show", str(garbled), env=env)
    assert garbled_shown.returncode == 0 and "Traceback" not in garbled_shown.stderr, garbled_shown.stderr
    assert "error: error_info is nested 3001 levels deep: expected at most 32" in garbled_shown.stdout.splitlines()
    as_json = json.loads(t2m("jobs", "show", str(garbled), "--json", env=env).stdout)
    assert as_json["error_info"] == {"unreadable": "error_info is nested 3001 levels deep: expected at most 32"}
