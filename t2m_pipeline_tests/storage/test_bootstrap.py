import json

import pytest

from t2m_pipeline.config import load_settings
from t2m_pipeline.storage.bootstrap import bootstrap_bucket, diff_bucket_settings, read_bucket_settings
from t2m_pipeline.storage.bucket_settings import declared_buckets
from t2m_pipeline.storage.s3 import make_s3_client


@pytest.fixture
def staging(service_env):
    """A separate environment's buckets, so changing them cannot disturb other tests."""
    settings = load_settings({**service_env, "T2M_ENV": "staging", "AWS_ACCOUNT_ID": "222222222222", "T2M_NONCURRENT_VERSION_DAYS": "30"})
    return settings, make_s3_client(settings)


def test_bootstrap_twice_gives_the_same_settings_all_of_them(staging):
    settings, client = staging
    specs = declared_buckets(settings)
    assert [bootstrap_bucket(client, spec, settings.region) for spec in specs] == [True] * 4
    first = {spec.name: read_bucket_settings(client, spec.name) for spec in specs}
    assert [bootstrap_bucket(client, spec, settings.region) for spec in specs] == [False] * 4
    second = {spec.name: read_bucket_settings(client, spec.name) for spec in specs}
    assert first == second
    for spec in specs:
        live = second[spec.name]
        assert diff_bucket_settings(spec, live) == {}
        assert live["versioning"] == "Enabled"
        assert live["encryption"][0]["ApplyServerSideEncryptionByDefault"]["SSEAlgorithm"] == "AES256"
        assert live["public_access_block"] == {
            "BlockPublicAcls": True, "IgnorePublicAcls": True, "BlockPublicPolicy": True, "RestrictPublicBuckets": True
        }
        (statement,) = live["policy"]["Statement"]
        assert statement["Effect"] == "Deny" and statement["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}
        rules = {rule["ID"]: rule for rule in live["lifecycle_rules"]}
        assert rules["abort-incomplete-multipart"]["AbortIncompleteMultipartUpload"]["DaysAfterInitiation"] == 1
        assert rules["expire-noncurrent-versions"]["NoncurrentVersionExpiration"]["NoncurrentDays"] == 30
        assert ("expire-temp-objects" in rules) == (spec.kind == "temp")
        if spec.kind == "temp":
            assert rules["expire-temp-objects"]["Expiration"]["Days"] == 7


def test_drift_is_reported_setting_by_setting(staging):
    settings, client = staging
    spec = declared_buckets(settings)[0]
    bootstrap_bucket(client, spec, settings.region)
    client.put_bucket_versioning(Bucket=spec.name, VersioningConfiguration={"Status": "Suspended"})
    client.delete_bucket_policy(Bucket=spec.name)
    drift = diff_bucket_settings(spec, read_bucket_settings(client, spec.name))
    assert set(drift) == {"versioning", "policy"}
    assert drift["versioning"] == {"declared": "Enabled", "live": "Suspended"}
    bootstrap_bucket(client, spec, settings.region)
    assert diff_bucket_settings(spec, read_bucket_settings(client, spec.name)) == {}


def test_plain_moto_would_lock_the_bucket_with_the_tls_policy_which_is_why_local_s3_patches_it(fake_aws_credentials):
    """The reason for devtools.local_s3: unpatched moto applies the TLS Deny to every request."""
    from botocore.exceptions import ClientError
    from moto.server import ThreadedMotoServer

    from t2m_pipeline.storage.bucket_settings import tls_only_policy

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        settings = load_settings({"AWS_ENDPOINT_URL": f"http://{host}:{port}", "T2M_S3_MAX_ATTEMPTS": "1"})
        client = make_s3_client(settings)
        client.create_bucket(Bucket="plain-moto-bucket")
        client.put_bucket_policy(Bucket="plain-moto-bucket", Policy=json.dumps(tls_only_policy("plain-moto-bucket")))
        with pytest.raises(ClientError, match="403|Forbidden|AccessDenied"):
            client.put_object(Bucket="plain-moto-bucket", Key="k", Body=b"x")
    finally:
        server.stop()
