"""Hostile scene code against the real pipeline, judged from outside (issue 10).

One worker process (faults/attack_worker.py), started with fake secrets planted in its environment, its HOME
(~/.aws/credentials) and its DAGSTER_HOME, runs jobs whose scene code comes from a stand-in OpenAI-compatible
endpoint serving attacks, through the real sensors and job definitions. A fake render directory of a concurrent
job (its scene carrying a secret, its finished video) sits in the same work root. Then, from this process:

- everything the job's owner can fetch (every S3 version under users/{their id}/, the job row with error_info,
  file_metadata, Dagster's events of the runs) carries no planted secret;
- nothing landed on the host (repository, venv, /tmp, HOME, DAGSTER_HOME), in PostgreSQL or in S3, no datagram
  arrived, no other render's file was uploaded, no process of a render is left, no cgroup or tmpfs either;
- every bomb stopped within its limit (the limits the worker measured from outside, in the log header);
- the benign scene of the same job rendered, with its thumbnail.

Each protection has a control job: the same attack with that protection switched off (through a test-only
resource), showing it getting through. Where a second layer stops the same attack, the control lifts it too and
says so.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import dagster as dg
import pytest
from sqlalchemy import text

from t2m_pipeline.render import sandbox
from t2m_pipeline.render.intake import MAX_LOG_BYTES
from t2m_pipeline.storage import layout
from t2m_pipeline_tests.conftest import ADMIN_URL
from t2m_pipeline_tests.render.test_media import make_video

pytestmark = [
    pytest.mark.slow,
    pytest.mark.timeout(1800),
    pytest.mark.skipif(os.geteuid() != 0, reason="the suite runs as root, as CI does: the case the sandbox must hold in"),
]

REPO = Path(__file__).resolve().parents[2]
VENV_SITE = next(Path(sys.prefix).glob("lib/python*/site-packages"))
TIMEOUT_S = 20  # a render's time limit in the suite: ample for these scenes on a busy 2-core machine
# The production limits' mechanisms with smaller figures, so the bombs (capped at 1.5x these) stay quick.
LIMITS = sandbox.RenderLimits(memory_bytes=1 << 30, processes=128, disk_bytes=256 << 20, file_bytes=256 << 20)
PROTECTED = [
    "benign", "secrets", "network", "writes", "symlink_dir", "symlink_file", "fifo",
    "fork_bomb", "memory_bomb", "disk_bomb", "grandchild", "flood",
]
CONTROLS = {
    # name: (attacks, protections off, other switches)
    "capabilities": (["writes"], ["unprivileged"], {}),
    "filesystem": (["secrets"], ["filesystem"], {}),
    "environment": (["secrets"], ["environment"], {}),
    "pid_namespace": (["secrets"], ["process_tree", "unprivileged"], {}),
    "other_render": (["secrets"], ["filesystem", "unprivileged"], {}),
    "network": (["network"], ["network"], {}),
    "intake": (["symlink_file", "symlink_dir"], [], {"checked_intake": False}),
    "memory": (["memory_bomb"], ["limits"], {}),
    "processes": (["fork_bomb"], ["limits"], {}),
    "disk": (["disk_bomb"], ["disk"], {}),
    "tree_kill": (["grandchild"], ["process_tree"], {}),
    # A warm renderer's forks are not dumpable, so the flood cannot take the Pipes channel from its parent: the
    # message guard behind that is tested with the forks' isolation off, and its control with both off.
    "channel": (["flood"], [], {"isolated_forks": False}),
    "messages": (["flood"], [], {"guarded": False, "isolated_forks": False}),
    "log_cap": (["flood"], [], {"max_log_bytes": 1 << 30}),
}


class UdpSink(threading.Thread):
    def __init__(self):
        super().__init__(daemon=True)
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.2)
        self.received: list[bytes] = []
        self.stop = threading.Event()

    @property
    def port(self) -> int:
        return self.sock.getsockname()[1]

    def run(self):
        while not self.stop.is_set():
            try:
                self.received.append(self.sock.recvfrom(65536)[0])
            except TimeoutError:
                pass


def survivors(needle: str) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and entry.name != str(os.getpid()):
            try:
                if needle.encode() in (entry / "cmdline").read_bytes():
                    found.append(int(entry.name))
            except OSError:
                pass
    return found


def render_uid_processes() -> list[str]:
    out = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                uid = int((entry / "status").read_text().split("\nUid:\t", 1)[1].split()[0])
            except (OSError, IndexError, ValueError):
                continue
            if sandbox.UID_BASE <= uid < sandbox.UID_BASE + sandbox.UID_SPAN:
                out.append(f"{entry.name} uid {uid}")
    return out


@pytest.fixture(scope="module")
def world(service_env, settings, buckets, tmp_path_factory):
    from t2m_pipeline.db.engine import drop_database, make_engine
    from t2m_pipeline.db.migrate import upgrade

    marker = uuid.uuid4().hex[:16]
    plant = lambda what: f"t2mplant-{what}-{marker}"  # noqa: E731
    mounts_before = set(render_mounts())  # another process's (a test on the other worker), not this world's renders'
    base = Path(f"/var/tmp/t2m-attack-{marker}")
    home, dagster_home = base / "home", base / "dagster_home"
    (home / ".aws").mkdir(parents=True)
    dagster_home.mkdir()
    (home / ".aws" / "credentials").write_text(f"[default]\naws_access_key_id = AKIA\naws_secret_access_key = {plant('aws-credentials')}\n")
    (dagster_home / "dagster.yaml").write_text(f"# storage password: {plant('dagster-home')}\ntelemetry:\n  enabled: false\n")
    for path in (base, home, home / ".aws", dagster_home):
        os.chmod(path, 0o755)
    for path in (home / ".aws" / "credentials", dagster_home / "dagster.yaml"):
        os.chmod(path, 0o644)  # as careless as a real checkout: only the sandbox's view keeps them out

    # another job's render directory, mid-render, in the same work root: its scene and its finished video
    victim_uid = sandbox.fresh_uid()
    victim = Path(f"/tmp/t2m-render-victim{marker}")
    (victim / "work" / "out").mkdir(parents=True)
    os.chmod(victim, 0o711)
    (victim / "work" / "scene.py").write_text(f"# {plant('other-render')}\n")
    make_video(victim / "work" / "out" / "output.mp4", 30)
    victim_sha = hashlib.sha256((victim / "work" / "out" / "output.mp4").read_bytes()).hexdigest()
    for path in (victim / "work", victim / "work" / "out", victim / "work" / "scene.py", victim / "work" / "out" / "output.mp4"):
        os.chown(path, victim_uid, victim_uid)
    os.chmod(victim / "work", 0o700)

    db_name = f"t2m_attack_{marker}"
    db_url = ADMIN_URL.rsplit("/", 1)[0] + f"/{db_name}"
    upgrade(db_url)
    secret_db_url = db_url.replace("postgres@", f"postgres:{plant('db-password')}@")
    udp = UdpSink()
    udp.start()
    planted_env = {
        "STRIPE_SK": f"sk_live_{plant('stripe')}",
        "APP_CONFIG_DSN": f"postgresql://app:{plant('dsn')}@db.internal:5432/app",
        "T2M_LLM_API_KEY": plant("llm-key"),
        "AWS_SECRET_ACCESS_KEY": plant("aws-env"),
        "T2M_DATABASE_URL": secret_db_url,
        "HOME": str(home),
        "DAGSTER_HOME": str(dagster_home),
        "T2M_RENDER_TIMEOUT_S": str(TIMEOUT_S),
    }
    # what is searched for: the distinctive part of every planted value (sk_live_<it>, app:<it>@db, ...)
    secrets = [plant(name) for name in ("stripe", "dsn", "llm-key", "aws-env", "db-password", "aws-credentials",
                                        "dagster-home", "other-render")]
    victim_user = str(uuid.uuid4())
    params = {
        "home": str(home),
        "dagster_home": str(dagster_home),
        "repo": str(REPO),
        "victim_work": str(victim / "work"),
        "pg_dsn": f"postgresql://postgres@127.0.0.1:5432/{db_name}",
        "s3_endpoint": settings.endpoint_url,
        "bucket": settings.bucket("videos"),
        "victim_user": victim_user,
        "udp_port": udp.port,
        "venv_site": str(VENV_SITE),
        "venv": sys.prefix,
    }
    job_marker = lambda name: f"{marker}{name.replace('_', '')}"  # noqa: E731 - what each job's attacks leave behind
    jobs = [{"name": "protected", "attacks": PROTECTED, "marker": job_marker("protected")}]
    for name, (attacks, off, switches) in CONTROLS.items():
        jobs.append({"name": name, "attacks": attacks, "off": off, "marker": job_marker(name), **switches})
    out = tmp_path_factory.mktemp("attack") / "results.json"
    plan = out.with_name("plan.json")
    limits = {k: getattr(LIMITS, k) for k in ("memory_bytes", "processes", "disk_bytes", "file_bytes")}
    plan.write_text(json.dumps({"db_url": secret_db_url, "params": params, "jobs": jobs, "out": str(out), "limits": limits}))
    env = {**os.environ, **planted_env}
    started = time.monotonic()
    worker = subprocess.run(
        [sys.executable, "-m", "t2m_pipeline_tests.faults.attack_worker", str(plan)],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=1700, check=False,  # its stderr says why
    )
    seconds = time.monotonic() - started
    assert worker.returncode == 0, worker.stderr[-6000:]
    time.sleep(1.0)
    udp.stop.set()
    results = json.loads(out.read_text())
    engine = make_engine(db_url)
    world = {
        "marker": marker,
        "plant": plant,
        "secrets": secrets,
        "results": results,
        "engine": engine,
        "settings": settings,
        "udp": udp,
        "victim_sha": victim_sha,
        "victim_user": victim_user,
        "dagster_home": dagster_home,
        "home": home,
        "db_name": db_name,
        "seconds": seconds,
        "job_marker": job_marker,
        "survivors": {job["name"]: sorted(set(survivors(f"t2m-survivor-{job['marker']}")) | set(results["jobs"][job["name"]]["survivors"]))
                      for job in jobs},
        "render_processes": render_uid_processes(),
        "mounts_before": mounts_before,
    }
    yield world
    for job in jobs:  # the tree-kill control's survivors, found again now by their marker: ours, started by our worker
        for pid in survivors(f"t2m-survivor-{job['marker']}"):
            try:
                os.kill(pid, 9)
            except ProcessLookupError:
                pass
    for leftover in [*REPO.glob(f"t2m_attack_{marker}*"), *VENV_SITE.glob(f"t2m_attack_{marker}*"), *Path("/tmp").glob(f"t2m-attack-{marker}*")]:
        leftover.unlink()
    from t2m_pipeline.storage.s3 import make_s3_client

    client = make_s3_client(settings)
    for job in jobs:  # what the network control wrote into the shared buckets
        for key in s3_attack_objects(world, job["name"]):
            for version in client.list_object_versions(Bucket=settings.bucket("videos"), Prefix=key).get("Versions", []):
                client.delete_object(Bucket=settings.bucket("videos"), Key=key, VersionId=version["VersionId"])
    shutil.rmtree(base, ignore_errors=True)
    shutil.rmtree(victim, ignore_errors=True)
    engine.dispose()
    drop_database(db_url)
    remove_control_cgroups()


def remove_control_cgroups() -> None:
    """The tree-kill control's cgroup could not be removed while its survivor lived; remove what is empty now."""
    own, mounts = sandbox._proc_cgroups(), sandbox._cgroup_mounts()  # noqa: SLF001
    for controller in ("memory", "pids", "freezer"):
        if controller in mounts and controller in own:
            for d in Path(mounts[controller] + own[controller]).glob("t2m-render-*"):
                if not (d / "cgroup.procs").read_text().strip():
                    try:
                        d.rmdir()
                    except OSError:
                        pass


# -- what the owner can fetch ---------------------------------------------------------------------------------------


def owner_data(world, name: str) -> dict[str, str]:
    """Everything the job's owner (or anyone reading its Dagster runs) can get, as text, by where it comes from."""
    from t2m_pipeline.storage.s3 import make_s3_client

    job = world["results"]["jobs"][name]
    client = make_s3_client(world["settings"])
    data: dict[str, str] = {}
    for kind in ("videos", "code", "thumbnails", "temp"):
        bucket = world["settings"].bucket(kind)
        pages = client.get_paginator("list_object_versions").paginate(Bucket=bucket, Prefix=f"users/{job['user_id']}/")
        for page in pages:
            for version in page.get("Versions", []):
                body = client.get_object(Bucket=bucket, Key=version["Key"], VersionId=version["VersionId"])["Body"].read()
                data[f"s3://{bucket}/{version['Key']}?{version['VersionId']}"] = body.decode("latin-1")
    with world["engine"].connect() as conn:
        row = conn.execute(text("SELECT * FROM jobs WHERE id = :j"), {"j": job["job_id"]}).mappings().one()
        data["jobs row"] = json.dumps({k: str(v) for k, v in row.items()})
        files = conn.execute(text("SELECT * FROM file_metadata WHERE job_id = :j"), {"j": job["job_id"]}).mappings().all()
        data["file_metadata"] = json.dumps([{k: str(v) for k, v in f.items()} for f in files])
    runs = set(job["runs"])
    data["dagster events"] = "\n".join(e for e in world["results"]["events"] if any(r in e for r in runs))
    return data


def leaks(world, name: str) -> dict[str, list[str]]:
    """Planted secret -> where the owner could read it."""
    data = owner_data(world, name)
    found = {}
    for secret in world["secrets"]:
        where = [source for source, content in data.items() if secret in content]
        if where:
            found[secret] = where
    return found


def scene_log(world, name: str, attack: str) -> str:
    """The newest render log the owner can fetch for the scene running `attack`."""
    from t2m_pipeline.storage.s3 import make_s3_client

    job = world["results"]["jobs"][name]
    attacks = PROTECTED if name == "protected" else CONTROLS[name][0]
    number = attacks.index(attack) + 1
    client = make_s3_client(world["settings"])
    bucket = world["settings"].bucket("code")
    prefix = layout.scene_log_key(job["user_id"], job["job_id"], number, "x").rsplit("/", 1)[0] + "/render-"
    keys = sorted(o["Key"] for o in client.list_objects_v2(Bucket=bucket, Prefix=prefix).get("Contents", []))
    assert keys, f"no render log for {name}/{attack}"
    return client.get_object(Bucket=bucket, Key=keys[-1])["Body"].read().decode("utf-8", "replace")


def attack_report(log: str) -> dict:
    """The attack's own `ATTACK {...}` lines from the owner's log (what it got, by its own account)."""
    out = {}
    for line in log.splitlines():
        if line.startswith("ATTACK "):
            try:
                item = json.loads(line[len("ATTACK "):])
            except ValueError:
                continue
            out[item["name"]] = item["value"]
    return out


def scene_objects(world, name: str) -> dict[int, set[str]]:
    job = world["results"]["jobs"][name]
    with world["engine"].connect() as conn:
        rows = conn.execute(text("SELECT s3_key, checksum FROM file_metadata WHERE job_id = :j"), {"j": job["job_id"]}).all()
    objects: dict[int, set[str]] = {}
    for key, _ in rows:
        match = re.search(r"/(videos|thumbnails|code)/scene_(\d{3})/(output\.mp4|thumbnail\.jpg|scene\.py)$", key)
        if match:
            objects.setdefault(int(match.group(2)), set()).add(match.group(1))
    return objects


def error_message(world, name: str) -> str:
    job = world["results"]["jobs"][name]
    with world["engine"].connect() as conn:
        info = conn.execute(text("SELECT error_info FROM jobs WHERE id = :j"), {"j": job["job_id"]}).scalar_one()
    return json.dumps(info)


def table_exists(world, name: str) -> bool:
    with world["engine"].connect() as conn:
        return bool(conn.execute(text("SELECT count(*) FROM pg_class WHERE relname = :n"), {"n": f"attack_{world['job_marker'](name)}"}).scalar())


def host_markers(world, name: str) -> list[str]:
    m = world["job_marker"](name)
    candidates = [
        *REPO.glob(f"t2m_attack_{m}*"),
        *VENV_SITE.glob(f"t2m_attack_{m}*"),
        *Path("/tmp").glob(f"t2m-attack-{m}*"),
        *world["home"].glob(f"t2m-attack-{m}*"),
        *world["dagster_home"].glob(f"t2m-attack-{m}*"),
    ]
    return [str(p) for p in candidates]


def s3_attack_objects(world, name: str) -> list[str]:
    from t2m_pipeline.storage.s3 import make_s3_client

    client = make_s3_client(world["settings"])
    found = []
    for bucket in world["settings"].buckets.values():
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket):
            found += [o["Key"] for o in page.get("Contents", []) if world["job_marker"](name) in o["Key"]]
    return found


def datagrams(world, name: str) -> list[bytes]:
    return [d for d in world["udp"].received if d == f"udp-{world['job_marker'](name)}".encode()]


def victim_uploads(world) -> set[str]:
    """Jobs that stored the other render's video as their own."""
    with world["engine"].connect() as conn:
        return set(conn.execute(text("SELECT DISTINCT CAST(job_id AS text) FROM file_metadata WHERE checksum = :c"),
                                {"c": world["victim_sha"]}).scalars())


# -- the protected job ----------------------------------------------------------------------------------------------


def test_the_owner_can_fetch_no_planted_secret(world):
    assert leaks(world, "protected") == {}
    data = owner_data(world, "protected")
    repo_text = (REPO / "t2m_pipeline" / "config.py").read_text()[:200]
    assert not [source for source, content in data.items() if repo_text in content], "the repository's source reached the owner"
    assert world["results"]["jobs"]["protected"]["runs"], "the protected job never ran"


def test_nothing_lands_on_the_host_in_postgresql_or_in_s3_and_no_datagram_leaves(world):
    assert host_markers(world, "protected") == []
    assert not table_exists(world, "protected")
    assert s3_attack_objects(world, "protected") == []
    assert datagrams(world, "protected") == []
    report = attack_report(scene_log(world, "protected", "network"))["found"]
    assert report["sql"] != "created" and report["s3_put"] != "written"  # (a datagram to its own loopback goes nowhere)
    writes = attack_report(scene_log(world, "protected", "writes"))["found"]
    assert writes["remount /"] == -1 and writes["remount " + sys.prefix] == -1
    # /tmp inside is the sandbox's own (so is a checkout under the host's /tmp): host_markers above looked outside
    inside_own_tmp = {"host_tmp"} | ({"repo"} if str(REPO).startswith("/tmp/") else set())
    assert not [k for k, v in writes.items() if v == "written" and k not in inside_own_tmp]


def test_the_benign_scene_of_the_hostile_job_still_renders_with_its_thumbnail(world):
    objects = scene_objects(world, "protected")
    assert objects.get(1) == {"code", "videos", "thumbnails"}
    for number in range(2, len(PROTECTED) + 1):
        assert "videos" not in objects.get(number, set()), PROTECTED[number - 1]


def test_nothing_outside_the_render_directory_is_uploaded(world):
    assert world["results"]["jobs"]["protected"]["job_id"] not in victim_uploads(world)
    for attack in ("symlink_dir", "symlink_file", "fifo"):
        log = scene_log(world, "protected", attack)
        assert "produced no usable video" in log or "failed (exit" in log, (attack, log[:600])


def header_figure(log: str, pattern: str) -> tuple[int, ...]:
    match = re.search(pattern, log)
    assert match, f"{pattern!r} not in the log header:\n{log[:800]}"
    return tuple(int(g) for g in match.groups())


def test_every_bomb_stops_within_its_limit_measured_from_outside(world):
    fork = scene_log(world, "protected", "fork_bomb")
    peak, limit = header_figure(fork, r"processes peak (\d+) of (\d+)")
    assert limit == LIMITS.processes and peak <= limit
    assert attack_report(fork)["fork_bomb"]["children"] < LIMITS.processes
    memory = scene_log(world, "protected", "memory_bomb")
    used, cap = header_figure(memory, r"memory peak (\d+) MiB of (\d+) MiB")
    assert cap == LIMITS.memory_bytes >> 20 and used <= cap
    assert "memory limit reached" in memory
    disk = scene_log(world, "protected", "disk_bomb")
    used, cap = header_figure(disk, r"disk (\d+) MiB of (\d+) MiB")
    assert cap == LIMITS.disk_bytes >> 20 and used <= cap
    assert attack_report(disk)["disk_bomb"]["mib"] < LIMITS.disk_bytes >> 20


def test_a_detached_grandchild_does_not_outlive_the_timeout_and_no_render_process_is_left(world):
    assert f"timed out after {TIMEOUT_S} s" in scene_log(world, "protected", "grandchild")
    assert world["survivors"]["protected"] == []
    control = {str(pid) for pid in world["survivors"]["tree_kill"]}
    # Another test file's renders (the daemon test's, on the other worker) may be running right now, with a render
    # uid and a tmpfs of their own: what is ours and leaked stays, what is theirs ends within seconds.
    seen = [line for line in world["render_processes"] if line.split()[0] not in control]
    assert persisting(lambda: [line for line in render_uid_processes() if line in seen]) == []
    assert persisting(lambda: [m for m in render_mounts() if m not in world["mounts_before"]]) == []


def render_mounts() -> list[str]:
    return [line.split()[4] for line in Path("/proc/self/mountinfo").read_text().splitlines() if "t2m-render-" in line]


def persisting(snapshot, timeout_s: float = 60) -> list[str]:
    """What `snapshot()` shows now and still shows after `timeout_s` (nothing as soon as all of it is gone)."""
    first = set(snapshot())
    deadline = time.monotonic() + timeout_s
    while first and time.monotonic() < deadline:
        first &= set(snapshot())
        time.sleep(0.5)
    return sorted(first)


def test_a_render_cannot_take_the_pipes_channel_from_its_warm_renderer_fork(world):
    log = scene_log(world, "protected", "flood")
    assert len(log.encode()) <= MAX_LOG_BYTES + 16_384
    assert attack_report(log).get("channel") == "Operation not permitted"
    assert "messages refused:" not in log


def test_control_channel_with_the_forks_dumpable_the_render_takes_its_pipes_channel(world):
    assert attack_report(scene_log(world, "channel", "flood")).get("channel") == "taken"


def test_forged_pipes_messages_are_refused_and_the_log_is_capped(world):
    """Behind the forks' isolation (off here: the channel is taken), the worker's guard on every message."""
    log = scene_log(world, "channel", "flood")
    assert len(log.encode()) <= MAX_LOG_BYTES + 16_384
    assert attack_report(log).get("channel") == "taken", "the attack never reached the Pipes channel: nothing was tested"
    assert "messages refused:" in log and "not allowed" in log
    events = [dg.deserialize_value(e) for e in world["results"]["events"]]
    flood_runs = set(world["results"]["jobs"]["channel"]["runs"])
    forged = world["plant"]("forged")
    mine = [e for e in events if e.run_id in flood_runs]
    with_forged = [e for e in mine if forged in dg.serialize_value(e)]
    # what the render may say: up to 100 short log lines of its own choosing, labelled; nothing else it forged
    assert all(e.user_message.startswith("[render] ") and len(e.user_message) <= 1100 for e in with_forged), [e.user_message[:200] for e in with_forged][:5]
    assert len([e for e in mine if e.user_message.startswith("[render]")]) <= 100
    materializations = [e for e in mine if e.dagster_event and e.dagster_event.event_type_value in ("ASSET_MATERIALIZATION", "ASSET_CHECK_EVALUATION")]
    assert materializations and not [e for e in materializations if forged in dg.serialize_value(e)]
    assert not [e for e in mine if e.dagster_event and e.dagster_event.event_type_value == "ENGINE_EVENT" and forged in dg.serialize_value(e)]
    assert "report_asset_materialization not allowed" in log and "after the close" in log


# -- controls: one protection off, the attack gets through -----------------------------------------------------------


def test_control_capabilities_root_inside_remounts_and_writes_into_the_checkout(world):
    report = attack_report(scene_log(world, "capabilities", "writes"))["found"]
    assert report["remount " + sys.prefix] == 0 and report["venv"] == "written"
    assert host_markers(world, "capabilities"), "the control expected the write in the checkout's venv, on the host"


def others_can_reach(path) -> bool:
    """Whether every directory above `path` lets others through (what the sandbox's unprivileged uid needs)."""
    parents = [p for p in Path(path).resolve().parents if str(p) != "/"]
    return all(os.stat(p).st_mode & 0o001 for p in parents) and bool(os.stat(path).st_mode & 0o001)


def test_control_filesystem_the_whole_host_visible_leaks_files(world):
    found = leaks(world, "filesystem")
    assert world["plant"]("dagster-home") in found and world["plant"]("aws-credentials") in found
    report = attack_report(scene_log(world, "filesystem", "secrets"))["found"]
    # the checkout leaks too, unless a parent of it is closed to others (mktemp -d is 0700): no view can show it then
    assert "bucket_name" in report["repo"] or "Environment" in report["repo"] or not others_can_reach(REPO)


def test_control_environment_the_worker_environment_leaks(world):
    found = leaks(world, "environment")
    for name in ("stripe", "dsn", "llm-key", "aws-env"):
        assert world["plant"](name) in found, name


def test_control_pid_namespace_the_parents_environ_leaks(world):
    report = attack_report(scene_log(world, "pid_namespace", "secrets"))["found"]
    assert world["plant"]("stripe") in report["proc_parents"] + report["proc_scan"]
    assert world["plant"]("stripe") in leaks(world, "pid_namespace")


def test_control_other_render_a_concurrent_render_directory_is_read(world):
    assert world["plant"]("other-render") in leaks(world, "other_render")


def test_control_network_sql_s3_and_udp_get_out(world):
    report = attack_report(scene_log(world, "network", "network"))["found"]
    assert report["sql"] == "created" and table_exists(world, "network")
    assert report["s3_put"] == "written" and s3_attack_objects(world, "network")
    assert datagrams(world, "network")


def test_control_intake_a_symlinked_output_uploads_another_renders_video(world):
    assert victim_uploads(world) == {world["results"]["jobs"]["intake"]["job_id"]}


def test_control_memory_the_bomb_reaches_its_own_cap(world):
    assert attack_report(scene_log(world, "memory", "memory_bomb"))["memory_bomb"]["mib"] == 1536


def test_control_processes_the_fork_bomb_reaches_its_own_cap(world):
    assert attack_report(scene_log(world, "processes", "fork_bomb"))["fork_bomb"]["children"] == 200


def test_control_disk_the_disk_bomb_fills_past_the_quota(world):
    assert attack_report(scene_log(world, "disk", "disk_bomb"))["disk_bomb"]["mib"] == 400


def test_control_tree_kill_a_detached_grandchild_outlives_the_render(world):
    assert world["survivors"]["tree_kill"], "the control expected a survivor"


def test_control_messages_forged_messages_reach_dagster(world):
    events = [dg.deserialize_value(e) for e in world["results"]["events"]]
    runs = set(world["results"]["jobs"]["messages"]["runs"])
    forged = world["plant"]("forged")
    mine = [e for e in events if e.run_id in runs and forged in dg.serialize_value(e)]
    assert len([e for e in mine if "[render]" not in e.user_message]) > 0  # unlabelled, unbounded: the pipes warnings
    assert len(mine) >= 1000  # every one of the 1,000 forged log lines, and more


def test_control_log_cap_the_whole_flood_reaches_the_owner(world):
    assert len(scene_log(world, "log_cap", "flood").encode()) > 2_500_000
