"""The production render backend: every render is its own ECS task, launched the Dagster way (dagster-aws'
PipesECSClient), so the worker that holds the database and S3 credentials never runs generated code.

The render task definition (infra/terraform/modules/render) runs the entrypoint as a non-root user with a
read-only root filesystem, a task role that can do nothing and a security group whose only egress is S3 through a
gateway endpoint whose policy admits only `temp/render-*` of the temp bucket. What crosses the boundary:

- in: the Pipes context (environment overrides; bounded under ECS's 8 KiB), with the scene class, quality, time
  limit and three presigned URLs, each for exactly one key and valid only as long as the render may take: a GET of
  the code the worker staged, and PUTs for the video and the log;
- out: the video and the log, PUT to their staging keys under `temp/render-{id}/`; Pipes messages on the task's
  stdout, read from CloudWatch Logs through the bounded, filtering reader (`BoundedCloudWatchMessageReader`
  below, over render.messages' guard).

Nothing the task wrote is trusted: the worker reads the staged objects with size caps into a directory of its own,
then takes them through the same intake as the local backend (regular file, probed as video) before the storage
layer writes the final objects and their file_metadata rows. The staging objects are deleted afterwards (and the
temp bucket's lifecycle expires whatever a crash leaves).
"""

from __future__ import annotations

import json
import math
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from botocore.exceptions import WaiterError
from dagster._core.pipes.client import PipesParams
from dagster_aws.pipes import PipesCloudWatchMessageReader  # only this backend pays for dagster_aws (0.5 s of imports)

from t2m_pipeline.config import Settings
from t2m_pipeline.render import entrypoint
from t2m_pipeline.render.backends import STARTUP_GRACE_S, RenderOutput, RenderRequest, check_request, conclude, render_extras
from t2m_pipeline.render.intake import MAX_LOG_BYTES, MAX_VIDEO_BYTES
from t2m_pipeline.render.messages import MAX_CHANNEL_BYTES, MAX_MESSAGE_BYTES, GuardedHandler, MessageStats, parse_line
from t2m_pipeline.storage import layout
from t2m_pipeline.storage.errors import StorageError
from t2m_pipeline.storage.s3 import S3Storage

MAX_OVERRIDES_CHARS = 8192  # ECS refuses containerOverrides larger than this
TASK_START_S = 300.0  # Fargate provisioning and image pull, on top of the render's own time
STAGING_PREFIX = "render-"


class BoundedCloudWatchMessageReader(PipesCloudWatchMessageReader):
    """The ECS backend's channel: the render task's stdout in CloudWatch Logs, read through the guard, at most
    MAX_CHANNEL_BYTES, polled every second. The task's other output is not forwarded into the worker's logs: the
    render log comes back as an object, size-capped."""

    def __init__(self, client=None, **kwargs):
        super().__init__(client=client, **kwargs)
        self.interval = 1
        self.stats = MessageStats()
        self.read_bytes = 0

    @contextmanager
    def read_messages(self, handler) -> Iterator[PipesParams]:
        with super().read_messages(GuardedHandler(handler, self.stats)) as params:
            yield params

    @property
    def expected_writer_count(self) -> int:
        return 1

    def add_log_reader(self, log_reader) -> None:  # no forwarding of the task's raw output
        return None

    def download_messages(self, cursor, params):
        if self.read_bytes >= MAX_CHANNEL_BYTES:
            return None
        result = super().download_messages(cursor, params)
        if result is None:
            return None
        cursor, chunk = result
        lines = [line for line in chunk.split("\n") if len(line) <= MAX_MESSAGE_BYTES]
        self.read_bytes += len(chunk)
        return cursor, "\n".join(line for line in lines if parse_line(line) is not None)


class OverridesTooLargeError(ValueError):
    """The launch request would not fit ECS's limit on overrides."""


class _LaunchGuard:
    """The ECS client PipesECSClient calls, checked: the overrides fit ECS's limit, and the task launched is
    remembered so a render that outlives its time can be stopped."""

    def __init__(self, client):
        self._client = client
        self.task_arn: str | None = None

    def run_task(self, **params):
        size = len(json.dumps(params.get("overrides", {}), separators=(",", ":")))
        if size > MAX_OVERRIDES_CHARS:
            raise OverridesTooLargeError(f"the render task's overrides are {size} characters: ECS accepts at most {MAX_OVERRIDES_CHARS}")
        response = self._client.run_task(**params)
        tasks = response.get("tasks") or []
        if not tasks:
            failures = "; ".join(f.get("reason", "?") for f in response.get("failures", [])) or "no task"
            raise RuntimeError(f"ECS did not start the render task: {failures}")
        self.task_arn = tasks[0]["taskArn"]
        return response

    def __getattr__(self, name):
        return getattr(self._client, name)


@dataclass
class EcsRenderBackend:
    settings: Settings
    storage: S3Storage
    ecs_client: Any = None
    logs_client: Any = None
    poll_s: float = 6.0
    task_start_s: float = TASK_START_S
    max_video_bytes: int = MAX_VIDEO_BYTES
    name: str = "ecs"
    _clients: dict = field(default_factory=dict, repr=False)

    @classmethod
    def from_settings(cls, settings: Settings, storage: S3Storage) -> EcsRenderBackend:
        return cls(settings, storage)

    def describe(self) -> str:
        s = self.settings
        return f"ECS task of {s.render_task_definition} in cluster {s.render_cluster} (one task per render)"

    def _ecs(self):
        if self.ecs_client is None:
            import boto3

            self.ecs_client = boto3.client("ecs", region_name=self.settings.region)
        return self.ecs_client

    def _logs(self):
        if self.logs_client is None:
            import boto3

            self.logs_client = boto3.client("logs", region_name=self.settings.region)
        return self.logs_client

    def run_task_params(self, request: RenderRequest) -> dict:
        s = self.settings
        return {
            "cluster": s.render_cluster,
            "taskDefinition": s.render_task_definition,
            "launchType": "FARGATE",
            "count": 1,
            "startedBy": "t2m-render",
            "networkConfiguration": {
                "awsvpcConfiguration": {
                    "subnets": list(s.render_subnets),
                    "securityGroups": list(s.render_security_groups),
                    "assignPublicIp": "DISABLED",
                }
            },
            "overrides": {"containerOverrides": [{"name": s.render_container}]},
            "tags": [{"key": "t2m/render", "value": request.label or request.class_name}],
        }

    @contextmanager
    def render(self, context, request: RenderRequest) -> Iterator[RenderOutput]:
        check_request(request)
        temp = self.settings.bucket("temp")
        session = f"{STAGING_PREFIX}{uuid.uuid4().hex}"
        now = datetime.now(timezone.utc)
        keys = {name: layout.temp_key(session, now, name) for name in ("scene.py", "output.mp4", "render.log")}
        budget = request.timeout_s + self.task_start_s + STARTUP_GRACE_S  # how long the task may take, start to end
        lifetime = min(3600, int(budget))
        self.storage.put_scratch(temp, keys["scene.py"], request.code.encode("utf-8", "surrogatepass"))
        extras = {
            **render_extras(request),
            "code_url": self.storage.presigned_get(temp, keys["scene.py"], expires=lifetime),
            "upload_urls": {
                "video": self.storage.presigned_put(temp, keys["output.mp4"], expires=lifetime),
                "log": self.storage.presigned_put(temp, keys["render.log"], expires=lifetime),
            },
            "max_video_bytes": self.max_video_bytes,
            "max_log_bytes": MAX_LOG_BYTES,
        }
        from dagster_aws.pipes import PipesECSClient
        from dagster_aws.pipes.clients.utils import WaiterConfig

        reader = BoundedCloudWatchMessageReader(client=self._logs())
        guard = _LaunchGuard(self._ecs())
        client = PipesECSClient(client=guard, message_reader=reader, forward_termination=True)
        attempts = max(1, math.ceil(budget / self.poll_s))
        started = time.monotonic()
        returncode, timed_out, notes, missing = None, False, [], None
        try:
            with tempfile.TemporaryDirectory(prefix="t2m-ecs-intake-") as scratch_dir:
                scratch = Path(scratch_dir)
                out = scratch / "task"
                (out / "out").mkdir(parents=True)
                try:
                    client.run(
                        context=context, run_task_params=self.run_task_params(request), extras=extras,
                        waiter_config=WaiterConfig(Delay=self.poll_s, MaxAttempts=attempts),
                    )
                    returncode = 0
                except WaiterError:
                    timed_out = True
                    notes.append(f"the task ran past {budget:g} s and was stopped")
                    self._stop(guard)
                except RuntimeError as exc:  # PipesECSClient: the task failed to start, or exited non-zero
                    returncode = 1
                    notes.append(f"task: {str(exc).splitlines()[0][:300]}")
                seconds = time.monotonic() - started
                try:
                    size = self.storage.download_capped(temp, keys["output.mp4"], out.joinpath(*entrypoint.OUTPUT), max_bytes=self.max_video_bytes)
                    if size is None:
                        missing = "no video was uploaded"
                except StorageError as exc:
                    missing = f"the uploaded video was refused: {exc}"
                with suppress(StorageError):
                    self.storage.download_capped(temp, keys["render.log"], out / entrypoint.LOG_NAME, max_bytes=MAX_LOG_BYTES, tail=True)
                yield conclude(
                    self.name, request, out, scratch,
                    returncode=returncode, timed_out=timed_out, seconds=seconds, stats=reader.stats,
                    describe=self.describe() + (f"; task {guard.task_arn}" if guard.task_arn else "") + "".join(f"\n{n}" for n in notes),
                    max_video_bytes=self.max_video_bytes, missing_video=missing,
                )
        finally:
            for key in keys.values():
                with suppress(StorageError):
                    self.storage.delete_scratch(temp, key)

    def _stop(self, guard: _LaunchGuard) -> None:
        if guard.task_arn:
            with suppress(Exception):
                self._ecs().stop_task(cluster=self.settings.render_cluster, task=guard.task_arn, reason="t2m render timed out")
