"""Runs across every domain: a crashed run that Dagster's run retries should have taken again and did not
(`t2m_pipeline/launcher/retries.py` says how that happens) has its failure read again by the retry daemon."""

import json

import dagster as dg

from t2m_pipeline.launcher import retries


def _rereads(cursor: str | None) -> dict[int, int]:
    try:
        return {int(k): int(v) for k, v in json.loads(cursor or "{}").items()}
    except (ValueError, TypeError, AttributeError):
        return {}


@dg.sensor(
    name="missed_run_retries",
    minimum_interval_seconds=15,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="A failed run tagged dagster/will_retry=true with no retry 30 s after its failure (the retry daemon "
    "read its failure before the run was marked failed) has that failure read again, so its retry is made.",
)
def missed_run_retries(context: dg.SensorEvaluationContext) -> dg.SensorResult:
    missed = retries.missed_retries(context.instance)
    rewound, rereads = retries.reread_failures(context.instance, missed, _rereads(context.cursor))
    cursor = json.dumps({str(k): v for k, v in rereads.items()})
    for run in missed:
        context.log.warning(
            f"run {run.run_id} failed {run.failed_seconds_ago:g} s ago, tagged to be retried, and has no retry "
            f"(its failure read again {rereads[run.failure_storage_id]} time(s))"
        )
    if not missed:
        reason = "every failed run tagged to be retried has its retry"
    elif rewound is None:
        reason = f"{len(missed)} run(s) wait for a retry; the retry daemon has not read their failures yet, or has read them again {retries.MAX_REREADS} times"
    else:
        reason = f"{len(missed)} run(s) missed their retry; the retry daemon reads failures again after event {rewound}"
    return dg.SensorResult(skip_reason=reason, cursor=cursor)
