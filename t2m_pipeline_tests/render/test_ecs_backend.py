"""The ECS render backend's launch, message and upload code, against local stand-ins: PipesECSClient calling a
stand-in ECS API (render/ecs_standin.py: requests validated against botocore's ECS model, the task run on this
machine in the sandbox), Pipes messages through CloudWatch Logs on the moto server, presigned GET/PUTs through
moto S3. Driven through the real pipeline: the rendered_video asset with the render resource set to this backend.
"""

from __future__ import annotations

import base64
import json
import os
import zlib
from dataclasses import replace
from urllib.parse import parse_qs, urlsplit

import dagster as dg
import pytest

from t2m_pipeline.defs.scenes.sensors import new_jobs, scene_runs
from t2m_pipeline.defs.scenes.partitions import RENDERED_VIDEO
from t2m_pipeline.defs.scenes.resources import RenderBackendResource
from t2m_pipeline.render.ecs import MAX_OVERRIDES_CHARS, EcsRenderBackend, OverridesTooLargeError, _LaunchGuard
from t2m_pipeline.render.media import probe_video
from t2m_pipeline.storage import layout
from t2m_pipeline.storage.s3 import S3Storage, make_s3_client
from t2m_pipeline_tests.defs.scenes.support import (  # noqa: F401 - fixtures
    apply_partition_requests,
    file_rows,
    insert_job,
    instance,
    job_row,
    pipeline_db_url,
    pipeline_defs,
    pipeline_engine,
    resources,
    run_requested,
    sensor_result,
)
from t2m_pipeline_tests.render.ecs_standin import LocalEcs

pytestmark = [
    pytest.mark.slow,  # each render is a task: a manim render plus CloudWatch polling
    pytest.mark.skipif(os.geteuid() != 0, reason="the stand-in task runs in the local sandbox, built for root"),
]

BACKEND: dict[str, EcsRenderBackend] = {}


class StandinEcsRender(RenderBackendResource):
    def get(self, storage):
        return BACKEND["ecs"]


@pytest.fixture
def ecs(settings, storage):
    """The backend as production builds it, with the ECS and CloudWatch Logs clients pointed at the stand-ins."""
    import boto3

    logs = boto3.client("logs", endpoint_url=settings.endpoint_url, region_name=settings.region)
    standin = LocalEcs(logs)
    ecs_settings = replace(
        settings, render_backend="ecs", render_cluster="dev-t2m-dagster", render_task_definition="dev-t2m-render",
        render_subnets=("subnet-0123abcd",), render_security_groups=("sg-0123abcd",),
    )
    backend = EcsRenderBackend(ecs_settings, S3Storage(ecs_settings, storage.engine), ecs_client=standin, logs_client=logs, poll_s=1.0)
    BACKEND["ecs"] = backend
    yield backend, standin
    BACKEND.clear()


def run_job(instance, resources, engine, scene_code_answer=None):
    """One job of one scene through the sensors and the real jobs; the render resource is the ECS backend."""
    resources = {**resources, "render": StandinEcsRender()}
    if scene_code_answer is not None:
        resources["code_generator"] = FixedCode(code=scene_code_answer)
    defs = pipeline_defs(resources)
    user_id, job_id = insert_job(engine, configuration={"scene_count": 1, "quality": "low"})
    tick = sensor_result(new_jobs, instance, resources)
    apply_partition_requests(instance, tick)
    assert run_requested(defs, instance, "plan_job", tick.run_requests[0]).success
    (request,) = sensor_result(scene_runs, instance, resources).run_requests
    result = run_requested(defs, instance, "render_scenes", request)
    return user_id, job_id, request.partition_key, result


class FixedCode(dg.ConfigurableResource):
    """A code generator resource answering one fixed scene (for hostile scenes run inside the task)."""

    code: str

    def get(self):
        from t2m_pipeline.render.codegen import GeneratedCode, check_scene_code

        code = self.code

        class Generator:
            name = "fixed"

            def generate(self, outline, scene):
                class_name = f"Scene{scene.number:03d}"
                return GeneratedCode(check_scene_code(code.replace("SceneNNN", class_name), class_name), class_name, "fixed")

        return Generator()


def pipes_context(run_task_params: dict) -> dict:
    env = {e["name"]: e["value"] for e in run_task_params["overrides"]["containerOverrides"][0]["environment"]}
    return json.loads(zlib.decompress(base64.b64decode(env["DAGSTER_PIPES_CONTEXT"])))["data"]


def staged_objects(settings) -> list[str]:
    client = make_s3_client(settings)
    listed = client.list_objects_v2(Bucket=settings.bucket("temp"), Prefix="temp/render-")
    return [o["Key"] for o in listed.get("Contents", [])]


def test_a_render_runs_as_its_own_task_and_only_checked_files_come_back(instance, resources, pipeline_engine, ecs, settings):
    backend, standin = ecs
    before = set(staged_objects(settings))
    user_id, job_id, partition, result = run_job(instance, resources, pipeline_engine)
    assert result.success
    # the video and the thumbnail are stored by the worker, with their rows
    keys = {row["s3_key"]: row for row in file_rows(pipeline_engine, job_id)}
    video_key = layout.scene_video_key(user_id, job_id, 1)
    assert video_key in keys and layout.thumbnail_key(user_id, job_id, 1) in keys
    assert keys[video_key]["metadata"]["render_backend"] == "ecs"
    with_video = make_s3_client(settings).get_object(Bucket=settings.bucket("videos"), Key=video_key)["Body"].read()
    assert with_video[4:8] == b"ftyp"
    # one RunTask, shaped as the API takes it (validated by botocore's model), for the render task definition
    (run_task,) = [params for op, params in standin.calls if op == "RunTask"]
    assert run_task["taskDefinition"] == "dev-t2m-render" and run_task["launchType"] == "FARGATE"
    assert run_task["networkConfiguration"]["awsvpcConfiguration"] == {
        "subnets": ["subnet-0123abcd"], "securityGroups": ["sg-0123abcd"], "assignPublicIp": "DISABLED"}
    assert len(json.dumps(run_task["overrides"], separators=(",", ":"))) <= MAX_OVERRIDES_CHARS
    # the task got the Pipes bootstrap and nothing else: no credential, no setting of ours
    (task,) = standin.tasks.values()
    assert set(task.environment) == {"DAGSTER_PIPES_CONTEXT", "DAGSTER_PIPES_MESSAGES"}
    # in: a GET of the staged code; out: PUTs for exactly two keys; each URL short-lived
    extras = pipes_context(run_task)["extras"]
    code_path = urlsplit(extras["code_url"]).path
    put_paths = {name: urlsplit(url).path for name, url in extras["upload_urls"].items()}
    assert code_path.endswith("/scene.py") and put_paths["video"].endswith("/output.mp4") and put_paths["log"].endswith("/render.log")
    staging = {p.rsplit("/", 1)[0] for p in [code_path, *put_paths.values()]}
    assert len(staging) == 1 and f"/{settings.bucket('temp')}/temp/render-" in staging.pop()
    for url in [extras["code_url"], *extras["upload_urls"].values()]:
        assert int(parse_qs(urlsplit(url).query)["X-Amz-Expires"][0]) <= 3600
    # the staging objects are gone (a crash leaves them to the temp bucket's expiry)
    assert set(staged_objects(settings)) == before


NOT_A_VIDEO = '''
from manim import *
import base64, json, os, urllib.request, zlib

class SceneNNN(Scene):
    def construct(self):
        # the scene runs next to the entrypoint: it can read the Pipes context and PUT whatever it likes
        context = json.loads(zlib.decompress(base64.b64decode(os.environ["DAGSTER_PIPES_CONTEXT"])))["data"]
        body = os.urandom(SIZE)
        request = urllib.request.Request(context["extras"]["upload_urls"]["video"], data=body, method="PUT",
                                         headers={"Content-Type": "application/octet-stream"})
        urllib.request.urlopen(request).read()
        os._exit(0)  # and "succeed" without a video of its own
'''


@pytest.mark.parametrize("size,limit,reason", [(4096, None, "not a readable video"), (3 << 20, 1 << 20, "over the limit")])
def test_an_upload_that_is_not_a_video_or_too_big_is_not_stored(instance, resources, pipeline_engine, ecs, settings, size, limit, reason):
    backend, _ = ecs
    if limit:
        backend.max_video_bytes = limit
    user_id, job_id, _, result = run_job(instance, resources, pipeline_engine, NOT_A_VIDEO.replace("SIZE", str(size)))
    assert not result.success
    row = job_row(pipeline_engine, job_id)
    assert row["status"] == "failed" and reason in row["error_info"]["message"], row["error_info"]
    assert layout.scene_video_key(user_id, job_id, 1) not in {r["s3_key"] for r in file_rows(pipeline_engine, job_id)}


FORGER = '''
from manim import *
import ctypes, json, os, sys

class SceneNNN(Scene):
    def construct(self):
        fd = ctypes.CDLL(None, use_errno=True).syscall(438, os.pidfd_open(os.getppid()), 1, 0)
        out = os.fdopen(fd, "w")
        def send(method, params):
            out.write(json.dumps({"__dagster_pipes_version": "0.1", "method": method, "params": params}) + "\\n")
        send("report_asset_materialization", {"asset_key": "rendered_video", "metadata": {"forged": {"raw_value": "FORGED", "type": "text"}}, "data_version": "FORGED"})
        for i in range(500):
            send("log", {"message": f"FORGED {i}", "level": "info"})
        out.flush()
        self.play(Create(Circle()), run_time=0.3)
'''


def test_forged_messages_through_cloudwatch_are_refused(instance, resources, pipeline_engine, ecs):
    user_id, job_id, partition, result = run_job(instance, resources, pipeline_engine, FORGER)
    assert result.success  # the scene rendered: its video passed the intake; its messages did not get through
    records = instance.fetch_materializations(dg.AssetRecordsFilter(asset_key=RENDERED_VIDEO, asset_partitions=[partition]), limit=5).records
    (record,) = records
    assert "forged" not in record.asset_materialization.metadata and record.asset_materialization.metadata["render_backend"].value == "ecs"
    logs = [e for e in instance.all_logs(result.run_id) if e.user_message.startswith("[render] FORGED")]
    assert 0 < len(logs) <= 100


FREEZER = '''
from manim import *
import os, signal

class SceneNNN(Scene):
    def construct(self):
        os.kill(os.getppid(), signal.SIGSTOP)  # the entrypoint frozen: the task never ends on its own
        import time; time.sleep(600)
'''


def test_a_task_that_never_ends_is_stopped_and_the_render_fails_as_timed_out(instance, resources, pipeline_engine, ecs):
    backend, standin = ecs
    backend.task_start_s = 2.0
    os.environ["T2M_RENDER_TIMEOUT_S"] = "8"  # manim's own start-up takes a few seconds
    try:
        user_id, job_id, _, result = run_job(instance, resources, pipeline_engine, FREEZER)
    finally:
        del os.environ["T2M_RENDER_TIMEOUT_S"]
    assert not result.success
    assert [params for op, params in standin.calls if op == "StopTask"], "the backend never stopped the task"
    assert all(task.status == "STOPPED" for task in standin.tasks.values())
    assert "timed out" in job_row(pipeline_engine, job_id)["error_info"]["message"]


def test_overrides_over_ecs_limit_are_refused_before_launch():
    class Never:
        def run_task(self, **params):
            raise AssertionError("launched")

    with pytest.raises(OverridesTooLargeError):
        _LaunchGuard(Never()).run_task(overrides={"containerOverrides": [{"name": "render", "environment": [{"name": "X", "value": "x" * 9000}]}]})


def test_the_launch_fits_ecs_limit_with_session_credentials_in_every_url(settings, storage):
    """On ECS the worker signs with its task role's session: every URL carries a ~1 KB security token."""
    import boto3
    from dagster._core.pipes.utils import PipesEnvContextInjector

    from t2m_pipeline.render.backends import RenderRequest, render_extras

    client = boto3.client("s3", endpoint_url=settings.endpoint_url, region_name=settings.region, aws_access_key_id="ASIA" + "X" * 16,
                          aws_secret_access_key="s" * 40, aws_session_token="IQoJb3JpZ2luX2VjE" + "A" * 1100)
    signer = S3Storage(settings, storage.engine, client=client)
    temp = settings.bucket("temp")
    key = "temp/render-" + "a" * 32 + "/20260101T000000Z/"
    request = RenderRequest("x", "Scene001", "low", 300, label="0" * 36 + "/" + "1" * 36 + "/001")
    extras = {
        **render_extras(request),
        "code_url": signer.presigned_get(temp, key + "scene.py", expires=3600),
        "upload_urls": {"video": signer.presigned_put(temp, key + "output.mp4", expires=3600), "log": signer.presigned_put(temp, key + "render.log", expires=3600)},
        "max_video_bytes": 1 << 30, "max_log_bytes": 1 << 20,
    }
    context = {"asset_keys": ["rendered_video"], "partition_key": request.label, "run_id": "0" * 36, "job_name": "render_scenes",
               "extras": extras, "code_version_by_asset_key": None, "provenance_by_asset_key": None, "partition_key_range": None,
               "partition_time_window": None, "retry_number": 0}
    with PipesEnvContextInjector().inject_context(context) as params:
        encoded = base64.b64encode(zlib.compress(json.dumps(params).encode())).decode()
    overrides = {"containerOverrides": [{"name": "render", "environment": [
        {"name": "DAGSTER_PIPES_CONTEXT", "value": encoded}, {"name": "DAGSTER_PIPES_MESSAGES", "value": "eJyrVipOLsrMS1eyUlAqLU4tUqoFADZcBn0="}]}]}
    size = len(json.dumps(overrides, separators=(",", ":")))
    assert size <= MAX_OVERRIDES_CHARS, size
