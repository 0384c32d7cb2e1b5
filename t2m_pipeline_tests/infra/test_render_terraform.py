"""infra/terraform/modules/render against the code that uses it: the render task definition is the one the ECS
backend (and its stand-in in the tests) expects, the task can do nothing and reach nothing but S3 staging, the
worker can launch only it, every environment wires it into Dagster's settings, and the image carries the entrypoint.
"""

from __future__ import annotations

import importlib
import re

from t2m_pipeline.config import load_settings
from t2m_pipeline.render import entrypoint
from t2m_pipeline.render.ecs import STAGING_PREFIX
from t2m_pipeline.render.sandbox import INSIDE_WORK
from t2m_pipeline_tests.render.ecs_standin import render_task_definition

from .terraform_checks import ENVIRONMENTS, MODULES, REPO, load_dir

RENDER = MODULES / "render"


def container_text() -> str:
    return load_dir(RENDER).resources["aws_ecs_task_definition"]["render"]["container_definitions"]


def test_the_task_definition_is_the_one_the_backend_expects():
    render = load_dir(RENDER)
    definition = render.resources["aws_ecs_task_definition"]["render"]
    assert definition["requires_compatibilities"] == ["FARGATE"] and definition["network_mode"] == "awsvpc"
    assert definition["task_role_arn"] == "${aws_iam_role.task.arn}"
    assert definition["execution_role_arn"] == "${aws_iam_role.execution.arn}"
    text = container_text()
    expected = render_task_definition()["containerDefinitions"][0]  # what the stand-in ECS API serves the tests
    assert render.locals["container_name"] == expected["name"]
    assert f'user = "{expected["user"]}"' in text and "readonlyRootFilesystem = true" in text
    command = re.search(r"command = \[([^\]]*)\]", text).group(1)
    assert [part.strip().strip('"') for part in command.split(",")] == expected["command"]
    importlib.import_module(expected["command"][-1])  # the module the image runs exists in the package
    assert render.locals["work_dir"] == expected["workingDirectory"] == INSIDE_WORK
    assert 'drop = ["ALL"]' in text and "initProcessEnabled = true" in text
    assert 'logDriver = "awslogs"' in text and "awslogs-group = var.log_group_name" in text
    assert "awslogs-stream-prefix = local.container_name" in text  # the stream PipesECSClient reads: prefix/name/task
    assert "secrets" not in text  # nothing to inject: the task holds no credential


def test_the_task_role_can_do_nothing():
    render = load_dir(RENDER)
    policies = [p for p in render.resources["aws_iam_role_policy"].values() if p["role"] == "${aws_iam_role.task.id}"]
    assert [p["policy"] for p in policies] == ["${data.aws_iam_policy_document.deny_everything.json}"]
    (statement,) = render.data["aws_iam_policy_document"]["deny_everything"]["statement"]
    assert statement["effect"] == "Deny" and statement["actions"] == ["*"] and statement["resources"] == ["*"]
    attachments = render.resources["aws_iam_role_policy_attachment"]
    assert all(a["role"] != "${aws_iam_role.task.name}" for a in attachments.values())


def test_the_tasks_only_way_out_is_s3_staging_through_the_endpoint():
    render = load_dir(RENDER)
    egress = render.resources["aws_vpc_security_group_egress_rule"]
    for rule in egress.values():
        assert rule["security_group_id"] == "${aws_security_group.render.id}"
        assert (rule["from_port"], rule["to_port"], rule["ip_protocol"]) == (443, 443, "tcp")
        assert "cidr_ipv4" not in rule and "cidr_ipv6" not in rule
    destinations = {rule.get("prefix_list_id") or rule.get("referenced_security_group_id") for rule in egress.values()}
    assert destinations == {"${aws_vpc_endpoint.s3.prefix_list_id}", "${aws_security_group.endpoints[0].id}"}
    ingress = render.resources["aws_vpc_security_group_ingress_rule"]
    assert all(rule["security_group_id"] != "${aws_security_group.render.id}" for rule in ingress.values())
    endpoint = render.resources["aws_vpc_endpoint"]["s3"]
    assert endpoint["vpc_endpoint_type"] == "Gateway" and endpoint["route_table_ids"] == "${var.route_table_ids}"
    statements = {s["sid"]: s for s in render.data["aws_iam_policy_document"]["s3_endpoint"]["statement"]}
    assert set(statements) == {"RenderStagingThroughPresignedUrls", "ImageLayers"}
    assert render.locals["staging_arn"] == "${var.temp_bucket_arn}/temp/" + STAGING_PREFIX + "*"
    assert statements["RenderStagingThroughPresignedUrls"]["resources"] == ["${local.staging_arn}"]
    assert statements["RenderStagingThroughPresignedUrls"]["principals"][0]["identifiers"] == ["${var.worker_role_arn}"]
    assert statements["ImageLayers"]["actions"] == ["s3:GetObject"]


def test_the_worker_may_launch_only_render_tasks_and_read_only_their_log_group():
    render = load_dir(RENDER)
    statements = {s["sid"]: s for s in render.data["aws_iam_policy_document"]["launch_renders"]["statement"]}
    assert statements["RunRenderTasks"]["resources"] == ["arn:aws:ecs:${local.region}:${local.account_id}:task-definition/${local.family}:*"]
    assert statements["PassRenderRoles"]["resources"] == ["${aws_iam_role.task.arn}", "${aws_iam_role.execution.arn}"]
    assert statements["ReadRenderMessages"]["actions"] == ["logs:GetLogEvents", "logs:DescribeLogStreams"]
    assert render.resources["aws_iam_role_policy"]["worker_launches_renders"]["role"] == "${var.worker_role_name}"


def test_the_settings_the_module_hands_dagster_are_the_backends_settings():
    outputs = (RENDER / "outputs.tf").read_text()
    names = set(re.findall(r"\b(T2M_RENDER_[A-Z_]+)\s*=", outputs))
    values = {name: "x" for name in names}
    values.update(T2M_RENDER_BACKEND="ecs", T2M_RENDER_SUBNETS="subnet-0123abcd,subnet-0123abce", T2M_RENDER_SECURITY_GROUPS="sg-0123abcd")
    settings = load_settings({"AWS_ENDPOINT_URL": "http://127.0.0.1:1", **values})
    assert settings.render_backend == "ecs" and settings.render_subnets == ("subnet-0123abcd", "subnet-0123abce")
    assert names == {"T2M_RENDER_BACKEND", "T2M_RENDER_CLUSTER", "T2M_RENDER_TASK_DEFINITION", "T2M_RENDER_CONTAINER",
                     "T2M_RENDER_SUBNETS", "T2M_RENDER_SECURITY_GROUPS"}
    for env in ("dev", "staging", "prod"):
        root = load_dir(ENVIRONMENTS / env)
        assert root.modules["render"]["source"] == "../../modules/render"
        assert root.modules["dagster"]["app_environment"] == "${merge(var.app_environment, module.render.environment)}"
        assert root.modules["render"]["worker_role_name"] == "${module.iam.pipeline_role_name}"


def test_the_production_image_carries_the_render_entrypoint():
    dockerfile = (REPO / "infra" / "dagster" / "Dockerfile").read_text()
    assert "COPY t2m_pipeline ./t2m_pipeline" in dockerfile and "pip install --no-cache-dir -e ." in dockerfile
    assert f"install -d -o 10001 -g 10001 {INSIDE_WORK}" in dockerfile and f'VOLUME ["{INSIDE_WORK}"]' in dockerfile
    assert "python -I -u -m t2m_pipeline.render.entrypoint" in dockerfile
    assert entrypoint.__name__ == "t2m_pipeline.render.entrypoint"
