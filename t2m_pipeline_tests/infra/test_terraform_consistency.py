"""infra/terraform agrees with the Python declarations (config.bucket_name, storage/bucket_settings.py).

The HCL is parsed with python-hcl2 (no terraform binary needed); terraform_checks renders what each environment would
apply and lists the differences. The mutation tests break a copy of the storage module on purpose to show that the
checker notices.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from t2m_pipeline.config import BUCKET_KINDS, Settings, bucket_name
from t2m_pipeline.config import ENVIRONMENTS as PY_ENVIRONMENTS
from t2m_pipeline.storage.bucket_settings import (
    ABORT_INCOMPLETE_MULTIPART_DAYS,
    PUBLIC_ACCESS_BLOCK,
    TEMP_EXPIRATION_DAYS,
    VIDEOS_INTELLIGENT_TIERING_DAYS,
    tls_only_policy,
)

from .terraform_checks import (
    ACCOUNT_ID,
    ENVIRONMENTS,
    EXPECTED_SSE,
    KMS_KEY,
    MODULES,
    REGION,
    REPO,
    STORAGE_MODULE,
    TERRAFORM,
    check_environment,
    check_storage_module,
    declared_settings,
    environment_roots,
    iter_policy_documents,
    iter_tf_files,
    load_dir,
    load_hcl_file,
    module_inputs,
    normalize_policy,
    render_storage,
    root_scope,
)

ENV_NAMES = list(PY_ENVIRONMENTS)


def storage_for(env: str):
    module_dir, inputs = module_inputs(ENVIRONMENTS / env, "storage")
    return render_storage(module_dir, inputs)


def module_call(env: str, name: str) -> dict:
    root = load_dir(ENVIRONMENTS / env)
    scope = root_scope(root)
    return {key: scope.resolve(value) for key, value in root.modules[name].items() if key not in ("providers",)}


# --- layout --------------------------------------------------------------------------------------------------------


def test_layout_has_a_module_per_concern_and_a_root_per_environment():
    assert sorted(p.name for p in MODULES.iterdir() if p.is_dir()) == [
        "dagster",
        "database",
        "iam",
        "observability",
        "render",
        "storage",
    ]
    assert sorted(environment_roots()) == sorted(ENV_NAMES)


def test_every_tf_file_parses():
    files = iter_tf_files()
    assert len(files) >= 25
    for path in files:
        assert isinstance(load_hcl_file(path), dict), path


def test_aws_provider_pinned_to_5x_everywhere():
    for directory in [*MODULES.iterdir(), *ENVIRONMENTS.iterdir()]:
        blocks = load_dir(directory).terraform
        providers = [p for block in blocks for p in block.get("required_providers", [])]
        assert providers, f"{directory.name}: no required_providers"
        aws = providers[0]["aws"]
        assert aws["source"] == "hashicorp/aws", directory.name
        assert re.fullmatch(r"~> 5\.\d+", aws["version"]), (directory.name, aws["version"])


# --- storage: the declarations, environment by environment ---------------------------------------------------------


@pytest.mark.parametrize("env", ENV_NAMES)
def test_environment_storage_matches_python_declarations(env):
    assert check_environment(ENVIRONMENTS / env) == []


@pytest.mark.parametrize("env", ENV_NAMES)
def test_bucket_names_compose_like_config_bucket_name(env):
    rendered = storage_for(env)
    assert rendered.environment == env
    assert rendered.kinds == list(BUCKET_KINDS)
    assert rendered.names == {kind: bucket_name(env, kind, REGION, ACCOUNT_ID) for kind in BUCKET_KINDS}
    assert rendered.names == declared_settings(env, EXPECTED_SSE[env]).buckets


def test_bucket_name_uses_caller_identity_and_region_data_sources():
    storage = load_dir(STORAGE_MODULE)
    assert "current" in storage.data["aws_caller_identity"]
    assert "current" in storage.data["aws_region"]
    assert storage.locals["account_id"] == "${data.aws_caller_identity.current.account_id}"


def test_module_defaults_equal_python_defaults():
    storage = load_dir(STORAGE_MODULE)
    assert storage.variable_default("noncurrent_version_days") == Settings().noncurrent_version_days == 90
    assert storage.variable_default("sse_algorithm") == Settings().sse_algorithm == "AES256"
    assert storage.locals["bucket_kinds"] == list(BUCKET_KINDS)


@pytest.mark.parametrize("env", ENV_NAMES)
def test_lifecycle_days(env):
    lifecycle = storage_for(env).lifecycle
    temp = {rule["ID"]: rule for rule in lifecycle["temp"]}
    assert temp["expire-temp-objects"]["Expiration"] == {"Days": TEMP_EXPIRATION_DAYS} == {"Days": 7}
    for kind in BUCKET_KINDS:
        rules = {rule["ID"]: rule for rule in lifecycle[kind]}
        assert rules["abort-incomplete-multipart"]["AbortIncompleteMultipartUpload"] == {
            "DaysAfterInitiation": ABORT_INCOMPLETE_MULTIPART_DAYS
        }
        assert ABORT_INCOMPLETE_MULTIPART_DAYS == 1
        assert rules["expire-noncurrent-versions"]["NoncurrentVersionExpiration"] == {
            "NoncurrentDays": Settings().noncurrent_version_days
        }
        assert ("expire-temp-objects" in rules) == (kind == "temp")
        assert ("videos-intelligent-tiering" in rules) == (kind == "videos")
    videos = {rule["ID"]: rule for rule in lifecycle["videos"]}
    assert videos["videos-intelligent-tiering"]["Transitions"] == [
        {"Days": VIDEOS_INTELLIGENT_TIERING_DAYS, "StorageClass": "INTELLIGENT_TIERING"}
    ]


@pytest.mark.parametrize("env", ENV_NAMES)
def test_encryption_aes256_by_default_and_kms_with_bucket_keys_in_prod(env):
    rendered = storage_for(env)
    for kind in BUCKET_KINDS:
        (rule,) = rendered.encryption[kind]["Rules"]
        if env == "prod":
            assert rule == {
                "ApplyServerSideEncryptionByDefault": {"SSEAlgorithm": "aws:kms", "KMSMasterKeyID": KMS_KEY},
                "BucketKeyEnabled": True,
            }
        else:
            assert rule == {"ApplyServerSideEncryptionByDefault": {"SSEAlgorithm": "AES256"}}
    if env == "prod":
        assert rendered.kms_key_rotation is True


@pytest.mark.parametrize("env", ENV_NAMES)
def test_versioning_public_access_block_and_tls_deny(env):
    rendered = storage_for(env)
    for kind in BUCKET_KINDS:
        assert rendered.versioning[kind] == "Enabled"
        assert rendered.public_access_block[kind] == PUBLIC_ACCESS_BLOCK
        assert all(rendered.public_access_block[kind].values())
        policy = rendered.policies[kind]
        deny = [s for s in policy["Statement"] if s["Effect"] == "Deny"]
        assert deny and deny[0]["Condition"]["Bool"] == {"aws:SecureTransport": ["false"]}
        assert normalize_policy(policy) == normalize_policy(tls_only_policy(rendered.names[kind]))


@pytest.mark.parametrize("env", ENV_NAMES)
def test_replication_of_videos_and_code_in_prod_only(env):
    module_dir, inputs = module_inputs(ENVIRONMENTS / env, "storage")
    storage = load_dir(module_dir)
    enabled = inputs.get("enable_replication", storage.variable_default("enable_replication"))
    kinds = inputs.get("replicated_kinds", storage.variable_default("replicated_kinds"))
    assert enabled is (env == "prod")
    assert sorted(kinds) == ["code", "videos"]
    replication = storage.resources["aws_s3_bucket_replication_configuration"]["this"]
    assert replication["rule"][0]["delete_marker_replication"][0]["status"] == "Enabled"
    assert "replica" in storage.resources["aws_s3_bucket"]
    assert storage.resources["aws_kms_key"]["replica"]["enable_key_rotation"] is True


def test_access_log_bucket_is_versioned_encrypted_and_blocked():
    storage = load_dir(STORAGE_MODULE)
    assert storage.resources["aws_s3_bucket_versioning"]["audit_logs"]["versioning_configuration"][0]["status"] == (
        "Enabled"
    )
    sse = storage.resources["aws_s3_bucket_server_side_encryption_configuration"]["audit_logs"]
    assert sse["rule"][0]["apply_server_side_encryption_by_default"][0]["sse_algorithm"] == "AES256"
    block = storage.resources["aws_s3_bucket_public_access_block"]["audit_logs"]
    assert all(block[attribute] is True for attribute in PUBLIC_ACCESS_BLOCK_ATTRIBUTES)
    logging = storage.resources["aws_s3_bucket_logging"]["this"]
    assert logging["target_bucket"] == "${aws_s3_bucket.audit_logs.id}"


PUBLIC_ACCESS_BLOCK_ATTRIBUTES = ("block_public_acls", "ignore_public_acls", "block_public_policy", "restrict_public_buckets")


# --- the checker notices drift ---------------------------------------------------------------------------------------


def copy_storage_module(tmp_path: Path) -> Path:
    target = tmp_path / "storage"
    shutil.copytree(STORAGE_MODULE, target)
    return target


def dev_inputs() -> dict:
    return module_inputs(ENVIRONMENTS / "dev", "storage")[1]


def replace_once(path: Path, pattern: str, replacement: str) -> None:
    text = path.read_text()
    new, count = re.subn(pattern, replacement, text, count=1, flags=re.DOTALL)
    assert count == 1, f"pattern not found in {path.name}: {pattern}"
    path.write_text(new)


def test_checker_reports_temp_expiry_of_30_days(tmp_path):
    module = copy_storage_module(tmp_path)
    settings = declared_settings("dev", "AES256")
    assert check_storage_module(module, dev_inputs(), settings) == []

    replace_once(
        module / "main.tf",
        r'(id     = "expire-temp-objects".*?expiration \{\s*days = )7',
        r"\g<1>30",
    )

    problems = check_storage_module(module, dev_inputs(), settings)
    assert len(problems) == 1, problems
    assert "temp: lifecycle rule 'expire-temp-objects'" in problems[0]
    assert "'Days': 30" in problems[0] and "'Days': 7" in problems[0]


MUTATIONS = {
    "noncurrent default": ("variables.tf", r"(default     = )90", r"\g<1>30", "expire-noncurrent-versions"),
    "abort multipart": ("main.tf", r"(days_after_initiation = )1", r"\g<1>3", "abort-incomplete-multipart"),
    "tiering days": ("main.tf", r"(days          = )30", r"\g<1>60", "videos-intelligent-tiering"),
    "versioning": ("main.tf", r'status = "Enabled"(\s*\}\s*\}\s*resource "aws_s3_bucket_server)', r'status = "Suspended"\1', "versioning"),
    "public access": ("main.tf", r"(restrict_public_buckets = )true", r"\g<1>false", "public access block"),
    "tls condition": ("main.tf", r'(variable = "aws:SecureTransport"\s*values   = \[)"false"', r'\1"true"', "bucket policy"),
    "encryption": ("main.tf", r"(sse_algorithm     = )var\.sse_algorithm", r'\g<1>"aws:kms"', "encryption"),
    "bucket name": ("main.tf", r'"\$\{var\.environment\}-t2m-\$\{each\.key\}-', r'"t2m-${var.environment}-${each.key}-', "bucket name"),
    "bucket kinds": ("main.tf", r'"thumbnails", "temp"\]', r'"thumbnails", "tmp"]', "bucket kinds"),
}


@pytest.mark.parametrize("name", sorted(MUTATIONS))
def test_checker_reports_each_kind_of_drift(tmp_path, name):
    filename, pattern, replacement, expected = MUTATIONS[name]
    module = copy_storage_module(tmp_path)
    replace_once(module / filename, pattern, replacement)
    problems = check_storage_module(module, dev_inputs(), declared_settings("dev", "AES256"))
    assert any(expected in problem for problem in problems), problems


def test_checker_reports_sse_s3_where_prod_declares_kms():
    module_dir, inputs = module_inputs(ENVIRONMENTS / "prod", "storage")
    problems = check_storage_module(module_dir, {**inputs, "sse_algorithm": "AES256"}, declared_settings("prod", "aws:kms"))
    assert problems and all("encryption" in p or "KMS" in p for p in problems), problems


def test_checker_reports_an_environment_passing_the_wrong_name(tmp_path):
    root = tmp_path / "environments" / "staging"
    shutil.copytree(ENVIRONMENTS / "staging", root)
    shutil.copytree(MODULES, tmp_path / "modules")
    replace_once(root / "main.tf", r'(environment     = )"staging"', r'\g<1>"dev"')
    problems = check_environment(root)
    assert any("environment is 'dev', expected 'staging'" in p for p in problems), problems
    assert any("config.bucket_name() gives 'staging-t2m-videos" in p for p in problems), problems


# --- database ------------------------------------------------------------------------------------------------------

DATABASE_PER_ENV = {
    "dev": {"instance_class": "db.t3.medium", "multi_az": False, "backup_retention_days": 7},
    "staging": {"instance_class": "db.t3.medium", "multi_az": False, "backup_retention_days": 7},
    "prod": {
        "instance_class": "db.r6g.large",
        "multi_az": True,
        "backup_retention_days": 30,
        "deletion_protection": True,
        "performance_insights_enabled": True,
    },
}


@pytest.mark.parametrize("env", ENV_NAMES)
def test_database_sizing_per_environment(env):
    call = module_call(env, "database")
    for key, value in DATABASE_PER_ENV[env].items():
        assert call[key] == value, key


def test_database_instance_is_private_encrypted_tls_only_and_iam_enabled():
    database = load_dir(MODULES / "database")
    instance = database.resources["aws_db_instance"]["this"]
    assert instance["engine"] == "postgres"
    assert database.variable_default("engine_version").startswith("15")
    assert instance["storage_encrypted"] is True
    assert instance["publicly_accessible"] is False
    assert instance["iam_database_authentication_enabled"] is True
    assert instance["manage_master_user_password"] is True
    assert "password" not in instance
    assert instance["backup_retention_period"] == "${var.backup_retention_days}"
    assert database.variables["backup_retention_days"]["validation"], "backups (and so PITR) cannot be turned off"
    params = {
        p["name"]: p["value"] for p in database.resources["aws_db_parameter_group"]["this"]["parameter"]
    }
    assert params["rds.force_ssl"] == "1"
    proxy = database.resources["aws_db_proxy"]["this"]
    assert proxy["require_tls"] is True
    assert proxy["engine_family"] == "POSTGRESQL"
    assert database.resources["aws_db_proxy_target"]["this"]


# --- IAM -----------------------------------------------------------------------------------------------------------

# Actions that support no resource-level permissions: "*" is the only possible resource.
RESOURCELESS_ACTIONS = {
    "ecs:DescribeTaskDefinition",
    "ec2:DescribeNetworkInterfaces",
    "logs:DescribeLogGroups",
    "ssmmessages:CreateControlChannel",
    "ssmmessages:CreateDataChannel",
    "ssmmessages:OpenControlChannel",
    "ssmmessages:OpenDataChannel",
}


def test_no_wildcard_actions_or_resources_where_a_narrower_one_works():
    documents = list(iter_policy_documents())
    assert len(documents) > 10
    for module, name, body in documents:
        for statement in body.get("statement", []):
            if statement.get("effect", "Allow") != "Allow":
                continue
            actions = statement.get("actions", [])
            assert not [a for a in actions if "*" in a], f"{module}/{name}: wildcard action in {actions}"
            resources = statement.get("resources", [])
            if "*" in (resources if isinstance(resources, list) else [resources]):
                assert set(actions) <= RESOURCELESS_ACTIONS, f"{module}/{name}: '*' resource for {actions}"


def statements(module: str, document: str) -> list[dict]:
    return load_dir(MODULES / module).data["aws_iam_policy_document"][document]["statement"]


def test_migration_role_never_deletes_and_only_rollback_may():
    deletes = {"s3:DeleteObject", "s3:DeleteObjectVersion"}
    migration = statements("iam", "migration")
    allowed = {a for s in migration if s.get("effect", "Allow") == "Allow" for a in s["actions"]}
    assert not allowed & deletes
    denied = [s for s in migration if s.get("effect") == "Deny"]
    assert denied and deletes <= set(denied[0]["actions"])
    rollback = {a for s in statements("iam", "migration_rollback") for a in s["actions"]}
    assert deletes <= rollback
    for module, name, body in iter_policy_documents():
        if name in ("migration_rollback", "pipeline"):
            continue
        for statement in body.get("statement", []):
            if statement.get("effect", "Allow") == "Allow":
                assert not set(statement.get("actions", [])) & deletes, (module, name)


def test_pipeline_role_is_limited_to_users_and_temp_prefixes():
    iam = load_dir(MODULES / "iam")
    assert iam.locals["pipeline_object_arns"] == (
        '${flatten([for arn in local.bucket_arns : ["${arn}/users/*", "${arn}/temp/*"]])}'
    )
    pipeline = {s["sid"]: s for s in statements("iam", "pipeline")}
    assert pipeline["ReadWriteOwnPrefixes"]["resources"] == "${local.pipeline_object_arns}"
    assert pipeline["ListOwnPrefixes"]["condition"][0]["values"] == ["users/*", "temp/*"]
    assert pipeline["CleanUpScratch"]["actions"] == ["s3:DeleteObject"]
    assert pipeline["CleanUpScratch"]["resources"] == ['${var.bucket_arns["temp"]}/temp/*']


# --- observability -------------------------------------------------------------------------------------------------


def test_alarms_cover_rds_s3_and_failed_dagster_runs():
    obs = load_dir(MODULES / "observability")
    alarms = obs.resources["aws_cloudwatch_metric_alarm"]
    metrics = {(alarm["namespace"], alarm["metric_name"]) for alarm in alarms.values()}
    assert {
        ("AWS/RDS", "CPUUtilization"),
        ("AWS/RDS", "FreeStorageSpace"),
        ("AWS/RDS", "DatabaseConnections"),
        ("AWS/S3", "5xxErrors"),
        ("T2M/${var.environment}/Dagster", "FailedRuns"),
    } <= metrics
    assert obs.resources["aws_s3_bucket_metric"]["entire_bucket"]["name"] == "EntireBucket"
    metric_filter = obs.resources["aws_cloudwatch_log_metric_filter"]["dagster_failed_runs"]
    assert "RUN_FAILURE" in metric_filter["pattern"]
    assert metric_filter["log_group_name"].startswith("${aws_cloudwatch_log_group.dagster[")
    for group in obs.resources["aws_cloudwatch_log_group"].values():
        assert group["kms_key_id"] and group["retention_in_days"]


def test_cloudtrail_records_bucket_data_events():
    trail = load_dir(MODULES / "observability").resources["aws_cloudtrail"]["this"]
    assert trail["enable_log_file_validation"] is True
    assert trail["is_multi_region_trail"] is True
    assert trail["kms_key_id"]
    (selector,) = trail["event_selector"]
    assert selector["data_resource"][0]["type"] == "AWS::S3::Object"


# --- Dagster on ECS --------------------------------------------------------------------------------------------------


def test_dagster_services_and_run_task_definition():
    dagster = load_dir(MODULES / "dagster")
    services = dagster.resources["aws_ecs_service"]
    assert set(services) == {"webserver", "daemon", "code_location"}
    assert all(service["launch_type"] == "FARGATE" for service in services.values())
    assert services["daemon"]["deployment_maximum_percent"] == 100  # never two daemons
    definitions = dagster.resources["aws_ecs_task_definition"]
    assert {"webserver", "daemon", "code_location", "run"} <= set(definitions)
    assert dagster.locals["run_family"] == "${local.prefix}-dagster-run"


@pytest.fixture
def dagster_env(monkeypatch):
    for name, value in {
        "DAGSTER_PG_HOST": "proxy.example",
        "DAGSTER_PG_PORT": "5432",
        "DAGSTER_PG_DB": "t2m",
        "DAGSTER_PG_USERNAME": "t2m_admin",
        "DAGSTER_PG_PASSWORD": "secret",
        "DAGSTER_RUN_TASK_DEFINITION": "dev-t2m-dagster-run",
        "DAGSTER_CODE_LOCATION_HOST": "code-location.dev.t2m.internal",
        "DAGSTER_CODE_LOCATION_PORT": "4000",
    }.items():
        monkeypatch.setenv(name, value)


def test_dagster_yaml_is_a_valid_instance_config(dagster_env):
    import importlib

    from dagster._config import process_config
    from dagster._core.instance.config import dagster_instance_config

    config, _ = dagster_instance_config(str(REPO / "infra" / "dagster"))
    from dagster_aws.ecs import EcsRunLauncher

    launcher = getattr(importlib.import_module(config["run_launcher"]["module"]), config["run_launcher"]["class"])
    assert issubclass(launcher, EcsRunLauncher)  # one Fargate task per run
    assert config["run_coordinator"]["class"] == "PromptQueuedRunCoordinator"
    assert config["concurrency"]["runs"]["tag_concurrency_limits"] and config["concurrency"]["pools"]["default_limit"]
    assert config["run_monitoring"]["enabled"] is True
    assert config["run_retries"]["enabled"] is True
    storage = config["storage"]["custom"]  # PooledPostgresStorage: dagster-postgres's storage, connections kept
    assert storage["config"]["postgres_db"]["scheme"] == "postgresql+psycopg2"
    for section in ("run_launcher", "run_coordinator", "compute_logs"):
        pointer = config[section]
        klass = getattr(importlib.import_module(pointer["module"]), pointer["class"])
        result = process_config(klass.config_type(), pointer.get("config") or {})
        assert result.success, (section, result.errors)
    klass = getattr(importlib.import_module(storage["module"]), storage["class"])
    assert process_config(klass.config_type(), storage["config"]).success


def test_dagster_yaml_env_vars_are_set_by_the_task_definitions():
    text = (REPO / "infra" / "dagster" / "dagster.yaml").read_text()
    text += (REPO / "infra" / "dagster" / "workspace.yaml").read_text()
    wanted = set(re.findall(r"env: ([A-Z_]+)", text))
    dagster = load_dir(MODULES / "dagster")
    environment = dagster.locals["environment"]
    provided = set(re.findall(r"\b([A-Z][A-Z0-9_]+)\s*=", environment))
    provided |= {secret["name"] for secret in dagster.locals["secrets"]}
    assert wanted and wanted <= provided, wanted - provided


def test_workspace_yaml_is_valid(dagster_env):
    from dagster._core.workspace.config_schema import process_workspace_config

    workspace = yaml.safe_load((REPO / "infra" / "dagster" / "workspace.yaml").read_text())
    result = process_workspace_config(workspace)
    assert result.success, result.errors
    assert result.value["load_from"][0]["grpc_server"]["location_name"] == "t2m_pipeline"


# --- formatting ------------------------------------------------------------------------------------------------------


@pytest.mark.skipif(shutil.which("terraform") is None, reason="no terraform binary on this machine")
def test_terraform_fmt_clean():
    result = subprocess.run(
        ["terraform", "fmt", "-check", "-recursive", "-diff", str(TERRAFORM)],
        capture_output=True,
        text=True,
        env={**os.environ, "TF_CLI_CONFIG_FILE": os.devnull},
        timeout=120,
        check=False,  # the assertion shows the diff
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_tf_files_use_two_space_indentation_and_no_tabs():
    for path in iter_tf_files():
        for number, line in enumerate(path.read_text().splitlines(), 1):
            assert "\t" not in line, f"{path}:{number}: tab"
            assert line == line.rstrip(), f"{path}:{number}: trailing whitespace"
            indent = len(line) - len(line.lstrip(" "))
            assert indent % 2 == 0, f"{path}:{number}: odd indentation"
