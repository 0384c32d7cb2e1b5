"""Legacy files -> S3 against the moto server over HTTP and a scratch database: ledger, attribution, keys, versions,
flags, idempotence, an interrupted run, verify and rollback."""

import base64
import hashlib
import os
from collections import Counter

import pytest
import redis
from sqlalchemy import text

from t2m_pipeline.migration.discovery import all_entries, discover_sources
from t2m_pipeline.migration.upload_shards import upload_shards
from t2m_pipeline.migration.files_import import WAVE_FILES, migrate_files
from t2m_pipeline.migration.legacy_paths import COPY_MARK, path_text, split_copy_path
from t2m_pipeline.migration.redis_import import migrate_redis
from t2m_pipeline.migration.rollback import rollback_batch
from t2m_pipeline.migration.verify import verify_files
from t2m_pipeline.storage import layout
from t2m_pipeline.storage.s3 import WRITE_ID_METADATA, S3Storage, make_s3_client, new_write_id


@pytest.fixture
def migrated_redis(world, migration_db, buckets):
    settings, engine = migration_db
    migrate_redis(engine, redis.Redis.from_url(world.redis_url))
    return settings, engine


def ledger(engine) -> dict:
    with engine.connect() as conn:
        return {r.legacy_path: r for r in conn.execute(text("SELECT * FROM migration_ledger"))}


def file_rows(engine) -> dict:
    with engine.connect() as conn:
        return {r.id: r for r in conn.execute(text("SELECT * FROM file_metadata"))}


def ids(engine, job_name, world):
    with engine.connect() as conn:
        return conn.execute(text("SELECT user_id, id FROM jobs WHERE id = :i"), {"i": world.jobs[job_name]}).one()


def versions(client, bucket, key) -> list[dict]:
    out = []
    for page in client.get_paginator("list_object_versions").paginate(Bucket=bucket, Prefix=key):
        out += [v for v in page.get("Versions", []) if v["Key"] == key]
    return out


def all_versions(client, buckets) -> set:
    out = set()
    for bucket in buckets.values():
        for page in client.get_paginator("list_object_versions").paginate(Bucket=bucket):
            out |= {(bucket, v["Key"], v["VersionId"]) for v in page.get("Versions", [])}
    return out


def test_discovery_partitions_and_prefix_trap(world, migrated_redis):
    _, engine = migrated_redis
    keys = discover_sources(world.root, upload_shards(engine, world.root))
    assert f"topic/{world.slug_shared}" in keys and f"topic/{world.slug_orphan}" in keys and "loose" in keys
    # a few uploads: one partition per type, not eight
    assert "uploads/image/0" in keys and "uploads/image/1" not in keys
    assert not any("linked_topic" in k for k in keys)  # a symlinked folder is no partition
    weird = [k for k in keys if k.startswith("topic/raw")]
    assert len(weird) == 1 and all(c.isascii() and c.isprintable() for c in weird[0])
    entries = all_entries(world.root, upload_shards(engine, world.root))
    paths = {e.legacy_path: e for es in entries.values() for e in es}
    assert f"output/{world.slug_shared}/bad%FFname.py" in paths and f"output/{world.slug_shared}/ctrl%01char.txt" in paths
    assert paths[f"output/linked_topic_{world.tag}"].kind == "symlink"
    walked = sum(len(files) + sum(os.path.islink(os.path.join(d, x)) for x in dirs) for d, dirs, files in os.walk(world.root))
    assert len(paths) == walked  # every regular file and every symlink, nothing followed


@pytest.mark.parametrize("wave_files", [WAVE_FILES, 1], ids=["one_wave", "a_wave_per_partition"])
def test_every_file_is_accounted_for_once_with_attribution_keys_and_flags(world, migrated_redis, buckets, wave_files):
    settings, engine = migrated_redis
    report = migrate_files(settings, engine, world.root, workers=8, chunk_files=7, wave_files=wave_files)
    everything = ledger(engine)
    rows = {p: r for p, r in everything.items() if COPY_MARK not in p}
    copies = {p: r for p, r in everything.items() if COPY_MARK in p}
    tree = all_entries(world.root, upload_shards(engine, world.root))
    on_disk = {e.legacy_path for es in tree.values() for e in es}
    assert set(rows) == on_disk and report["files"] == len(on_disk)  # exactly one row per file (legacy_path is unique)
    with_files = sum(1 for es in tree.values() if es)
    assert report["waves"] == 1 if wave_files == WAVE_FILES else with_files <= report["waves"] <= with_files + 1  # empty ones join the next
    assert sum(report["outcomes"].values()) == len(on_disk) and report["outcomes"]["failed"] == 0
    s = world.slug_shared
    expect = {
        f"output/{s}/scene1/code/link_outside.py": "unsafe",
        f"output/{s}/linked_dir": "unsafe",
        f"output/linked_topic_{world.tag}": "unsafe",
        f"output/{s}/session_id.txt": "skipped",
        f"output/{s}/scene1/succ_rendered.txt": "skipped",
        f"output/{s}/media/Tex/abc.svg": "skipped",
        f"output/{s}/media/images/{s}/frame.png": "skipped",
        f"output/{s}/media/videos/{s}_scene1_v2/480p15/partial_movie_files/Scene1/000.mp4": "skipped",
        "output/session_id.txt": "skipped",
        "storage/notes.txt": "skipped",
        f"output/{s}/scene2/{s}_scene2_implementation_plan.txt": "migrated",
        f"output/{s}/media/videos/{s}_scene2_v1/480p15/Scene2.mp4": "migrated",
    }
    assert {p: rows[p].outcome for p in expect} == expect
    assert [p for p in rows if p.startswith("output/.render_cache/")] and all(
        rows[p].outcome == "skipped" for p in rows if p.startswith("output/.render_cache/"))

    # attribution: the job whose run wrote the folder (alice's) owns it; bob's, which reused it, gets copies
    user, job = ids(engine, "old", world)
    bob, bob_job = ids(engine, "new", world)
    code_key = layout.scene_code_key(user, job, 1)
    fm = file_rows(engine)
    code_rows = [r for r in fm.values() if r.s3_key == code_key]
    assert len(code_rows) == 3 and {r.user_id for r in code_rows} == {user}
    assert all(f"produced by job {job}" in r.metadata["attribution"] for r in code_rows)
    assert all(r.metadata["legacy_path"] == rows[r.metadata["legacy_path"]].legacy_path for r in fm.values())
    shared = {p for p, r in rows.items() if p.startswith(f"output/{s}/") and r.outcome == "migrated"}
    assert {split_copy_path(p) for p in copies} == {(p, str(bob_job)) for p in shared}  # one copy of each, for bob
    bob_code = [r for r in fm.values() if r.s3_key == layout.scene_code_key(bob, bob_job, 1)]
    assert len(bob_code) == 3 and {(r.user_id, r.job_id) for r in bob_code} == {(bob, bob_job)}
    assert all(r.metadata["copy_of"]["job_id"] == str(job) for r in bob_code)

    # keys per the layout table
    key = lambda p: rows[p].key  # noqa: E731
    assert key(f"output/{s}/{s}_scene_outline.txt") == layout.job_plan_key(user, job, f"{s}_scene_outline.txt")
    assert key(f"output/{s}/{s}_combined.mp4") == layout.combined_video_key(user, job)
    assert key(f"output/{s}/{s}_combined.srt") == layout.combined_video_key(user, job, subtitles=True)
    assert key(f"output/{s}/scene1/code/{s}_scene1_v1_error_0.log") == layout.scene_log_key(user, job, 1, f"{s}_scene1_v1_error_0.log")
    assert key(f"output/{s}/scene1/subplans/scene_trace_id.txt") == layout.scene_plan_key(user, job, 1, "scene_trace_id.txt")
    assert key(f"output/{s}/scene1/rag_cache/rag_queries_1.json").startswith(f"users/{user}/jobs/{job}/code/scene_001/plans/")
    assert key(f"output/{s}/media/videos/{s}_scene1_v1/480p15/Scene1.srt") == layout.scene_video_key(user, job, 1, subtitles=True)
    assert key(f"output/{s}/scene10/code/{s}_scene10_v2.py") == layout.scene_code_key(user, job, 10)  # not scene 1
    assert rows[f"output/{s}/scene10/code/{s}_scene10_v1.py"].bucket == buckets["code"]
    odd = rows[path_text(f"output/{s}/scene1/subplans/notes with spaces \u00fc.txt".encode())]
    assert " " not in odd.key and "\u00fc" not in odd.key
    assert fm[odd.file_metadata_id].original_filename == "notes with spaces \u00fc.txt"
    for p in (f"output/{s}/bad%FFname.py", f"output/{s}/ctrl%01char.txt"):
        assert rows[p].outcome == "migrated" and "\x01" not in rows[p].key and "%" not in rows[p].key

    # no job, or only a job that never ran: under legacy/unattributed/{slug}/..., owned by the system user, the
    # candidate jobs named and the reason in the ledger
    orphan = rows[f"output/{world.slug_orphan}/scene1/code/{world.slug_orphan}_scene1_v1.py"]
    assert orphan.key == f"legacy/unattributed/{world.slug_orphan}/scene1/code/{world.slug_orphan}_scene1_v1.py"
    never_ran = rows[f"output/{world.slug_queued}/scene1/code/{world.slug_queued}_scene1_v1.py"]
    assert never_ran.key.startswith(f"legacy/unattributed/{world.slug_queued}/") and "never ran" in never_ran.reason
    assert [c["job_id"] for c in fm[never_ran.file_metadata_id].metadata["candidate_jobs"]] == [world.jobs["queued"]]
    with engine.connect() as conn:
        owner = conn.execute(text("SELECT u.clerk_user_id, u.metadata FROM file_metadata f JOIN users u ON u.id = f.user_id WHERE f.id = :i"),
                             {"i": orphan.file_metadata_id}).one()
    assert owner.clerk_user_id == "system_legacy_unattributed" and owner.metadata["system"] is True
    assert rows[f"output/{world.slug_orphan}/media/videos/{world.slug_orphan}_scene1_v1/480p15/Scene1.mp4"].bucket == buckets["videos"]

    # invalid by legacy rules: migrated and flagged
    plan = rows[f"output/{s}/scene2/{s}_scene2_implementation_plan.txt"]
    tiny = rows[f"output/{s}/media/videos/{s}_scene2_v1/480p15/Scene2.mp4"]
    assert "failed plan" in plan.reason and fm[plan.file_metadata_id].metadata["legacy_invalid"] is True
    assert "under 1 KB" in tiny.reason and tiny.size == 600

    # uploads: owner from the name prefix, original name / MIME / checksum from files:{id}, bucket by type
    up = {name: rows[p] for name, fid in world.upload_ids.items() for p in rows if fid in p}
    with engine.connect() as conn:
        carol = conn.execute(text("SELECT id FROM users WHERE clerk_user_id = :c"), {"c": world.clerks["carol"]}).scalar_one()
        frank = conn.execute(text("SELECT email, metadata FROM users WHERE clerk_user_id = :c"), {"c": f"user_{world.tag}frank"}).one()
    assert up["ok"].key == layout.upload_key(carol, world.upload_ids["ok"], ".png") and up["ok"].bucket == buckets["thumbnails"]
    ok_meta = fm[up["ok"].file_metadata_id]
    assert (ok_meta.original_filename, ok_meta.content_type, ok_meta.metadata["legacy_checksum_match"]) == ("holiday.png", "image/png", True)
    assert up["bad"].bucket == buckets["videos"] and fm[up["bad"].file_metadata_id].metadata["legacy_checksum_match"] is False
    assert "legacy checksum mismatch" in up["bad"].reason
    assert up["none"].bucket == buckets["code"] and fm[up["none"].file_metadata_id].metadata.get("legacy_checksum") is None
    assert frank.email == "" and frank.metadata["email_unknown"] is True  # a user known only from an upload name
    assert rows[f"storage/uploads/image/weird name {world.tag}.png"].key.startswith("legacy/unattributed/storage-uploads/image/")

    # integrity: sha256 while reading == S3's own checksum == file_metadata.checksum
    client = make_s3_client(settings)
    for row in (up["ok"], tiny, rows[f"output/{s}/{s}_combined.mp4"]):
        data = open(world.path(row.legacy_path.encode()), "rb").read()
        head = client.head_object(Bucket=row.bucket, Key=row.key, VersionId=row.version_id, ChecksumMode="ENABLED")
        assert base64.b64decode(head["ChecksumSHA256"]).hex() == hashlib.sha256(data).hexdigest() == row.sha256
        assert fm[row.file_metadata_id].checksum == row.sha256

    # migrated scenes with code and video, for the asset graph: both jobs' (bob's are copies), the render-cache hit
    # (scene 3: a video, no code) among them; nothing for the job that never ran
    scenes = {(s_["job_id"], s_["scene_number"]): s_ for s_ in report["scenes"]}
    assert set(scenes) == {(str(j), n) for j in (job, bob_job) for n in (1, 2, 3, 10)}
    assert scenes[(str(job), 1)]["code"]["order"] == [3] and scenes[(str(job), 1)]["video"]["order"] == [2, 0]
    assert "code" not in scenes[(str(job), 3)] and scenes[(str(job), 3)]["video"]["key"] == layout.scene_video_key(user, job, 3)
    hit = rows[f"output/{s}/media/videos/{s}_scene3_v1/1080p60/{s}_scene3_v1.mp4"]
    assert fm[hit.file_metadata_id].file_type == "scene_video" and fm[hit.file_metadata_id].metadata["scene_number"] == 3

    # the legacy video records, linked to their jobs' combined videos
    combined = fm[rows[f"output/{s}/{s}_combined.mp4"].file_metadata_id]
    assert combined.metadata["legacy_record"] == f"videos:job_{job}" and combined.metadata["legacy_video"]["width"] == 1280
    bob_combined = next(r for r in fm.values() if r.s3_key == layout.combined_video_key(bob, bob_job))
    assert bob_combined.metadata["legacy_record"] == f"videos:job_{bob_job}" and bob_combined.metadata["legacy_video"]["width"] == 640


def test_version_history_is_the_legacy_history(world, migrated_redis, buckets):
    settings, engine = migrated_redis
    migrate_files(settings, engine, world.root, workers=8)
    user, job = ids(engine, "new", world)
    client = make_s3_client(settings)
    key = layout.scene_code_key(user, job, 1)
    found = versions(client, buckets["code"], key)
    assert len(found) == 3
    by_content = {}
    for v in found:  # read each version: its content and its legacy path, never trusting listing order alone
        obj = client.get_object(Bucket=buckets["code"], Key=key, VersionId=v["VersionId"])
        by_content[obj["Body"].read()] = (obj["Metadata"]["original-name"], obj["LastModified"], v["VersionId"])
    assert set(by_content) == set(world.code_versions.values())
    stamps = [by_content[world.code_versions[k]][1] for k in (1, 2, 3)]
    assert stamps == sorted(stamps)  # uploaded oldest first
    for k in (1, 2, 3):
        assert by_content[world.code_versions[k]][0].endswith(f"_scene1_v{k}.py")
    current = client.get_object(Bucket=buckets["code"], Key=key)["Body"].read()
    assert current == world.code_versions[3]  # the newest legacy version is the current object
    video_key = layout.scene_video_key(user, job, 1)
    assert client.get_object(Bucket=buckets["videos"], Key=video_key)["Body"].read() == open(
        world.path(f"output/{world.slug_shared}/media/videos/{world.slug_shared}_scene1_v2/480p15/Scene1.mp4"), "rb").read()


def test_rerun_uploads_nothing_and_changes_nothing_then_verify_and_rollback(world, migrated_redis, buckets):
    settings, engine = migrated_redis
    client = make_s3_client(settings)
    before_versions = all_versions(client, buckets)
    first = migrate_files(settings, engine, world.root, workers=8)
    assert first["uploaded_bytes"] > 0
    after_first = (ledger(engine), file_rows(engine), all_versions(client, buckets))
    second = migrate_files(settings, engine, world.root, workers=8)
    assert (second["uploaded_files"], second["uploaded_bytes"], second["adopted_versions"]) == (0, 0, 0)
    assert second["unchanged_files"] == first["outcomes"]["migrated"] + first["copies"]["migrated"]  # copies too
    assert (ledger(engine), file_rows(engine), all_versions(client, buckets)) == after_first

    good = verify_files(settings, engine, world.root)
    assert good["ok"], good["problems"]
    assert good["outcomes"] == first["outcomes"]
    assert good["objects_checked"] == first["outcomes"]["migrated"] + first["copies"]["migrated"]

    # a second batch migrates a new legacy version: rolled back, exactly the state after the first batch returns
    s = world.slug_shared
    with open(world.path(f"output/{s}/scene1/code/{s}_scene1_v4.py"), "wb") as fh:
        fh.write(b"# scene 1 version 4\n")
    third = migrate_files(settings, engine, world.root, workers=8)
    assert third["uploaded_files"] == 1
    undone = rollback_batch(settings, engine, third["batch_id"])
    assert undone["s3_versions_deleted"] == 1
    assert (ledger(engine), file_rows(engine), all_versions(client, buckets)) == after_first
    os.remove(world.path(f"output/{s}/scene1/code/{s}_scene1_v4.py"))

    # verify notices damage: a deleted S3 version, a changed legacy file, a file missing from the ledger
    row = ledger(engine)[f"output/{s}/{s}_combined.srt"]
    client.delete_object(Bucket=row.bucket, Key=row.key, VersionId=row.version_id)
    with open(world.path(f"output/{s}/scene1/subplans/scene_trace_id.txt"), "ab") as fh:
        fh.write(b"changed")
    with open(world.path(f"output/{s}/scene1/subplans/late_arrival.txt"), "wb") as fh:
        fh.write(b"new")
    bad = verify_files(settings, engine, world.root)
    problems = " | ".join(p["problem"] for p in bad["problems"])
    assert not bad["ok"] and "S3 object version missing" in problems
    assert "no longer matches" in problems and "not in the ledger" in problems

    # and the first batch rolls back to nothing at all
    os.remove(world.path(f"output/{s}/scene1/subplans/late_arrival.txt"))
    rollback_batch(settings, engine, first["batch_id"])
    assert ledger(engine) == {} and file_rows(engine) == {}
    assert all_versions(client, buckets) == before_versions - {(row.bucket, row.key, row.version_id)}


def test_only_files_the_ledger_had_before_the_run_are_reconciled(world, migrated_redis, buckets, monkeypatch):
    """A first run reads back none of its files to reconcile them: every object the migration writes for a file has
    the file's ledger row from its intent on, so a file new to the ledger has nothing elsewhere, and its rows are this
    run's. Control: a rerun reconciles every file the first one settled (a moved file is found that way:
    test_ownership)."""
    from t2m_pipeline.migration.files_import import FilesMigration

    settings, engine = migrated_redis
    looked_at: list[str] = []
    real = FilesMigration._reconcile_paths

    def spy(self, by_path, *args):
        looked_at.extend(by_path)
        return real(self, by_path, *args)

    monkeypatch.setattr(FilesMigration, "_reconcile_paths", spy)
    first = migrate_files(settings, engine, world.root, workers=8)
    assert first["outcomes"]["migrated"] > 0 and looked_at == []
    migrate_files(settings, engine, world.root, workers=8)
    settled = {p for p, r in ledger(engine).items() if COPY_MARK not in p and r.outcome in ("migrated", "skipped", "unsafe")}
    assert settled and sorted(looked_at) == sorted(settled)
    result = verify_files(settings, engine, world.root)
    assert result["ok"], result["problems"]


def test_the_next_waves_chunk_starts_while_the_wave_before_is_still_uploading(world, migrated_redis, buckets):
    """One pipeline of chunks for the whole run: the first wave's chunk, held after its uploads, does not keep the
    next wave's chunk from reading its files and writing its intents (a run that finished each wave before the next
    left the endpoint idle at every wave's end). Control: a single wave's only chunk, held the same way, sees no
    other chunk's intents (there is none to come)."""
    import threading

    settings, engine = migrated_redis

    def held_first_chunk():
        seen: list[str] = []
        second_intents, lock = threading.Event(), threading.Lock()
        waited: list[bool] = []

        def fault(stage):
            with lock:
                seen.append(stage)
                intents, uploads = seen.count("after_intents"), seen.count("after_uploads")
            if stage == "after_intents" and intents == 2:
                second_intents.set()
            if stage == "after_uploads" and uploads == 1:
                waited.append(second_intents.wait(10))

        return fault, waited

    fault, waited = held_first_chunk()
    report = migrate_files(settings, engine, world.root, workers=4, wave_files=1, fault=fault)
    assert report["waves"] > 2 and report["outcomes"]["failed"] == 0
    assert waited == [True]  # the second wave's chunk wrote its intents while the first was held

    # the control: one wave, one chunk: nothing else comes while it is held
    fault, waited = held_first_chunk()
    rollback_batch(settings, engine, report["batch_id"])
    one = migrate_files(settings, engine, world.root, workers=4, fault=fault, chunk_files=10_000)
    assert one["waves"] == 1 and waited == [False]
    assert verify_files(settings, engine, world.root)["ok"]


def test_a_run_leaves_no_reference_cycle_holding_its_files_and_puts_the_collector_back(world, migrated_redis, buckets):
    """A run makes the cyclic garbage collector rare (`_fewer_collections`), so memory stays flat only if its files'
    plans are freed when their counts drop: with the collector off, a run leaves no plan in a reference cycle, and
    the collector's settings are as they were afterwards. Control: a plan put in a cycle is found the same way."""
    import gc

    from t2m_pipeline.migration.files_import import Planned

    settings, engine = migrated_redis
    thresholds = gc.get_threshold()
    gc.collect()
    gc.disable()
    try:
        report = migrate_files(settings, engine, world.root, workers=4, chunk_files=10)
        assert report["outcomes"]["migrated"] > 0
        assert gc.get_threshold() == thresholds and gc.get_freeze_count() == 0
        gc.set_debug(gc.DEBUG_SAVEALL)
        gc.collect()
        stranded = sum(type(o) is Planned for o in gc.garbage)
        gc.garbage.clear()
        assert stranded == 0

        looped = Planned(entry=None, partition="control")
        looped.result = {"itself": looped}
        del looped
        gc.collect()
        assert sum(type(o) is Planned for o in gc.garbage) == 1
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
        gc.enable()


def test_an_interrupted_run_is_finished_by_a_rerun_without_duplicates(world, migrated_redis, buckets):
    """A crash after the uploads, before they were recorded: the rerun adopts those versions, uploads none again."""
    settings, engine = migrated_redis

    class Crash(Exception):
        pass

    calls = {"n": 0}

    def fault(stage):
        if stage == "after_uploads":
            calls["n"] += 1
            if calls["n"] == 2:
                raise Crash()

    with pytest.raises(Crash):
        migrate_files(settings, engine, world.root, workers=4, chunk_files=10, fault=fault)
    intents = [r for r in ledger(engine).values() if r.outcome == "failed"]
    assert intents and all(r.reason.startswith("interrupted") for r in intents)
    rerun = migrate_files(settings, engine, world.root, workers=4)
    assert rerun["adopted_versions"] == len(intents)
    result = verify_files(settings, engine, world.root)
    assert result["ok"], result["problems"]  # includes: no unrecorded (duplicate) S3 version at any migrated key
    with engine.connect() as conn:
        dupes = conn.execute(text("SELECT count(*) FROM (SELECT s3_key, checksum FROM file_metadata GROUP BY 1, 2 "
                                  "HAVING count(*) > 1) d")).scalar_one()
    assert dupes == 0


def test_a_wave_that_fails_to_reconcile_while_the_next_uploads_fails_the_run(world, migrated_redis, buckets):
    """Waves are reconciled in the background while the next one goes: a failure there still fails the run (and
    the batch), no later than the next wave's end, and a rerun finishes the job. Control: the same run without the
    fault succeeds. (A run reconciles the files the ledger had before it: here a second run, after a first.)"""
    settings, engine = migrated_redis
    migrate_files(settings, engine, world.root, workers=4, wave_files=1)

    class ReconcileFailed(Exception):
        pass

    seen: list[str] = []

    def fault(stage):
        seen.append(stage)
        if stage == "after_stale_deletes" and seen.count(stage) == 1:
            raise ReconcileFailed()

    with pytest.raises(ReconcileFailed):
        migrate_files(settings, engine, world.root, workers=4, chunk_files=10, wave_files=1, fault=fault)
    assert seen.count("before_reconcile") <= 2  # noticed at the next wave's end, not the run's
    with engine.connect() as conn:
        status = conn.execute(text("SELECT status FROM migration_batches WHERE source = 'files' ORDER BY started_at DESC LIMIT 1")).scalar_one()
    assert status == "failed"
    rerun = migrate_files(settings, engine, world.root, workers=4, wave_files=1)
    assert rerun["outcomes"]["failed"] == 0 and rerun["waves"] > 2
    assert verify_files(settings, engine, world.root)["ok"]


def test_rolling_back_a_killed_batch_removes_its_unrecorded_uploads_too(world, migrated_redis, buckets):
    from t2m_pipeline.migration.files_import import FilesMigration

    settings, engine = migrated_redis
    client = make_s3_client(settings)
    before = (ledger(engine), file_rows(engine), all_versions(client, buckets))

    def crash_after_second_chunk_uploads(stage, seen=[]):  # noqa: B006 - counts calls across the run
        if stage == "after_uploads":
            seen.append(stage)
            if len(seen) == 2:
                raise KeyboardInterrupt  # like a kill: nothing after this point runs

    migration = FilesMigration(settings, engine, world.root, workers=4, chunk_files=10, fault=crash_after_second_chunk_uploads)
    with pytest.raises(KeyboardInterrupt):
        migration.run()
    assert all_versions(client, buckets) - before[2]  # it did upload (one chunk recorded, one not)
    undone = rollback_batch(settings, engine, migration.batch_id)
    assert undone["s3_versions_deleted"] > 0
    assert (ledger(engine), file_rows(engine), all_versions(client, buckets)) == before


def crash_after_uploads(chunk: int):
    """A fault that stops the run (like a kill: nothing after it runs) once `chunk` chunks have uploaded."""
    seen = []

    def fault(stage):
        if stage == "after_uploads":
            seen.append(stage)
            if len(seen) == chunk:
                raise KeyboardInterrupt

    return fault


def landed_intents(settings, engine) -> tuple[dict, dict]:
    """The ledger's intents ({legacy path: row}, each naming a write id) and, of those whose upload landed, the
    version carrying the intent's write id ({legacy path: version id})."""
    from t2m_pipeline.migration.files_import import INTENT

    storage = S3Storage(settings, None)
    intents = {path: r for path, r in ledger(engine).items() if r.outcome == "failed" and r.reason == INTENT}
    assert intents and all(r.write_id for r in intents.values())
    found = {path: storage.versions_of_write(r.bucket, r.key, r.write_id) for path, r in intents.items()}
    assert all(len(v) <= 1 for v in found.values())  # one upload per write
    return intents, {path: v[0] for path, v in found.items() if v}


def plant_twin(client, row, version_id: str) -> str:
    """Another write of the same file: the bytes and S3 metadata (sha256, original-name = legacy path...) of
    `version_id`, under another write id, as a new version of the same key. Returns its version id."""
    head = client.head_object(Bucket=row.bucket, Key=row.key, VersionId=version_id)
    body = client.get_object(Bucket=row.bucket, Key=row.key, VersionId=version_id)["Body"].read()
    assert head["Metadata"]["sha256"] == row.sha256 == hashlib.sha256(body).hexdigest()
    assert head["Metadata"][WRITE_ID_METADATA] == row.write_id
    meta = {**head["Metadata"], WRITE_ID_METADATA: new_write_id()}
    return client.put_object(Bucket=row.bucket, Key=row.key, Body=body, Metadata=meta, ContentType=head["ContentType"])["VersionId"]


def test_a_rerun_adopts_the_version_carrying_the_intents_write_id_and_never_a_twin_of_the_same_file(world, migrated_redis, buckets):
    """The rule, with its control. A killed run left intents whose uploads landed. For one of them the landed version
    is replaced by a twin: the same bytes, the same S3 metadata (sha256, legacy path as `original-name`), another
    write id. The rerun adopts every version carrying its intent's write id, does not adopt the twin (a rule by
    sha256 and legacy path would), and uploads that file again, under the intent's write id."""
    from t2m_pipeline.migration.files_import import FilesMigration

    settings, engine = migrated_redis
    client, storage = make_s3_client(settings), S3Storage(settings, None)
    with pytest.raises(KeyboardInterrupt):
        FilesMigration(settings, engine, world.root, workers=4, chunk_files=10, fault=crash_after_uploads(2)).run()
    intents, landed = landed_intents(settings, engine)
    assert len(landed) >= 2
    per_key = Counter((r.bucket, r.key) for r in ledger(engine).values())
    # a key holding this file alone: uploading it again cannot reorder a key's version history
    control = next(p for p in sorted(landed) if per_key[(intents[p].bucket, intents[p].key)] == 1)
    c = intents[control]
    twin = plant_twin(client, c, landed[control])
    client.delete_object(Bucket=c.bucket, Key=c.key, VersionId=landed.pop(control))

    rerun = migrate_files(settings, engine, world.root, workers=4)
    after = ledger(engine)
    assert rerun["adopted_versions"] == len(landed)
    for path, version_id in landed.items():
        assert (after[path].outcome, after[path].version_id, after[path].write_id) == ("migrated", version_id, intents[path].write_id)
    assert after[control].outcome == "migrated" and after[control].version_id != twin
    assert after[control].write_id == c.write_id  # the same write, resumed: uploaded again under its write id
    assert storage.versions_of_write(c.bucket, c.key, c.write_id) == [after[control].version_id]
    assert client.get_object(Bucket=c.bucket, Key=c.key)["VersionId"] == after[control].version_id
    # the twin is left as it was, unrecorded: verify names it and nothing else
    result = verify_files(settings, engine, world.root)
    assert [p["problem"] for p in result["problems"]] == [f"unrecorded S3 version {twin} of s3://{c.bucket}/{c.key}"]
    client.delete_object(Bucket=c.bucket, Key=c.key, VersionId=twin)
    result = verify_files(settings, engine, world.root)
    assert result["ok"], result["problems"]


def test_a_run_killed_twice_still_adopts_what_the_first_one_uploaded(world, migrated_redis, buckets):
    """kill -9 safety across reruns: the second run rewrites its intents and is killed before it uploads; the intents
    keep their write ids (the same writes, resumed), so the third run adopts the first run's uploads instead of
    uploading them again (with a fresh write id per run, it would upload them all again and leave duplicates)."""
    from t2m_pipeline.migration.files_import import FilesMigration

    settings, engine = migrated_redis
    with pytest.raises(KeyboardInterrupt):
        FilesMigration(settings, engine, world.root, workers=4, chunk_files=10, fault=crash_after_uploads(2)).run()
    intents, landed = landed_intents(settings, engine)
    assert landed

    def killed_after_intents(stage):
        if stage == "after_intents":
            raise KeyboardInterrupt

    second = FilesMigration(settings, engine, world.root, workers=4, fault=killed_after_intents)
    with pytest.raises(KeyboardInterrupt):
        second.run()
    rewritten = ledger(engine)
    again = [p for p in landed if rewritten[p].batch_id == second.batch_id]
    assert again  # the second run did write these intents again ...
    assert all(rewritten[p].write_id == intents[p].write_id for p in landed)  # ... under the same write ids

    third = migrate_files(settings, engine, world.root, workers=4)
    assert third["adopted_versions"] == len(landed)
    after = ledger(engine)
    assert {p: after[p].version_id for p in landed} == landed
    result = verify_files(settings, engine, world.root)
    assert result["ok"], result["problems"]  # includes: no unrecorded (duplicate) S3 version at any migrated key


def test_rolling_back_a_killed_batch_removes_what_its_intents_wrote_and_not_a_twin_of_another_write(world, migrated_redis, buckets):
    """Rollback's orphan search by the same rule, with its control: a twin of one landed upload (same bytes, same
    sha256 and legacy path metadata, another write id) is not this batch's write and stays; all else is undone."""
    from t2m_pipeline.migration.files_import import FilesMigration

    settings, engine = migrated_redis
    client = make_s3_client(settings)
    before = (ledger(engine), file_rows(engine), all_versions(client, buckets))
    migration = FilesMigration(settings, engine, world.root, workers=4, chunk_files=10, fault=crash_after_uploads(2))
    with pytest.raises(KeyboardInterrupt):
        migration.run()
    intents, landed = landed_intents(settings, engine)
    control = sorted(landed)[0]
    c = intents[control]
    twin = plant_twin(client, c, landed[control])

    undone = rollback_batch(settings, engine, migration.batch_id)
    assert undone["s3_versions_deleted"] >= len(landed)
    left = all_versions(client, buckets)
    assert not {(intents[p].bucket, intents[p].key, v) for p, v in landed.items()} & left  # every landed upload removed
    assert (ledger(engine), file_rows(engine), left) == (before[0], before[1], before[2] | {(c.bucket, c.key, twin)})


def test_an_intent_without_a_write_id_adopts_nothing_the_file_is_uploaded_again_and_nothing_is_lost(world, migrated_redis, buckets):
    """Intents written before the ledger had write ids name no write: the rerun adopts none of what the killed run
    uploaded (no fallback to sha256 and legacy path), uploads those files again under new write ids, and verify's
    only complaint is the earlier uploads, unrecorded; each is the recorded version's twin, which the sweep takes."""
    from datetime import timedelta

    from t2m_pipeline.migration.files_import import FilesMigration

    settings, engine = migrated_redis
    with pytest.raises(KeyboardInterrupt):
        FilesMigration(settings, engine, world.root, workers=4, chunk_files=10, fault=crash_after_uploads(2)).run()
    intents, landed = landed_intents(settings, engine)
    assert landed
    with engine.begin() as conn:  # as a ledger from before revision 0007 has them
        conn.execute(text("UPDATE migration_ledger SET write_id = NULL WHERE outcome = 'failed'"))

    rerun = migrate_files(settings, engine, world.root, workers=4)
    assert rerun["adopted_versions"] == 0
    after = ledger(engine)
    for path, version_id in landed.items():
        row = after[path]
        assert row.outcome == "migrated" and row.version_id != version_id and row.sha256 == intents[path].sha256
        assert row.write_id and row.write_id != intents[path].write_id
    result = verify_files(settings, engine, world.root)
    left = {(intents[p].bucket, intents[p].key, v) for p, v in landed.items()}
    assert sorted(p["problem"] for p in result["problems"]) == sorted(f"unrecorded S3 version {v} of s3://{b}/{k}" for b, k, v in left)
    sweep = S3Storage(settings, engine)
    for bucket, key, version_id in left:
        assert version_id in sweep.duplicate_versions(bucket, key, grace=timedelta(0))


@pytest.fixture
def legacy_reads(world, monkeypatch):
    """Every open of a file under the legacy root, by path (the migration reads files with os.open)."""
    opened: list[bytes] = []
    real_open = os.open
    root = os.fsencode(world.root)

    def counting_open(path, flags, *args, **kwargs):
        if os.fsencode(path).startswith(root):
            opened.append(os.fsencode(path))
        return real_open(path, flags, *args, **kwargs)

    monkeypatch.setattr(os, "open", counting_open)
    return opened


def test_an_unchanged_rerun_reads_no_file_and_the_control_with_checksum_reads_every_one(world, migrated_redis, buckets, legacy_reads):
    settings, engine = migrated_redis
    first = migrate_files(settings, engine, world.root, workers=8)
    originals = first["outcomes"]["migrated"]
    legacy_reads.clear()
    after_first = (ledger(engine), file_rows(engine))

    rerun = migrate_files(settings, engine, world.root, workers=8)
    assert legacy_reads == [] and rerun["unread_files"] == originals
    assert (rerun["uploaded_files"], rerun["metadata_refreshed"]) == (0, 0)
    assert (ledger(engine), file_rows(engine)) == after_first  # flags of unread files (a failed plan) come back equal

    checked = migrate_files(settings, engine, world.root, workers=8, checksum=True)
    assert len(set(legacy_reads)) == originals and checked["unread_files"] == 0
    assert (checked["uploaded_files"], checked["metadata_refreshed"]) == (0, 0)


def test_a_changed_file_is_read_again_and_a_change_that_keeps_size_and_mtime_needs_checksum(world, migrated_redis, buckets, legacy_reads):
    settings, engine = migrated_redis
    migrate_files(settings, engine, world.root, workers=8)
    s = world.slug_shared
    edited = world.path(f"output/{s}/scene1/code/{s}_scene1_v1.py")
    with open(edited, "r+b") as fh:  # same size, new bytes, new mtime
        data = fh.read()
        fh.seek(0)
        fh.write(bytes(b ^ 1 for b in data))
    legacy_reads.clear()
    rerun = migrate_files(settings, engine, world.root, workers=8)
    assert legacy_reads == [os.fsencode(edited)]
    assert rerun["uploaded_files"] == 1

    stat = os.stat(edited)
    with open(edited, "r+b") as fh:  # new bytes again, then the old mtime put back: size, mtime and inode all agree
        fh.write(b"#")
    os.utime(edited, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    missed = migrate_files(settings, engine, world.root, workers=8)
    assert missed["uploaded_files"] == 0  # rsync's rule, and its limit
    caught = migrate_files(settings, engine, world.root, workers=8, checksum=True)
    assert caught["uploaded_files"] == 1
    assert ledger(engine)[f"output/{s}/scene1/code/{s}_scene1_v1.py"].sha256 == hashlib.sha256(open(edited, "rb").read()).hexdigest()


def test_rows_from_before_the_stat_columns_are_read_once_then_never_again(world, migrated_redis, buckets, legacy_reads):
    settings, engine = migrated_redis
    first = migrate_files(settings, engine, world.root, workers=8)
    with engine.begin() as conn:
        conn.execute(text("UPDATE migration_ledger SET mtime_ns = NULL, inode = NULL"))
    legacy_reads.clear()
    once = migrate_files(settings, engine, world.root, workers=8)
    assert once["unread_files"] == 0 and len(set(legacy_reads)) == first["outcomes"]["migrated"] and once["uploaded_files"] == 0
    legacy_reads.clear()
    then = migrate_files(settings, engine, world.root, workers=8)
    assert legacy_reads == [] and then["unread_files"] == first["outcomes"]["migrated"]
