"""What a person reads on a run and a materialization: the job's topic, its user's email, the scene, who launched it.

Partition keys are ids (`user/job/NNN`, 73 characters): right for code, unreadable in the Runs list. Every run the
sensors launch carries these tags, and every pipeline materialization the same facts as metadata, so runs can be
told apart and filtered (`t2m/user=ada@example.com`) without opening them. The one place for the tag names.

Tag values are user text (a topic): one line, control characters dropped, cut to `MAX_TAG_CHARS`.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from sqlalchemy import text
from sqlalchemy.engine import Connection

JOB_ID_TAG = "t2m/job_id"
USER_ID_TAG = "t2m/user_id"
TOPIC_TAG = "t2m/topic"
USER_TAG = "t2m/user"  # the user's email, or their id when the row has none
SCENE_TAG = "t2m/scene"
LAUNCHED_BY_TAG = "t2m/launched_by"
HANDED_OFF_BY_TAG = "t2m/handed_off_by"  # the run that queued this one on its sensor's behalf (defs/scenes/handoff.py)
MAX_TAG_CHARS = 80

# Dagster's own tags that say where a run came from.
FROM_UI_TAG = "dagster/from_ui"
PARENT_RUN_TAG = "dagster/parent_run_id"
RETRY_NUMBER_TAG = "dagster/retry_number"
SENSOR_NAME_TAG = "dagster/sensor_name"
BACKFILL_TAG = "dagster/backfill"
WILL_RETRY_TAG = "dagster/will_retry"  # set by Dagster on a failed run that run retries will re-execute
AUTO_RETRY_RUN_ID_TAG = "dagster/auto_retry_run_id"  # set on a failed run once its retry exists

_LABELS_SQL = text(
    """
    SELECT j.id, left(j.topic, 500) AS topic, CAST(j.user_id AS text) AS user_id, left(u.email, 255) AS email
    FROM jobs j LEFT JOIN users u ON u.id = j.user_id
    WHERE j.id = ANY(CAST(:ids AS uuid[]))
    """
)


def one_line(value: object, limit: int = MAX_TAG_CHARS) -> str:
    """A tag value: printable, one line, at most `limit` characters (an ellipsis says it was cut)."""
    cleaned = " ".join("".join(c if c.isprintable() else " " for c in str(value)).split())
    return cleaned if len(cleaned) <= limit else cleaned[: limit - 1] + "…"


@dataclass(frozen=True)
class JobLabels:
    job_id: str
    user_id: str
    topic: str
    user: str  # email, else the user id

    def tags(self, scene: int | None = None) -> dict[str, str]:
        tags = {JOB_ID_TAG: self.job_id, USER_ID_TAG: self.user_id, TOPIC_TAG: self.topic, USER_TAG: self.user}
        if scene is not None:
            tags[SCENE_TAG] = str(scene)
        return tags

    def metadata(self) -> dict[str, str]:
        """For a materialization: what the partition key cannot say."""
        return {"topic": self.topic, "user": self.user}


def job_labels(conn: Connection, job_ids: Iterable[uuid.UUID | str]) -> dict[str, JobLabels]:
    """Labels of each job that exists, by job id (as text). One query for a whole tick."""
    ids = sorted({str(j) for j in job_ids})
    if not ids:
        return {}
    labels = {}
    for row in conn.execute(_LABELS_SQL, {"ids": ids}):
        user = one_line(row.email) if row.email and row.email.strip() else row.user_id
        labels[str(row.id)] = JobLabels(str(row.id), row.user_id, one_line(row.topic or ""), user)
    return labels


def fallback_labels(job_id: uuid.UUID | str, user_id: uuid.UUID | str) -> JobLabels:
    """For a job whose row is gone: the ids still tell runs apart."""
    return JobLabels(str(job_id), str(user_id), "", str(user_id))


def launched_by(tags: Mapping[str, str]) -> str:
    """Who launched a run, from its tags. A re-execution copies its parent's tags (the sensor's name among them),
    so Dagster's own "Launched by" names the parent's sensor: this says what really happened."""
    parent = tags.get(PARENT_RUN_TAG)
    if parent and tags.get(RETRY_NUMBER_TAG):
        return f"automatic retry {tags[RETRY_NUMBER_TAG]} of run {parent[:8]}"
    if tags.get(FROM_UI_TAG) == "true":
        return f"the UI: re-execution of run {parent[:8]}" if parent else "the UI"
    if parent:
        return f"re-execution of run {parent[:8]}"
    if tags.get(BACKFILL_TAG):
        return f"backfill {tags[BACKFILL_TAG]}"
    if tags.get(HANDED_OFF_BY_TAG):
        return f"run {tags[HANDED_OFF_BY_TAG][:8]}, for sensor {tags.get(SENSOR_NAME_TAG, '?')}"
    if tags.get(SENSOR_NAME_TAG):
        return f"sensor {tags[SENSOR_NAME_TAG]}"
    return "a person (launched directly)"
