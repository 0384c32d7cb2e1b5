"""Fault scenarios shared by the tests (small sizes) and `make reliability` (`t2m_pipeline_tests/faults/reliability_report.py`) (large sizes, RELIABILITY.md).

A scenario writes through `S3Storage` behind a `FaultProxy`, then checks the result against an oracle that talks to
the moto server directly (no faults): every recorded version exists and holds the intended bytes, every visible
version is a whole intended write, every write has exactly one `file_metadata` row and one S3 version, and the
latest version of each key is the last write's.

To add a scenario (the pipeline's or the migration's): start a `FaultProxy(settings.endpoint_url, plan)`, give the
code under test settings whose `endpoint_url` is `proxy.url` (`faulted_settings`, or the `AWS_ENDPOINT_URL`
environment variable for a subprocess), run it, `proxy.wait_idle()`, then check what it recorded with
`check_recorded_objects` (any list of `file_metadata` rows or `StoredObject`s with their intended sha256).
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import threading
import time
import uuid
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy import Engine, select, text

from t2m_pipeline.config import Settings
from t2m_pipeline.db.engine import in_transaction
from t2m_pipeline.db.users import ensure_user
from t2m_pipeline.db.models import FileMetadata
from devtools.fault_proxy import FaultKind, FaultPlan, FaultProxy
from t2m_pipeline.storage import layout
from t2m_pipeline.storage.s3 import ObjectOwner, S3Storage, StoredObject, make_s3_client

MIB = 1024 * 1024
# A multipart test object: two parts at the storage layer's 8 MiB part size (S3's minimum part is 5 MiB).
MULTIPART_BYTES = 9 * MIB
# Delayed answers and late writes need a client that gives up quickly (its read timeout is 0.5 s under the time a
# request is held); other faults get a patient client, so a slow moment of the machine is not mistaken for a fault.
HELD_SECONDS = 2.5
PATIENT_READ_TIMEOUT = 20.0
TIMING_KINDS = frozenset({FaultKind.DELAY, FaultKind.LATE_WRITE})


def read_timeout_for(plan: FaultPlan) -> float:
    """Just under the time a delayed answer is held when the plan delays, otherwise patient."""
    if TIMING_KINDS & set(plan.kinds):
        return max(0.5, plan.delay_seconds - 0.5)
    return PATIENT_READ_TIMEOUT


def fresh_buckets(settings: Settings) -> None:
    """Empty a PRIVATE moto server (`/moto-api/reset`) and bootstrap the four buckets again.

    moto's ListObjectVersions walks the whole bucket, so scenarios start from empty buckets to stay fast. Never
    point this at the session's shared moto server.
    """
    import requests

    from t2m_pipeline.storage.bootstrap import bootstrap_bucket
    from t2m_pipeline.storage.bucket_settings import declared_buckets

    requests.post(f"{settings.endpoint_url}/moto-api/reset", timeout=30).raise_for_status()
    client = make_s3_client(settings)
    for spec in declared_buckets(settings):
        bootstrap_bucket(client, spec, settings.region)


def faulted_settings(settings: Settings, proxy: FaultProxy, *, max_attempts: int | None = None) -> Settings:
    """The same settings pointed at the proxy (optionally with fewer S3 attempts)."""
    changes: dict = {"endpoint_url": proxy.url}
    if max_attempts is not None:
        changes["s3_max_attempts"] = max_attempts
    return dataclasses.replace(settings, **changes)


TRANSPORTS = ("boto3", "direct")  # what sends a one-request PUT: the boto3 client, or `direct_puts.DirectPuts`


def faulted_storage(
    settings: Settings, engine: Engine, proxy: FaultProxy, *, max_attempts: int | None = None,
    remove_duplicates: bool = True, read_timeout: float | None = None, transport: str = "boto3",
) -> S3Storage:
    from t2m_pipeline.storage.direct_puts import DirectPuts

    through_proxy = faulted_settings(settings, proxy, max_attempts=max_attempts)
    read_timeout = read_timeout or read_timeout_for(proxy.plan)
    client = make_s3_client(through_proxy, read_timeout=read_timeout)
    single_puts = DirectPuts(through_proxy, read_timeout=read_timeout) if transport == "direct" else None
    return S3Storage(through_proxy, engine, client=client, remove_retry_duplicates=remove_duplicates, single_puts=single_puts)


@dataclass(frozen=True)
class Intended:
    """One logical write: what should end up in S3."""

    bucket: str
    key: str
    sha256: str
    size: int


@dataclass
class Written:
    intended: Intended
    stored: StoredObject | None = None
    error: BaseException | None = None


@dataclass
class Check:
    """What the oracle found."""

    problems: list[str] = field(default_factory=list)
    unrecorded_versions: int = 0  # versions no successful write returned: duplicates, or orphans of failed writes
    versions: int = 0


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def check_writes(settings: Settings, engine: Engine, written: list[Written]) -> Check:
    """Compare S3 (read directly, no faults) and `file_metadata` with what was meant to be written, key by key."""
    oracle = make_s3_client(settings)
    check = Check()
    by_key: dict[tuple[str, str], list[Written]] = defaultdict(list)
    for w in written:
        by_key[(w.intended.bucket, w.intended.key)].append(w)
    with engine.connect() as conn:
        for (bucket, key), writes in by_key.items():
            where = f"s3://{bucket}/{key}"
            versions = [
                v for v in oracle.list_object_versions(Bucket=bucket, Prefix=key).get("Versions", []) if v["Key"] == key
            ]
            check.versions += len(versions)
            content = {
                v["VersionId"]: _sha(oracle.get_object(Bucket=bucket, Key=key, VersionId=v["VersionId"])["Body"].read())
                for v in versions
            }
            intended_shas = {w.intended.sha256 for w in writes}
            succeeded = [w for w in writes if w.stored is not None]
            rows = conn.execute(
                select(FileMetadata.version_id, FileMetadata.checksum, FileMetadata.file_size).where(
                    FileMetadata.s3_bucket == bucket, FileMetadata.s3_key == key
                )
            ).all()
            row_by_version = {r.version_id: r for r in rows}
            if len(rows) != len(succeeded):
                check.problems.append(f"{where}: {len(rows)} file_metadata rows for {len(succeeded)} successful writes")
            for w in succeeded:
                vid = w.stored.version_id
                if vid not in content:
                    check.problems.append(f"{where}: recorded version {vid} does not exist")
                elif content[vid] != w.intended.sha256:
                    check.problems.append(f"{where}: version {vid} does not hold the bytes written")
                row = row_by_version.get(vid)
                if row is None or row.checksum != w.intended.sha256 or row.file_size != w.intended.size:
                    check.problems.append(f"{where}: file_metadata row of {vid} missing or wrong")
            for vid, sha in content.items():
                if sha not in intended_shas:
                    check.problems.append(f"{where}: version {vid} is partial or foreign (sha256 {sha[:12]})")
            for vid in row_by_version:
                if vid not in content:
                    check.problems.append(f"{where}: file_metadata row points at missing version {vid}")
            returned = {w.stored.version_id for w in succeeded}
            unrecorded = [vid for vid in content if vid not in returned]
            check.unrecorded_versions += len(unrecorded)
            if unrecorded:
                check.problems.append(f"{where}: {len(unrecorded)} version(s) no write recorded (duplicates or orphans)")
            latest = next((v["VersionId"] for v in versions if v.get("IsLatest")), None)
            if succeeded and latest is not None and content[latest] != succeeded[-1].intended.sha256:
                check.problems.append(f"{where}: the latest version is not the last write's")
    return check


def count_unrecorded_versions(settings: Settings, written: list[Written]) -> int:
    """Versions of the written keys that no successful write returned (a listing only, no reads)."""
    oracle = make_s3_client(settings)
    returned = {w.stored.version_id for w in written if w.stored is not None}
    count = 0
    for bucket, key in {(w.intended.bucket, w.intended.key) for w in written}:
        versions = oracle.list_object_versions(Bucket=bucket, Prefix=key).get("Versions", [])
        count += sum(1 for v in versions if v["Key"] == key and v["VersionId"] not in returned)
    return count


@dataclass
class UploadReport:
    label: str
    plan: FaultPlan
    logical_writes: int = 0
    multipart_writes: int = 0
    succeeded: int = 0
    failed: int = 0
    failures: list[str] = field(default_factory=list)
    requests: int = 0
    faults: int = 0
    faults_by_operation: dict = field(default_factory=dict)
    duplicates_before_sweep: int = 0
    removed_inline: int = 0
    removed_by_sweep: int = 0
    orphan_multipart_uploads: int = 0
    problems: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def faults_on(self, operations, kinds=None) -> int:
        kinds = None if kinds is None else {FaultKind(k).value for k in kinds}
        return sum(
            n for name, n in self.faults_by_operation.items()
            if name.split(":")[0] in operations and (kinds is None or name.split(":")[1] in kinds)
        )


def _make_user(engine: Engine) -> uuid.UUID:
    clerk = f"user_faults_{uuid.uuid4().hex[:12]}"
    return in_transaction(engine, lambda conn: ensure_user(conn, clerk, "faults@example.com"))


def _planned(settings: Settings, user_id, keys: int, multiparts: int, work_dir: Path, rng_seed: int):
    """Tasks (sequences of writes to one key): small objects, every third key written twice; multipart files."""
    import random

    rng = random.Random(rng_seed)
    tasks = []
    for i in range(keys):
        key = layout.job_plan_key(user_id, uuid.uuid4(), f"outline-{i}.txt")
        versions = []
        for n in range(2 if i % 3 == 0 else 1):
            versions.append(rng.randbytes(rng.randint(16, 32 * 1024)) + f"{key}#{n}".encode())
        tasks.append(("bytes", settings.bucket("code"), key, versions))
    for j in range(multiparts):
        key = layout.scene_video_key(user_id, uuid.uuid4(), 1)
        path = work_dir / f"multipart-{j}.bin"
        with open(path, "wb") as fh:
            fh.write(os.urandom(MULTIPART_BYTES - 64) + key.encode().ljust(64, b"."))
        tasks.append(("file" if j % 2 == 0 else "stream", settings.bucket("videos"), key, [path]))
    return tasks


def run_upload_scenario(
    settings: Settings,
    engine: Engine,
    plan: FaultPlan,
    work_dir: Path,
    *,
    label: str | None = None,
    keys: int = 30,
    multiparts: int = 3,
    max_attempts: int | None = None,
    remove_duplicates: bool = True,
    sweep: bool = True,
    workers: int = 8,
    transport: str = "boto3",
) -> UploadReport:
    """Single and multipart uploads through S3Storage behind the proxy; the oracle's verdict afterwards."""
    report = UploadReport(label or ",".join(k.value for k in plan.kinds), plan)
    user_id = _make_user(engine)
    tasks = _planned(settings, user_id, keys, multiparts, work_dir, plan.seed)
    written: list[Written] = []
    lock = threading.Lock()
    started = time.monotonic()
    with FaultProxy(settings.endpoint_url, plan) as proxy:
        storage = faulted_storage(
            settings, engine, proxy, max_attempts=max_attempts, remove_duplicates=remove_duplicates, transport=transport
        )
        owner = ObjectOwner(user_id=user_id, file_type="plan")
        video_owner = ObjectOwner(user_id=user_id, file_type="video", scene_number=1)

        def run(task):
            how, bucket, key, payloads = task
            results = []
            for payload in payloads:
                if how == "bytes":
                    intended = Intended(bucket, key, _sha(payload), len(payload))
                    call = lambda: storage.put_bytes(bucket, key, payload, owner=owner, content_type="text/plain")  # noqa: E731
                else:
                    data = payload.read_bytes()
                    intended = Intended(bucket, key, _sha(data), len(data))
                    if how == "file":
                        call = lambda: storage.put_file(bucket, key, payload, owner=video_owner, content_type="video/mp4")  # noqa: E731
                    else:
                        def call():
                            with open(payload, "rb") as fh:
                                return storage.put_stream(bucket, key, fh, owner=video_owner, content_type="video/mp4")
                try:
                    results.append(Written(intended, stored=call()))
                except Exception as exc:  # noqa: BLE001 - a failed write is a finding, not a crash
                    results.append(Written(intended, error=exc))
            with lock:
                written.extend(results)

        with ThreadPoolExecutor(workers) as pool:
            list(pool.map(run, tasks))
        proxy.wait_idle(plan.delay_seconds + 60)
        report.removed_inline = storage.duplicates_removed
        report.duplicates_before_sweep = count_unrecorded_versions(settings, written)
        if sweep:
            # The sweep runs later, as maintenance: with the platform's retries, still under the same faults.
            sweeper = faulted_storage(settings, engine, proxy)
            with ThreadPoolExecutor(workers) as pool:
                list(pool.map(lambda bk: sweeper.remove_duplicate_versions(*bk),
                              sorted({(w.intended.bucket, w.intended.key) for w in written})))
            proxy.wait_idle(plan.delay_seconds + 60)
            report.removed_by_sweep = sweeper.duplicates_removed
        stats = proxy.stats
    report.seconds = time.monotonic() - started
    report.logical_writes = len(written)
    report.multipart_writes = sum(1 for t in tasks if t[0] != "bytes")
    report.succeeded = sum(1 for w in written if w.stored is not None)
    report.failed = len(written) - report.succeeded
    report.failures = sorted({f"{type(w.error).__name__}: {str(w.error)[:160]}" for w in written if w.error})
    report.requests = sum(stats.requests.values())
    report.faults = stats.injected_total()
    report.faults_by_operation = {f"{op}:{kind}": n for (op, kind), n in stats.injected.items()}
    report.problems = check_writes(settings, engine, written).problems
    oracle = make_s3_client(settings)
    uploads = oracle.list_multipart_uploads(Bucket=settings.bucket("videos"), Prefix=f"users/{user_id}/").get("Uploads", [])
    report.orphan_multipart_uploads = len(uploads)
    return report


# -- PostgreSQL restart ---------------------------------------------------------------------------------------------


@dataclass
class RestartReport:
    iterations: int = 0
    restarts: int = 0
    outage_seconds: float = 0.0
    errors: list[str] = field(default_factory=list)
    db_retries: int = 0
    problems: list[str] = field(default_factory=list)
    seconds: float = 0.0


def run_restart_scenario(
    cluster,
    settings: Settings,
    database_url: str,
    *,
    restarts: int = 1,
    iterations_between: int = 8,
    outage_seconds: float = 1.0,
    transition=None,
    write_objects: bool = True,
) -> RestartReport:
    """A loop of job transitions and storage writes (with `file_metadata` rows) while the server restarts.

    `cluster` is a `PrivatePostgres`; `transition(engine, job_id, status, **changes)` defaults to the platform's
    `job_state.transition` (pass one without retries, and `write_objects=False`, to see what the retry protects
    against).
    """
    import logging

    from t2m_pipeline.db import job_state
    from t2m_pipeline.db.engine import make_engine
    from t2m_pipeline.db.jobs import submit_job

    transition = transition or job_state.transition
    report = RestartReport()
    engine = make_engine(database_url)
    storage = S3Storage(settings, engine)
    job_id = submit_job(engine, clerk_user_id=f"user_restart_{uuid.uuid4().hex[:10]}", email="r@example.com",
                        topic="restart", context="a database restart mid-run")
    with engine.connect() as conn:
        user_id = conn.execute(text("SELECT user_id FROM jobs WHERE id = :j"), {"j": job_id}).scalar_one()
    done = 0
    stop = threading.Event()
    progress = threading.Condition()
    retries: list[str] = []

    class _CountRetries(logging.Handler):
        def emit(self, record):
            if "database unavailable" in record.getMessage():
                retries.append(record.getMessage())

    counter = _CountRetries()
    engine_log = logging.getLogger("t2m_pipeline.db.engine")
    engine_log.addHandler(counter)
    statuses: list[str] = []
    stored: list[tuple[StoredObject, str]] = []

    def loop():
        nonlocal done
        i = 0
        while not stop.is_set():
            status = "processing" if i % 2 == 0 else "queued"
            try:
                transition(engine, job_id, status, progress=i % 100, stage=f"step-{i}", metrics={"steps": {str(i): status}})
                statuses.append(status)
                if write_objects:
                    data = f"step {i} of job {job_id}".encode()
                    key = layout.scene_log_key(user_id, job_id, 1, f"step-{i}.log")
                    obj = storage.put_bytes(settings.bucket("code"), key, data,
                                            owner=ObjectOwner(user_id, "log", job_id=job_id, scene_number=1),
                                            content_type="text/plain")
                    stored.append((obj, _sha(data)))
            except Exception as exc:  # noqa: BLE001 - recorded: the protected run must have none
                report.errors.append(f"step {i}: {type(exc).__name__}: {str(exc).splitlines()[0][:200]}")
                stop.set()
                break
            i += 1
            with progress:
                done = i
                progress.notify_all()

    def wait_for(n: int, timeout: float = 120) -> bool:
        with progress:
            return progress.wait_for(lambda: done >= n or stop.is_set(), timeout)

    started = time.monotonic()
    worker = threading.Thread(target=loop, name="restart-loop", daemon=True)
    worker.start()
    try:
        for _ in range(restarts):
            if not wait_for(done + iterations_between) or stop.is_set():
                break
            cluster.restart(outage_seconds=outage_seconds)
            report.restarts += 1
            report.outage_seconds += outage_seconds
        wait_for(done + iterations_between)
    finally:
        stop.set()
        worker.join(120)
        engine_log.removeHandler(counter)
    report.seconds = time.monotonic() - started
    report.iterations = done
    report.db_retries = len(retries)

    # The verdict, on a fresh engine: nothing lost, nothing doubled.
    check_engine = make_engine(database_url)
    try:
        with check_engine.connect() as conn:
            job = conn.execute(text("SELECT status, metrics, current_stage FROM jobs WHERE id = :j"), {"j": job_id}).one()
            queue_status = conn.execute(text("SELECT status FROM job_queue WHERE job_id = :j"), {"j": job_id}).scalar_one()
            rows = conn.execute(
                text("SELECT s3_key, version_id, checksum FROM file_metadata WHERE job_id = :j"), {"j": job_id}
            ).all()
        steps = (job.metrics or {}).get("steps", {})
        expected_steps = {str(i): ("processing" if i % 2 == 0 else "queued") for i in range(len(statuses))}
        if steps != expected_steps:
            missing = sorted(set(expected_steps) - set(steps), key=int)[:10]
            report.problems.append(f"status updates lost: {len(expected_steps) - len(steps)} (e.g. steps {missing})")
        if statuses and (job.status, queue_status) != (statuses[-1], statuses[-1]):
            report.problems.append(f"final status {job.status}/{queue_status}, expected {statuses[-1]}")
        if len(rows) != len(stored) or len({(r.s3_key, r.version_id) for r in rows}) != len(rows):
            report.problems.append(f"{len(rows)} file_metadata rows for {len(stored)} writes")
        oracle = make_s3_client(settings)
        recorded = {(r.s3_key, r.version_id): r.checksum for r in rows}
        for obj, sha in stored:
            if recorded.get((obj.key, obj.version_id)) != sha:
                report.problems.append(f"{obj.key}: no row with the version and checksum written")
            body = oracle.get_object(Bucket=obj.bucket, Key=obj.key, VersionId=obj.version_id)["Body"].read()
            if _sha(body) != sha:
                report.problems.append(f"{obj.key}: recorded version holds other bytes")
    finally:
        check_engine.dispose()
        engine.dispose()
    return report
