"""Run retries the daemon missed, on a PostgreSQL-backed instance with Dagster's own retry consumer: a consumer tick
that falls between the RUN_FAILURE event and the run's FAILURE status (Dagster writes them in that order) passes the
failure without retrying it, forever (the control); the `missed_run_retries` sensor finds the run and has the
consumer read its failure again, which makes the retry, once."""

import time
from datetime import timedelta
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
from t2m_pipeline.pipeline.run_labels import PARENT_RUN_TAG, WILL_RETRY_TAG
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
    return instance.get_runs(filters=dg.RunsFilter(tags={PARENT_RUN_TAG: run_id}))


def automatic_retries_of(instance, run_id: str) -> list[dg.DagsterRun]:
    return [r for r in retries_of(instance, run_id) if RETRY_NUMBER_TAG in r.tags]


class Sensor:
    """The sensor evaluated as the daemon evaluates it, its cursor carried from tick to tick."""

    def __init__(self, instance):
        self.instance, self.cursor = instance, None

    def tick(self) -> str:
        result = missed_run_retries(dg.build_sensor_context(instance=self.instance, cursor=self.cursor))
        self.cursor = result.cursor
        return result.skip_reason.skip_message


def missed_failure(instance, workspace, monkeypatch) -> tuple[dg.DagsterRun, int]:
    """A run whose failure the consumer has passed without retrying it; its RUN_FAILURE event's id."""
    run = started_run(instance, workspace)
    fail_with_a_tick_in_between(instance, workspace, run, monkeypatch)
    failure = instance.get_records_for_run(run.run_id, of_type=dg.DagsterEventType.RUN_FAILURE).records[-1]
    assert instance.get_run_by_id(run.run_id).tags.get(WILL_RETRY_TAG) == "true"
    assert retries.retry_cursor(instance) >= failure.storage_id  # the consumer passed it
    return run, failure.storage_id


def re_execute_by_hand(instance, workspace, run) -> dg.DagsterRun:
    """What the UI's "Re-execute from failure" makes: a child run without a retry number."""
    from dagster._core.execution.plan.resume_retry import ReexecutionStrategy

    context = workspace.create_request_context()
    location = context.get_code_location("tiny")
    [repository] = location.get_repositories().values()
    child = instance.create_reexecuted_run(
        parent_run=instance.get_run_by_id(run.run_id), request_context=context, code_location=location,
        remote_job=repository.get_full_job(run.job_name), strategy=ReexecutionStrategy.FROM_FAILURE, use_parent_run_tags=True,
    )
    assert RETRY_NUMBER_TAG not in child.tags
    return child


def test_a_failure_read_before_the_run_was_failed_is_retried_once_the_sensor_has_the_consumer_read_it_again(
    instance, workspace, monkeypatch
):
    consumer_tick(workspace)  # the consumer's first tick sets its cursor (older failures are never retried)
    run, failure_id = missed_failure(instance, workspace, monkeypatch)

    # control: Dagster alone never retries it
    consumer_tick(workspace)
    consumer_tick(workspace)
    assert retries_of(instance, run.run_id) == []

    sensor = Sensor(instance)
    assert sensor.tick().startswith("every failed run")  # within the grace period: nothing yet
    assert retries.retry_cursor(instance) >= failure_id
    monkeypatch.setattr(retries, "GRACE_S", 0.0)
    message = sensor.tick()
    assert "missed their retry" in message and retries.retry_cursor(instance) == failure_id - 1, message
    consumer_tick(workspace)
    [retry] = retries_of(instance, run.run_id)
    assert (retry.tags.get(RETRY_NUMBER_TAG), retry.root_run_id, retry.status) == ("1", run.run_id, dg.DagsterRunStatus.QUEUED)

    # done: the sensor has nothing left, and a failure read a third time makes no second retry
    assert sensor.tick().startswith("every failed run")
    instance.daemon_cursor_storage.set_cursor_values({retries._failure_cursor_key(): str(failure_id - 1)})  # noqa: SLF001
    consumer_tick(workspace)
    assert len(retries_of(instance, run.run_id)) == 1


def test_a_run_re_executed_by_hand_gets_no_automatic_retry_when_failures_are_read_again(instance, workspace, monkeypatch):
    """Reading failures again reads every failure after the point: Dagster takes a hand re-execution for no retry
    (only its own retries carry a retry number), so the run would get a second run. The sensor tags it first."""
    monkeypatch.setattr(retries, "GRACE_S", 0.0)
    consumer_tick(workspace)
    control, control_failure = missed_failure(instance, workspace, monkeypatch)
    re_execute_by_hand(instance, workspace, control)
    instance.daemon_cursor_storage.set_cursor_values({retries._failure_cursor_key(): str(control_failure - 1)})  # noqa: SLF001
    consumer_tick(workspace)
    assert len(automatic_retries_of(instance, control.run_id)) == 1  # control: the fault, without the sensor's tag

    by_hand, _ = missed_failure(instance, workspace, monkeypatch)
    missed, _ = missed_failure(instance, workspace, monkeypatch)
    re_execute_by_hand(instance, workspace, by_hand)
    assert "missed their retry" in Sensor(instance).tick()
    consumer_tick(workspace)
    assert instance.get_run_by_id(by_hand.run_id).tags[WILL_RETRY_TAG] == "false"
    assert automatic_retries_of(instance, by_hand.run_id) == [] and len(retries_of(instance, by_hand.run_id)) == 1
    assert len(automatic_retries_of(instance, missed.run_id)) == 1


def test_a_failure_is_read_again_at_most_a_few_times(instance, workspace, monkeypatch):
    """A run Dagster declines to retry (its job renamed, say) stays missed: its failure is read again
    `MAX_REREADS` times, not every pass for an hour."""
    consumer_tick(workspace)
    run, failure_id = missed_failure(instance, workspace, monkeypatch)
    missed = [retries.MissedRetry(run.run_id, failure_id, 60.0)]
    rereads: dict[int, int] = {}
    for _ in range(retries.MAX_REREADS):
        rewound, rereads = retries.reread_failures(instance, missed, rereads)
        assert rewound == failure_id - 1
        instance.daemon_cursor_storage.set_cursor_values({retries._failure_cursor_key(): str(failure_id)})  # noqa: SLF001
    assert retries.reread_failures(instance, missed, rereads) == (None, {failure_id: retries.MAX_REREADS})
    assert retries.retry_cursor(instance) == failure_id  # left where the consumer put it
    assert retries.reread_failures(instance, [], rereads) == (None, {})  # a run no longer missed is forgotten


def test_failures_older_than_the_window_are_left_to_the_stuck_job_audit(instance, workspace, monkeypatch):
    """Its age is counted from its failure: a tag added since (which updates the run) does not bring it back."""
    monkeypatch.setattr(retries, "WINDOW", timedelta(seconds=1))
    consumer_tick(workspace)
    run, _ = missed_failure(instance, workspace, monkeypatch)
    time.sleep(1.5)
    instance.add_run_tags(run.run_id, {"note": "looked at"})  # updated now, failed 1.5 s ago
    assert retries.missed_retries(instance, grace_s=0) == []
    monkeypatch.setattr(retries, "WINDOW", timedelta(seconds=60))  # control: inside the window it is missed
    assert [m.run_id for m in retries.missed_retries(instance, grace_s=0)] == [run.run_id]


def test_a_run_not_to_be_retried_and_a_failure_not_yet_read_are_left_alone(instance, workspace, monkeypatch):
    monkeypatch.setattr(retries, "GRACE_S", 0.0)
    consumer_tick(workspace)
    not_retried = started_run(instance, workspace)
    instance.add_run_tags(not_retried.run_id, {"dagster/max_retries": "0"})
    instance.report_run_failed(not_retried)
    assert instance.get_run_by_id(not_retried.run_id).tags.get(WILL_RETRY_TAG) == "false"
    unread = started_run(instance, workspace)
    instance.report_run_failed(unread)  # no consumer tick since: it will read it
    cursor = retries.retry_cursor(instance)

    assert [m.run_id for m in retries.missed_retries(instance)] == [unread.run_id]
    assert "not read their failures yet" in Sensor(instance).tick()
    assert retries.retry_cursor(instance) == cursor  # not moved
    consumer_tick(workspace)
    assert len(retries_of(instance, unread.run_id)) == 1 and retries_of(instance, not_retried.run_id) == []
