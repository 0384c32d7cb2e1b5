"""A stand-in for the ECS API that runs render tasks on this machine (moto's ECS cannot run a Fargate task).

Every call is validated against botocore's own ECS service model, as the real API would reject it; a task runs the
render entrypoint the task definition names, with exactly the environment its container overrides give it (the
Dagster Pipes bootstrap variables; no credentials) inside the local sandbox with the network shared, the stand-in
for a Fargate task whose only way out is S3. Its stdout goes to CloudWatch Logs (the moto server) line by line, as
the awslogs driver ships it, under the stream name awslogs gives it; its exit code becomes the container's.
"""

from __future__ import annotations

import sys
import threading
import time
import uuid
from types import SimpleNamespace

import botocore.session
from botocore.exceptions import ParamValidationError, WaiterError
from botocore.validate import ParamValidator

from t2m_pipeline.render.backends import ENTRYPOINT_SOURCE
from t2m_pipeline.render.sandbox import INSIDE_ENTRYPOINT, INSIDE_WORK, PROTECTIONS, render_slot, run_sandboxed, sandbox_env

_MODEL = botocore.session.get_session().get_service_model("ecs")


def validate(operation: str, params: dict) -> None:
    report = ParamValidator().validate(params, _MODEL.operation_model(operation).input_shape)
    if report.has_errors():
        raise ParamValidationError(report=report.generate_report())


def render_task_definition(family: str = "dev-t2m-render", log_group: str = "/t2m/dev/render") -> dict:
    """What DescribeTaskDefinition returns for the Terraform render task definition (the parts Pipes reads)."""
    return {
        "taskDefinitionArn": f"arn:aws:ecs:us-east-1:000000000000:task-definition/{family}:1",
        "family": family,
        "revision": 1,
        "networkMode": "awsvpc",
        "requiresCompatibilities": ["FARGATE"],
        "containerDefinitions": [
            {
                "name": "render",
                "image": "t2m-pipeline:test",
                "user": "10001",
                "readonlyRootFilesystem": True,
                "command": ["python", "-I", "-u", "-m", "t2m_pipeline.render.entrypoint"],
                "workingDirectory": INSIDE_WORK,
                "logConfiguration": {
                    "logDriver": "awslogs",
                    "options": {"awslogs-group": log_group, "awslogs-region": "us-east-1", "awslogs-stream-prefix": "render"},
                },
            }
        ],
    }


class _Task:
    def __init__(self, arn: str, cluster: str, container: str):
        self.arn, self.cluster, self.container = arn, cluster, container
        self.status = "PROVISIONING"
        self.exit_code: int | None = None
        self.stop = threading.Event()
        self.stopped_reason: str | None = None
        self.environment: dict[str, str] = {}
        self.thread: threading.Thread | None = None
        self.stderr = ""


class LocalEcs:
    def __init__(self, logs_client, task_definition: dict | None = None, *, region: str = "us-east-1", max_task_s: float = 120.0):
        self.logs = logs_client
        self.task_definition = task_definition or render_task_definition()
        self.meta = SimpleNamespace(region_name=region)
        self.max_task_s = max_task_s
        self.calls: list[tuple[str, dict]] = []
        self.tasks: dict[str, _Task] = {}

    def _call(self, operation: str, params: dict) -> None:
        validate(operation, params)
        self.calls.append((operation, params))

    def describe_task_definition(self, **params):
        self._call("DescribeTaskDefinition", params)
        return {"taskDefinition": self.task_definition}

    def run_task(self, **params):
        self._call("RunTask", params)
        (container,) = self.task_definition["containerDefinitions"]
        task_id = uuid.uuid4().hex
        task = _Task(f"arn:aws:ecs:{self.meta.region_name}:000000000000:task/{params.get('cluster', 'default')}/{task_id}",
                     params.get("cluster", "default"), container["name"])
        overrides = {o["name"]: o for o in params.get("overrides", {}).get("containerOverrides", [])}
        task.environment = {e["name"]: e["value"] for e in overrides.get(container["name"], {}).get("environment", [])}
        options = container["logConfiguration"]["options"]
        group, stream = options["awslogs-group"], f"{options['awslogs-stream-prefix']}/{container['name']}/{task_id}"
        task.thread = threading.Thread(target=self._run, args=(task, group, stream), daemon=True)
        self.tasks[task.arn] = task
        task.thread.start()
        return {"tasks": [self._describe(task)], "failures": []}

    def _run(self, task: _Task, group: str, stream: str) -> None:
        try:
            self.logs.create_log_group(logGroupName=group)
        except self.logs.exceptions.ResourceAlreadyExistsException:
            pass
        self.logs.create_log_stream(logGroupName=group, logStreamName=stream)
        task.status = "RUNNING"

        def ship(line: bytes) -> None:
            text = line.decode("utf-8", "replace").rstrip("\n")
            if text:
                self.logs.put_log_events(logGroupName=group, logStreamName=stream,
                                         logEvents=[{"timestamp": int(time.time() * 1000), "message": text[:256_000]}])

        protections = PROTECTIONS - {"network"}  # the task reaches S3 (here: the moto server on loopback)
        with render_slot(protections=protections) as slot:
            result = run_sandboxed(
                [sys.executable, "-I", "-u", INSIDE_ENTRYPOINT],
                slot=slot,
                env=sandbox_env(task.environment, protections),
                files={INSIDE_ENTRYPOINT: ENTRYPOINT_SOURCE},
                timeout_s=self.max_task_s,
                on_line=ship,
                protections=protections,
                stop=task.stop,
            )
        task.stderr = result.stderr_tail
        task.exit_code = 137 if result.returncode is None else result.returncode
        task.status = "STOPPED"

    def _describe(self, task: _Task) -> dict:
        container = {"name": task.container, "runtimeId": task.arn.rsplit("/", 1)[1], "lastStatus": task.status}
        if task.exit_code is not None:
            container["exitCode"] = task.exit_code
        described = {"taskArn": task.arn, "clusterArn": f"arn:aws:ecs:{self.meta.region_name}:000000000000:cluster/{task.cluster}",
                     "lastStatus": task.status, "containers": [container]}
        if task.stopped_reason:
            described.update(stopCode="UserInitiated", stoppedReason=task.stopped_reason)
        return described

    def describe_tasks(self, **params):
        self._call("DescribeTasks", params)
        return {"tasks": [self._describe(self.tasks[arn]) for arn in params["tasks"]], "failures": []}

    def stop_task(self, **params):
        self._call("StopTask", params)
        task = self.tasks[params["task"]]
        task.stopped_reason = params.get("reason", "stopped")
        task.stop.set()
        return {"task": self._describe(task)}

    def get_waiter(self, name: str):
        assert name == "tasks_stopped", name
        return _TasksStopped(self)


class _TasksStopped:
    def __init__(self, ecs: LocalEcs):
        self.ecs = ecs

    def wait(self, tasks, cluster=None, WaiterConfig=None):  # noqa: N803 - botocore's spelling
        config = WaiterConfig or {"Delay": 6, "MaxAttempts": 100}
        for _ in range(int(config["MaxAttempts"])):
            if all(self.ecs.tasks[arn].status == "STOPPED" for arn in tasks):
                return
            time.sleep(float(config["Delay"]))
        raise WaiterError(name="TasksStopped", reason="Max attempts exceeded", last_response={"tasks": []})
