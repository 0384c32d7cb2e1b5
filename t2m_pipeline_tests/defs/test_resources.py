"""Configuration reaches the Dagster layer only through typed resource fields bound to the settings' variables; what
a run must not choose (where generated code runs, the language model's endpoint and key) is no resource's field."""

import dataclasses

import dagster as dg
import pytest

from t2m_pipeline.config import SETTING_VARIABLES, Settings, load_settings
from t2m_pipeline.defs.migration.resources import LegacySourcesResource
from t2m_pipeline.defs.resources import LegacyMirrorResource, PostgresResource, S3StorageResource, default_resources
from t2m_pipeline.defs.scenes.resources import CodeGeneratorResource, RenderBackendResource

# A value for every setting, none of them its default: each variable must land in its own field.
EVERY_SETTING = {
    "T2M_ENV": "staging",
    "AWS_REGION": "eu-west-1",
    "AWS_ACCOUNT_ID": "123456789012",
    "AWS_ENDPOINT_URL": "http://127.0.0.1:9",
    "T2M_DATABASE_URL": "postgresql+psycopg://someone@db.internal:6543/t2m_other",
    "T2M_REDIS_URL": "redis://legacy.internal:6380/2",
    "T2M_SSE_ALGORITHM": "aws:kms",
    "T2M_KMS_KEY_ID": "alias/t2m",
    "T2M_NONCURRENT_VERSION_DAYS": "7",
    "T2M_MULTIPART_THRESHOLD_MIB": "6",
    "T2M_S3_MAX_ATTEMPTS": "4",
    "T2M_S3_READ_TIMEOUT_S": "9",
    "T2M_S3_MAX_POOL_CONNECTIONS": "5",
    "T2M_CODE_GENERATOR": "openai",
    "T2M_LLM_BASE_URL": "https://llm.internal/v1",
    "T2M_LLM_MODEL": "m",
    "T2M_LLM_API_KEY": "k",
    "T2M_LEGACY_REDIS_MIRROR": "1",
    "T2M_RENDER_TIMEOUT_S": "11",
    "T2M_RENDER_SANDBOX": "unconfined-local-only",
    "T2M_RENDER_BACKEND": "ecs",
    "T2M_RENDER_CLUSTER": "c",
    "T2M_RENDER_TASK_DEFINITION": "td",
    "T2M_RENDER_CONTAINER": "r",
    "T2M_RENDER_SUBNETS": "subnet-0123abcd",
    "T2M_RENDER_SECURITY_GROUPS": "sg-0123abcd",
}
# What a run's config could override in the launchpad, and must not: where generated code runs, and which endpoint
# the API key is sent to.
DEPLOYMENT_ONLY = {name for name in SETTING_VARIABLES if name.startswith("render_")} | {"llm_base_url", "llm_api_key"}


def test_every_setting_has_one_variable_and_the_settings_class_reads_it():
    assert set(SETTING_VARIABLES) == {f.name for f in dataclasses.fields(Settings)}
    assert set(SETTING_VARIABLES.values()) == set(EVERY_SETTING)
    loaded, default = load_settings(EVERY_SETTING), Settings()
    for name in SETTING_VARIABLES:  # every field moved off its default: the variable named for it is the one read
        assert getattr(loaded, name) != getattr(default, name), name


def test_fields_are_bound_to_their_variables_when_set_and_typed_defaults_otherwise():
    storage = S3StorageResource.from_environment({"AWS_REGION": "eu-west-1", "T2M_S3_MAX_ATTEMPTS": "4"}, database=PostgresResource())
    assert isinstance(storage.region, dg.EnvVar) and storage.region.env_var_name == "AWS_REGION"
    assert storage.s3_max_attempts is not None and storage.endpoint_url is None and storage.env is None
    legacy = LegacySourcesResource.from_environment({"T2M_LEGACY_ROOT": "/legacy"})
    assert isinstance(legacy.legacy_root, dg.EnvVar) and legacy.redis_url is None


def test_the_code_location_resolves_its_fields_from_the_environment_into_the_same_settings_as_the_cli(monkeypatch):
    env = {"AWS_REGION": "eu-west-1", "AWS_ENDPOINT_URL": "http://127.0.0.1:9", "T2M_S3_MAX_ATTEMPTS": "4", "T2M_ENV": "staging"}
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    seen = {}

    @dg.asset
    def probe(storage: S3StorageResource):
        seen["settings"] = storage.settings()

    dg.materialize([probe], resources=default_resources(env))
    cli = load_settings(env)
    assert seen["settings"] == dataclasses.replace(cli, database_url=seen["settings"].database_url)
    assert seen["settings"].bucket("videos") == "staging-t2m-videos-eu-west-1-000000000000"


@pytest.mark.parametrize(
    "variable, value, error, message",
    [
        ("T2M_SSE_ALGORITHM", "rot13", "ConfigError", r"^T2M_SSE_ALGORITHM='rot13' is invalid: expected one of AES256\|aws:kms$"),
        ("T2M_S3_MAX_ATTEMPTS", "many", "DagsterInvalidConfigError", r'env variable "T2M_S3_MAX_ATTEMPTS" cannot be coerced'),
    ],
)
def test_a_bad_variable_fails_the_run_naming_it(monkeypatch, variable, value, error, message):
    from t2m_pipeline.config import ConfigError

    env = {"AWS_ENDPOINT_URL": "http://127.0.0.1:9", variable: value}
    for name, text in env.items():
        monkeypatch.setenv(name, text)

    @dg.asset
    def probe(storage: S3StorageResource):
        storage.settings()

    expected = {"ConfigError": ConfigError, "DagsterInvalidConfigError": dg.DagsterInvalidConfigError}[error]
    with pytest.raises(expected, match=message):
        dg.materialize([probe], resources=default_resources(env))


def test_no_resource_has_a_field_a_run_must_not_choose():
    from t2m_pipeline.definitions import defs

    resources = defs.resources
    assert {"database", "storage", "code_generator", "render", "legacy"} <= set(resources)
    classes = {type(r) for r in resources.values()} | {LegacyMirrorResource}
    for cls in classes:
        assert not DEPLOYMENT_ONLY & set(cls.model_fields), cls.__name__


def test_a_run_cannot_choose_the_sandbox_and_the_control_shows_a_field_would_let_it():
    @dg.asset
    def renders(render: RenderBackendResource, code_generator: CodeGeneratorResource):
        return None

    job = dg.define_asset_job("renders_job", selection=[renders])
    defs = dg.Definitions(assets=[renders], jobs=[job], resources={"render": RenderBackendResource(), "code_generator": CodeGeneratorResource()})
    with pytest.raises(dg.DagsterInvalidConfigError):
        defs.resolve_job_def("renders_job").execute_in_process(
            run_config={"resources": {"render": {"config": {"render_sandbox": "unconfined-local-only"}}}}
        )

    class RenderWithAField(RenderBackendResource):  # control: a field of the same name is a run's to choose
        render_sandbox: str = "bwrap"

    chosen = {}

    @dg.asset(name="renders")
    def renders_with_field(render: RenderWithAField):
        chosen["sandbox"] = render.render_sandbox

    defs = dg.Definitions(assets=[renders_with_field], jobs=[job], resources={"render": RenderWithAField()})
    defs.resolve_job_def("renders_job").execute_in_process(
        run_config={"resources": {"render": {"config": {"render_sandbox": "unconfined-local-only"}}}}
    )
    assert chosen["sandbox"] == "unconfined-local-only"


@pytest.mark.parametrize(
    "key, field, value",
    [
        ("storage", "endpoint_url", "http://elsewhere.example:80"),
        ("storage", "kms_key_id", "arn:aws:kms:us-east-1:999999999999:key/x"),
        ("storage", "account_id", "999999999999"),
        ("storage", "s3_max_attempts", 3),  # a tuning value would reset the rest to class defaults (Dagster)
        ("database", "database_url", "postgresql+psycopg://someone@elsewhere:5432/t2m"),
    ],
)
def test_a_run_cannot_configure_where_data_goes_and_the_control_chooses_its_generator(monkeypatch, key, field, value):
    """A run's config that touches the storage or the database fails before any step; the control, the code
    generator (no deployment-only field), is a run's to choose."""
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")
    seen = {}

    @dg.asset
    def probe(storage: S3StorageResource, code_generator: CodeGeneratorResource):
        seen["generator"] = code_generator.code_generator

    resources = {**default_resources({"AWS_ENDPOINT_URL": "http://127.0.0.1:9"}), "code_generator": CodeGeneratorResource()}
    job = dg.define_asset_job("probe_job", selection=[probe])
    defs = dg.Definitions(assets=[probe], jobs=[job], resources=resources)
    refused = defs.resolve_job_def("probe_job").execute_in_process(
        run_config={"resources": {key: {"config": {field: value}}}}, raise_on_error=False
    )
    assert not refused.success and "generator" not in seen
    failure = next(e for e in refused.all_events if e.is_failure)
    assert f"resources.{key}.config.{field}" in str(failure.event_specific_data)

    chosen = defs.resolve_job_def("probe_job").execute_in_process(run_config={"resources": {"code_generator": {"config": {"code_generator": "openai"}}}})
    assert chosen.success and seen["generator"] == "openai"


def test_control_without_the_refusal_a_run_sends_the_storage_elsewhere(monkeypatch):
    from t2m_pipeline.defs import resources as resources_module

    monkeypatch.setattr(resources_module, "refuse_run_overrides", lambda fields, context: None)
    seen = {}

    @dg.asset
    def probe(storage: S3StorageResource):
        seen["settings"] = storage.settings()

    dg.materialize(
        [probe], resources=default_resources({"AWS_ENDPOINT_URL": "x"}) | {"storage": S3StorageResource(database=PostgresResource())},
        run_config={"resources": {"storage": {"config": {"endpoint_url": "http://elsewhere.example:80", "env": "prod"}}}},
    )
    assert seen["settings"].endpoint_url == "http://elsewhere.example:80" and seen["settings"].env == "prod"
