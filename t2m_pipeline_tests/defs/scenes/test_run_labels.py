"""Runs a person can tell apart: the sensors' run requests and the runs themselves carry the topic, the user's email
and the scene; a run launched from the UI says so even when it copied its parent's sensor tag; materializations
show the topic and user."""

import dagster as dg

from t2m_pipeline.defs.scenes.sensors import new_jobs, scene_runs
from t2m_pipeline.defs.scenes.partitions import SCENE_OUTLINE
from t2m_pipeline.partition_keys import encode_job_key, encode_scene_key
from t2m_pipeline_tests.defs.scenes.support import (
    apply_partition_requests,
    insert_job,
    pipeline_defs,
    run_requested,
    sensor_result,
)


def test_sensor_runs_carry_topic_user_and_scene(instance, resources, pipeline_engine):
    user_id, job_id = insert_job(pipeline_engine, topic="Binary\nsearch " + "z" * 200, clerk_id="user_labels",
                                 configuration={"scene_count": 2})
    tick = sensor_result(new_jobs, instance, resources)
    apply_partition_requests(instance, tick)
    (request,) = tick.run_requests
    tags = request.tags
    assert tags["t2m/user"] == "user_labels@example.com" and tags["t2m/job_id"] == job_id
    assert tags["t2m/topic"].startswith("Binary search zzz") and len(tags["t2m/topic"]) == 80
    assert tags["t2m/launched_by"] == "sensor new_jobs" and "t2m/scene" not in tags

    defs = pipeline_defs(resources)
    planned = run_requested(defs, instance, "plan_job", request)
    assert planned.success
    metadata = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=SCENE_OUTLINE, asset_partitions=[encode_job_key(user_id, job_id)]), limit=1
    ).records[0].asset_materialization.metadata
    assert metadata["user"].value == "user_labels@example.com" and metadata["topic"].value == tags["t2m/topic"]

    (scenes,) = sensor_result(scene_runs, instance, resources).run_requests  # one run for the job's two scenes
    assert "t2m/scene" not in scenes.tags and scenes.tags["t2m/job_id"] == job_id
    assert scenes.tags["t2m/user"] == "user_labels@example.com" and scenes.tags["t2m/launched_by"] == "sensor scene_runs"
    # a one-scene run (a re-run from the UI) names its scene
    one = run_requested(defs, instance, "render_scenes", dg.RunRequest(partition_key=encode_scene_key(user_id, job_id, 2)))
    assert one.success and instance.get_run_by_id(one.run_id).tags["t2m/scene"] == "2"


def plan(defs, instance, key, tags):
    return defs.resolve_job_def("plan_job").execute_in_process(instance=instance, partition_key=key, tags=tags, raise_on_error=False)


def test_a_re_execution_from_the_ui_says_so_and_a_bare_run_gets_its_labels(instance, resources, pipeline_engine):
    user_id, job_id = insert_job(pipeline_engine, topic="Fourier series", clerk_id="user_ui")
    tick = sensor_result(new_jobs, instance, resources)
    apply_partition_requests(instance, tick)
    defs = pipeline_defs(resources)
    key = encode_job_key(user_id, job_id)
    parent = plan(defs, instance, key, {**tick.run_requests[0].tags, "dagster/sensor_name": "new_jobs"})
    assert parent.success

    # What the UI launches for "Re-execute": the parent's tags (its sensor's name among them) and its own.
    ui_tags = {**parent.dagster_run.tags, "dagster/from_ui": "true", "dagster/parent_run_id": parent.run_id,
               "dagster/root_run_id": parent.run_id}
    again = plan(defs, instance, key, ui_tags)
    assert again.success
    # The control: the tags it was launched with say the sensor launched it (Dagster's "Launched by" reads those).
    assert ui_tags["dagster/sensor_name"] == "new_jobs" and ui_tags["t2m/launched_by"] == "sensor new_jobs"
    stored = instance.get_run_by_id(again.run_id).tags
    assert stored["t2m/launched_by"] == f"the UI: re-execution of run {parent.run_id[:8]}"

    # "Materialize" from the UI: no sensor tags at all; the step adds what a person needs.
    bare = plan(defs, instance, key, {"dagster/from_ui": "true"})
    assert bare.success
    stored = instance.get_run_by_id(bare.run_id).tags
    assert (stored["t2m/topic"], stored["t2m/user"], stored["t2m/launched_by"]) == ("Fourier series", "user_ui@example.com", "the UI")
