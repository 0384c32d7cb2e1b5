"""Status write-back rules against the real database: progress from objects, failed scenes, re-runs, legacy jobs."""

import pytest

from t2m_pipeline.db.files import FileRecord, record_file
from t2m_pipeline.db.job_state import transition
from t2m_pipeline.pipeline import status
from t2m_pipeline.pipeline.status import JobObjects, progress_of, stage_of
from t2m_pipeline.storage import layout
from t2m_pipeline.vocabulary import FileType
from t2m_pipeline_tests.defs.scenes.support import insert_job, job_row

SHA = "0" * 64


def record(engine, user_id, job_id, key, file_type, extra=None, size=10, version="v1"):
    with engine.begin() as conn:
        record_file(conn, FileRecord(user_id, file_type, "bucket", key, version, size, SHA, "x/y", job_id=job_id, extra=extra or {}))


def planned_job(engine, scenes=2):
    user_id, job_id = insert_job(engine)
    transition(engine, job_id, "processing", stage="planning")
    record(engine, user_id, job_id, layout.job_plan_key(user_id, job_id, "scene_outline.json"), "scene_outline", {"scene_count": scenes})
    return user_id, job_id


KINDS = {"code": (layout.scene_code_key, FileType.SCENE_CODE), "video": (layout.scene_video_key, FileType.SCENE_VIDEO),
         "thumbnail": (layout.thumbnail_key, FileType.THUMBNAIL)}


def scene_done(engine, user_id, job_id, n, kinds=("code", "video", "thumbnail")):
    """Rows as the storage layer writes them: the file type and `metadata.scene_number`."""
    for kind in kinds:
        key, file_type = KINDS[kind]
        record(engine, user_id, job_id, key(user_id, job_id, n), file_type, {"scene_number": n})


@pytest.mark.parametrize(
    "objects,progress,stage",
    [
        (JobObjects(), 0.0, "planning"),
        (JobObjects(scene_count=4), 10.0, "code_generation"),
        (JobObjects(scene_count=2, code={1, 2}, video={1}), 10 + 80 * 3 / 6, "rendering"),
        (JobObjects(scene_count=2, code={1, 2}, video={1, 2}, thumbnail={2}), 10 + 80 * 5 / 6, "thumbnails"),
        (JobObjects(scene_count=2, code={1, 2}, video={1, 2}, thumbnail={1, 2}), 90.0, "combining"),
        (JobObjects(scene_count=1, code={1, 7}, video={1}, thumbnail={1}), 90.0, "combining"),  # strays do not count
    ],
)
def test_progress_and_stage_follow_the_objects(objects, progress, stage):
    assert progress_of(objects) == pytest.approx(progress, abs=0.01) and stage_of(objects) == stage
    assert progress_of(objects, completed=True) == 100.0


def test_objects_are_read_from_file_metadata(pipeline_engine):
    user_id, job_id = planned_job(pipeline_engine, scenes=2)
    scene_done(pipeline_engine, user_id, job_id, 1)
    scene_done(pipeline_engine, user_id, job_id, 2, kinds=("code",))
    record(pipeline_engine, user_id, job_id, layout.scene_video_key(user_id, job_id, 1), FileType.SCENE_VIDEO,
           {"scene_number": 1}, version="v2", size=99)
    # the row says what an object is, not its key: a log at a video's key is a log, a video at any key a video
    record(pipeline_engine, user_id, job_id, layout.scene_video_key(user_id, job_id, 2), FileType.RENDER_LOG, {"scene_number": 2}, size=1)
    record(pipeline_engine, user_id, job_id, "users/elsewhere/v.mp4", FileType.SCENE_VIDEO, {"scene_number": 2}, version="v7", size=1)
    with pipeline_engine.connect() as conn:
        objects = status.job_objects(conn, job_id)
    assert (objects.scene_count, objects.code, objects.video, objects.thumbnail) == (2, {1, 2}, {1, 2}, {1})
    assert objects.video_versions == {1: "v2", 2: "v7"} and objects.bytes_written == 10 * 5 + 99 + 2
    assert not objects.scenes_complete()


def test_two_failed_scenes_keep_the_job_failed_until_both_are_fixed(pipeline_engine):
    user_id, job_id = planned_job(pipeline_engine, scenes=3)
    status.step_failed(pipeline_engine, job_id, stage="rendering", message="boom 1", scene=1, log_key="k1")
    status.step_failed(pipeline_engine, job_id, stage="rendering", message="boom 3", scene=3, log_key="k3")
    row = job_row(pipeline_engine, job_id)
    assert row["status"] == "failed" and row["error_info"]["failed_scenes"] == [1, 3] and row["error_info"]["log_key"] == "k3"

    # Scene 2 (never failed) runs and succeeds: the job stays failed.
    assert status.step_started(pipeline_engine, job_id, 2) is None
    scene_done(pipeline_engine, user_id, job_id, 2)
    status.step_succeeded(pipeline_engine, job_id, stage="thumbnails", seconds=1.0, scene=2)
    assert job_row(pipeline_engine, job_id)["status"] == "failed"

    # Re-running scene 1 does not re-open the job while scene 3 is still failed; its success takes it off the list.
    assert status.step_started(pipeline_engine, job_id, 1) is None
    scene_done(pipeline_engine, user_id, job_id, 1)
    status.step_succeeded(pipeline_engine, job_id, stage="thumbnails", seconds=1.0, scene=1)
    row = job_row(pipeline_engine, job_id)
    assert row["status"] == "failed" and row["error_info"]["failed_scenes"] == [3]

    # Re-running the last failed scene re-opens the job at once.
    assert status.step_started(pipeline_engine, job_id, 3).status == "processing"
    assert job_row(pipeline_engine, job_id)["error_info"] is None


def test_run_failure_write_back_does_not_overwrite_the_steps_own(pipeline_engine):
    _, job_id = planned_job(pipeline_engine)
    status.step_failed(pipeline_engine, job_id, stage="rendering", message="render error", scene=2, log_key="logs/render.log")
    assert status.step_failed(pipeline_engine, job_id, stage="rendering", message="run failed", scene=2, only_if_unrecorded=True) is None
    assert job_row(pipeline_engine, job_id)["error_info"]["log_key"] == "logs/render.log"
    state = status.step_failed(pipeline_engine, job_id, stage="rendering", message="run failed", scene=1, only_if_unrecorded=True)
    assert state.status == "failed" and job_row(pipeline_engine, job_id)["error_info"]["failed_scenes"] == [1, 2]


def test_a_thumbnail_alone_does_not_reopen_a_finished_job(pipeline_engine):
    user_id, job_id = planned_job(pipeline_engine, scenes=1)
    scene_done(pipeline_engine, user_id, job_id, 1)
    status.job_completed(pipeline_engine, job_id)
    assert status.step_started(pipeline_engine, job_id, 1, reopens=False) is None
    status.step_succeeded(pipeline_engine, job_id, stage="thumbnails", seconds=0.5, scene=1)
    row = job_row(pipeline_engine, job_id)
    assert (row["status"], float(row["progress_percentage"])) == ("completed", 100.0)
    # Whereas re-rendering the scene does (the combined video will change).
    assert status.step_started(pipeline_engine, job_id, 1).status == "processing"


def test_scene_steps_leave_jobs_the_pipeline_did_not_plan_alone(pipeline_engine):
    """A migrated legacy job (no outline of ours) whose thumbnail is backfilled keeps its status and error_info."""
    user_id, job_id = insert_job(pipeline_engine, status="failed")
    legacy_error = {"error_code": "RENDER", "error_message": "legacy failure"}
    with pipeline_engine.begin() as conn:
        conn.exec_driver_sql("UPDATE jobs SET error_info = %(e)s::jsonb WHERE id = %(j)s", {"e": '{"error_code": "RENDER", "error_message": "legacy failure"}', "j": job_id})
    scene_done(pipeline_engine, user_id, job_id, 1, kinds=("video",))
    assert status.step_started(pipeline_engine, job_id, 1, reopens=False) is None
    assert status.step_failed(pipeline_engine, job_id, stage="thumbnails", message="x", scene=1) is None
    status.step_succeeded(pipeline_engine, job_id, stage="thumbnails", seconds=0.5, scene=1)
    row = job_row(pipeline_engine, job_id)
    assert (row["status"], row["error_info"]) == ("failed", legacy_error)
    assert row["metrics"]["stage_seconds"] == {"thumbnails": 0.5}


def test_a_cancelled_job_stays_cancelled(pipeline_engine):
    user_id, job_id = planned_job(pipeline_engine, scenes=1)
    transition(pipeline_engine, job_id, "cancelled")
    assert status.step_failed(pipeline_engine, job_id, stage="rendering", message="x", scene=1) is None
    scene_done(pipeline_engine, user_id, job_id, 1)
    status.job_completed(pipeline_engine, job_id)
    assert job_row(pipeline_engine, job_id)["status"] == "cancelled"


def test_stage_seconds_add_up_across_scenes(pipeline_engine):
    _, job_id = planned_job(pipeline_engine)
    for seconds in (1.25, 2.5):
        status.step_succeeded(pipeline_engine, job_id, stage="rendering", seconds=seconds, scene=1)
    status.step_succeeded(pipeline_engine, job_id, stage="planning", seconds=0.5)
    assert job_row(pipeline_engine, job_id)["metrics"]["stage_seconds"] == {"rendering": 3.75, "planning": 0.5}


def test_a_step_failing_on_a_held_job_leaves_it_held(pipeline_engine):
    """A held legacy job is not running: a job-level step an operator ran on it and that failed changes nothing (held
    -> failed is no transition; without this the write-back itself would raise)."""
    _, job_id = insert_job(pipeline_engine, status="held")
    assert status.step_failed(pipeline_engine, job_id, stage="planning", message="boom") is None
    assert job_row(pipeline_engine, job_id)["status"] == "held"
