"""Run retries the daemon missed, on a PostgreSQL-backed instance with Dagster's own retry consumer: a consumer tick
that falls between the RUN_FAILURE event and the run's FAILURE status (Dagster writes them in that order) passes the
failure without retrying it, forever (the control); the `missed_run_retries` sensor finds the run and has the
consumer read its failure again, which makes the retry, once."""

from pathlib import Path

import dagster as dg
import pytest
from dagster._core.remote_origin import InProcessCodeLocationOrigin
from dagster._core.types.loadable_target_origin import LoadableTargetOrigin
from dagster._core.workspace.context import WorkspaceProcessContext
from dagster._core.workspace.load_target import InProcessWorkspaceLoadTarget
from dagster._daemon.auto_run_reexecution.event_log_consumer import EventLogConsumerDaemon

from devtools.dagster_daemon import daemon_databases
from t2m_pipeline.defs.runs.sensors import missed_run_retries
from t2m_pipeline.launcher import retries
from t2m_pipeline_tests.launcher import tiny_location

RETRY_NUMBER_TAG = "dagster/retry_number"


@pytest.fixture
def instance(service_env):
    with daemon_databases("t2m_retries") as (_, _, dagster_url):
        overrides = {
            "storage": {"postgres": {"postgres_url": dagster_url}},
            "run_retries": {"enabled": True, "max_retries": 2},
            "run_coordinator": {"module": "dagster._core.run_coordinator", "class": "QueuedRunCoordinator"},
        }
        with dg.instance_for_test(overrides=overrides) as instance:
            yield instance


@pytest.fixture
def workspace(instance):
    """The tiny code location, loaded in this process as the daemon loads its workspace."""
    origin = InProcessCodeLocationOrigin(
        LoadableTargetOrigin(python_file=str(Path(tiny_location.__file__)), attribute="defs"), location_name="tiny"
    )
    with WorkspaceProcessContext(instance, InProcessWorkspaceLoadTarget([origin])) as context:
        yield context


def started_run(instance, workspace) -> dg.DagsterRun:
    location = workspace.create_request_context().get_code_location("tiny")
    [repository] = location.get_repositories().values()
    remote_job = repository.get_full_job(tiny_location.tiny_job.name)
    return instance.create_run_for_job(
        tiny_location.tiny_job, status=dg.DagsterRunStatus.STARTED,
        run_config={"ops": {"act": {"config": {"report_to": "/dev/null"}}}},
        remote_job_origin=remote_job.get_remote_origin(), job_code_origin=remote_job.get_python_origin(),
    )


def consumer_tick(workspace) -> None:
    """One iteration of Dagster's retry consumer, as the daemon runs it."""
    for _ in EventLogConsumerDaemon().run_iteration(workspace):
        pass


def fail_with_a_tick_in_between(instance, workspace, run, monkeypatch) -> None:
    """`report_run_failed` as a worker crash reports it, with a consumer tick right after the event is stored and
    before the run's status is set (the interleaving a loaded daemon hits now and then)."""
    storage = instance.run_storage
    handle_run_event = storage.handle_run_event

    def tick_first(*args, **kwargs):
        consumer_tick(workspace)
        return handle_run_event(*args, **kwargs)

    monkeypatch.setattr(storage, "handle_run_event", tick_first)
    instance.report_run_failed(run)
    monkeypatch.setattr(storage, "handle_run_event", handle_run_event)


def retries_of(instance, run_id: str) -> list[dg.DagsterRun]:
    return instance.get_runs(filters=dg.RunsFilter(tags={retries.PARENT_RUN_TAG: run_id}))


def sensor_tick(instance) -> dg.SkipReason:
    return missed_run_retries(dg.build_sensor_context(instance=instance))


def test_a_failure_read_before_the_run_was_failed_is_retried_once_the_sensor_has_the_consumer_read_it_again(
    instance, workspace, monkeypatch
):
    consumer_tick(workspace)  # the consumer's first tick sets its cursor (older failures are never retried)
    run = started_run(instance, workspace)
    fail_with_a_tick_in_between(instance, workspace, run, monkeypatch)
    assert instance.get_run_by_id(run.run_id).tags.get(retries.WILL_RETRY_TAG) == "true"
    failure = instance.get_records_for_run(run.run_id, of_type=dg.DagsterEventType.RUN_FAILURE).records[-1]
    assert retries.retry_cursor(instance) >= failure.storage_id  # the consumer passed it

    # control: Dagster alone never retries it
    consumer_tick(workspace)
    consumer_tick(workspace)
    assert retries_of(instance, run.run_id) == []

    assert sensor_tick(instance).skip_message.startswith("every failed run")  # within the grace period: nothing yet
    assert retries.retry_cursor(instance) >= failure.storage_id
    monkeypatch.setattr(retries, "GRACE_S", 0.0)
    message = sensor_tick(instance).skip_message
    assert "missed their retry" in message and retries.retry_cursor(instance) == failure.storage_id - 1, message
    consumer_tick(workspace)
    [retry] = retries_of(instance, run.run_id)
    assert (retry.tags.get(RETRY_NUMBER_TAG), retry.root_run_id, retry.status) == ("1", run.run_id, dg.DagsterRunStatus.QUEUED)

    # done: the sensor has nothing left, and a failure read a third time makes no second retry
    assert retries.missed_retries(instance, grace_s=0) == []
    instance.daemon_cursor_storage.set_cursor_values({retries._failure_cursor_key(): str(failure.storage_id - 1)})  # noqa: SLF001
    consumer_tick(workspace)
    assert len(retries_of(instance, run.run_id)) == 1


def test_a_run_not_to_be_retried_and_a_failure_not_yet_read_are_left_alone(instance, workspace, monkeypatch):
    monkeypatch.setattr(retries, "GRACE_S", 0.0)
    consumer_tick(workspace)
    not_retried = started_run(instance, workspace)
    instance.add_run_tags(not_retried.run_id, {"dagster/max_retries": "0"})
    instance.report_run_failed(not_retried)
    assert instance.get_run_by_id(not_retried.run_id).tags.get(retries.WILL_RETRY_TAG) == "false"
    unread = started_run(instance, workspace)
    instance.report_run_failed(unread)  # no consumer tick since: it will read it
    cursor = retries.retry_cursor(instance)

    assert [m.run_id for m in retries.missed_retries(instance)] == [unread.run_id]
    assert "not read their failures yet" in sensor_tick(instance).skip_message
    assert retries.retry_cursor(instance) == cursor  # not moved
    consumer_tick(workspace)
    assert len(retries_of(instance, unread.run_id)) == 1 and retries_of(instance, not_retried.run_id) == []
