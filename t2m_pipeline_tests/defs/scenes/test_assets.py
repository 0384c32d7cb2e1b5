"""The asset pipeline in process, driven by its sensors: a job row inserted with plain SQL becomes every object of
the layout in the moto server, each with its file_metadata row, and a completed job; a failed scene fails the job
and keeps the others; re-running only that partition completes the job."""

import hashlib
import io
import json
import tempfile
import uuid

import dagster as dg
import pytest
from PIL import Image

from t2m_pipeline.defs.scenes.sensors import combine_ready_jobs, new_jobs, pipeline_run_failures, scene_runs
from t2m_pipeline.defs.scenes.checks import CHECKS
from t2m_pipeline.defs.scenes.partitions import COMBINED_VIDEO, RENDERED_VIDEO, SCENE_CODE, SCENE_OUTLINE, THUMBNAIL, scene_partitions
from t2m_pipeline.defs.scenes.resources import CodeGeneratorResource, RenderBackendResource
from t2m_pipeline.partition_keys import encode_job_key, encode_scene_key
from t2m_pipeline.render.codegen import GeneratedCode, TemplateCodeGenerator, scene_class_name
from t2m_pipeline.render.media import probe_video
from t2m_pipeline.storage import layout
from t2m_pipeline_tests.defs.scenes.support import (
    apply_partition_requests,
    file_rows,
    insert_job,
    job_row,
    pipeline_defs,
    queue_row,
    run_requested,
    sensor_result,
)


def layout_objects(settings, user_id, job_id, scenes):
    """Every object the layout says a finished job has: (bucket, key)."""
    objects = [(settings.bucket("code"), layout.job_plan_key(user_id, job_id, "scene_outline.json"))]
    for n in range(1, scenes + 1):
        objects += [
            (settings.bucket("code"), layout.scene_code_key(user_id, job_id, n)),
            (settings.bucket("videos"), layout.scene_video_key(user_id, job_id, n)),
            (settings.bucket("thumbnails"), layout.thumbnail_key(user_id, job_id, n)),
        ]
    objects.append((settings.bucket("videos"), layout.combined_video_key(user_id, job_id)))
    return objects


def latest_metadata(instance, asset_key, partition):
    records = instance.fetch_materializations(dg.AssetRecordsFilter(asset_key=asset_key, asset_partitions=[partition]), limit=1).records
    assert records, f"{asset_key.to_user_string()} {partition} never materialized"
    return records[0].asset_materialization.metadata


def checks_of(instance, asset_key, partition) -> dict[str, bool]:
    """The latest evaluation of each check of `asset_key` on `partition`: passed or not."""
    found = {}
    for name in CHECKS[asset_key]:
        history = instance.event_log_storage.get_asset_check_execution_history(dg.AssetCheckKey(asset_key, name), limit=100)
        mine = [record for record in history if record.partition == partition]  # newest first
        if mine:
            found[name] = mine[0].event.dagster_event.event_specific_data.passed
    return found


def test_a_job_row_becomes_every_object_of_the_layout_and_a_completed_job(instance, resources, pipeline_engine, settings, storage):
    user_id, job_id = insert_job(pipeline_engine, configuration={"scene_count": 2, "quality": "low"}, priority="high")
    defs = pipeline_defs(resources)

    # The sensor finds the row (plain SQL, nothing else) and claims it.
    tick = sensor_result(new_jobs, instance, resources)
    (request,) = tick.run_requests
    assert request.partition_key == encode_job_key(user_id, job_id) and request.run_key.startswith(job_id)
    job = job_row(pipeline_engine, job_id)
    assert (job["status"], job["current_stage"]) == ("processing", "planning") and job["started_at"] is not None
    assert queue_row(pipeline_engine, job_id)["processing_started_at"] is not None
    apply_partition_requests(instance, tick)
    assert instance.get_dynamic_partitions("jobs") == [request.partition_key]

    # Planning: the outline, 10 %.
    assert run_requested(defs, instance, "plan_job", request).success
    scene_keys = [encode_scene_key(user_id, job_id, n) for n in (1, 2)]
    job = job_row(pipeline_engine, job_id)
    assert (job["status"], job["current_stage"], float(job["progress_percentage"])) == ("processing", "code_generation", 10.0)

    # The outline's materialization: its scenes become partitions, in order, and one run for their range.
    assert instance.get_dynamic_partitions("scenes") == []
    scenes_tick = sensor_result(scene_runs, instance, resources)
    assert instance.get_dynamic_partitions("scenes") == scene_keys
    (scenes_request,) = scenes_tick.run_requests
    assert scenes_request.partition_key is None
    assert (scenes_request.tags["dagster/asset_partition_range_start"], scenes_request.tags["dagster/asset_partition_range_end"]) == tuple(scene_keys)
    scenes_run = run_requested(defs, instance, "render_scenes", scenes_request)
    assert scenes_run.success
    assert not sensor_result(scene_runs, instance, resources, scenes_tick.cursor).run_requests

    # Each scene partition has its own materializations and its own check results, as a one-scene run would.
    for asset_key in (SCENE_CODE, RENDERED_VIDEO, THUMBNAIL):
        made = [e.event_specific_data.materialization for e in scenes_run.all_events if e.event_type == dg.DagsterEventType.ASSET_MATERIALIZATION]
        assert sorted(m.partition for m in made if m.asset_key == asset_key) == scene_keys
        for key in scene_keys:
            evaluations = checks_of(instance, asset_key, key)
            assert evaluations and all(passed for passed in evaluations.values()), (asset_key, key, evaluations)
    assert {latest_metadata(instance, SCENE_CODE, k)["class_name"].value for k in scene_keys} == {"Scene001", "Scene002"}

    # The same run combined the job's videos once its last thumbnail was made, and reported the combined video with
    # its own checks; the combine sensor, evaluated from the start, finds it made and asks for no combine run.
    made = [e.event_specific_data.materialization for e in scenes_run.all_events if e.event_type == dg.DagsterEventType.ASSET_MATERIALIZATION]
    assert [m.partition for m in made if m.asset_key == COMBINED_VIDEO] == [request.partition_key]
    assert [m.asset_key for m in made][-2:] == [COMBINED_VIDEO, THUMBNAIL]  # before the last thumbnail: see handoff.py
    evaluations = checks_of(instance, COMBINED_VIDEO, request.partition_key)
    assert set(evaluations) == set(CHECKS[COMBINED_VIDEO]) and all(evaluations.values()), evaluations
    assert not sensor_result(combine_ready_jobs, instance, resources).run_requests

    # The job: completed at 100 with times, stages and bytes.
    job, queue = job_row(pipeline_engine, job_id), queue_row(pipeline_engine, job_id)
    assert (job["status"], job["current_stage"], float(job["progress_percentage"])) == ("completed", "completed", 100.0)
    assert job["completed_at"] is not None and job["error_info"] is None
    assert (queue["status"], queue["completed_at"] is not None) == ("completed", True)
    stage_seconds = job["metrics"]["stage_seconds"]
    assert set(stage_seconds) == {"planning", "code_generation", "rendering", "thumbnails", "combining"}
    assert all(v > 0 for v in stage_seconds.values())

    # Every object of the layout is in S3, and its file_metadata row names that very version and checksum.
    rows = {(r["s3_bucket"], r["s3_key"]): r for r in file_rows(pipeline_engine, job_id)}
    expected = layout_objects(settings, user_id, job_id, 2)
    assert set(rows) == set(expected)
    assert job["metrics"]["bytes_written"] == sum(r["file_size"] for r in rows.values())
    for bucket, key in expected:
        body = storage.get_bytes(bucket, key)
        head = storage.head(bucket, key)
        row = rows[(bucket, key)]
        assert row["version_id"] == head["VersionId"] and row["file_size"] == len(body)
        assert row["checksum"] == hashlib.sha256(body).hexdigest() == head["Metadata"]["sha256"]
        assert str(row["user_id"]) == user_id and str(row["job_id"]) == job_id

    # UI metadata: object facts on every materialization, video and image facts where they apply.
    video_meta = latest_metadata(instance, RENDERED_VIDEO, scene_keys[0])
    video_row = rows[(settings.bucket("videos"), layout.scene_video_key(user_id, job_id, 1))]
    assert video_meta["sha256"].value == video_row["checksum"] and video_meta["version_id"].value == video_row["version_id"]
    assert video_meta["s3_uri"].value == f"s3://{settings.bucket('videos')}/{layout.scene_video_key(user_id, job_id, 1)}"
    assert video_meta["resolution"].value == "854x480" and 1.0 <= video_meta["duration_s"].value <= 3.0
    # The job's two renders shared one warm renderer (render/warm.py), each in a cgroup of its own.
    assert [latest_metadata(instance, RENDERED_VIDEO, k)["render_backend"].value for k in scene_keys] == ["sandbox-warm"] * 2
    assert "processes peak" in video_meta["render_usage"].value
    thumb_meta = latest_metadata(instance, THUMBNAIL, scene_keys[1])
    thumb = Image.open(io.BytesIO(storage.get_bytes(settings.bucket("thumbnails"), layout.thumbnail_key(user_id, job_id, 2))))
    assert (thumb.format, thumb.size) == ("JPEG", (thumb_meta["width"].value, thumb_meta["height"].value)) and thumb.size == (854, 480)
    assert latest_metadata(instance, SCENE_CODE, scene_keys[0])["generator"].value == "template"
    assert latest_metadata(instance, SCENE_OUTLINE, request.partition_key)["scene_count"].value == 2

    # The combined video is the scenes in order.
    combined = storage.get_bytes(settings.bucket("videos"), layout.combined_video_key(user_id, job_id))
    scene_durations = [latest_metadata(instance, RENDERED_VIDEO, k)["duration_s"].value for k in scene_keys]
    with tempfile.NamedTemporaryFile(suffix=".mp4") as fh:
        fh.write(combined)
        fh.flush()
        assert probe_video(fh.name).duration_s == pytest.approx(sum(scene_durations), abs=0.15)

    # Nothing is launched twice: the row is no longer queued.
    assert not sensor_result(new_jobs, instance, resources, tick.cursor).run_requests


class BrokenSceneGenerator(CodeGeneratorResource):
    """Code that passes the check but fails in manim (a misspelt name) for one scene: an LLM's typical mistake."""

    broken_scene: int = 2

    def get(self):
        broken = self.broken_scene

        class Generator(TemplateCodeGenerator):
            name = "broken-for-test"

            def generate(self, outline, scene):
                good = super().generate(outline, scene)
                if scene.number != broken:
                    return good
                code = good.code.replace("self.play(Write(title)", "self.play(Wirte(title)")
                return GeneratedCode(code, scene_class_name(scene.number), self.name)

        return Generator()


def test_a_failed_scene_fails_the_job_keeps_the_others_and_a_rerun_of_that_partition_completes_it(
    instance, resources, pipeline_engine, settings, storage
):
    user_id, job_id = insert_job(pipeline_engine, topic="Binary search", configuration={"scene_count": 2})
    broken_defs = pipeline_defs({**resources, "code_generator": BrokenSceneGenerator()})
    tick = sensor_result(new_jobs, instance, resources)
    apply_partition_requests(instance, tick)
    assert run_requested(broken_defs, instance, "plan_job", tick.run_requests[0]).success
    (scenes_request,) = sensor_result(scene_runs, instance, resources).run_requests
    bad_run = run_requested(broken_defs, instance, "render_scenes", scenes_request)
    good_key, bad_key = (encode_scene_key(user_id, job_id, n) for n in (1, 2))
    assert not bad_run.success
    # Only the failed scene's video and thumbnail show failed; the other scene and both codes are materialized.
    for asset_key, failed in ((SCENE_CODE, set()), (RENDERED_VIDEO, {bad_key}), (THUMBNAIL, {bad_key})):
        statuses = instance.get_status_by_partition(asset_key, [good_key, bad_key], scene_partitions)
        assert {k for k, v in statuses.items() if v == dg.AssetPartitionStatus.FAILED} == failed, (asset_key, statuses)
        assert {k for k, v in statuses.items() if v == dg.AssetPartitionStatus.MATERIALIZED} == {good_key, bad_key} - failed
    (step_failure,) = [e for e in bad_run.all_events if e.event_type == dg.DagsterEventType.STEP_FAILURE]
    assert "1 of 2 scene(s) failed: scene 002" in step_failure.event_specific_data.error.message

    # The job failed, saying where and why, with the render log in the code bucket.
    job = job_row(pipeline_engine, job_id)
    assert job["status"] == "failed" and job["completed_at"] is not None
    error = job["error_info"]
    assert (error["stage"], error["scene"], error["failed_scenes"]) == ("rendering", 2, [2])
    assert "Scene002" in error["message"]
    assert error["log_key"].startswith(f"users/{user_id}/jobs/{job_id}/code/scene_002/logs/render-")
    log = storage.get_bytes(settings.bucket("code"), error["log_key"]).decode()
    assert "NameError" in log and "Wirte" in log
    assert any(r["s3_key"] == error["log_key"] and r["file_type"] == "render_log" for r in file_rows(pipeline_engine, job_id))
    # The failed step was not retried: a render error is not transient.
    assert not [e for e in bad_run.all_events if e.event_type == dg.DagsterEventType.STEP_RESTARTED]

    # The other scene is intact; the failed one has its code but no video; nothing is combined.
    keys = {r["s3_key"] for r in file_rows(pipeline_engine, job_id)}
    assert {layout.scene_video_key(user_id, job_id, 1), layout.thumbnail_key(user_id, job_id, 1)} <= keys
    assert layout.scene_code_key(user_id, job_id, 2) in keys and layout.scene_video_key(user_id, job_id, 2) not in keys
    assert not sensor_result(combine_ready_jobs, instance, resources).run_requests

    # The run-failure sensor sees the failure was already written back and leaves error_info (with its log) alone.
    failure = next(e for e in bad_run.all_events if e.event_type == dg.DagsterEventType.RUN_FAILURE)
    with dg.build_run_status_sensor_context(
        sensor_name="pipeline_run_failures", dagster_event=failure, dagster_instance=instance,
        dagster_run=bad_run.dagster_run, resources=resources,
    ) as context:
        pipeline_run_failures(context.for_run_failure())
    assert job_row(pipeline_engine, job_id)["error_info"] == error

    # The fix (here: a generator that writes correct code), then only the failed partition again (as from the UI).
    good_defs = pipeline_defs(resources)
    assert run_requested(good_defs, instance, "render_scenes", dg.RunRequest(partition_key=bad_key)).success
    statuses = instance.get_status_by_partition(RENDERED_VIDEO, [good_key, bad_key], scene_partitions)
    assert set(statuses.values()) == {dg.AssetPartitionStatus.MATERIALIZED}
    assert latest_metadata(instance, RENDERED_VIDEO, bad_key)["render_backend"].value == "sandbox"  # one render: cold
    # That one-scene run made the job's last thumbnail, so it combined the job too: nothing is left for a combine run.
    assert not sensor_result(combine_ready_jobs, instance, resources).run_requests
    job = job_row(pipeline_engine, job_id)
    assert (job["status"], float(job["progress_percentage"]), job["error_info"]) == ("completed", 100.0, None)
    # Scene 1 was rendered once: the re-run did not touch it.
    video_rows = [r for r in file_rows(pipeline_engine, job_id) if r["s3_key"] == layout.scene_video_key(user_id, job_id, 1)]
    assert len(video_rows) == 1


class FlakyGenerator(CodeGeneratorResource):
    """The code endpoint is down for the first call, then answers: a transient failure."""

    def get(self):
        from t2m_pipeline.render.codegen import CodeGenerationError

        marker = FLAKY_CALLS

        class Generator(TemplateCodeGenerator):
            def generate(self, outline, scene):
                marker.append(scene.number)
                if len(marker) == 1:
                    raise CodeGenerationError("code endpoint unreachable (test)", transient=True)
                return super().generate(outline, scene)

        return Generator()


FLAKY_CALLS: list[int] = []


def test_transient_failures_are_retried_with_backoff(instance, resources, pipeline_engine):
    user_id, job_id = insert_job(pipeline_engine, configuration={"scene_count": 1})
    defs = pipeline_defs({**resources, "code_generator": FlakyGenerator()})
    tick = sensor_result(new_jobs, instance, resources)
    apply_partition_requests(instance, tick)
    assert run_requested(defs, instance, "plan_job", tick.run_requests[0]).success
    FLAKY_CALLS.clear()
    (request,) = sensor_result(scene_runs, instance, resources).run_requests
    outcome = run_requested(defs, instance, "render_scenes", request)
    assert outcome.success and len(FLAKY_CALLS) == 2
    assert [e for e in outcome.all_events if e.event_type == dg.DagsterEventType.STEP_RESTARTED]
    assert job_row(pipeline_engine, job_id)["status"] == "completed"  # the retried step went on to combine the job


def test_scene_partition_keys_come_from_the_codec_only(instance, resources, pipeline_engine):
    user_id, job_id = insert_job(pipeline_engine, configuration={"scene_count": 3})
    defs = pipeline_defs(resources)
    tick = sensor_result(new_jobs, instance, resources)
    apply_partition_requests(instance, tick)
    run_requested(defs, instance, "plan_job", tick.run_requests[0])
    for key in instance.get_dynamic_partitions("scenes"):
        user, job, scene = key.split("/")
        assert (user, job) == (user_id, job_id) and scene in ("001", "002", "003")
        assert set(key) <= set("0123456789abcdef-/")
    assert uuid.UUID(job_id)
    assert json.loads(json.dumps(tick.cursor and json.loads(tick.cursor)))["launched_total"] == 1


def test_the_openai_generator_plugs_in_through_settings(instance, resources, pipeline_engine, settings, storage, monkeypatch):
    """The openai generator: scene code comes from an OpenAI-compatible endpoint (a stub on loopback), is
    checked, stored and rendered like any other."""
    from t2m_pipeline_tests.render.llm_standin import StandinLLM
    from t2m_pipeline_tests.render.test_codegen import GOOD_ANSWER

    user_id, job_id = insert_job(pipeline_engine, configuration={"scene_count": 1})
    resources = {**resources, "code_generator": CodeGeneratorResource(code_generator="openai")}
    tick = sensor_result(new_jobs, instance, resources)
    apply_partition_requests(instance, tick)
    defs = pipeline_defs(resources)
    assert run_requested(defs, instance, "plan_job", tick.run_requests[0]).success
    with StandinLLM(lambda request: GOOD_ANSWER.format(name="Scene001")) as stub:
        # the endpoint is the deployment's (its environment), never a run's
        monkeypatch.setenv("T2M_LLM_BASE_URL", stub.base_url)
        monkeypatch.setenv("T2M_LLM_MODEL", "stub-model")
        (request,) = sensor_result(scene_runs, instance, resources).run_requests
        assert run_requested(defs, instance, "render_scenes", request).success
    assert stub.requests and stub.requests[0]["json"]["model"] == "stub-model"
    code = storage.get_bytes(settings.bucket("code"), layout.scene_code_key(user_id, job_id, 1)).decode()
    assert "Create(Circle())" in code and "Sure." not in code
    assert latest_metadata(instance, SCENE_CODE, request.partition_key)["generator"].value == "openai"
    assert 0.2 <= latest_metadata(instance, RENDERED_VIDEO, request.partition_key)["duration_s"].value <= 1.0


class CountingGenerator(CodeGeneratorResource):
    """The template generator, counting the scenes it is asked for (as a language model's bill would)."""

    def get(self):
        calls = GENERATED

        class Generator(TemplateCodeGenerator):
            def generate(self, outline, scene):
                calls.append(scene.number)
                return super().generate(outline, scene)

        return Generator()


GENERATED: list[int] = []


class WorkerLostOnScene2(RenderBackendResource):
    """The render of scene 2 dies the way a lost worker does (an error the step does not understand)."""

    def get(self, storage):
        real = super().get(storage)

        class Backend:
            name = real.name

            def describe(self):
                return real.describe()

            def render(self, context, request):
                if request.label.endswith("/002"):
                    raise RuntimeError("worker lost (test)")
                return real.render(context, request)

        return Backend()


@pytest.mark.parametrize("resume", [True, False], ids=["from-failure", "control-everything"])
def test_a_re_execution_from_failure_makes_only_what_the_failed_run_did_not(instance, resources, pipeline_engine, resume):
    """A crashed worker's run is retried from failure: the scenes the failed run finished, and the code it generated
    for the scene it did not, are not made again (no second call to the language model, no second version)."""
    user_id, job_id = insert_job(pipeline_engine, configuration={"scene_count": 2})
    tick = sensor_result(new_jobs, instance, resources)
    apply_partition_requests(instance, tick)
    assert run_requested(pipeline_defs(resources), instance, "plan_job", tick.run_requests[0]).success
    (scenes_request,) = sensor_result(scene_runs, instance, resources).run_requests
    failed = run_requested(pipeline_defs({**resources, "render": WorkerLostOnScene2()}), instance, "render_scenes", scenes_request)
    assert not failed.success  # scene 1 made whole, scene 2's code made and its render lost

    GENERATED.clear()
    tags = {**scenes_request.tags, "dagster/parent_run_id": failed.run_id, "dagster/root_run_id": failed.run_id}
    if resume:
        tags["dagster/is_resume_retry"] = "true"
    fixed = pipeline_defs({**resources, "code_generator": CountingGenerator()})
    again = run_requested(fixed, instance, "render_scenes", dg.RunRequest(run_key=None, tags=tags))
    assert again.success
    made = sorted((e.event_specific_data.materialization.asset_key.to_user_string(), e.event_specific_data.materialization.partition[-3:])
                  for e in again.all_events if e.event_type == dg.DagsterEventType.ASSET_MATERIALIZATION
                  and e.event_specific_data.materialization.asset_key != COMBINED_VIDEO)  # either way: the job completes
    code_rows = [r for r in file_rows(pipeline_engine, job_id) if r["file_type"] == "scene_code"]
    assert job_row(pipeline_engine, job_id)["status"] == "completed"
    if resume:
        assert made == [("rendered_video", "002"), ("thumbnail", "002")] and GENERATED == []
        assert len(code_rows) == 2  # one version of each scene's code
    else:  # the control: a re-execution of everything makes everything again
        assert len(made) == 6 and sorted(GENERATED) == [1, 2] and len(code_rows) == 4


def test_a_run_whose_scenes_are_two_jobs_does_nothing(instance, resources, pipeline_engine):
    """A range read after another plan's partitions committed among a job's (a race the handoff cannot see) holds
    another user's scene: the step refuses before it generates, renders or stores anything."""
    (user_a, job_a), (user_b, job_b) = insert_job(pipeline_engine), insert_job(pipeline_engine)
    a1, b1, a2 = encode_scene_key(user_a, job_a, 1), encode_scene_key(user_b, job_b, 1), encode_scene_key(user_a, job_a, 2)
    instance.add_dynamic_partitions("scenes", [a1, b1, a2])
    GENERATED.clear()
    ranged = dg.RunRequest(tags={"dagster/asset_partition_range_start": a1, "dagster/asset_partition_range_end": a2})
    result = run_requested(pipeline_defs({**resources, "code_generator": CountingGenerator()}), instance, "render_scenes", ranged)
    assert not result.success and GENERATED == []
    (failure,) = [e for e in result.all_events if e.event_type == dg.DagsterEventType.STEP_FAILURE]
    message = failure.event_specific_data.error.message
    assert "belong to 2 jobs" in message and user_b not in message and job_b not in message  # no other user's ids
    assert file_rows(pipeline_engine, job_b) == [] and file_rows(pipeline_engine, job_a) == []


class TransientOnScene1(CodeGeneratorResource):
    """Scene 1's code endpoint is down for good (a transient error every time); scene 2's code fails in manim."""

    def get(self):
        from t2m_pipeline.render.codegen import CodeGenerationError

        broken = BrokenSceneGenerator().get()
        calls = GENERATED

        class Generator(type(broken)):
            def generate(self, outline, scene):
                calls.append(scene.number)
                if scene.number == 1:
                    raise CodeGenerationError("code endpoint unreachable (test)", transient=True)
                return super().generate(outline, scene)

        return Generator()


def test_a_scene_failed_for_good_is_not_run_again_by_another_scenes_transient_retry(instance, resources, pipeline_engine):
    """Retrying the step for scene 1's transient error would run scene 2 again (its code to the language model, its
    job re-opened): with a scene failed for good the step is not retried, and the transient one is written back."""
    user_id, job_id = insert_job(pipeline_engine, configuration={"scene_count": 2})
    tick = sensor_result(new_jobs, instance, resources)
    apply_partition_requests(instance, tick)
    assert run_requested(pipeline_defs(resources), instance, "plan_job", tick.run_requests[0]).success
    (request,) = sensor_result(scene_runs, instance, resources).run_requests
    GENERATED.clear()
    result = run_requested(pipeline_defs({**resources, "code_generator": TransientOnScene1()}), instance, "render_scenes", request)
    assert not result.success
    assert not [e for e in result.all_events if e.event_type == dg.DagsterEventType.STEP_RESTARTED]
    assert sorted(GENERATED) == [1, 2]  # each scene's code asked for once
    job = job_row(pipeline_engine, job_id)
    assert job["status"] == "failed" and job["error_info"]["failed_scenes"] == [1, 2]


def test_a_combine_that_fails_in_the_scenes_run_is_left_to_the_combine_run(instance, resources, pipeline_engine, monkeypatch):
    """The scenes are made whatever happens to the combine in their run: the step logs it and the combine sensor's
    combine_scenes run (with its retries and failure write-back) completes the job. A thumbnail made again later
    (same videos) combines nothing again."""
    from t2m_pipeline.pipeline import steps
    from t2m_pipeline_tests.defs.scenes.support import materialize_thumbnail

    user_id, job_id = insert_job(pipeline_engine, configuration={"scene_count": 2})
    defs = pipeline_defs(resources)
    tick = sensor_result(new_jobs, instance, resources)
    apply_partition_requests(instance, tick)
    assert run_requested(defs, instance, "plan_job", tick.run_requests[0]).success
    (scenes_request,) = sensor_result(scene_runs, instance, resources).run_requests

    def s3_down(p, key):
        raise ConnectionError("S3 unreachable (test)")

    monkeypatch.setattr(steps, "combine", s3_down)
    scenes_run = run_requested(defs, instance, "render_scenes", scenes_request)
    monkeypatch.undo()
    assert scenes_run.success
    made = [e.event_specific_data.materialization.asset_key for e in scenes_run.all_events if e.event_type == dg.DagsterEventType.ASSET_MATERIALIZATION]
    assert COMBINED_VIDEO not in made and made.count(THUMBNAIL) == 2
    logs = [r.user_message for r in instance.all_logs(scenes_run.run_id) if "combined video not made" in (r.user_message or "")]
    assert logs and "S3 unreachable" in logs[0]
    job = job_row(pipeline_engine, job_id)
    assert (job["status"], job["error_info"]) == ("processing", None)  # not failed: the combine is still to come

    (combine_request,) = sensor_result(combine_ready_jobs, instance, resources).run_requests
    assert combine_request.partition_key == encode_job_key(user_id, job_id)
    assert run_requested(defs, instance, "combine_scenes", combine_request).success
    assert job_row(pipeline_engine, job_id)["status"] == "completed"
    combined_rows = [r for r in file_rows(pipeline_engine, job_id) if r["file_type"] == "combined_video"]
    assert len(combined_rows) == 1

    # a thumbnail made again (a backfill): the same videos, so neither its run nor the sensor combines again
    again = materialize_thumbnail(instance, resources, encode_scene_key(user_id, job_id, 2))
    assert again.success and COMBINED_VIDEO not in [m.asset_key for m in again.asset_materializations_for_node("scenes")]
    assert not sensor_result(combine_ready_jobs, instance, resources).run_requests
    assert len([r for r in file_rows(pipeline_engine, job_id) if r["file_type"] == "combined_video"]) == 1
