"""`t2m migrate files` under injected S3 faults, shared by the tests (small) and `make reliability` (`t2m_pipeline_tests/faults/reliability_report.py`) (larger).

The scenario builds a legacy world (`legacy_world.build_world`: every quirk of legacy-system.md, Redis records
included, plus generated topic folders for size and multipart-sized videos), migrates its Redis into PostgreSQL
(no S3 involved), then runs the real CLI, `t2m migrate files`, as a subprocess whose `AWS_ENDPOINT_URL` is a
`FaultProxy` in front of the moto server. Afterwards, against moto directly (no proxy): `t2m migrate verify` (a
subprocess too), the duplicate sweep over the migrated keys, and an oracle of its own.

The CLI's S3 client keeps its 60 s read timeout (no setting shortens it), so `delay` is latency here and
`late-write` is a connection reset whose request lands just before the client's retry.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import re
import subprocess
import sys
import time
import uuid
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy import Engine, text

from t2m_pipeline.config import Settings
from t2m_pipeline.db.engine import make_engine
from devtools.fault_proxy import FaultPlan, FaultProxy
from t2m_pipeline.migration.legacy_paths import ledger_path, slugify, split_copy_path
from t2m_pipeline.storage.s3 import S3Storage, make_s3_client
from t2m_pipeline_tests.migration.legacy_world import World, _job, build_world, legacy_ts, make_mp4, stamp_folder

MIB = 1024 * 1024
# Above the files migration's 8 MiB in-memory limit and the 5 MiB multipart threshold set for the CLI below: the
# file goes through `put_file` as a two-part multipart upload.
LARGE_FILE_BYTES = 9 * MIB
CLI_TIMEOUT_SECONDS = 600
_REMOVED = re.compile(r"removed (\d+) duplicate version")  # S3Storage's warning after a retried write


@dataclass
class MigrationRun:
    """One `t2m migrate files` process, and `t2m migrate verify` after it."""

    max_attempts: int | None
    exit_code: int
    outcomes: dict = field(default_factory=dict)
    copies: dict = field(default_factory=dict)  # the copies for jobs that reused a folder: outcome -> count
    uploaded_files: int = 0
    copied_files: int = 0
    adopted_versions: int = 0
    unchanged_files: int = 0
    failed_reasons: list[str] = field(default_factory=list)
    requests: int = 0
    faults: int = 0
    removed_inline: int = 0  # duplicate versions the CLI's storage layer removed after retried writes (its log)
    verify_ok: bool = False
    verify_problems: list[str] = field(default_factory=list)
    stderr: str = ""
    seconds: float = 0.0

    @property
    def failed(self) -> int:
        return self.outcomes.get("failed", 0) + self.copies.get("failed", 0)

    @property
    def migrated(self) -> int:
        """Ledger rows migrated: the files, and the copies of those a job reused."""
        return self.outcomes.get("migrated", 0) + self.copies.get("migrated", 0)


@dataclass
class MigrationFaultReport:
    label: str
    plan: FaultPlan
    files_in_tree: int = 0
    migrated: int = 0
    large_files: int = 0
    runs: list[MigrationRun] = field(default_factory=list)
    faults_by_operation: dict = field(default_factory=dict)
    removed_by_sweep: int = 0
    orphan_multipart_uploads: int = 0
    problems: list[str] = field(default_factory=list)  # the oracle's, after the last run and the sweep
    seconds: float = 0.0

    @property
    def requests(self) -> int:
        return sum(r.requests for r in self.runs)

    @property
    def removed_inline(self) -> int:
        return sum(r.removed_inline for r in self.runs)

    @property
    def faults(self) -> int:
        return sum(r.faults for r in self.runs)

    def faults_on(self, operations, kinds=None) -> int:
        kinds = None if kinds is None else {getattr(k, "value", k) for k in kinds}
        return sum(
            n for name, n in self.faults_by_operation.items()
            if name.split(":")[0] in operations and (kinds is None or name.split(":")[1] in kinds)
        )


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# -- the world -----------------------------------------------------------------------------------------------------


def add_generated_topics(world: World, *, topics: int, scenes: int = 3, large_files: int = 0, seed: int = 0) -> None:
    """Topic folders shaped like the legacy generator's, each claimed by a job written to the world's Redis.

    Per scene: an implementation plan, two subplans, code `_v1.._v3` (one S3 key, three versions), an error log, and
    two rendered versions of the scene video (another key with two versions). The first `large_files` topics get a
    combined video of `LARGE_FILE_BYTES` (a multipart upload); the others a small one.
    """
    import redis

    rng = random.Random(seed)
    r = redis.Redis.from_url(world.redis_url)
    owners = ("alice", "bob", "carol", "dave")

    def write(rel: str, head: bytes, low: int, high: int) -> None:
        path = world.root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(head + rng.randbytes(rng.randrange(low, high)))

    for t in range(topics):
        job_id, clerk = str(uuid.uuid4()), world.clerks[owners[t % len(owners)]]
        topic = f"Generated {world.tag} {t}"
        slug, base, day = slugify(topic), f"output/{slugify(topic)}", 10 + t % 18
        start, end = legacy_ts(day, month=3), legacy_ts(day, month=3, hour=12)  # its run wrote the folder (stamped below)
        r.set(f"jobs:{job_id}", json.dumps(_job(job_id, clerk, topic, "completed", start, end, started_at=start, completed_at=end)))
        r.sadd(f"user_jobs:{clerk}", job_id)
        outline = "".join(f"<SCENE_{n}>scene {n}</SCENE_{n}>" for n in range(1, scenes + 1))
        write(f"{base}/{slug}_scene_outline.txt", f"<SCENE_OUTLINE>{outline}</SCENE_OUTLINE>".encode(), 0, 1)
        for n in range(1, scenes + 1):
            scene = f"{base}/scene{n}"
            write(f"{scene}/{slug}_scene{n}_implementation_plan.txt", f"# Scene {n}\n".encode(), 200, 3000)
            for plan in ("vision_storyboard", "technical_implementation"):
                write(f"{scene}/subplans/{slug}_scene{n}_{plan}_plan.txt", b"", 200, 3000)
            for k in (1, 2, 3):
                write(f"{scene}/code/{slug}_scene{n}_v{k}.py", f"# {slug} scene {n} v{k}\n".encode(), 100, 2000)
            write(f"{scene}/code/{slug}_scene{n}_v1_error_0.log", b"Traceback ", 300, 301)
            for k in (1, 2):
                write(f"{base}/media/videos/{slug}_scene{n}_v{k}/480p15/Scene{n}.mp4", b"", 2048, 24 * 1024)
        size = (LARGE_FILE_BYTES, LARGE_FILE_BYTES + 1) if t < large_files else (4096, 64 * 1024)
        write(f"{base}/{slug}_combined.mp4", b"", *size)
        stamp_folder(world.root, slug, legacy_ts(day, month=3, minute=1), step_s=0.1)
    r.close()


def build_fault_world(
    root: Path, redis_url: str, *, mp4s: list[bytes] | None = None, extra_topics: int = 2, scenes: int = 3,
    large_files: int = 1, seed: int = 0,
) -> World:
    """`build_world` (flushes the Redis database at `redis_url`: it must be the caller's own) plus generated topics."""
    root.mkdir(parents=True, exist_ok=True)
    world = build_world(root, redis_url, mp4s or [make_mp4(s) for s in range(4)])
    add_generated_topics(world, topics=extra_topics, scenes=scenes, large_files=large_files, seed=seed)
    return world


# -- the CLI -------------------------------------------------------------------------------------------------------


def cli_env(settings: Settings, endpoint: str, max_attempts: int | None = None) -> dict[str, str]:
    """The environment of a `t2m` process for these settings, with S3 at `endpoint`."""
    env = {k: v for k, v in os.environ.items() if k not in ("T2M_REDIS_URL", "AWS_PROFILE", "AWS_SESSION_TOKEN")}
    env.setdefault("AWS_ACCESS_KEY_ID", "testing")
    env.setdefault("AWS_SECRET_ACCESS_KEY", "testing")
    env.update(
        T2M_ENV=settings.env,
        AWS_REGION=settings.region,
        AWS_DEFAULT_REGION=settings.region,
        AWS_ACCOUNT_ID=settings.account_id,
        AWS_ENDPOINT_URL=endpoint,
        T2M_DATABASE_URL=settings.database_url,
        T2M_MULTIPART_THRESHOLD_MIB="5",
    )
    env.pop("T2M_S3_MAX_ATTEMPTS", None)
    if max_attempts is not None:
        env["T2M_S3_MAX_ATTEMPTS"] = str(max_attempts)
    return env


def run_cli(args: list[str], env: dict[str, str]) -> tuple[int, dict | None, str]:
    """`python -m t2m_pipeline.cli ARGS --json` -> (exit code, the JSON report or None, stderr)."""
    done = subprocess.run(
        [sys.executable, "-m", "t2m_pipeline.cli", *args, "--json"],
        env=env, capture_output=True, text=True, timeout=CLI_TIMEOUT_SECONDS,
    )
    try:
        report = json.loads(done.stdout)
    except json.JSONDecodeError:
        report = None
    return done.returncode, report, done.stderr


def _failed_reasons(engine: Engine) -> list[str]:
    with engine.connect() as conn:
        return conn.execute(
            text("SELECT legacy_path || ': ' || coalesce(reason, '') FROM migration_ledger WHERE outcome = 'failed' ORDER BY 1")
        ).scalars().all()


def _verify(settings: Settings, root: Path, run: MigrationRun) -> None:
    """`t2m migrate verify` against moto directly (no proxy)."""
    code, result, stderr = run_cli(["migrate", "verify", "--legacy-root", str(root)], cli_env(settings, settings.endpoint_url))
    run.verify_ok = code == 0 and bool(result and result.get("ok"))
    run.verify_problems = [f"{p['legacy_path']}: {p['problem']}" for p in (result or {}).get("problems", [])] or (
        [] if run.verify_ok else [f"verify exited {code}: {stderr.strip()[-500:]}"]
    )


# -- the oracle ----------------------------------------------------------------------------------------------------


def tree_entries(root: Path) -> dict[str, bytes]:
    """Every regular file and symlink under `root` (symlinks not followed), by ledger path -> relative raw path.

    Walked here with os.walk, independently of the migration's own discovery.
    """
    base = os.fsencode(root)
    found: dict[str, bytes] = {}
    for folder, dirs, files in os.walk(base, followlinks=False):
        for name in files + [d for d in dirs if os.path.islink(os.path.join(folder, d))]:
            rel = os.path.relpath(os.path.join(folder, name), base)
            found[ledger_path(rel)] = rel
    return found


def _file_sha(root: Path, rel: bytes) -> str | None:
    try:
        with open(os.path.join(os.fsencode(root), rel), "rb") as fh:
            return _sha(fh.read())
    except OSError:
        return None


def check_migration(settings: Settings, engine: Engine, root: Path, *, client=None) -> list[str]:
    """Ledger, `file_metadata` and S3 (read directly) against the legacy tree; returns the problems found.

    - each file and symlink of the tree has exactly one ledger row (and a copy row per job that reused its folder,
      `legacy_paths.copy_ledger_path`), and no row names anything else; none `failed`;
    - each `migrated` row names a `file_metadata` row (one per legacy path and owner, one per version) with the same
      object, version and sha256, which is the legacy file's sha256, and that S3 version holds exactly those bytes;
    - each `file_metadata` row is a migrated row's, and its version holds the legacy file's bytes;
    - every S3 version in the (initially empty) buckets holds the whole bytes of a legacy file migrated to its key
      (no partial or foreign object), no key has a version beyond its legacy files (no identical extra version, no
      unrecorded one), and each key's current version is its newest legacy version.
    """
    problems: list[str] = []
    tree = tree_entries(root)
    oracle = client or make_s3_client(settings)
    with engine.connect() as conn:
        ledger = {r.legacy_path: r for r in conn.execute(text("SELECT * FROM migration_ledger"))}
        rows = {r.id: r for r in conn.execute(text("SELECT * FROM file_metadata"))}
    for path in sorted(set(tree) - set(ledger)):
        problems.append(f"{path}: in the tree, not in the ledger")
    for path in sorted(p for p in ledger if split_copy_path(p)[0] not in tree):
        problems.append(f"{path}: in the ledger, not in the tree")
    for path, row in sorted(ledger.items()):
        if row.outcome == "failed":
            problems.append(f"{path}: failed: {row.reason}")
        elif row.outcome != "migrated" and row.file_metadata_id is not None:
            problems.append(f"{path}: {row.outcome} but names a file_metadata row")

    bodies: dict[tuple[str, str, str], str | None] = {}

    def version_sha(bucket: str, key: str, version_id: str) -> str | None:
        where = (bucket, key, version_id)
        if where not in bodies:
            try:
                bodies[where] = _sha(oracle.get_object(Bucket=bucket, Key=key, VersionId=version_id)["Body"].read())
            except Exception:  # noqa: BLE001 - a missing version is a finding
                bodies[where] = None
        return bodies[where]

    migrated = {p: r for p, r in ledger.items() if r.outcome == "migrated"}
    expected_by_key: dict[tuple[str, str], Counter] = defaultdict(Counter)
    versions_claimed: Counter = Counter()
    for key, row in sorted(migrated.items()):
        path = split_copy_path(key)[0]
        expected_by_key[(row.bucket, row.key)][row.sha256] += 1
        versions_claimed[(row.bucket, row.key, row.version_id)] += 1
        disk = _file_sha(root, tree[path]) if path in tree else None
        if disk != row.sha256:
            problems.append(f"{path}: ledger sha256 is not the legacy file's")
        fm = rows.get(row.file_metadata_id)
        if fm is None:
            problems.append(f"{path}: migrated without a file_metadata row")
            continue
        if (fm.s3_bucket, fm.s3_key, fm.version_id, fm.checksum) != (row.bucket, row.key, row.version_id, row.sha256):
            problems.append(f"{path}: file_metadata names another object, version or checksum than the ledger")
        if (fm.metadata or {}).get("legacy_path") != path:
            problems.append(f"{path}: file_metadata.metadata.legacy_path differs")
        if version_sha(row.bucket, row.key, row.version_id) != row.sha256:
            problems.append(f"{path}: S3 version {row.version_id} missing or not the legacy file's bytes")
    for where, n in versions_claimed.items():
        if n > 1:
            problems.append(f"s3://{where[0]}/{where[1]}: version {where[2]} claimed by {n} legacy files")
    by_legacy_path = Counter(((fm.metadata or {}).get("legacy_path"), fm.job_id) for fm in rows.values())
    claimed_rows = {r.file_metadata_id for r in migrated.values()}
    for fm in rows.values():
        legacy = (fm.metadata or {}).get("legacy_path")
        if fm.id not in claimed_rows:
            problems.append(f"file_metadata {fm.id} ({legacy}): no migrated ledger row names it")
        if by_legacy_path[(legacy, fm.job_id)] > 1:
            problems.append(f"{legacy}: {by_legacy_path[(legacy, fm.job_id)]} file_metadata rows for job {fm.job_id}")
        disk = _file_sha(root, tree[legacy]) if legacy in tree else None
        if disk is None or fm.checksum != disk or version_sha(fm.s3_bucket, fm.s3_key, fm.version_id) != disk:
            problems.append(f"file_metadata {fm.id} ({legacy}): its version does not hold the legacy file's bytes")

    # Every version in the buckets, read back: whole legacy files only, nothing extra.
    newest: dict[tuple[str, str], tuple] = {}
    for fm in rows.values():
        # the migration's own order of a key's versions: legacy version order, then legacy path
        order = (tuple((fm.metadata or {}).get("version_order") or ()), (fm.metadata or {}).get("legacy_path") or "")
        where = (fm.s3_bucket, fm.s3_key)
        if where not in newest or order > newest[where][0]:
            newest[where] = (order, fm.version_id)
    for bucket in settings.buckets.values():
        found: dict[str, list[dict]] = defaultdict(list)
        for page in oracle.get_paginator("list_object_versions").paginate(Bucket=bucket):
            for v in page.get("Versions", []):
                found[v["Key"]].append(v)
        for key, versions in found.items():
            where = f"s3://{bucket}/{key}"
            held = Counter()
            for v in versions:
                sha = version_sha(bucket, key, v["VersionId"])
                held[sha] += 1
                if sha not in expected_by_key.get((bucket, key), {}):
                    problems.append(f"{where}: version {v['VersionId']} is partial or foreign")
            extra = held - expected_by_key.get((bucket, key), Counter())
            if sum(extra.values()):
                problems.append(f"{where}: {sum(extra.values())} version(s) beyond its legacy files (duplicates)")
            latest = next((v["VersionId"] for v in versions if v.get("IsLatest")), None)
            if (bucket, key) in newest and latest != newest[(bucket, key)][1]:
                problems.append(f"{where}: the current version is not the newest legacy version")
    return problems


# -- the scenario --------------------------------------------------------------------------------------------------


def run_migration_fault_scenario(
    settings: Settings,
    work_dir: Path,
    redis_url: str,
    plan: FaultPlan,
    *,
    mp4s: list[bytes] | None = None,
    extra_topics: int = 2,
    scenes: int = 3,
    large_files: int = 1,
    max_attempts: int | None = None,
    rerun: bool = False,
    workers: int = 8,
    label: str | None = None,
) -> MigrationFaultReport:
    """Build a legacy world, migrate it with `t2m migrate files` behind a FaultProxy, verify, sweep, check.

    `settings.endpoint_url` is the moto server, whose buckets must be bootstrapped and empty (`fresh_buckets`);
    `settings.database_url` a migrated database of the scenario's own (ledger paths are relative to the legacy
    root); `redis_url` a Redis database of the caller's own (it is flushed). `max_attempts` sets
    `T2M_S3_MAX_ATTEMPTS` for the first run (1: retries off, the control); with `rerun`, a second run with the
    platform's retries follows, under the same proxy (its fault decisions go on where the first run left them).
    """
    import redis

    from t2m_pipeline.migration.redis_import import migrate_redis

    started = time.monotonic()
    label = label or ("mixed" if len(plan.kinds) > 1 else plan.kinds[0].value)
    report = MigrationFaultReport(label, plan, large_files=large_files)
    root = work_dir / "legacy"
    build_fault_world(root, redis_url, mp4s=mp4s, extra_topics=extra_topics, scenes=scenes, large_files=large_files,
                      seed=plan.seed)
    report.files_in_tree = len(tree_entries(root))
    engine = make_engine(settings.database_url)
    try:
        client = redis.Redis.from_url(redis_url, decode_responses=False)
        migrate_redis(engine, client)  # PostgreSQL only: the files' attribution
        client.close()
        with FaultProxy(settings.endpoint_url, plan) as proxy:
            for attempts in [max_attempts] + ([None] if rerun else []):
                run_started = time.monotonic()
                before = (sum(proxy.stats.requests.values()), proxy.stats.injected_total())
                code, result, stderr = run_cli(
                    ["migrate", "files", "--legacy-root", str(root), "--workers", str(workers)],
                    cli_env(settings, proxy.url, attempts),
                )
                proxy.wait_idle(plan.delay_seconds + 60)  # held requests land before anything is checked
                run = MigrationRun(attempts, code, stderr=stderr[-4000:])
                run.removed_inline = sum(int(n) for n in _REMOVED.findall(stderr))
                if result:
                    run.outcomes = result.get("outcomes", {})
                    run.copies = result.get("copies", {})
                    run.uploaded_files = result.get("uploaded_files", 0)
                    run.copied_files = result.get("copied_files", 0)
                    run.adopted_versions = result.get("adopted_versions", 0)
                    run.unchanged_files = result.get("unchanged_files", 0)
                run.failed_reasons = _failed_reasons(engine)
                run.requests = sum(proxy.stats.requests.values()) - before[0]
                run.faults = proxy.stats.injected_total() - before[1]
                _verify(settings, root, run)
                run.seconds = time.monotonic() - run_started
                report.runs.append(run)
            report.faults_by_operation = {f"{op}:{kind}": n for (op, kind), n in proxy.stats.injected.items()}

        # The duplicate sweep, as maintenance would run it (directly), over every migrated key.
        with engine.connect() as conn:
            keys = conn.execute(
                text("SELECT DISTINCT bucket, key FROM migration_ledger WHERE outcome = 'migrated' ORDER BY 1, 2")
            ).all()
            report.migrated = conn.execute(
                text("SELECT count(*) FROM migration_ledger WHERE outcome = 'migrated'")
            ).scalar_one()
        sweeper = S3Storage(settings, engine)
        for bucket, key in keys:
            sweeper.remove_duplicate_versions(bucket, key)
        report.removed_by_sweep = sweeper.duplicates_removed
        report.problems = check_migration(settings, engine, root)
        oracle = make_s3_client(settings)
        report.orphan_multipart_uploads = sum(
            len(oracle.list_multipart_uploads(Bucket=b).get("Uploads", [])) for b in settings.buckets.values()
        )
    finally:
        engine.dispose()
    report.seconds = time.monotonic() - started
    return report
