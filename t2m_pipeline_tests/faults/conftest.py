"""Fault scenarios get their own moto server: they empty it between scenarios (moto lists versions by walking the
whole bucket, so the session's shared server, full of every test's objects, would slow them down)."""

import dataclasses

import pytest

from devtools.local_s3 import start_local_s3
from t2m_pipeline_tests.faults.scenarios import fresh_buckets


@pytest.fixture(scope="session")
def fault_s3_endpoint(service_env, tmp_path_factory):
    server = start_local_s3(tmp_path_factory.mktemp("fault-s3-logs"))
    yield server.endpoint
    server.stop()


@pytest.fixture
def fault_settings(settings, fault_s3_endpoint):
    """The session's settings on the private moto server, with the four buckets bootstrapped and empty."""
    private = dataclasses.replace(settings, endpoint_url=fault_s3_endpoint)
    fresh_buckets(private)
    return private
