"""The fault proxy in front of the moto server: each fault kind as a raw client with retries off sees it."""

import json
import os
import signal
import subprocess
import sys
import time
import uuid

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError, ConnectionClosedError, ReadTimeoutError

from devtools.fault_proxy import FaultKind, FaultPlan, FaultProxy, classify, parse_kinds
from devtools.local_s3 import REPO

READ_TIMEOUT = 1.0
HELD = 1.6  # seconds a delayed answer or late write is held: past READ_TIMEOUT


def raw_client(endpoint: str, attempts: int = 1):
    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name="us-east-1",
        config=Config(
            s3={"addressing_style": "path"},
            retries={"mode": "standard", "total_max_attempts": attempts},
            read_timeout=READ_TIMEOUT,
            connect_timeout=2,
        ),
    )


@pytest.fixture
def bucket(buckets):
    return buckets["temp"]


@pytest.fixture
def direct(settings):
    return raw_client(settings.endpoint_url, attempts=3)


def exists(client, bucket, key) -> bytes | None:
    try:
        return client.get_object(Bucket=bucket, Key=key)["Body"].read()
    except ClientError as exc:
        assert exc.response["Error"]["Code"] in ("NoSuchKey", "404")
        return None


@pytest.mark.parametrize(
    "method,target,headers,operation",
    [
        ("GET", "/", {}, "ListBuckets"),
        ("PUT", "/b", {}, "CreateBucket"),
        ("HEAD", "/b", {}, "HeadBucket"),
        ("GET", "/b?versions&prefix=users%2Fx", {}, "ListObjectVersions"),
        ("GET", "/b?list-type=2&prefix=a", {}, "ListObjectsV2"),
        ("GET", "/b?uploads", {}, "ListMultipartUploads"),
        ("GET", "/b?versioning", {}, "GetBucketVersioning"),
        ("PUT", "/b?lifecycle", {}, "PutBucketLifecycle"),
        ("POST", "/b?delete", {}, "DeleteObjects"),
        ("PUT", "/b/users/a/k.txt", {}, "PutObject"),
        ("PUT", "/b/k", {"x-amz-copy-source": "/b/j"}, "CopyObject"),
        ("PUT", "/b/k?partNumber=2&uploadId=abc", {}, "UploadPart"),
        ("PUT", "/b/k?partNumber=2&uploadId=abc", {"X-Amz-Copy-Source": "/b/j"}, "UploadPartCopy"),
        ("POST", "/b/k?uploads", {}, "CreateMultipartUpload"),
        ("POST", "/b/k?uploadId=abc", {}, "CompleteMultipartUpload"),
        ("DELETE", "/b/k?uploadId=abc", {}, "AbortMultipartUpload"),
        ("GET", "/b/k?uploadId=abc", {}, "ListParts"),
        ("GET", "/b/a/b/c.mp4?versionId=v1", {}, "GetObject"),
        ("HEAD", "/b/k?versionId=v1", {}, "HeadObject"),
        ("DELETE", "/b/k?versionId=v1", {}, "DeleteObject"),
        ("PUT", "/b/k?tagging", {}, "PutObjectTagging"),
        ("GET", "/moto-api/reset", {}, "MotoApi"),
    ],
)
def test_requests_are_classified_as_s3_operations(method, target, headers, operation):
    assert classify(method, target, headers) == operation


def test_decisions_follow_the_seed_and_the_rate():
    plan = FaultPlan(rate=0.2, seed=11)
    decisions = [plan.decide("PutObject", i) for i in range(10_000)]
    share = sum(d is not None for d in decisions) / len(decisions)
    assert 0.18 < share < 0.22
    assert {d for d in decisions if d is not None} == set(FaultKind)
    assert decisions == [FaultPlan(rate=0.2, seed=11).decide("PutObject", i) for i in range(10_000)]
    assert decisions != [FaultPlan(rate=0.2, seed=12).decide("PutObject", i) for i in range(10_000)]
    # operations draw from separate streams: adding HEAD requests does not move PutObject's faults
    assert decisions[:50] != [plan.decide("HeadObject", i) for i in range(50)]
    only_parts = FaultPlan(rate=1.0, operations=frozenset({"UploadPart"}))
    assert only_parts.decide("PutObject", 0) is None and only_parts.decide("UploadPart", 0) is not None
    assert FaultPlan(rate=1.0).decide("MotoApi", 0) is None
    assert all(FaultPlan(rate=0.0).decide("PutObject", i) is None for i in range(1000))


def test_invalid_plans_are_refused():
    with pytest.raises(ValueError, match="expected 0 to 1"):
        FaultPlan(rate=1.5)
    with pytest.raises(ValueError, match="unknown fault kind 'boom'"):
        parse_kinds("slowdown,boom")
    assert parse_kinds("all") == tuple(FaultKind)
    with pytest.raises(ValueError, match="http://host:port"):
        FaultProxy("ftp://127.0.0.1:1")


def only_puts(kind: FaultKind) -> FaultPlan:
    return FaultPlan(rate=1.0, kinds=(kind,), operations=frozenset({"PutObject"}), delay_seconds=HELD)


@pytest.mark.parametrize("kind,code,status", [(FaultKind.SLOWDOWN, "SlowDown", 503), (FaultKind.INTERNAL, "InternalError", 500)])
def test_error_answers_are_s3_errors_and_nothing_is_written(settings, bucket, direct, kind, code, status):
    key = f"fault-proxy/{uuid.uuid4()}"
    with FaultProxy(settings.endpoint_url, only_puts(kind)) as proxy:
        with pytest.raises(ClientError) as err:
            raw_client(proxy.url).put_object(Bucket=bucket, Key=key, Body=b"payload")
        # a HEAD error has no body: the client sees the bare status
        head_proxy_plan = FaultPlan(rate=1.0, kinds=(kind,), operations=frozenset({"HeadObject"}))
        proxy.set_plan(head_proxy_plan, reset_stats=False)
        with pytest.raises(ClientError) as head_err:
            raw_client(proxy.url).head_object(Bucket=bucket, Key=key)
    assert err.value.response["Error"]["Code"] == code
    assert err.value.response["ResponseMetadata"]["HTTPStatusCode"] == status
    assert head_err.value.response["ResponseMetadata"]["HTTPStatusCode"] == status
    assert proxy.stats.injected_total("PutObject", kind) == 1 and proxy.stats.forwarded["PutObject"] == 0
    assert exists(direct, bucket, key) is None


def test_reset_before_forwarding_loses_the_request(settings, bucket, direct):
    key = f"fault-proxy/{uuid.uuid4()}"
    with FaultProxy(settings.endpoint_url, only_puts(FaultKind.RESET_BEFORE)) as proxy:
        with pytest.raises(ConnectionClosedError):
            raw_client(proxy.url).put_object(Bucket=bucket, Key=key, Body=b"payload")
    assert proxy.stats.forwarded["PutObject"] == 0
    assert exists(direct, bucket, key) is None


def test_reset_after_forwarding_loses_the_answer_but_the_write_happened(settings, bucket, direct):
    key = f"fault-proxy/{uuid.uuid4()}"
    with FaultProxy(settings.endpoint_url, only_puts(FaultKind.RESET_AFTER)) as proxy:
        with pytest.raises(ConnectionClosedError):
            raw_client(proxy.url).put_object(Bucket=bucket, Key=key, Body=b"payload")
    assert proxy.stats.forwarded["PutObject"] == 1
    assert exists(direct, bucket, key) == b"payload"


def test_a_delayed_answer_times_the_client_out_after_the_write(settings, bucket, direct):
    key = f"fault-proxy/{uuid.uuid4()}"
    with FaultProxy(settings.endpoint_url, only_puts(FaultKind.DELAY)) as proxy:
        started = time.monotonic()
        with pytest.raises(ReadTimeoutError):
            raw_client(proxy.url).put_object(Bucket=bucket, Key=key, Body=b"payload")
        assert time.monotonic() - started < HELD  # the client gave up before the answer came
        assert exists(direct, bucket, key) == b"payload"  # already written while the answer is held
        assert proxy.wait_idle(10)


def test_a_late_write_lands_after_the_client_gave_up(settings, bucket, direct):
    key = f"fault-proxy/{uuid.uuid4()}"
    with FaultProxy(settings.endpoint_url, only_puts(FaultKind.LATE_WRITE)) as proxy:
        with pytest.raises(ReadTimeoutError):
            raw_client(proxy.url).put_object(Bucket=bucket, Key=key, Body=b"payload")
        assert exists(direct, bucket, key) is None  # not yet
        assert proxy.wait_idle(10)
        assert exists(direct, bucket, key) == b"payload"
    assert proxy.stats.injected_total(kind=FaultKind.LATE_WRITE) == 1


def test_operations_outside_the_plan_pass_through_unchanged(settings, bucket, direct, tmp_path):
    """Faults on PutObject only: multipart uploads, reads, HEADs and listings through the proxy are untouched."""
    key = f"fault-proxy/{uuid.uuid4()}"
    data = os.urandom(11 * 1024 * 1024)
    (tmp_path / "big").write_bytes(data)
    with FaultProxy(settings.endpoint_url, only_puts(FaultKind.SLOWDOWN)) as proxy:
        client = raw_client(proxy.url)
        from boto3.s3.transfer import TransferConfig

        client.upload_file(str(tmp_path / "big"), bucket, key, Config=TransferConfig(multipart_threshold=5 * 1024 * 1024, multipart_chunksize=5 * 1024 * 1024))
        assert client.head_object(Bucket=bucket, Key=key)["ContentLength"] == len(data)
        assert client.get_object(Bucket=bucket, Key=key)["Body"].read() == data
        assert [v["Key"] for v in client.list_object_versions(Bucket=bucket, Prefix=key)["Versions"]] == [key]
    assert proxy.stats.injected_total() == 0
    assert proxy.stats.requests["UploadPart"] == 3 and proxy.stats.requests["CompleteMultipartUpload"] == 1
    assert direct.get_object(Bucket=bucket, Key=key)["Body"].read() == data


def test_mixed_faults_at_a_rate_are_counted_and_retries_get_through(settings, bucket, direct):
    """20% mixed faults on every operation: a client with retries writes everything; the proxy counted its faults."""
    plan = FaultPlan(rate=0.2, seed=3, delay_seconds=HELD)
    keys = [f"fault-proxy/{uuid.uuid4()}" for _ in range(40)]
    with FaultProxy(settings.endpoint_url, plan) as proxy:
        client = raw_client(proxy.url, attempts=10)
        for key in keys:
            client.put_object(Bucket=bucket, Key=key, Body=key.encode())
        proxy.wait_idle(10)
    stats = proxy.stats
    # a retry per fault (a slow moment of the machine may add a timeout of its own)
    assert stats.requests["PutObject"] >= 40 + stats.injected_total("PutObject")
    assert 2 <= stats.injected_total("PutObject") <= 20
    expected = [plan.decide("PutObject", i) for i in range(stats.requests["PutObject"])]
    assert [e.kind for e in proxy.events if e.operation == "PutObject"] == expected
    assert all(exists(direct, bucket, key) == key.encode() for key in keys)


def test_command_line_proxy(settings, bucket):
    proc = subprocess.Popen(
        [sys.executable, "-m", "devtools.fault_proxy", "--target", settings.endpoint_url, "--rate", "1",
         "--faults", "slowdown", "--operations", "PutObject", "--seed", "5"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=REPO,
    )
    try:
        banner = proc.stdout.readline()
        assert banner.startswith("fault proxy on http://127.0.0.1:")
        url = banner.split()[3]
        with pytest.raises(ClientError, match="SlowDown"):
            raw_client(url).put_object(Bucket=bucket, Key=f"fault-proxy/{uuid.uuid4()}", Body=b"x")
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
    stats = json.loads(out.strip().splitlines()[-1])
    assert stats["injected"] == {"PutObject:slowdown": 1} and proc.returncode == 0


def test_command_line_refuses_bad_arguments_in_one_line(settings):
    result = subprocess.run(
        [sys.executable, "-m", "devtools.fault_proxy", "--target", settings.endpoint_url, "--faults", "boom"],
        capture_output=True,
        text=True,
        timeout=30,
        cwd=REPO,
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == ["error: unknown fault kind 'boom': expected slowdown|internal|reset-before|reset-after|delay|late-write"]
