"""Each failure maps to its own clear error naming the bucket and key."""

import json
import uuid

import pytest
from moto import mock_aws
from moto.core.authorization import ActionAuthenticatorMixin  # noqa: F401  (auth toggled below)
from moto.core import set_initial_no_auth_action_count

from t2m_pipeline.config import load_settings
from t2m_pipeline.storage import errors
from t2m_pipeline.storage.s3 import ObjectOwner, S3Storage, make_s3_client

OWNER = ObjectOwner(user_id=uuid.uuid4(), file_type="code")


def test_missing_bucket(settings):
    storage = S3Storage(settings)
    with pytest.raises(errors.BucketNotFoundError) as err:
        storage.put_bytes("dev-t2m-nothing-here", "users/x/k.txt", b"x", owner=OWNER, content_type="text/plain")
    assert "dev-t2m-nothing-here" in str(err.value) and err.value.key == "users/x/k.txt"


def test_missing_object(storage, buckets):
    with pytest.raises(errors.ObjectNotFoundError, match="no/such/key"):
        storage.get_bytes(buckets["code"], "no/such/key")


def test_access_denied_by_bucket_policy(settings):
    client = make_s3_client(settings)
    bucket = f"dev-t2m-denied-{uuid.uuid4().hex[:8]}"
    client.create_bucket(Bucket=bucket)
    policy = {"Version": "2012-10-17", "Statement": [{"Effect": "Deny", "Principal": "*", "Action": "s3:*",
                                                      "Resource": [f"arn:aws:s3:::{bucket}/*"]}]}
    client.put_bucket_policy(Bucket=bucket, Policy=json.dumps(policy))
    with pytest.raises(errors.AccessDeniedError) as err:
        S3Storage(settings).put_bytes(bucket, "secret.txt", b"x", owner=OWNER, content_type="text/plain")
    assert bucket in str(err.value) and "secret.txt" in str(err.value)


def test_unreachable_endpoint(fake_aws_credentials):
    settings = load_settings({"AWS_ENDPOINT_URL": "http://127.0.0.1:9", "T2M_S3_MAX_ATTEMPTS": "1"})
    with pytest.raises(errors.EndpointUnreachableError, match="dev-t2m-code"):
        S3Storage(settings).get_bytes(settings.bucket("code"), "k")


def test_missing_credentials(monkeypatch, tmp_path):
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.delenv("AWS_CONTAINER_CREDENTIALS_FULL_URI", raising=False)
    monkeypatch.delenv("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI", raising=False)
    settings = load_settings({"AWS_ENDPOINT_URL": "http://127.0.0.1:9", "T2M_S3_MAX_ATTEMPTS": "1"})
    with pytest.raises(errors.CredentialsMissingError) as err:
        S3Storage(settings).put_bytes(settings.bucket("code"), "k", b"x", owner=OWNER, content_type="text/plain")
    assert "credentials" in str(err.value) and settings.bucket("code") in str(err.value)


@mock_aws
@set_initial_no_auth_action_count(0)
def test_wrong_credentials_in_process(monkeypatch):
    """moto's in-process mock, with IAM authentication on, rejects an unknown access key."""
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAWRONGWRONGWRONG1")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "wrong")
    settings = load_settings({"AWS_ACCOUNT_ID": "123456789012", "T2M_S3_MAX_ATTEMPTS": "1"})
    with pytest.raises(errors.InvalidCredentialsError, match="rejected"):
        S3Storage(settings).get_bytes(settings.bucket("code"), "k")
