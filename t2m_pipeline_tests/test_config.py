import subprocess
import sys

import pytest

from t2m_pipeline.config import BUCKET_KINDS, ConfigError, load_settings

LOCAL = {"AWS_ENDPOINT_URL": "http://127.0.0.1:4566"}


@pytest.mark.parametrize("env_name", ["dev", "staging", "prod"])
def test_bucket_names_for_every_environment(env_name):
    settings = load_settings({"T2M_ENV": env_name, "AWS_REGION": "eu-west-2", "AWS_ACCOUNT_ID": "123456789012"})
    assert settings.buckets == {kind: f"{env_name}-t2m-{kind}-eu-west-2-123456789012" for kind in BUCKET_KINDS}


def test_local_defaults():
    settings = load_settings(LOCAL)
    assert settings.env == "dev" and settings.region == "us-east-1" and settings.account_id == "000000000000"
    assert settings.bucket("temp") == "dev-t2m-temp-us-east-1-000000000000"
    assert settings.database_url == "postgresql+psycopg://postgres@127.0.0.1:5432/t2m"
    assert settings.redis_url is None and settings.is_local_endpoint
    assert settings.dagster_storage_url().startswith("postgresql+psycopg2://")


@pytest.mark.parametrize(
    "env,variable,form",
    [
        ({"T2M_ENV": "qa", **LOCAL}, "T2M_ENV", "dev|staging|prod"),
        ({"AWS_REGION": "mars", **LOCAL}, "AWS_REGION", "an AWS region"),
        ({}, "AWS_ACCOUNT_ID", "12 digits"),
        ({"AWS_ACCOUNT_ID": "12", **LOCAL}, "AWS_ACCOUNT_ID", "12 digits"),
        ({"AWS_ENDPOINT_URL": "localhost:4566"}, "AWS_ENDPOINT_URL", "a URL"),
        ({"T2M_DATABASE_URL": "mysql://x/y", **LOCAL}, "T2M_DATABASE_URL", "postgresql+psycopg://"),
        ({"T2M_REDIS_URL": "localhost", **LOCAL}, "T2M_REDIS_URL", "redis://"),
        ({"T2M_SSE_ALGORITHM": "DES", **LOCAL}, "T2M_SSE_ALGORITHM", "AES256|aws:kms"),
        ({"T2M_NONCURRENT_VERSION_DAYS": "-3", **LOCAL}, "T2M_NONCURRENT_VERSION_DAYS", "positive whole number"),
        ({"T2M_S3_READ_TIMEOUT_S": "0", **LOCAL}, "T2M_S3_READ_TIMEOUT_S", "positive whole number"),
        ({"T2M_CODE_GENERATOR": "openai", **LOCAL}, "T2M_LLM_BASE_URL", "a URL"),
    ],
)
def test_invalid_values_fail_with_one_line_naming_the_variable(env, variable, form):
    with pytest.raises(ConfigError) as err:
        load_settings(env)
    message = str(err.value)
    assert "\n" not in message and variable in message and form in message


def test_cli_prints_the_config_error_as_one_line_without_a_traceback(tmp_path):
    env = {"PATH": "/usr/bin:/bin", "T2M_ENV": "qa", "HOME": str(tmp_path)}
    result = subprocess.run([sys.executable, "-m", "t2m_pipeline.cli", "db", "current"], env=env, capture_output=True, text=True)
    assert result.returncode == 2
    assert result.stderr.strip() == "t2m: error: T2M_ENV='qa' is invalid: expected one of dev|staging|prod"
    assert "Traceback" not in result.stderr + result.stdout
