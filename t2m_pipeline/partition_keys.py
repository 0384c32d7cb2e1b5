"""The partition-key codec: `{user_id}/{job_id}` for jobs, `{user_id}/{job_id}/{NNN}` for scenes.

Keys read as user/job/scene in the Dagster UI. Every component is limited to `[a-z0-9-]` (ids are canonical
lowercase UUIDs, the scene a 3-digit number); both encode and decode validate, because Dagster does not validate
dynamic partition keys and these keys come from rows other systems write.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass

_UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
_SCENE = re.compile(r"^[0-9]{3}$")
MAX_SCENE = 999


# The names of the two dynamic partition sets these keys belong to (the Dagster layer declares them with these).
JOBS_PARTITIONS_NAME = "jobs"
SCENES_PARTITIONS_NAME = "scenes"


class PartitionKeyError(ValueError):
    """A partition key, or a component of one, is malformed."""


def _uuid_component(value: object, what: str) -> str:
    """A UUID (object, or its 36-character hyphenated text in either case) as canonical lowercase text."""
    text = str(value).lower() if isinstance(value, (str, uuid.UUID)) else ""
    if not _UUID.fullmatch(text):
        raise PartitionKeyError(f"{what} {value!r} is not a UUID in 8-4-4-4-12 form")
    return text


@dataclass(frozen=True, order=True)
class JobKey:
    user_id: str
    job_id: str

    def encode(self) -> str:
        return encode_job_key(self.user_id, self.job_id)


@dataclass(frozen=True, order=True)
class SceneKey:
    user_id: str
    job_id: str
    scene_number: int

    @property
    def job(self) -> JobKey:
        return JobKey(self.user_id, self.job_id)

    def encode(self) -> str:
        return encode_scene_key(self.user_id, self.job_id, self.scene_number)


def encode_job_key(user_id: object, job_id: object) -> str:
    return f"{_uuid_component(user_id, 'user id')}/{_uuid_component(job_id, 'job id')}"


def encode_scene_key(user_id: object, job_id: object, scene_number: int) -> str:
    if isinstance(scene_number, bool) or not isinstance(scene_number, int) or not 1 <= scene_number <= MAX_SCENE:
        raise PartitionKeyError(f"scene number {scene_number!r} must be an integer from 1 to {MAX_SCENE}")
    return f"{encode_job_key(user_id, job_id)}/{scene_number:03d}"


def decode_job_key(key: str) -> JobKey:
    parts = key.split("/") if isinstance(key, str) else []
    if len(parts) != 2 or not all(_UUID.fullmatch(p) for p in parts):
        raise PartitionKeyError(f"job partition key {key!r}: expected {{user uuid}}/{{job uuid}}")
    return JobKey(parts[0], parts[1])


def decode_scene_key(key: str) -> SceneKey:
    parts = key.split("/") if isinstance(key, str) else []
    if len(parts) != 3 or not (_UUID.fullmatch(parts[0]) and _UUID.fullmatch(parts[1]) and _SCENE.fullmatch(parts[2])):
        raise PartitionKeyError(f"scene partition key {key!r}: expected {{user uuid}}/{{job uuid}}/{{NNN}}")
    number = int(parts[2])
    if not 1 <= number <= MAX_SCENE:
        raise PartitionKeyError(f"scene partition key {key!r}: scene number must be 001 to {MAX_SCENE}")
    return SceneKey(parts[0], parts[1], number)
