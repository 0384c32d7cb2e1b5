"""Every legacy file to the job whose run produced it, against real Redis, PostgreSQL and the moto server: shared
topic folders (a reused folder, a queued re-submission, two runs in one folder, a render-cache hit), the order of
`migrate redis` and `migrate files`, `t2m urls` as each user sees it, and verify's ownership check."""

import base64
import json
import re
import uuid
from contextlib import contextmanager

import pytest
import redis
from sqlalchemy import text

from t2m_pipeline.cli import main
from t2m_pipeline.migration.batches import created_rows
from t2m_pipeline.migration.files_import import WAVE_FILES, migrate_files, migrated_scenes
from t2m_pipeline.migration.legacy_paths import COPY_MARK
from t2m_pipeline.migration.redis_import import migrate_redis
from t2m_pipeline.migration.rollback import rollback_batch
from t2m_pipeline.migration.verify import verify_files
from t2m_pipeline.storage import layout
from t2m_pipeline.storage.s3 import make_s3_client
from t2m_pipeline_tests.migration.ownership_world import build_ownership_world


def ids(engine, world, name) -> tuple[uuid.UUID, uuid.UUID]:
    with engine.connect() as conn:
        return conn.execute(text("SELECT user_id, id FROM jobs WHERE id = :j"), {"j": world.jobs[name]}).one()


def rows_of(engine, job_id) -> list:
    with engine.connect() as conn:
        return conn.execute(text("SELECT * FROM file_metadata WHERE job_id = :j ORDER BY s3_key, created_at"), {"j": job_id}).all()


def ledger(engine) -> dict:
    with engine.connect() as conn:
        return {r.legacy_path: r for r in conn.execute(text("SELECT * FROM migration_ledger"))}


def step(world, settings, engine, what: str) -> dict:
    if what == "redis":
        return migrate_redis(engine, redis.Redis.from_url(world.redis_url))
    return migrate_files(settings, engine, world.root, workers=4)


def run_cli(capsys, *args) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exit_info:
        main(list(args))
    out, err = capsys.readouterr()
    return exit_info.value.code, out, err


def under(key: str, user_id, job_id) -> bool:
    return key.startswith(f"users/{user_id}/jobs/{job_id}/")


def test_the_run_that_produced_a_file_owns_it_reusers_get_copies_never_run_jobs_nothing(ownership_world, migration_db, buckets):
    world, (settings, engine) = ownership_world, migration_db
    step(world, settings, engine, "redis")
    report = step(world, settings, engine, "files")
    assert report["outcomes"]["failed"] == 0 and report["copies"]["failed"] == 0
    alice, a1 = ids(engine, world, "a1")
    bob, a2 = ids(engine, world, "a2")
    _, a3 = ids(engine, world, "a3")
    topic_a = {k: p for k, p in world.files.items() if k.startswith("a_")}

    # a1's run wrote the folder: every file of it is a1's, under alice's prefix
    mine = rows_of(engine, a1)
    assert {r.metadata["legacy_path"] for r in mine} == set(topic_a.values())
    assert all(under(r.s3_key, alice, a1) and r.user_id == alice and "copy_of" not in r.metadata for r in mine)
    # a2 completed by reusing it: a copy of each, under bob's prefix, same keys below the job, rows of its own
    copies = rows_of(engine, a2)
    assert sorted(r.s3_key.split(f"/jobs/{a2}/")[1] for r in copies) == sorted(r.s3_key.split(f"/jobs/{a1}/")[1] for r in mine)
    assert all(under(r.s3_key, bob, a2) and r.metadata["copy_of"]["job_id"] == str(a1) for r in copies)
    assert {r.id for r in copies}.isdisjoint({r.id for r in mine})
    # the copies are server-side copies: S3's own SHA-256 of the bytes, the platform's encryption, bob's metadata
    client = make_s3_client(settings)
    for r in copies:
        head = client.head_object(Bucket=r.s3_bucket, Key=r.s3_key, VersionId=r.version_id, ChecksumMode="ENABLED")
        assert base64.b64decode(head["ChecksumSHA256"]).hex() == r.checksum
        assert head["ServerSideEncryption"] == "AES256" and head["Metadata"]["user-id"] == str(bob)
    # a3, carol's queued re-submission, never ran: nothing
    assert rows_of(engine, a3) == []

    # two runs in one folder: each job owns what its own run wrote; b2 also has b1's files it reused, as copies
    dave, b1 = ids(engine, world, "b1")
    erin, b2 = ids(engine, world, "b2")
    own = lambda rows: {r.metadata["legacy_path"] for r in rows if "copy_of" not in r.metadata}  # noqa: E731
    copied = lambda rows: {r.metadata["legacy_path"] for r in rows if "copy_of" in r.metadata}  # noqa: E731
    b1_files = {world.files[k] for k in ("b_outline", "b_code1v1", "b_log1")}
    b2_files = {world.files[k] for k in ("b_code1v2", "b_video1", "b_combined")}
    assert own(rows_of(engine, b1)) == b1_files and copied(rows_of(engine, b1)) == set()
    assert own(rows_of(engine, b2)) == b2_files and copied(rows_of(engine, b2)) == b1_files
    # b2's scene code history is the folder's: v1 (b1's, copied) then v2 (its own); b1's is v1 alone
    key = layout.scene_code_key(erin, b2, 1)
    versions = [v for v in client.list_object_versions(Bucket=buckets["code"], Prefix=key)["Versions"] if v["Key"] == key]
    bodies = {client.get_object(Bucket=buckets["code"], Key=key, VersionId=v["VersionId"])["Body"].read(): v["LastModified"] for v in versions}
    assert set(bodies) == {b"# b scene 1 v1\n", b"# b scene 1 v2\n"}
    assert bodies[b"# b scene 1 v1\n"] <= bodies[b"# b scene 1 v2\n"]  # (moto keeps milliseconds: equal at most)
    assert client.get_object(Bucket=buckets["code"], Key=key)["Body"].read() == b"# b scene 1 v2\n"  # the newest is current
    assert [r.s3_key for r in rows_of(engine, b1) if r.file_type == "scene_code"] == [layout.scene_code_key(dave, b1, 1)]

    # no job names the lonely folder: unattributed, the reason in the ledger
    lonely = ledger(engine)[world.files["c_code"]]
    assert lonely.key.startswith(f"legacy/unattributed/{world.slugs['c']}/") and "no legacy job" in lonely.reason
    result = verify_files(settings, engine, world.root)
    assert result["ok"], result["problems"]
    assert result["copies_checked"] == len(copies) + 3


def test_a_render_cache_hit_is_its_scenes_video_and_the_scene_is_registered(ownership_world, migration_db, buckets):
    world, (settings, engine) = ownership_world, migration_db
    step(world, settings, engine, "redis")
    step(world, settings, engine, "files")
    alice, a1 = ids(engine, world, "a1")
    hit = ledger(engine)[world.files["a_hit2"]]
    assert (hit.bucket, hit.key) == (buckets["videos"], layout.scene_video_key(alice, a1, 2))
    scenes = {(s["job_id"], s["scene_number"]): s for s in migrated_scenes(engine, [f"topic/{world.slugs['a']}"])}
    assert {n for j, n in scenes if j == str(a1)} == {1, 2}
    assert "code" not in scenes[(str(a1), 2)] and scenes[(str(a1), 2)]["video"]["key"] == hit.key  # an empty code/


def test_legacy_video_records_are_linked_to_their_jobs_combined_videos(ownership_world, migration_db, buckets):
    world, (settings, engine) = ownership_world, migration_db
    step(world, settings, engine, "redis")
    step(world, settings, engine, "files")
    for name, width in (("a1", 1280), ("a2", 854)):
        user, job = ids(engine, world, name)
        (combined,) = [r for r in rows_of(engine, job) if r.s3_key == layout.combined_video_key(user, job)]
        assert combined.metadata["legacy_record"] == f"videos:job_{job}"
        video = combined.metadata["legacy_video"]
        assert (video["width"], video["height"] > 0, video["file_path"].endswith(f"{world.slugs['a']}_combined.mp4")) == (width, True, True)
        assert video["file_hash"] == combined.checksum and combined.metadata["legacy_video_hash_match"] is True
    with engine.connect() as conn:  # the link is the legacy record's key: a join, not a copy only
        joined = conn.execute(
            text("SELECT count(*) FROM file_metadata f JOIN migration_legacy_records r ON r.source_key = f.metadata->>'legacy_record'")
        ).scalar_one()
    assert joined == 3  # a1's, a2's and b2's combined videos


def test_urls_for_each_user_only_ever_name_their_own_prefix(ownership_world, migration_db, buckets, monkeypatch, capsys):
    world, (settings, engine) = ownership_world, migration_db
    monkeypatch.setenv("T2M_DATABASE_URL", settings.database_url)
    step(world, settings, engine, "redis")
    step(world, settings, engine, "files")
    _, a3 = ids(engine, world, "a3")
    code, out, _ = run_cli(capsys, "urls", world.jobs["a3"], "--user", world.clerks["carol"], "--json")
    assert code == 0 and json.loads(out) == []  # the never-run re-submission: nothing of alice's or bob's
    for name, clerk in (("a1", "alice"), ("a2", "bob"), ("b2", "erin")):
        user, job = ids(engine, world, name)
        code, out, _ = run_cli(capsys, "urls", world.jobs[name], "--user", world.clerks[clerk], "--json")
        urls = json.loads(out)
        assert code == 0 and urls and all(under(u["key"], user, job) for u in urls)
        assert all(f"/users/{user}/jobs/{job}/" in u["url"] for u in urls)
    code, _, err = run_cli(capsys, "urls", world.jobs["a1"], "--user", world.clerks["carol"])
    assert code == 2 and "does not own" in err


# -- order independence --------------------------------------------------------------------------------------------


@contextmanager
def scratch_database(service_env, settings):
    import dataclasses

    from t2m_pipeline.db.engine import drop_database, make_engine
    from t2m_pipeline.db.migrate import upgrade

    url = service_env["T2M_DATABASE_URL"].rsplit("/", 1)[0] + f"/t2m_mig_{uuid.uuid4().hex[:10]}"
    upgrade(url)
    engine = make_engine(url)
    try:
        yield dataclasses.replace(settings, database_url=url), engine
    finally:
        engine.dispose()
        drop_database(url)


VOLATILE = ("migration_batch", "moved_from")  # history: which batch wrote a row, where it came from
UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def end_state(world, settings, engine) -> dict:
    """The state as ids-free text: ledger, rows (owners as Clerk ids, jobs by name) and every S3 version's bytes
    under the world's keys, with the current one."""
    with engine.connect() as conn:
        names = {**world.names(), **{str(r.id): r.clerk_user_id for r in conn.execute(text("SELECT id, clerk_user_id FROM users"))}}
        ledger_rows = conn.execute(text("SELECT legacy_path, outcome, bucket, key, sha256 FROM migration_ledger")).all()
        fm = conn.execute(text("SELECT s3_bucket, s3_key, user_id, job_id, file_type, checksum, file_size, metadata FROM file_metadata")).all()

    def norm(value) -> str:
        out = json.dumps(value, sort_keys=True, default=str)
        out = UUID.sub(lambda m: names.get(m.group(0), "ID"), out)
        return out.replace(world.tag, "TAG")

    client = make_s3_client(settings)
    versions = {}
    prefixes = {r.s3_key.rsplit("/", 1)[0] for r in fm} | {f"legacy/unattributed/{slug}/" for slug in world.slugs.values()}
    for bucket in settings.buckets.values():
        for prefix in prefixes:
            for page in client.get_paginator("list_object_versions").paginate(Bucket=bucket, Prefix=prefix):
                for v in page.get("Versions", []):
                    meta = client.head_object(Bucket=bucket, Key=v["Key"], VersionId=v["VersionId"])["Metadata"]
                    versions.setdefault((bucket, v["Key"]), {})[v["VersionId"]] = (bool(v["IsLatest"]), meta["sha256"])
    return {
        "ledger": sorted(norm(list(r)) for r in ledger_rows),
        "file_metadata": sorted(
            norm([r.s3_bucket, r.s3_key, r.user_id, r.job_id, r.file_type, r.checksum, r.file_size,
                  {k: v for k, v in (r.metadata or {}).items() if k not in VOLATILE}]) for r in fm
        ),
        # each key's versions (by bytes) and which is current; their order is the version-history test's business
        # (moto orders versions by millisecond timestamps: a listing cannot tell two of one millisecond apart)
        "s3": sorted(norm([b, k, sorted(sha for _, sha in vs.values()), [sha for latest, sha in vs.values() if latest]])
                     for (b, k), vs in versions.items()),
    }


ORDERS = (
    ("redis", "files"),
    ("files", "redis", "files"),
    ("files", "files", "redis", "redis", "files", "files"),
    ("redis", "files", "redis", "files"),
)


@pytest.mark.slow
def test_any_order_and_repetition_of_redis_and_files_converges_to_one_end_state(service_env, settings, redis_db, mp4s, buckets, tmp_path):
    states = {}
    for n, order in enumerate(ORDERS):
        root = tmp_path / f"legacy{n}"
        root.mkdir()
        world = build_ownership_world(root, redis_db, mp4s)
        with scratch_database(service_env, settings) as (db_settings, engine):
            reports = [step(world, db_settings, engine, what) for what in order]
            states[order] = end_state(world, db_settings, engine)
            assert verify_files(db_settings, engine, world.root)["ok"]
            with engine.connect() as conn:
                unattributed = conn.execute(text("SELECT metadata->>'legacy_path' FROM file_metadata WHERE s3_key LIKE 'legacy/unattributed/%'")).scalars().all()
                per_file = conn.execute(
                    text("SELECT count(*) FROM file_metadata WHERE NOT metadata ? 'copy_of'")).scalar_one()
                migrated = conn.execute(
                    text("SELECT count(*) FROM migration_ledger WHERE outcome = 'migrated' AND strpos(legacy_path, :m) = 0"), {"m": COPY_MARK}
                ).scalar_one()
            # once attributed, no unattributed copy or row of a file remains: only the lonely folder's file is there
            assert unattributed == [world.files["c_code"]]
            assert per_file == migrated == len(world.files)  # one row per file (plus the copies), not one per run
            if order[0] == "files":
                first = reports[0]
                assert first["unattributed_files"] == len(world.files)  # no job known yet: nothing guessed
                moved = ledger(engine)[world.files["a_combined"]]
                assert "moved from s3://" in moved.reason and "legacy/unattributed/" in moved.reason
                later = next(r for r, what in zip(reports, order) if what == "files" and r["moved_objects_removed"])
                assert later["moved_objects_removed"] == len(world.files) - 1
    first = states[ORDERS[0]]
    for order, state in states.items():
        assert state == first, order


COUNTS = ("files", "outcomes", "copies", "unattributed_files", "uploaded_files", "copied_files", "unchanged_files",
          "unread_files", "moved_objects_removed", "metadata_refreshed", "flagged_invalid")


@pytest.mark.slow
def test_a_run_in_waves_of_one_partition_ends_where_a_run_in_one_wave_ends(service_env, settings, redis_db, mp4s, buckets, tmp_path):
    """Memory holds one wave of partitions at a time; what the rules need together (a folder's jobs, copies and
    version order) is in one partition, so the end state, and a rerun's, is the one-wave run's."""
    states, counts = {}, {}
    for wave_files in (WAVE_FILES, 1):
        root = tmp_path / f"legacy{wave_files}"
        root.mkdir()
        world = build_ownership_world(root, redis_db, mp4s)
        with scratch_database(service_env, settings) as (db_settings, engine):
            migrate_redis(engine, redis.Redis.from_url(world.redis_url))
            runs = [migrate_files(db_settings, engine, world.root, workers=4, wave_files=wave_files) for _ in range(2)]
            states[wave_files] = end_state(world, db_settings, engine)
            assert verify_files(db_settings, engine, world.root)["ok"]
            counts[wave_files] = [{k: run[k] for k in COUNTS} for run in runs]
            assert runs[0]["waves"] == 1 if wave_files == WAVE_FILES else runs[0]["waves"] > 2
    assert counts[1] == counts[WAVE_FILES] and counts[1][0]["copied_files"] > 0 and counts[1][1]["unread_files"] > 0
    assert states[1] == states[WAVE_FILES]


@pytest.mark.slow
def test_files_then_redis_is_stale_until_files_runs_again_and_rollback_restores_the_move(ownership_world, migration_db, buckets):
    world, (settings, engine) = ownership_world, migration_db
    step(world, settings, engine, "files")
    before = end_state(world, settings, engine)
    step(world, settings, engine, "redis")
    stale = verify_files(settings, engine, world.root)
    assert not stale["ok"] and any("the evidence puts it at" in p["problem"] for p in stale["problems"])
    reattributed = step(world, settings, engine, "files")
    assert verify_files(settings, engine, world.root)["ok"]
    assert reattributed["moved_objects_removed"] == len(world.files) - 1
    # rolling the re-attributing batch back puts the unattributed objects back (same bytes, new versions) and their rows
    undone = rollback_batch(settings, engine, reattributed["batch_id"])
    assert undone["objects_made_again"] == len(world.files) - 1 and undone["objects_not_restorable"] == []
    assert end_state(world, settings, engine) == before
    with engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM file_metadata WHERE job_id IS NOT NULL")).scalar_one() == 0


@pytest.mark.slow
def test_a_rollback_interrupted_after_its_copies_takes_them_again_by_their_write_id_and_not_a_twin(
    ownership_world, migration_db, buckets, monkeypatch
):
    """Rolling back a batch that moved objects makes them again (server-side copies of the versions that replaced
    them), deletes the batch's versions (those sources), then writes the rows. Killed before the rows, a rerun must
    take the copies the first run made, their sources being gone: it finds each by the write id its copy carries
    (`recreate_write_id`). The control: beside one copy, a newer twin with the same bytes and the same metadata
    (sha256, legacy path) under another write id, which a rule by sha256 and legacy path would take first."""
    from t2m_pipeline.migration import rollback
    from t2m_pipeline.storage.s3 import WRITE_ID_METADATA, S3Storage, new_write_id

    world, (settings, engine) = ownership_world, migration_db
    step(world, settings, engine, "files")
    before = end_state(world, settings, engine)
    step(world, settings, engine, "redis")
    batch_id = uuid.UUID(step(world, settings, engine, "files")["batch_id"])

    def killed(engine, work):
        raise KeyboardInterrupt  # after the S3 steps, before the rows' transaction

    monkeypatch.setattr(rollback, "in_transaction", killed)
    with pytest.raises(KeyboardInterrupt):
        rollback_batch(settings, engine, batch_id)
    monkeypatch.undo()

    client, storage = make_s3_client(settings), S3Storage(settings, None)
    with engine.connect() as conn:
        created = created_rows(conn, batch_id)
    removed = list({img["id"]: img for img in created["file_metadata_removed"]}.values())
    assert len(removed) == len(world.files) - 1
    copies = {}
    for img in removed:
        made = storage.versions_of_write(img["s3_bucket"], img["s3_key"], rollback.recreate_write_id(batch_id, img["id"]))
        assert len(made) == 1 and img["replaced_by"][2] not in {  # one copy each, and its source is gone
            v["VersionId"] for v in client.list_object_versions(Bucket=img["replaced_by"][0], Prefix=img["replaced_by"][1]).get("Versions", [])
        }
        copies[img["id"]] = made[0]
    control = removed[0]
    bucket, key = control["s3_bucket"], control["s3_key"]
    head = client.head_object(Bucket=bucket, Key=key, VersionId=copies[control["id"]])
    body = client.get_object(Bucket=bucket, Key=key, VersionId=copies[control["id"]])["Body"].read()
    assert head["Metadata"]["sha256"] == control["checksum"]
    twin = client.put_object(Bucket=bucket, Key=key, Body=body, ContentType=head["ContentType"],
                             Metadata={**head["Metadata"], WRITE_ID_METADATA: new_write_id()})["VersionId"]

    undone = rollback_batch(settings, engine, batch_id)
    assert undone["objects_made_again"] == len(removed) and undone["objects_not_restorable"] == []
    with engine.connect() as conn:
        rows = dict(conn.execute(text("SELECT id, version_id FROM file_metadata WHERE id = ANY(:i)"),
                                 {"i": [uuid.UUID(img["id"]) for img in removed]}).all())
    assert {str(i): v for i, v in rows.items()} == copies  # the first run's copies, the control's too, not its twin
    for img in removed:  # and no second copy of anything
        listed = {v["VersionId"] for v in client.list_object_versions(Bucket=img["s3_bucket"], Prefix=img["s3_key"]).get("Versions", [])
                  if v["Key"] == img["s3_key"]}
        assert listed == {copies[img["id"]]} | ({twin} if img is control else set())
    client.delete_object(Bucket=bucket, Key=key, VersionId=twin)
    assert end_state(world, settings, engine) == before


def test_a_planted_ownership_error_fails_verify_and_a_rerun_puts_it_right(ownership_world, migration_db, buckets, monkeypatch, capsys):
    world, (settings, engine) = ownership_world, migration_db
    monkeypatch.setenv("T2M_DATABASE_URL", settings.database_url)
    step(world, settings, engine, "redis")
    step(world, settings, engine, "files")
    code, out, _ = run_cli(capsys, "migrate", "verify", "--legacy-root", str(world.root), "--json")
    assert code == 0 and json.loads(out)["ok"]  # the control: before the error is planted, verify passes

    # plant it: alice's scene 1 video moved under carol's job a3, its ledger and file_metadata rows changed to match
    alice, a1 = ids(engine, world, "a1")
    carol, a3 = ids(engine, world, "a3")
    row = ledger(engine)[world.files["a_video1"]]
    wrong_key = layout.scene_video_key(carol, a3, 1)
    client = make_s3_client(settings)
    copied = client.copy_object(Bucket=row.bucket, Key=wrong_key, CopySource={"Bucket": row.bucket, "Key": row.key, "VersionId": row.version_id},
                                MetadataDirective="REPLACE", Metadata={"user-id": str(carol), "job-id": str(a3), "sha256": row.sha256,
                                                                       "file-type": "video"})
    client.delete_object(Bucket=row.bucket, Key=row.key, VersionId=row.version_id)
    with engine.begin() as conn:
        conn.execute(text("UPDATE file_metadata SET s3_key = :k, user_id = :u, job_id = :j, version_id = :v WHERE id = :i"),
                     {"k": wrong_key, "u": carol, "j": a3, "v": copied["VersionId"], "i": row.file_metadata_id})
        conn.execute(text("UPDATE migration_ledger SET key = :k, version_id = :v WHERE id = :i"),
                     {"k": wrong_key, "v": copied["VersionId"], "i": row.id})
    code, out, _ = run_cli(capsys, "migrate", "verify", "--legacy-root", str(world.root), "--json")
    result = json.loads(out)
    assert code == 1 and not result["ok"]
    found = [p["problem"] for p in result["problems"] if p["legacy_path"] == world.files["a_video1"]]
    assert any(f"the evidence puts it at s3://{row.bucket}/{row.key}" in p and f"user {alice}, job {a1}" in p for p in found), found
    assert result["by_partition"][f"topic/{world.slugs['a']}"]["ok"] is False
    assert result["by_partition"][f"topic/{world.slugs['b']}"]["ok"] is True

    # the files migration puts it back where the evidence says, and removes the misplaced object and row
    healed = step(world, settings, engine, "files")
    assert healed["uploaded_files"] == 1 and healed["moved_objects_removed"] == 1
    assert verify_files(settings, engine, world.root)["ok"]
    assert not [v for v in client.list_object_versions(Bucket=row.bucket, Prefix=wrong_key).get("Versions", []) if v["Key"] == wrong_key]


@pytest.mark.slow
def test_control_without_the_reconcile_step_the_unattributed_objects_stay_and_verify_says_so(ownership_world, migration_db, buckets, monkeypatch):
    """What the reconcile step protects against: with it off, files-redis-files leaves every file twice (its first,
    unattributed upload and row beside the attributed ones), which is also a legacy file in two places for verify."""
    from t2m_pipeline.migration.files_import import FilesMigration

    world, (settings, engine) = ownership_world, migration_db
    monkeypatch.setattr(FilesMigration, "_reconcile", lambda self, plans, existing, batch_id: None)
    for what in ("files", "redis", "files"):
        step(world, settings, engine, what)
    with engine.connect() as conn:
        left = conn.execute(text("SELECT count(*) FROM file_metadata WHERE s3_key LIKE 'legacy/unattributed/%'")).scalar_one()
    assert left == len(world.files)  # the fault: nothing was removed
    result = verify_files(settings, engine, world.root)
    assert not result["ok"] and sum("a place the evidence does not give it" in p["problem"] for p in result["problems"]) == len(world.files) - 1


@pytest.mark.slow
def test_a_run_killed_while_it_removes_what_moved_is_finished_by_the_next(ownership_world, migration_db, buckets):
    """Killed after deleting the old objects, before deleting their rows: the next run finds the rows again (their
    versions already gone), removes them, and the state is the one an uninterrupted run leaves."""
    from t2m_pipeline.migration.files_import import FilesMigration

    world, (settings, engine) = ownership_world, migration_db
    step(world, settings, engine, "files")
    step(world, settings, engine, "redis")

    class Killed(Exception):
        pass

    def kill(stage):
        if stage == "after_stale_deletes":
            raise Killed()

    with pytest.raises(Killed):
        FilesMigration(settings, engine, world.root, workers=4, fault=kill).run()
    assert not verify_files(settings, engine, world.root)["ok"]  # rows left whose objects are gone
    rerun = step(world, settings, engine, "files")
    assert rerun["moved_objects_removed"] == len(world.files) - 1 and rerun["uploaded_files"] == 0
    result = verify_files(settings, engine, world.root)
    assert result["ok"], result["problems"]
    with engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM file_metadata WHERE s3_key LIKE 'legacy/unattributed/%'")).scalar_one() == 1
