"""Fault scenarios get their own moto server: they empty it between scenarios (moto lists versions by walking the
whole bucket, so the session's shared server, full of every test's objects, would slow them down)."""

import dataclasses
import subprocess

import pytest

from t2m_pipeline_tests.conftest import start_local_s3
from t2m_pipeline_tests.faults.scenarios import fresh_buckets


@pytest.fixture(scope="session")
def fault_s3_endpoint(service_env, tmp_path_factory):
    proc, endpoint = start_local_s3(tmp_path_factory.mktemp("fault-s3-logs"))
    yield endpoint
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()


@pytest.fixture
def fault_settings(settings, fault_s3_endpoint):
    """The session's settings on the private moto server, with the four buckets bootstrapped and empty."""
    private = dataclasses.replace(settings, endpoint_url=fault_s3_endpoint)
    fresh_buckets(private)
    return private
