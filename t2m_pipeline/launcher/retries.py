"""Run retries the daemon missed, and the nudge that gets them made.

Dagster's run retries are made by the daemon's event-log consumer: it reads RUN_FAILURE events after its cursor and
retries each run that `should_retry` (the run FAILURE, tagged `dagster/will_retry=true`). But a failure is written
in three steps (dagster 1.13, `EventMethods.handle_new_event`): the event is stored, then the run's status is set to
FAILURE, then the tag is added. A consumer tick that falls between the first two sees a run still STARTED, retries
nothing, and moves its cursor past the event for good: the run is never retried and its job waits for the stuck-job
audit, hours later (the worker-kill scenario lost a retry that way on a loaded machine). Nothing upstream fixes it.

The remedy is Dagster's own machinery: a failed run tagged to be retried that has no retry a while after its
failure has its RUN_FAILURE event read again, by moving the consumer's cursor back to just before it. The consumer
then reads every failure after that point again; retrying is idempotent there for a run it retried itself, and a
run someone re-executed by hand is first tagged not to be retried, so it gets no second run.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

import dagster as dg
from dagster._core.storage.tags import (  # Dagster's own names: the launcher layer imports Dagster only
    AUTO_RETRY_RUN_ID_TAG,
    BACKFILL_ID_TAG,
    PARENT_RUN_ID_TAG,
    WILL_RETRY_TAG,
)

GRACE_S = 30.0  # the consumer ticks every 5 s: a retry not made after 30 s was missed
WINDOW = timedelta(hours=1)  # failures older than this are left to the stuck-job audit
PAGE_RUNS = 200
MAX_RUNS_PER_PASS = 2000  # failed runs looked at per pass, newest first (a mass crash is when retries get missed)
MAX_REREADS = 3  # times one failure is read again: a run Dagster declines to retry is not pulled back forever


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


def _failed_runs(instance: dg.DagsterInstance, since: datetime):
    """Failed runs tagged to be retried, updated since `since`, newest first, a page at a time."""
    filters = dg.RunsFilter(statuses=[dg.DagsterRunStatus.FAILURE], tags={WILL_RETRY_TAG: "true"}, updated_after=since)
    cursor, seen = None, 0
    while seen < MAX_RUNS_PER_PASS:
        page = instance.get_run_records(filters=filters, limit=PAGE_RUNS, cursor=cursor)
        yield from page
        seen += len(page)
        if len(page) < PAGE_RUNS:
            return
        cursor = page[-1].dagster_run.run_id


def _in_finished_backfill(instance: dg.DagsterInstance, run: dg.DagsterRun) -> bool:
    from dagster._core.execution.backfill import BULK_ACTION_TERMINAL_STATUSES

    backfill_id = run.tags.get(BACKFILL_ID_TAG)
    if backfill_id is None:
        return False
    backfill = instance.get_backfill(backfill_id)
    return backfill is None or backfill.status in BULK_ACTION_TERMINAL_STATUSES  # Dagster retries neither


def missed_retries(
    instance: dg.DagsterInstance, *, grace_s: float | None = None, now: datetime | None = None
) -> list[MissedRetry]:
    """Failed runs, failed within `WINDOW` and at least `grace_s` (`GRACE_S`) ago, tagged to be retried, with no
    retry. A run that was re-executed by hand instead is tagged `dagster/will_retry=false` here: a failure read again
    would otherwise get it an automatic retry too (Dagster recognizes only its own retries)."""
    grace_s = GRACE_S if grace_s is None else grace_s
    now = now or datetime.now(timezone.utc)
    missed = []
    for record in _failed_runs(instance, now - WINDOW):
        run = record.dagster_run
        age = now.timestamp() - (record.end_time or record.update_timestamp.timestamp())
        if not grace_s <= age <= WINDOW.total_seconds() or run.tags.get(AUTO_RETRY_RUN_ID_TAG):
            continue
        if instance.get_run_ids(filters=dg.RunsFilter(tags={PARENT_RUN_ID_TAG: run.run_id}), limit=1):
            instance.add_run_tags(run.run_id, {WILL_RETRY_TAG: "false"})  # re-executed by hand
            continue
        if _in_finished_backfill(instance, run):
            continue
        failures = instance.get_records_for_run(run.run_id, of_type=dg.DagsterEventType.RUN_FAILURE).records
        if failures:
            missed.append(MissedRetry(run.run_id, failures[-1].storage_id, round(age, 1)))
    return missed


def reread_failures(
    instance: dg.DagsterInstance, missed: list[MissedRetry], rereads: dict[int, int]
) -> tuple[int | None, dict[int, int]]:
    """Move the consumer's cursor back to just before the earliest missed failure it has passed and that was read
    again fewer than `MAX_REREADS` times (`rereads`: failure id -> times, as this returned it last time; kept for the
    runs still missed). Returns the new cursor (None: nothing to read again: the consumer has not reached them yet,
    or never ran and then ignores older failures by design, or they were read again enough) and the counts. A
    consumer tick in flight may write its own cursor over this one: the run is still missed next pass, and read
    again then."""
    cursor = retry_cursor(instance)
    rereads = {m.failure_storage_id: rereads.get(m.failure_storage_id, 0) for m in missed}
    passed = [
        m.failure_storage_id for m in missed
        if cursor is not None and m.failure_storage_id <= cursor and rereads[m.failure_storage_id] < MAX_REREADS
    ]
    if not passed:
        return None, rereads
    rewound = min(passed) - 1
    instance.daemon_cursor_storage.set_cursor_values({_failure_cursor_key(): str(rewound)})
    for failure_id in passed:
        rereads[failure_id] += 1
    return rewound, rereads
