"""Run retries the daemon missed, and the nudge that gets them made.

Dagster's run retries are made by the daemon's event-log consumer: it reads RUN_FAILURE events after its cursor and
retries each run that `should_retry` (the run FAILURE, tagged `dagster/will_retry=true`). But a failure is written
in three steps (dagster 1.13, `EventMethods.handle_new_event`): the event is stored, then the run's status is set to
FAILURE, then the tag is added. A consumer tick that falls between the first two sees a run still STARTED, retries
nothing, and moves its cursor past the event for good: the run is never retried and its job waits for the stuck-job
audit, hours later (the worker-kill scenario lost a retry that way on a loaded machine). Nothing upstream fixes it.

The remedy is Dagster's own machinery: a failed run tagged to be retried that has no retry a while after its
failure has its RUN_FAILURE event read again, by moving the consumer's cursor back to just before it. Retrying is
idempotent there (a run with a retry already is left alone), so events read twice cost a lookup each.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

import dagster as dg

WILL_RETRY_TAG = "dagster/will_retry"  # set by Dagster on a failed run that run retries will re-execute
AUTO_RETRY_RUN_ID_TAG = "dagster/auto_retry_run_id"  # set on a failed run once its retry exists
PARENT_RUN_TAG = "dagster/parent_run_id"

GRACE_S = 30.0  # the consumer ticks every 5 s: a retry not made after 30 s was missed
WINDOW = timedelta(hours=1)  # failures older than this are left to the stuck-job audit
MAX_RUNS_PER_PASS = 200


@dataclass(frozen=True)
class MissedRetry:
    run_id: str
    failure_storage_id: int  # the run's RUN_FAILURE event
    failed_seconds_ago: float


def _failure_cursor_key() -> str:
    from dagster._daemon.auto_run_reexecution.event_log_consumer import _create_cursor_key

    return _create_cursor_key(dg.DagsterEventType.RUN_FAILURE)


def retry_cursor(instance: dg.DagsterInstance) -> int | None:
    """The consumer's RUN_FAILURE cursor: it has read every failure event up to this id (None: it never ran)."""
    key = _failure_cursor_key()
    raw = instance.daemon_cursor_storage.get_cursor_values({key}).get(key)
    return int(raw) if raw is not None else None


def missed_retries(
    instance: dg.DagsterInstance, *, grace_s: float | None = None, now: datetime | None = None
) -> list[MissedRetry]:
    """Failed runs, failed within `WINDOW` and at least `grace_s` (`GRACE_S`) ago, tagged to be retried, with no
    retry."""
    grace_s = GRACE_S if grace_s is None else grace_s
    now = now or datetime.now(timezone.utc)
    records = instance.get_run_records(
        filters=dg.RunsFilter(
            statuses=[dg.DagsterRunStatus.FAILURE], tags={WILL_RETRY_TAG: "true"}, updated_after=now - WINDOW
        ),
        limit=MAX_RUNS_PER_PASS,
    )
    missed = []
    for record in records:
        run = record.dagster_run
        age = now.timestamp() - (record.end_time or record.update_timestamp.timestamp())
        if age < grace_s or run.tags.get(AUTO_RETRY_RUN_ID_TAG):
            continue
        if instance.get_run_ids(filters=dg.RunsFilter(tags={PARENT_RUN_TAG: run.run_id}), limit=1):
            continue  # a retry (or a re-execution from the UI) exists
        failures = instance.get_records_for_run(run.run_id, of_type=dg.DagsterEventType.RUN_FAILURE).records
        if failures:
            missed.append(MissedRetry(run.run_id, failures[-1].storage_id, round(age, 1)))
    return missed


def reread_failures(instance: dg.DagsterInstance, missed: list[MissedRetry]) -> int | None:
    """Move the consumer's cursor back to just before the earliest missed failure it has passed; the new cursor, or
    None if it had passed none (it will read them still; or it never ran and then ignores older failures, by
    design). A consumer tick in flight may write its own cursor over this one: the next pass finds the run still
    missed and does it again."""
    cursor = retry_cursor(instance)
    passed = [m.failure_storage_id for m in missed if cursor is not None and m.failure_storage_id <= cursor]
    if not passed:
        return None
    rewound = min(passed) - 1
    instance.daemon_cursor_storage.set_cursor_values({_failure_cursor_key(): str(rewound)})
    return rewound
