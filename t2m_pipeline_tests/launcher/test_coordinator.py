"""PromptQueuedRunCoordinator: Dagster's queue with the project's limits, its daemon passing every half second. The
daemon test (`test_daemon.py`) runs the pipeline through it for real; here: what the instance makes of dagster.yaml."""

from pathlib import Path

import dagster as dg
import pytest
import yaml
from dagster._config import process_config
from dagster._core.run_coordinator import QueuedRunCoordinator
from dagster._daemon.controller import create_daemon_of_type
from dagster._daemon.run_coordinator import QueuedRunCoordinatorDaemon

from t2m_pipeline.launcher import PromptQueuedRunCoordinator

PROJECT = yaml.safe_load((Path(__file__).resolve().parents[2] / "dagster.yaml").read_text())


def instance_of(coordinator: dict):
    return dg.instance_for_test(overrides={"run_coordinator": coordinator, "concurrency": PROJECT["concurrency"]})


def test_the_projects_queue_is_read_every_half_second_with_its_limits():
    with instance_of(PROJECT["run_coordinator"]) as instance:
        assert isinstance(instance.run_coordinator, PromptQueuedRunCoordinator)
        assert create_daemon_of_type(QueuedRunCoordinatorDaemon.daemon_type(), instance).interval_seconds == 0.5
        queue = instance.get_concurrency_config().run_queue_config
        assert queue.max_concurrent_runs == PROJECT["concurrency"]["runs"]["max_concurrent_runs"]
        assert queue.tag_concurrency_limits == PROJECT["concurrency"]["runs"]["tag_concurrency_limits"]


def test_control_dagsters_own_coordinator_takes_whole_seconds_only():
    assert not process_config(QueuedRunCoordinator.config_type(), {"dequeue_interval_seconds": 0.5}).success
    assert process_config(PromptQueuedRunCoordinator.config_type(), {"dequeue_interval_seconds": 0.5}).success


def test_an_interval_below_the_daemons_floor_is_refused():
    too_often = {**PROJECT["run_coordinator"], "config": {"dequeue_interval_seconds": 0.1}}
    with pytest.raises(Exception, match="at least 0.5"), instance_of(too_often) as instance:
        instance.run_coordinator  # noqa: B018 - built on first use
