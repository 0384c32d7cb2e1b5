"""Hostile legacy input through the real migration (Redis -> PostgreSQL, files -> S3), property-based (hypothesis).

- Arbitrary bytes as legacy file and directory names, wherever the legacy tree has names (topic folders, scene
  folders, code, media and upload folders, upload names), and symlinks into and out of the legacy root.
- Arbitrary JSON and non-JSON as the Redis records `redis_reader` reads (`jobs:*` in both forms, `user_jobs:*`,
  `files:*`, `user_files:*`, `videos:job_*`, `batch:*`, `job_queue`), and the files migration run on what they say.

Outcome each time: the run finishes; each bad thing is a ledger row with its reason (skipped, unsafe) or a
`migration_quarantine` row; every good file and record beside it is migrated correctly (the oracle of
`migration_scenarios.check_migration` and `verify_files`); keys built from the names stay inside their user/job
(or unattributed) prefix, one sanitized segment per name. Fixed quirks are in `t2m_pipeline_tests/migration/`;
these tests draw them at random.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
import tempfile
import uuid
from pathlib import Path

import pytest
import redis
from hypothesis import HealthCheck, example, given, settings as hsettings
from hypothesis import strategies as st
from sqlalchemy import text

from t2m_pipeline.migration.files_import import migrate_files
from t2m_pipeline.migration.legacy_paths import ledger_path, parse_upload_name, slugify
from t2m_pipeline.migration.redis_import import QUARANTINE_KEY_BYTES, migrate_redis
from t2m_pipeline.migration.verify import verify_files
from t2m_pipeline.storage import layout
from t2m_pipeline.storage.s3 import make_s3_client
from t2m_pipeline_tests.faults.migration_scenarios import check_migration, tree_entries
from t2m_pipeline_tests.migration.legacy_world import CLAIM_KEY, _job, legacy_ts, stamp_folder

EXAMPLES = hsettings(max_examples=8, deadline=None, suppress_health_check=list(HealthCheck))
SAFE_SEGMENT = re.compile(r"^[A-Za-z0-9._-]+$")
GOOD_CLERK = "user_goodowner"
GOOD_TOPIC = "Hostile Neighbours Good Topic"
SLUG = slugify(GOOD_TOPIC)
STAMP = "20240105_101010"


@dataclasses.dataclass
class Env:
    settings: object
    engine: object
    redis_url: str
    tmp: Path
    s3: object  # a client on the private moto server, no faults

    def fresh(self) -> tuple[Path, Path]:
        """Empty database tables, Redis database and buckets; a new legacy root and a folder outside it."""
        with self.engine.begin() as conn:
            for table in ("migration_ledger", "file_metadata", "job_queue", "jobs", "users", "migration_quarantine",
                          "migration_legacy_records", "migration_batches"):
                conn.execute(text(f"DELETE FROM {table}"))
        client = redis.Redis.from_url(self.redis_url)
        client.flushdb()
        client.set(CLAIM_KEY, str(os.getpid()), ex=3600)
        client.close()
        for bucket in self.settings.buckets.values():  # the private moto server's buckets (cheaper than a reset)
            listing = self.s3.list_object_versions(Bucket=bucket)
            doomed = [{"Key": v["Key"], "VersionId": v["VersionId"]}
                      for v in listing.get("Versions", []) + listing.get("DeleteMarkers", [])]
            if doomed:
                self.s3.delete_objects(Bucket=bucket, Delete={"Objects": doomed})
        base = Path(tempfile.mkdtemp(dir=self.tmp))
        (base / "legacy").mkdir()
        (base / "outside").mkdir()
        (base / "outside" / "secret.txt").write_bytes(SECRET)
        return base / "legacy", base / "outside"


SECRET = b"a file outside the legacy root: " + uuid.uuid4().bytes
SECRET_SHA = hashlib.sha256(SECRET).hexdigest()


@pytest.fixture
def env(fault_settings, migration_db, redis_db, tmp_path):  # noqa: F811
    db_settings, engine = migration_db
    settings = dataclasses.replace(fault_settings, database_url=db_settings.database_url)
    return Env(settings, engine, redis_db, tmp_path, make_s3_client(settings))


def rdb(url: str):
    return redis.Redis.from_url(url, decode_responses=False)


def write(root: Path, rel: bytes, data: bytes) -> bool:
    """Write a file at a raw relative path; False when the tree already has something in the way."""
    path = os.path.join(os.fsencode(root), rel)
    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        if os.path.lexists(path):
            return False
        with open(path, "wb") as fh:
            fh.write(data)
    except (FileExistsError, NotADirectoryError, IsADirectoryError):
        return False
    return True


def symlink(root: Path, rel: bytes, target: bytes) -> bool:
    path = os.path.join(os.fsencode(root), rel)
    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        os.symlink(target, path)
    except (FileExistsError, NotADirectoryError):
        return False
    return True


def good_world(root: Path, url: str) -> str:
    """One legacy job (in Redis) whose run wrote its files, next to whatever hostile thing the test adds (written now:
    after every run, so the evidence leaves those unattributed); returns the job id."""
    job_id = str(uuid.uuid4())
    client = rdb(url)
    start, end = legacy_ts(3), legacy_ts(3, hour=11)
    client.set(f"jobs:{job_id}", json.dumps(_job(job_id, GOOD_CLERK, GOOD_TOPIC, "completed", start, end, started_at=start, completed_at=end)))
    client.sadd(f"user_jobs:{GOOD_CLERK}", job_id)
    client.rpush("job_queue", job_id)
    upload_id = f"{GOOD_CLERK}_{STAMP}_abcdef12"
    client.set(f"files:{upload_id}", json.dumps({"original_filename": "holiday.png", "mime_type": "image/png",
                                                 "checksum": hashlib.sha256(b"\x89PNG good upload").hexdigest()}))
    client.sadd(f"user_files:{GOOD_CLERK}", upload_id)
    client.close()
    for rel, data in good_files().items():
        assert write(root, rel, data)
    stamp_folder(root, SLUG, legacy_ts(3, minute=5))
    return job_id


def good_files() -> dict[bytes, bytes]:
    s = SLUG
    return {
        f"output/{s}/{s}_scene_outline.txt".encode(): b"<SCENE_OUTLINE><SCENE_1>good</SCENE_1></SCENE_OUTLINE>",
        f"output/{s}/scene1/{s}_scene1_implementation_plan.txt".encode(): b"# Scene 1\na good plan",
        f"output/{s}/scene1/code/{s}_scene1_v1.py".encode(): b"# good scene code\n",
        f"storage/uploads/image/{GOOD_CLERK}_{STAMP}_abcdef12.png".encode(): b"\x89PNG good upload",
    }


def check_good_files(env: Env, job_id: str) -> None:
    """Each good file has its own layout key, under its job or its owner, holding exactly its bytes."""
    with env.engine.connect() as conn:
        user = conn.execute(text("SELECT id FROM users WHERE clerk_user_id = :c"), {"c": GOOD_CLERK}).scalar_one()
        ledger = {r.legacy_path: r for r in conn.execute(text("SELECT * FROM migration_ledger"))}
    s, upload = SLUG, f"{GOOD_CLERK}_{STAMP}_abcdef12"
    plan = f"{s}_scene1_implementation_plan.txt"
    expected = {
        f"output/{s}/{s}_scene_outline.txt": layout.job_plan_key(user, job_id, f"{s}_scene_outline.txt"),
        f"output/{s}/scene1/{plan}": layout.scene_plan_key(user, job_id, 1, plan),
        f"output/{s}/scene1/code/{s}_scene1_v1.py": layout.scene_code_key(user, job_id, 1),
        f"storage/uploads/image/{upload}.png": layout.upload_key(user, upload, ".png"),
    }
    for path, key in expected.items():
        row = ledger[path]
        assert (row.outcome, row.key) == ("migrated", key), (path, row.outcome, row.reason, row.key)
        body = env.s3.get_object(Bucket=row.bucket, Key=row.key, VersionId=row.version_id)["Body"].read()
        assert body == good_files()[path.encode()]


def check_keys_stay_in_their_prefix(env: Env, job_id: str, tree: dict[str, bytes]) -> None:
    """Every migrated key: S3-safe, one sanitized segment per name, under the prefix its place in the tree allows."""
    with env.engine.connect() as conn:
        rows = conn.execute(text("SELECT legacy_path, key FROM migration_ledger WHERE outcome = 'migrated'")).all()
        users = dict(conn.execute(text("SELECT clerk_user_id, id FROM users")).all())
        legacy_jobs = conn.execute(
            text("SELECT id, user_id, topic, created_at FROM jobs WHERE configuration ? 'legacy'")
        ).all()
    owners: dict[bytes, tuple] = {}  # topic folder -> a legacy job with that slug (a file goes to it, or is unattributed)
    for j in legacy_jobs:
        owners.setdefault(slugify(j.topic).encode(), j)
    assert str(owners[SLUG.encode()].id) == job_id
    for legacy_path, key in rows:
        assert layout.check_key(key) == key
        segments = key.split("/")
        assert all(SAFE_SEGMENT.match(seg) and seg not in (".", "..") for seg in segments), key
        parts = tree[legacy_path].split(b"/")
        if parts[0] == b"output":
            owner = owners.get(parts[1])
            allowed = (f"legacy/unattributed/{layout.sanitize_name(parts[1])}/",)
            allowed += (f"users/{owner.user_id}/jobs/{owner.id}/",) if owner else ()
        else:
            assert parts[:2] == [b"storage", b"uploads"], legacy_path
            allowed = ("legacy/unattributed/storage-uploads/",)
            parsed = parse_upload_name(parts[-1].decode("utf-8", "surrogateescape"))
            if parsed and parsed.clerk_user_id in users:
                allowed += (f"users/{users[parsed.clerk_user_id]}/uploads/{parsed.file_id}",)
        assert key.startswith(allowed), (legacy_path, key, allowed)


def check_nothing_outside_was_read(env: Env) -> None:
    with env.engine.connect() as conn:
        leaked = conn.execute(
            text("SELECT (SELECT count(*) FROM file_metadata WHERE checksum = :s) + "
                 "(SELECT count(*) FROM migration_ledger WHERE sha256 = :s)"), {"s": SECRET_SHA}
        ).scalar_one()
    assert leaked == 0


# -- arbitrary bytes as names, and symlinks ------------------------------------------------------------------------

NAME = st.one_of(
    st.binary(min_size=1, max_size=64),
    st.text(min_size=1, max_size=40).map(lambda t: t.encode("utf-8", "surrogatepass")),
    st.sampled_from([
        b"..\xff", b"...", b"%2e%2e", b"%2F..%2F", b"..\\..\\etc", b"scene1", b"scene01", b"media", b"code", b"videos",
        b"subplans", b"session_id.txt", b".render_cache", b"succ_rendered.txt", "\u2215etc\u2215passwd".encode(),
        "\uff0e\uff0e".encode(), b"\xc0\xae\xc0\xae", b"\xed\xa0\x80", b"\x1b[31mred\x7f", b"a" * 255,
        "\u00e9".encode() * 127, b"\xff" * 255, b" ", b"-", b".hidden", b"x.PY", b"%", b"%FF", b"100%25",
        f"{SLUG}_scene1_v2.py".encode(), b"Scene1.mp4", "\u202egnp.exe".encode(), b"\n", b"\r\n",
    ]),
).filter(lambda b: b"/" not in b and b"\x00" not in b and b not in (b".", b"..") and len(b) <= 255)

PLACES = {
    # where a hostile name goes: (a raw relative path from the name, a file or a kind of symlink)
    "topic_file": lambda n: f"output/{SLUG}/".encode() + n,
    "scene_file": lambda n: f"output/{SLUG}/scene1/".encode() + n,
    "code_file": lambda n: f"output/{SLUG}/scene1/code/".encode() + n,
    "scene_dir": lambda n: f"output/{SLUG}/scene1/".encode() + n + b"/notes.txt",
    "nested_dirs": lambda n: f"output/{SLUG}/".encode() + n + b"/" + n + b"/deep.txt",
    # 16 nested folders of 192 random characters: a path longer than the ledger's unique index can hold
    "deep_dirs": lambda n: f"output/{SLUG}/".encode()
    + b"/".join(hashlib.sha256(n + bytes([i])).hexdigest().encode() * 3 for i in range(16)) + b"/" + n,
    "media_dir": lambda n: f"output/{SLUG}/media/videos/".encode() + n + b"/480p15/Scene1.mp4",
    "topic_dir": lambda n: b"output/" + n + b"/scene1/code/x_scene1_v1.py",
    "root_file": lambda n: n,
    "output_file": lambda n: b"output/" + n,
    "upload_file": lambda n: b"storage/uploads/image/" + n,
    "upload_suffix": lambda n: f"storage/uploads/document/{GOOD_CLERK}_{STAMP}_0123abcd".encode() + n[:200],
    "upload_clerk": lambda n: b"storage/uploads/audio/" + n[:200] + f"_{STAMP}_0123abcd.mp3".encode(),
    "upload_type": lambda n: b"storage/uploads/" + n + f"/{GOOD_CLERK}_{STAMP}_89abcdef.png".encode(),
    "upload_subdir": lambda n: b"storage/uploads/video/" + n + f"/{GOOD_CLERK}_{STAMP}_fedcba98.mp4".encode(),
}
LINKS = {
    "link_out": lambda n: (f"output/{SLUG}/scene1/code/".encode() + n, b"../../../../outside/secret.txt"),
    "link_out_abs": lambda n: (b"storage/uploads/image/" + n, None),  # absolute path to the secret
    "link_in": lambda n: (b"storage/uploads/image/" + n, f"../../../output/{SLUG}/{SLUG}_scene_outline.txt".encode()),
    "link_dir_out": lambda n: (b"output/" + n, b"../../outside"),
    "link_dir_in": lambda n: (f"output/{SLUG}/scene1/".encode() + n, b".."),
}
HOSTILE = st.lists(st.tuples(st.sampled_from(sorted(PLACES) + sorted(LINKS)), NAME), min_size=1, max_size=8)


def place(root: Path, outside: Path, i: int, where: str, name: bytes) -> bytes | None:
    """Put one hostile thing into the tree; its raw relative path, or None when something was in the way."""
    if where in PLACES:
        rel = PLACES[where](name)
        if len(os.path.basename(rel)) > 255:
            return None
        return rel if write(root, rel, f"hostile #{i} at {where}: ".encode() + name) else None
    rel, target = LINKS[where](name)
    target = target or os.fsencode(outside / "secret.txt")
    return rel if symlink(root, rel, target) else None


@given(hostile=HOSTILE)
@example(hostile=[("topic_dir", b"\xff\xfe"), ("link_dir_out", b"linked"), ("link_out", b"x.py"), ("upload_type", b"imag\xe9")])
@example(hostile=[("upload_type", b"a" * 60), ("upload_clerk", b"-x"), ("upload_suffix", b".\xff\xfe"), ("media_dir", b"..\xff")])
@example(hostile=[("nested_dirs", b"\xff" * 255), ("link_dir_in", b"loop"), ("link_in", b"in.png"), ("root_file", b"\n"),
                  ("deep_dirs", b"\xfe" * 200)])
@EXAMPLES
def test_hostile_names_and_symlinks_never_stop_the_migration_or_leave_their_prefix(env, hostile):
    root, outside = env.fresh()
    job_id = good_world(root, env.redis_url)
    placed = [(where, rel) for i, (where, name) in enumerate(hostile) if (rel := place(root, outside, i, where, name))]
    migrate_redis(env.engine, rdb(env.redis_url))

    report = migrate_files(env.settings, env.engine, root, workers=4)  # no exception: the run finishes

    tree = tree_entries(root)
    assert report["files"] == len(tree)
    problems = check_migration(env.settings, env.engine, root, client=env.s3)  # one row per entry, none failed, bytes, versions
    assert problems == [], problems[:10]
    result = verify_files(env.settings, env.engine, root)
    assert result["ok"], result["problems"][:10]
    with env.engine.connect() as conn:
        ledger = {r.legacy_path: r for r in conn.execute(text("SELECT legacy_path, outcome, reason FROM migration_ledger"))}
    for where, rel in placed:
        row = ledger.get(ledger_path(rel))
        if where in LINKS:  # a symlink, to a file or a folder, inside or outside: never followed
            assert (row.outcome, row.reason) == ("unsafe", "symlink: not followed"), (rel, row)
        elif row is not None and row.outcome != "migrated":  # skipped or unsafe: a reason a person can read
            assert row.reason and "\n" not in row.reason, (rel, row)
    check_nothing_outside_was_read(env)
    check_keys_stay_in_their_prefix(env, job_id, tree)
    check_good_files(env, job_id)


# -- arbitrary JSON and non-JSON as Redis records ------------------------------------------------------------------

_TEXT = st.one_of(
    st.text(max_size=24),
    st.sampled_from(["", " ", "\x00", "a\x00b", "\ud800", "x\udfff", "\u202e", "JobStatus.QUEUED", "QUEUED", "%FF",
                     "'; DROP TABLE jobs; --", "user_goodowner", "0001-01-01T00:00:00+14:00", "9999-12-31T23:59:59-12:00",
                     "2024-02-30 00:00:00", "1e999999", "NaN", "x" * 600, "\n"]),
)
JSON_VALUE = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**80), 2**80) | st.floats() | _TEXT,
    lambda children: st.lists(children, max_size=3) | st.dictionaries(_TEXT, children, max_size=3),
    max_leaves=8,
)
RAW_VALUE = st.one_of(
    st.binary(max_size=48),
    st.sampled_from([b"", b"NaN", b"Infinity", b"-Infinity", b"1e400", b"1" * 5000, b"[" * 3000 + b"]" * 3000, b'{"a":',
                     b"\xff\xfe", b'"\\u0000"', b'{"x": "\\ud800"}', b"null", b"[]", b"{}", b'"just a string"', b"\x00"]),
)
JOB_FIELDS = ("id", "user_id", "job_type", "priority", "status", "configuration", "progress", "error", "metrics",
              "created_at", "updated_at", "started_at", "completed_at", "batch_id", "is_deleted", "deleted_at",
              "configuration.topic", "configuration.context", "progress.percentage", "progress.current_stage",
              "progress.estimated_completion")


@st.composite
def near_valid_job(draw, job_id: str) -> dict:
    """A valid legacy job record with a few fields (or nested fields) replaced by arbitrary JSON."""
    n = draw(st.integers(0, 10**6))
    record = _job(job_id, f"user_hostile{n % 7}", f"Hostile topic {n}", "completed", legacy_ts(5), legacy_ts(5, 9))
    for name in draw(st.lists(st.sampled_from(JOB_FIELDS), max_size=3, unique=True)):
        value = draw(JSON_VALUE)
        head, _, tail = name.partition(".")
        if tail and isinstance(record.get(head), dict):
            record[head][tail] = value
        elif not tail:
            record[head] = value
    return record


def as_json(value) -> bytes:
    return json.dumps(value).encode()  # NaN and infinities become Python's non-standard tokens, as a writer might


SUFFIX = st.one_of(st.binary(min_size=1, max_size=40),
                   st.text(min_size=1, max_size=20).map(lambda t: t.encode("utf-8", "surrogatepass")),
                   st.sampled_from([b"\xff", b"x" * 3000, b"user_x\x00", b"%00", b"../../etc"]))
MEMBERS = st.sets(st.one_of(st.binary(max_size=40), st.uuids().map(lambda u: str(u).encode())), min_size=1, max_size=4)
HOSTILE_FILE_ID = f"{GOOD_CLERK}_{STAMP}_99990000"  # an upload on disk whose `files:` record is hostile


@st.composite
def hostile_record(draw):
    """(kind, key, value) as another system might have left them in the legacy Redis."""
    kind = draw(st.sampled_from(["job", "job", "job_hash", "job_raw", "job_key", "user_jobs", "files", "file_of_upload",
                                 "user_files", "videos", "batch", "user_batches", "queue", "wrong_type"]))
    job_id = str(draw(st.uuids()))
    if kind == "job":
        return kind, f"jobs:{job_id}".encode(), as_json(draw(near_valid_job(job_id)))
    if kind == "job_hash":
        fields = {k.encode("utf-8", "surrogatepass"): as_json(v) for k, v in draw(near_valid_job(job_id)).items()}
        fields.update(draw(st.dictionaries(st.binary(min_size=1, max_size=12), RAW_VALUE, max_size=2)))
        return kind, f"jobs:{job_id}".encode(), fields
    if kind == "job_raw":
        return kind, f"jobs:{job_id}".encode(), draw(st.one_of(RAW_VALUE, JSON_VALUE.map(as_json)))
    if kind == "job_key":
        return kind, b"jobs:" + draw(SUFFIX), as_json(draw(near_valid_job(job_id)))
    if kind in ("user_jobs", "user_files", "user_batches"):
        return kind, kind.encode() + b":" + draw(SUFFIX), draw(MEMBERS)
    if kind in ("files", "videos", "batch"):
        prefix = {"files": b"files:", "videos": b"videos:job_", "batch": b"batch:"}[kind]
        value = draw(st.one_of(RAW_VALUE, JSON_VALUE.map(as_json),
                               st.fixed_dictionaries({"user_id": JSON_VALUE, "original_filename": JSON_VALUE,
                                                      "mime_type": JSON_VALUE, "checksum": JSON_VALUE}).map(as_json)))
        return kind, prefix + draw(SUFFIX), value
    if kind == "file_of_upload":  # the record of an upload that is on disk: what the files migration reads
        record = draw(st.fixed_dictionaries({}, optional={"original_filename": JSON_VALUE, "mime_type": JSON_VALUE,
                                                          "checksum": JSON_VALUE, "filename": JSON_VALUE,
                                                          "created_at": JSON_VALUE}))
        return kind, f"files:{HOSTILE_FILE_ID}".encode(), as_json(record)
    if kind == "queue":
        return kind, b"job_queue", draw(st.lists(st.one_of(st.binary(max_size=40), st.uuids().map(lambda u: str(u).encode())),
                                                 min_size=1, max_size=4))
    return kind, draw(st.sampled_from([f"jobs:{job_id}".encode(), b"files:wrongtype", b"user_jobs:user_wrongtype",
                                       b"job_queue", b"batch:wrongtype"])), None


def put_record(client, kind: str, key: bytes, value) -> None:
    if kind == "wrong_type":  # a type the legacy code never wrote for that key
        client.delete(key)
        if key.startswith((b"user_jobs:", b"job_queue")):
            client.set(key, b"a string")
        else:
            client.zadd(key, {b"member": 1.0})
    elif kind == "job_hash":
        client.delete(key)
        client.hset(key, mapping=value)
    elif kind in ("user_jobs", "user_files", "user_batches"):
        client.sadd(key, *value)
    elif kind == "queue":
        client.rpush(key, *value)
    else:
        client.set(key, value)


GOOD_KEYS = {f"user_jobs:{GOOD_CLERK}".encode(), f"files:{GOOD_CLERK}_{STAMP}_abcdef12".encode(),
             f"user_files:{GOOD_CLERK}".encode()}


@given(records=st.lists(hostile_record(), min_size=1, max_size=6))
@example(records=[
    ("job", b"jobs:6a1f0d3e-5b8e-4e8e-9a53-4c8e5f0a9b11",
     as_json({**_job("6a1f0d3e-5b8e-4e8e-9a53-4c8e5f0a9b11", "user_x", "T\x00opic", "queued", legacy_ts(2), legacy_ts(2))})),
    ("job_raw", b"jobs:6a1f0d3e-5b8e-4e8e-9a53-4c8e5f0a9b12", b"1" * 5000),
    ("files", b"files:nan", b'{"file_size": NaN, "original_filename": "\\u0000"}'),
    ("queue", b"job_queue", [b"\x00", b"\xff"]),
    ("job", b"jobs:6a1f0d3e-5b8e-4e8e-9a53-4c8e5f0a9b15",
     as_json(_job("6a1f0d3e-5b8e-4e8e-9a53-4c8e5f0a9b15", "user_x", "Lone \ud800", "queued", legacy_ts(2), legacy_ts(2)))),
    ("files", b"files:" + b"".join(hashlib.sha256(bytes([i])).hexdigest().encode() for i in range(64)), b'{"size": 1e400}'),
    ("user_jobs", b"user_jobs:user_x", {b"a\x00", b"6a1f0d3e-5b8e-4e8e-9a53-4c8e5f0a9b15"}),
])
@example(records=[
    ("job", b"jobs:6a1f0d3e-5b8e-4e8e-9a53-4c8e5f0a9b13",
     as_json(_job("6a1f0d3e-5b8e-4e8e-9a53-4c8e5f0a9b13", "user_x", "Overflow", "queued", "0001-01-01T00:00:00+14:00", None))),
    ("file_of_upload", f"files:{HOSTILE_FILE_ID}".encode(),
     as_json({"original_filename": 5, "mime_type": ["x"], "checksum": {}})),
    ("job_raw", b"jobs:6a1f0d3e-5b8e-4e8e-9a53-4c8e5f0a9b14", b"[" * 3000 + b"]" * 3000),
    ("job_key", b"jobs:" + b"x" * 3000, as_json({})),
    ("user_jobs", b"user_jobs:" + bytes(range(128, 256)) * 20, {b"\x00", b"ok"}),
])
@EXAMPLES
def test_hostile_redis_records_are_quarantined_and_never_stop_either_migration(env, records):
    root, _ = env.fresh()
    job_id = good_world(root, env.redis_url)
    client = rdb(env.redis_url)
    written: set[bytes] = set()
    for kind, key, value in records:
        if key in GOOD_KEYS or (kind == "wrong_type" and key == b"job_queue"):
            continue  # the good records stay good; a wrong-typed job_queue would take the good job's queue entry
        put_record(client, kind, key, value)
        written.add(key)
    assert write(root, f"storage/uploads/document/{HOSTILE_FILE_ID}.pdf".encode(), b"%PDF hostile record's upload")

    report = migrate_redis(env.engine, client)  # no exception: the run finishes

    with env.engine.connect() as conn:
        quarantined = dict(conn.execute(text("SELECT source_key, reason FROM migration_quarantine")).all())
        kept = set(conn.execute(text("SELECT source_key FROM migration_legacy_records")).scalars())
        jobs = {r.redis_key: r for r in conn.execute(text(
            "SELECT configuration->'legacy'->>'redis_key' AS redis_key, id, status, topic FROM jobs"))}
        queue = set(conn.execute(text("SELECT job_id::text FROM job_queue")).scalars())
    for key in written:  # every hostile key is accounted for: migrated, kept as a record, or quarantined
        assert (ledger_path(key, QUARANTINE_KEY_BYTES) in quarantined or ledger_path(key) in kept
                or ledger_path(key) in jobs), (key[:80], quarantined)
    assert all(reason and "\n" not in reason for reason in quarantined.values())
    assert report["quarantined"] <= len(quarantined)
    # the good records next to them
    good = jobs[f"jobs:{job_id}"]
    assert (str(good.id), good.status, good.topic) == (job_id, "completed", GOOD_TOPIC)
    assert job_id not in queue  # listed in the legacy job_queue, but finished: nothing to queue
    assert {f"user_jobs:{GOOD_CLERK}", f"user_files:{GOOD_CLERK}", f"files:{GOOD_CLERK}_{STAMP}_abcdef12"} <= kept

    again = migrate_redis(env.engine, client)  # idempotent on hostile input too
    changed = ("jobs_inserted", "jobs_updated", "quarantine_new", "records_inserted", "records_updated")
    assert [again.get(k, 0) for k in changed] == [0] * len(changed)

    # the files migration reads what was kept (jobs' topics, `files:` and `user_files:` records): it finishes too
    for redis_key, row in jobs.items():
        slug = slugify(row.topic)
        if redis_key != f"jobs:{job_id}" and len(slug) <= 200:
            write(root, f"output/{slug}/scene1/code/{slug}_scene1_v1.py".encode(), f"# {row.id}\n".encode())
    migrate_files(env.settings, env.engine, root, workers=4)
    problems = check_migration(env.settings, env.engine, root, client=env.s3)
    assert problems == [], problems[:10]
    result = verify_files(env.settings, env.engine, root)
    assert result["ok"], result["problems"][:10]
    check_keys_stay_in_their_prefix(env, job_id, tree_entries(root))
    check_good_files(env, job_id)
