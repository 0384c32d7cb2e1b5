"""Attribution by evidence on its own (pure: evidence in, decision out): who owns a file of a shared topic folder."""

import uuid
from datetime import datetime, timedelta, timezone

from t2m_pipeline.migration.attribution import (
    AttributionIndex,
    JobRef,
    LegacyRun,
    add_run,
    combined_video_folder,
    decide,
)


def at(day: int, hour: int = 10, minute: int = 0, second: int = 0) -> datetime:
    return datetime(2024, 3, day, hour, minute, second, tzinfo=timezone.utc)


def job() -> JobRef:
    return JobRef(uuid.uuid4(), uuid.uuid4())


def run(ref, status, start=None, end=None, created=None, **extra) -> LegacyRun:
    return LegacyRun(ref, status, created or (start or at(1, 0)), start, end if status != "processing" else None,
                     updated_at=end, **extra)


FIRST, SECOND, QUEUED = job(), job(), job()


def test_the_run_that_wrote_the_files_owns_them_and_a_later_reuser_gets_copies():
    runs = [run(FIRST, "completed", at(2, 10), at(2, 11)), run(SECOND, "completed", at(5, 9), at(5, 9, 1))]
    decision = decide(runs, at(2, 10, 30))
    assert decision.owner == FIRST and decision.copies == (SECOND,)
    assert str(FIRST.job_id) in decision.reason and "within its run" in decision.reason
    # a file the second run wrote itself (its re-combined video) is its own; the first job never saw it
    own = decide(runs, at(5, 9, 0, 30))
    assert own.owner == SECOND and own.copies == ()


def test_a_queued_resubmission_of_a_completed_topic_gets_nothing():
    runs = [run(FIRST, "completed", at(2, 10), at(2, 11)), run(QUEUED, "queued", created=at(9))]
    decision = decide(runs, at(2, 10, 30))
    assert decision.owner == FIRST and decision.copies == ()
    # even when it is the only job with the topic: it never ran, so the evidence cannot name an owner
    alone = decide([run(QUEUED, "queued", created=at(9))], at(2, 10, 30))
    assert alone.owner is None and alone.copies == () and "never ran" in alone.reason
    assert alone.candidates[0]["job_id"] == str(QUEUED.job_id) and alone.candidates[0]["ran"] is False


def test_two_runs_in_one_folder_each_own_what_they_wrote():
    failed, rerun = job(), job()
    runs = [run(failed, "failed", at(2, 10), at(2, 10, 20)), run(rerun, "completed", at(3, 10), at(3, 11))]
    v1 = decide(runs, at(2, 10, 10))  # the failed run's code, the re-run used it (and completed)
    v2 = decide(runs, at(3, 10, 30))  # the re-run's new version: the failed job never had it
    assert (v1.owner, v1.copies) == (failed, (rerun,))
    assert (v2.owner, v2.copies) == (rerun, ())


def test_undecidable_files_are_never_guessed():
    a, b = job(), job()
    overlapping = [run(a, "completed", at(2, 10), at(2, 12)), run(b, "completed", at(2, 11), at(2, 13))]
    both = decide(overlapping, at(2, 11, 30))
    assert both.owner is None and "several jobs" in both.reason and {c["job_id"] for c in both.candidates} == {str(a.job_id), str(b.job_id)}
    assert set(both.copies) == {a, b}  # both were served the folder after the file existed
    # a file older than every run (its producer's record is gone): unattributed, the completed job still gets a copy
    older = decide([run(a, "completed", at(5), at(5, 11))], at(1))
    assert older.owner is None and "within no job's run" in older.reason and older.copies == (a,)
    # a file newer than every run: nobody was served it
    newer = decide([run(a, "completed", at(5), at(5, 11))], at(20))
    assert newer.owner is None and newer.copies == ()
    assert decide([], at(1)).reason.startswith("unattributed: no legacy job")
    assert decide([run(a, "completed", at(5), at(5, 11))], None).owner is None


def test_slack_only_when_no_run_contains_the_time_exactly():
    a, b = job(), job()
    edge = [run(a, "completed", at(2, 10), at(2, 11))]
    assert decide(edge, at(2, 11) + timedelta(seconds=1)).owner == a  # written in the run's last instant
    assert decide(edge, at(2, 11) + timedelta(seconds=5)).owner is None
    # back to back: the file inside b's run exactly is b's, though it is within slack of a's end
    back_to_back = [run(a, "completed", at(2, 10), at(2, 11)), run(b, "completed", at(2, 11, 0, 1), at(2, 12))]
    assert decide(back_to_back, at(2, 11, 0, 1) + timedelta(milliseconds=500)).owner == b


def test_what_counts_as_having_run():
    crashed = job()
    processing = run(crashed, "processing", at(2, 10), at(2, 10, 30))  # its run ends at its last update
    assert processing.ran and decide([processing], at(2, 10, 15)).owner == crashed
    started = LegacyRun(crashed, "queued", at(1), stages_completed=("planning",), updated_at=at(1, 12))
    assert started.ran and decide([started], at(1, 11)).owner == crashed
    cancelled = LegacyRun(crashed, "cancelled", at(1), updated_at=at(1, 12))
    assert not cancelled.ran and decide([cancelled], at(1, 11)).owner is None


def test_video_records_name_the_folder_and_the_job_goes_where_they_say():
    assert combined_video_folder("/srv/t2m/output/pythagoras/pythagoras_combined.mp4") == "pythagoras"
    assert combined_video_folder("output\\pythagoras\\pythagoras_combined.mp4") == "pythagoras"
    assert combined_video_folder("/srv/output/pythagoras/scene1.mp4") is None
    assert combined_video_folder(None) is None
    index = AttributionIndex()
    moved = run(FIRST, "completed", at(2), at(2, 11), video_folder="other_folder", video_record=True)
    add_run(index, moved, "Pythagoras")
    add_run(index, run(SECOND, "completed", at(3), at(3, 11)), "Pythagoras")
    assert [r.job for r in index.runs_for("pythagoras")] == [SECOND]
    assert [r.job for r in index.runs_for("other_folder")] == [FIRST]
    # a job served the combined video (its record names it) counts from the record's time when it has no completion
    served = LegacyRun(FIRST, "failed", at(2), at(2, 10), updated_at=at(2, 11), video_folder="x", video_record=True,
                       video_created_at=at(2, 11))
    assert served.served_at == at(2, 11)


# -- reading the evidence for some folders only (a files run's wave) --------------------------------------------------


def test_the_sql_folder_rule_is_pythons_for_every_ascii_topic(migration_db):
    import random

    from sqlalchemy import text

    from t2m_pipeline.migration.attribution import _FOLDER_FILTER
    from t2m_pipeline.migration.legacy_paths import slugify

    rng = random.Random(5)
    alphabet = [chr(c) for c in range(1, 128)]
    topics = ["", "Binary Search", "a--b!!c", "Tab\tTopic", "UPPER_lower 09", *("".join(rng.choices(alphabet, k=rng.randrange(1, 30))) for _ in range(3000))]
    expression = _FOLDER_FILTER.split(" = ANY")[0].split("(regexp_replace", 1)[1]
    sql = "SELECT regexp_replace" + expression.replace("coalesce(configuration->>'topic', topic)", "t") + " FROM unnest(CAST(:t AS text[])) t"
    _, engine = migration_db
    with engine.connect() as conn:
        in_sql = conn.execute(text(sql), {"t": topics}).scalars().all()
    assert in_sql == [slugify(t) for t in topics]


def test_the_index_of_some_folders_files_their_jobs_as_the_whole_index_does(migration_db, redis_db):
    import json
    import os

    import redis
    from sqlalchemy import text

    from t2m_pipeline.migration.attribution import load_index, load_records
    from t2m_pipeline.migration.redis_import import migrate_redis
    from t2m_pipeline_tests.migration.legacy_world import CLAIM_KEY, _job, video_record

    topics = ["Binary Search", "binary   search", "Caf\u00e9 au lait", "\u212aelvin", "kelvin", "\uff26ull", "a--b!!c",
              "Tab\tTopic", "\u0130stanbul", "Moved", "Other"]
    r = redis.Redis.from_url(redis_db)
    r.flushdb()  # the session's Redis database: another test's world may be in it
    r.set(CLAIM_KEY, str(os.getpid()), ex=3600)
    jobs = {}
    for n, topic in enumerate(topics):
        job_id = str(uuid.uuid4())
        jobs[topic] = job_id
        r.set(f"jobs:{job_id}", json.dumps(_job(job_id, f"user_{n % 3}", topic, "completed", f"2024-01-0{1 + n % 9} 10:00:00",
                                                 f"2024-01-0{1 + n % 9} 11:00:00")))
    r.set(f"videos:job_{jobs['Moved']}", video_record("elsewhere", "2024-01-05 11:00:00", b"x"))
    r.set(f"videos:job_{jobs['Other']}", video_record("binary_search", "2024-01-05 11:00:00", b"x"))
    _, engine = migration_db
    migrate_redis(engine, r)

    def filed(index, folder) -> list:
        return [run.describe() for run in index.runs_for(folder)]

    with engine.connect() as conn:
        whole = load_index(conn)
        records = load_records(conn)
        folders = sorted(whole.runs_by_folder)
        assert {"binary_search", "caf_au_lait", "kelvin", "_ull", "a_b_c", "tab_topic", "i_stanbul", "elsewhere"} <= set(folders)
        assert "moved" not in folders and len(whole.runs_for("binary_search")) == 3 and len(whole.runs_for("kelvin")) == 2
        for some in ([f] for f in folders):
            assert filed(load_index(conn, some, records), some[0]) == filed(whole, some[0]), some
        few = load_index(conn, ["binary_search", "elsewhere"], records)
        assert {f: filed(few, f) for f in ("binary_search", "elsewhere")} == {f: filed(whole, f) for f in ("binary_search", "elsewhere")}
        assert sum(len(runs) for runs in few.runs_by_folder.values()) < len(topics)  # not every job was read
        assert conn.execute(text("SELECT count(*) FROM jobs")).scalar_one() == len(topics)


def test_a_waves_legacy_jobs_are_read_through_the_folder_indexes_not_the_whole_table(migration_db):
    """100,000 legacy jobs made each wave's read a scan of them all; the filter's arms have indexes (migration 0012,
    whose expressions must be the filter's own, verbatim). Control: without the indexes the same query scans."""
    import importlib

    from sqlalchemy import text

    from t2m_pipeline.migration import attribution

    migration = importlib.import_module("t2m_pipeline.db.migrations.versions.0012_jobs_legacy_folder_index")
    from t2m_pipeline.vocabulary import LEGACY_FOLDER_SQL, LEGACY_NON_ASCII_TOPIC_SQL

    assert (migration.FOLDER, migration.NON_ASCII) == (LEGACY_FOLDER_SQL, LEGACY_NON_ASCII_TOPIC_SQL)
    _, engine = migration_db
    query = "EXPLAIN " + attribution.LEGACY_JOBS_SQL + attribution._FOLDER_FILTER
    params = {"folders": ["topic_7", "topic_11"], "named": []}
    with engine.begin() as conn:  # rolled back: the rows and the dropped indexes are this test's alone
        user = conn.execute(text("INSERT INTO users (clerk_user_id) VALUES ('user_plan') RETURNING id")).scalar_one()
        conn.execute(
            text(
                "INSERT INTO jobs (user_id, job_type, status, priority, topic, configuration) "
                "SELECT :u, 'video_generation', 'completed', 'normal', 'Topic ' || (n % 500), "
                "jsonb_build_object('legacy', jsonb_build_object('status', 'completed')) FROM generate_series(1, 20000) n"
            ),
            {"u": user},
        )
        conn.execute(text("ANALYZE jobs"))
        plan = "\n".join(conn.execute(text(query), params).scalars())
        assert "ix_jobs_legacy_folder" in plan and "ix_jobs_legacy_non_ascii_topic" in plan and "Seq Scan" not in plan, plan
        conn.execute(text("DROP INDEX ix_jobs_legacy_folder"))
        conn.execute(text("DROP INDEX ix_jobs_legacy_non_ascii_topic"))
        control = "\n".join(conn.execute(text(query), params).scalars())
        assert "Seq Scan on jobs" in control, control
        conn.rollback()
