"""The scene assets' checks, pictures and failure metadata, through a real job run in process: every check passes
on a good scene with the severity its rule says; a failed render links its log and shows manim's last lines."""

import base64
import io

import dagster as dg
import pytest
from PIL import Image

from t2m_pipeline.defs.scenes.sensors import combine_ready_jobs, new_jobs, scene_runs
from t2m_pipeline.defs.scenes.checks import CHECKS, DESCRIPTIONS
from t2m_pipeline.defs.scenes.partitions import COMBINED_VIDEO, RENDERED_VIDEO, SCENE_CODE, THUMBNAIL
from t2m_pipeline.partition_keys import encode_scene_key
from t2m_pipeline_tests.defs.scenes.support import apply_partition_requests, insert_job, pipeline_defs, run_requested, sensor_result
from t2m_pipeline_tests.defs.scenes.test_assets import BrokenSceneGenerator

pytestmark = pytest.mark.slow  # real manim renders

SEVERITY = {
    "row_recorded": dg.AssetCheckSeverity.ERROR, "object_matches_row": dg.AssetCheckSeverity.ERROR,
    "code_checks": dg.AssetCheckSeverity.ERROR, "video_probes": dg.AssetCheckSeverity.ERROR,
    "combined_probes": dg.AssetCheckSeverity.ERROR, "thumbnail_decodes": dg.AssetCheckSeverity.ERROR,
    "video_size": dg.AssetCheckSeverity.WARN, "thumbnail_not_blank": dg.AssetCheckSeverity.WARN,
}


def evaluations(result) -> dict[tuple[str, str], dg.AssetCheckEvaluation]:
    return {(e.asset_key.to_user_string(), e.check_name): e for e in result.get_asset_check_evaluations()}


def materialization(result, asset_key):
    (event,) = [m for m in result.get_asset_materialization_events() if m.asset_key == asset_key]
    return event.materialization.metadata


def preview_image(metadata) -> Image.Image:
    text = metadata["preview"].value
    assert text.startswith("![preview](data:image/webp;base64,") and len(text) < 1000  # the UI inlines it
    return Image.open(io.BytesIO(base64.b64decode(text.split("base64,", 1)[1].rstrip(")"))))


def test_a_good_scene_passes_every_check_and_shows_its_pictures(instance, resources, pipeline_engine, settings):
    user_id, job_id = insert_job(pipeline_engine, configuration={"scene_count": 1, "quality": "low"})
    defs = pipeline_defs(resources)
    tick = sensor_result(new_jobs, instance, resources)
    apply_partition_requests(instance, tick)
    assert run_requested(defs, instance, "plan_job", tick.run_requests[0]).success
    (scene_request,) = sensor_result(scene_runs, instance, resources).run_requests
    scene = run_requested(defs, instance, "render_scenes", scene_request)
    assert scene.success
    # The scenes run combined the job too; a combine_scenes run (the sensor's fallback, or from the UI) reports the
    # same checks for its own combined video.
    assert not sensor_result(combine_ready_jobs, instance, resources).run_requests
    combined = run_requested(defs, instance, "combine_scenes", dg.RunRequest(partition_key=tick.run_requests[0].partition_key))
    assert combined.success
    in_step = {k: v for k, v in evaluations(scene).items() if k[0] == "combined_video"}
    assert set(in_step) == set(evaluations(combined)) and all(v.passed for v in in_step.values())

    found = {**evaluations(scene), **evaluations(combined)}
    expected = {(asset.to_user_string(), name) for asset, names in CHECKS.items() for name in names}
    assert set(found) == expected
    job_key = tick.run_requests[0].partition_key
    for (asset, name), evaluation in found.items():
        assert evaluation.passed, (asset, name, evaluation.description)
        assert evaluation.severity == SEVERITY[name] and evaluation.description
        assert evaluation.partition == (job_key if asset == "combined_video" else scene_request.partition_key)
    assert found[("scene_code", "code_checks")].description == "parses and defines Scene001"
    assert found[("thumbnail", "thumbnail_decodes")].description == "a 854x480 JPEG"
    assert scene_request.partition_key == encode_scene_key(user_id, job_id, 1)

    for asset in (RENDERED_VIDEO, THUMBNAIL):
        meta = materialization(scene, asset)
        image = preview_image(meta)
        assert image.format == "WEBP" and 96 <= image.width <= 240 and len(set(image.convert("L").getdata())) > 1
        assert meta["object_url"].value.startswith(f"{settings.endpoint_url}/{meta['s3_uri'].value[5:]}")
        assert f"versionId={meta['version_id'].value}" in meta["object_url"].value
    assert preview_image(materialization(combined, COMBINED_VIDEO)).width >= 96
    assert "preview" not in materialization(scene, SCENE_CODE) and "object_url" in materialization(scene, SCENE_CODE)

    # Every spec in the UI says what it checks.
    specs = [spec for a in defs.assets if isinstance(a, dg.AssetsDefinition) for spec in a.check_specs]
    assert sorted(s.description for s in specs) == sorted(DESCRIPTIONS[n] for names in CHECKS.values() for n in names)
    assert COMBINED_VIDEO in {s.asset_key for s in specs}


def test_a_failed_render_links_its_log_and_shows_manims_last_lines(instance, resources, pipeline_engine, settings):
    insert_job(pipeline_engine, configuration={"scene_count": 2})
    defs = pipeline_defs({**resources, "code_generator": BrokenSceneGenerator()})
    tick = sensor_result(new_jobs, instance, resources)
    apply_partition_requests(instance, tick)
    assert run_requested(defs, instance, "plan_job", tick.run_requests[0]).success
    (request,) = sensor_result(scene_runs, instance, resources).run_requests  # the job's two scenes in one run
    failed = run_requested(defs, instance, "render_scenes", request)
    assert not failed.success
    (step_failure,) = [e for e in failed.all_events if e.event_type == dg.DagsterEventType.STEP_FAILURE]
    error = step_failure.step_failure_data.error
    user = step_failure.step_failure_data.user_failure_data
    assert user.description.startswith("1 of 2 scene(s) failed: scene 002 of job ") and ": rendering failed:" in user.description
    meta = user.metadata
    assert meta["log_url"].value.startswith(f"{settings.endpoint_url}/{settings.bucket('code')}/")
    assert meta["log"].value == f"s3://{settings.bucket('code')}/{meta['log_key'].value}"
    tail = meta["log_tail"].value
    assert tail.count("```") == 2 and "NameError" in tail and "Wirte" in tail
    assert error.cause is None  # no chained traceback of the step under the clear message
