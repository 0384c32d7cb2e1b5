"""Dagster's run queue, read twice a second.

A job makes three runs (plan, scenes, combine), and each waits in the queue until the daemon's next pass: half of
`dequeue_interval_seconds` on average. Dagster's own field takes whole seconds (1 at best: about 0.5 s of each run's
wait, 1.5 s of a 3-scene job's 6.6 s in BENCHMARKS.md), while its daemon waits between passes in half-second steps
(`IntervalDaemon.core_loop`), so half a second is the floor. A pass with nothing queued is one query.
"""

from __future__ import annotations

from dagster import Field
from dagster._core.run_coordinator import QueuedRunCoordinator

DEFAULT_DEQUEUE_INTERVAL_S = 1.0
MIN_DEQUEUE_INTERVAL_S = 0.5  # the daemon's own waiting step


class PromptQueuedRunCoordinator(QueuedRunCoordinator):
    """`QueuedRunCoordinator` (the same queue, limits and priorities) whose `dequeue_interval_seconds` may be a
    fraction of a second, down to the daemon's floor."""

    @classmethod
    def config_type(cls):
        return {
            **super().config_type(),
            "dequeue_interval_seconds": Field(
                float,
                is_required=False,
                description=f"Seconds between passes of the queue daemon, at least {MIN_DEQUEUE_INTERVAL_S}.",
            ),
        }

    @classmethod
    def from_config_value(cls, inst_data, config_value):
        interval = config_value.get("dequeue_interval_seconds", DEFAULT_DEQUEUE_INTERVAL_S)
        if interval < MIN_DEQUEUE_INTERVAL_S:
            raise ValueError(f"dequeue_interval_seconds must be at least {MIN_DEQUEUE_INTERVAL_S}, not {interval}")
        coordinator = super().from_config_value(inst_data, {**config_value, "dequeue_interval_seconds": None})
        coordinator._dequeue_interval_seconds = interval  # Dagster's constructor takes whole seconds only
        return coordinator
