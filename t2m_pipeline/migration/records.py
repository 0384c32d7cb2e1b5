"""Legacy Redis records -> rows: decoding both job forms, timestamps, enums, ids. Bad input raises `BadRecord`.

The caller turns a `BadRecord` into a `migration_quarantine` row (source key, raw payload, reason): never fatal.
"""

from __future__ import annotations

import functools
import json
import re
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone
from decimal import Decimal, InvalidOperation

import orjson

from t2m_pipeline.db.job_state import status_on_import
from t2m_pipeline.vocabulary import JOB_TYPES, LEGACY_JOB_STATUSES, PRIORITIES
from t2m_pipeline.db.json_text import LONG_INTEGER
from t2m_pipeline.migration.legacy_paths import CLERK_ID

_ENUM_PREFIX = re.compile(r"^[A-Za-z]+\.")


class BadRecord(ValueError):
    """A legacy record that cannot be migrated as it is; the message is the quarantine reason."""


def decode_text(raw: bytes, what: str) -> str:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise BadRecord(f"{what} is not valid UTF-8") from None
    if "\x00" in text:
        raise BadRecord(f"{what} contains a NUL character (PostgreSQL text cannot hold it)")
    return text


def _not_finite(token: str):
    raise BadRecord(f"non-standard JSON number {token}")


def _finite_float(token: str) -> float:
    value = float(token)
    if value in (float("inf"), float("-inf")):
        raise BadRecord(f"JSON number {token[:40]} is out of range")
    return value




def _loads(text: str, what: str):
    """`_loads_exact`, by orjson where that gives the same value: no `\\u` escape and at most 200 brackets (so
    nothing `check_storable` would look for), no run of 19 digits; anything orjson refuses (NaN, `1e400`, a lone
    surrogate...) goes to `_loads_exact`, which says why. About twice as fast on the legacy job records; a property
    test holds the two equal."""
    if not _may_hide_unstorable(text) and not LONG_INTEGER.search(text):
        try:
            return orjson.loads(text)
        except orjson.JSONDecodeError:
            pass
    return _loads_exact(text, what)


def _loads_exact(text: str, what: str):
    """`json.loads` that refuses what PostgreSQL cannot store and turns every parse failure into a BadRecord.

    Python's parser accepts `NaN`/`Infinity` and overflows `1e400` to infinity (jsonb takes neither), raises
    ValueError for integers over 4,300 digits and RecursionError for deep nesting, and decodes `\\u0000` and lone
    surrogate escapes (jsonb and text take neither): each of these used to fail the whole run.
    """
    try:
        value = json.loads(text, parse_constant=_not_finite, parse_float=_finite_float)
    except json.JSONDecodeError as exc:
        raise BadRecord(f"malformed JSON in {what}: {exc.msg} at {exc.pos}") from None
    except ValueError as exc:  # BadRecord included; json's own errors and int() limits otherwise
        if isinstance(exc, BadRecord):
            raise BadRecord(f"{exc} in {what}") from None
        raise BadRecord(f"malformed JSON in {what}: {str(exc)[:120]}") from None
    except RecursionError:
        raise BadRecord(f"malformed JSON in {what}: nested too deeply") from None
    if _may_hide_unstorable(text):
        check_storable(value, what)
    return value


def _may_hide_unstorable(text: str) -> bool:
    """Whether the parsed value could hold what `check_storable` refuses. `text` came through `decode_text` (valid
    UTF-8, no NUL), so only a `\\u` escape can put a NUL or a lone surrogate into a string, and nesting deeper than
    200 needs more than 200 brackets: most records have neither, and skip the walk over every node."""
    return "\\u" in text or text.count("[") + text.count("{") > 200


def check_storable(value, what: str, depth: int = 0) -> None:
    """Every string (keys included) valid UTF-8 without NUL: what PostgreSQL's text and jsonb can hold."""
    if depth > 200:  # far beyond any legacy record, and within PostgreSQL's own JSON parser's stack
        raise BadRecord(f"{what} is nested too deeply")
    if isinstance(value, str):
        if "\x00" in value:
            raise BadRecord(f"{what} holds a NUL character (\\u0000), which PostgreSQL cannot store")
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise BadRecord(f"{what} holds a lone surrogate (\\ud800-\\udfff), which is not valid UTF-8") from None
    elif isinstance(value, dict):
        for k, v in value.items():
            check_storable(k, what, depth + 1)
            check_storable(v, what, depth + 1)
    elif isinstance(value, list):
        for v in value:
            check_storable(v, what, depth + 1)


def decode_json(raw: bytes, what: str):
    return _loads(decode_text(raw, what), what)


def decode_job_hash(fields: dict[bytes, bytes]) -> dict:
    """The hash form: one JSON-encoded value per field (a bare string that is not JSON is taken as a string)."""
    out = {}
    for name, raw in fields.items():
        key = decode_text(name, "a hash field name")
        value = decode_text(raw, f"hash field {key}")
        try:
            out[key] = _loads(value, f"hash field {key}")
        except BadRecord:  # not JSON (or not storable as such): kept as the string it is, which is storable
            out[key] = value
    return out


def parse_time(value, field: str, required: bool = False) -> datetime | None:
    """Naive UTC `YYYY-MM-DD HH:MM:SS[.ffffff]`, ISO `T` forms, with or without a zone -> aware UTC."""
    if value in (None, ""):
        if required:
            raise BadRecord(f"missing required field {field}")
        return None
    if not isinstance(value, str):
        raise BadRecord(f"bad timestamp in {field}: {value!r}")
    text = value.strip()
    try:
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))  # the space-separated form too (Python 3.11+)
        if parsed.tzinfo is None:
            parsed = parsed.replace(tzinfo=timezone.utc)
        return parsed.astimezone(timezone.utc)  # OverflowError at the ends of the calendar (year 1 at +14:00)
    except (ValueError, OverflowError):
        raise BadRecord(f"bad timestamp in {field}: {value!r}") from None


def legacy_time(value: datetime | None) -> str | None:
    """Aware -> the legacy form: naive UTC, space separated, microseconds only when not 0."""
    if value is None:
        return None
    return str(value.astimezone(timezone.utc).replace(tzinfo=None))


@functools.lru_cache(maxsize=4096)  # a few spellings, repeated over every record
def _enum_text(value: str) -> str:
    return _ENUM_PREFIX.sub("", value.strip()).lower()


def enum(value, field: str, allowed: tuple[str, ...], default: str | None = None) -> str:
    """`queued`, `QUEUED` and `JobStatus.QUEUED` all mean `queued`; anything else is a bad record."""
    if value in (None, "") and default is not None:
        return default
    if not isinstance(value, str):
        raise BadRecord(f"unknown {field} value {value!r}")
    normal = _enum_text(value)
    if normal not in allowed:
        raise BadRecord(f"unknown {field} value {value!r}")
    return normal


def uuid_value(value, field: str, required: bool = False) -> uuid.UUID | None:
    if value in (None, ""):
        if required:
            raise BadRecord(f"missing required field {field}")
        return None
    try:
        return uuid.UUID(str(value))
    except ValueError:
        raise BadRecord(f"bad UUID in {field}: {value!r}") from None


def clerk_id(value, field: str = "user_id") -> str:
    if value in (None, ""):
        raise BadRecord(f"missing required field {field}")
    if not isinstance(value, str) or not CLERK_ID.match(value):
        raise BadRecord(f"bad Clerk user id in {field}: {value!r}")
    return value


def _dict_or_none(value, field: str) -> dict | None:
    if value in (None, ""):
        return None
    if isinstance(value, str):  # some writers double-encoded nested objects
        try:
            value = json.loads(value)
        except json.JSONDecodeError:
            raise BadRecord(f"{field} is not an object") from None
    if not isinstance(value, dict):
        raise BadRecord(f"{field} is not an object")
    return value


@dataclass(frozen=True)
class JobRow:
    """A legacy job as a `jobs` row (plus its owner's Clerk id); `status` is already the status on import."""

    id: uuid.UUID
    clerk_user_id: str
    job_type: str
    status: str
    priority: str
    topic: str
    description: str | None
    configuration: dict
    progress_percentage: Decimal
    current_stage: str | None
    error_info: dict | None
    metrics: dict | None
    created_at: datetime
    updated_at: datetime
    started_at: datetime | None
    completed_at: datetime | None
    estimated_completion: datetime | None
    batch_id: uuid.UUID | None
    is_deleted: bool
    deleted_at: datetime | None


def normalise_job(key_id: str, record: dict) -> JobRow:
    """One decoded job record -> a row; `key_id` is the id in `jobs:{id}`, which the payload must agree with."""
    if not isinstance(record, dict):
        raise BadRecord("job record is not a JSON object")
    job_id = uuid_value(key_id, "the key's job id", required=True)
    if record.get("id") not in (None, "") and uuid_value(record.get("id"), "id") != job_id:
        raise BadRecord(f"id {record.get('id')!r} does not match the key")
    config = _dict_or_none(record.get("configuration"), "configuration")
    if not config:
        raise BadRecord("missing required field configuration")
    topic = config.get("topic")
    if not isinstance(topic, str) or not topic.strip():
        raise BadRecord("missing required field configuration.topic")
    if len(topic) > 500:
        raise BadRecord("configuration.topic is longer than 500 characters")
    progress = _dict_or_none(record.get("progress"), "progress") or {}
    try:
        percentage = Decimal(str(progress.get("percentage", 0) or 0))
    except InvalidOperation:
        raise BadRecord(f"progress.percentage is not a number: {progress.get('percentage')!r}") from None
    if not percentage.is_finite() or not 0 <= percentage <= 100:
        raise BadRecord(f"progress.percentage {progress.get('percentage')!r} is outside 0..100")
    created = parse_time(record.get("created_at"), "created_at", required=True)
    updated = parse_time(record.get("updated_at"), "updated_at") or created
    stage = progress.get("current_stage")
    legacy = {
        k: record[k]
        for k in ("parent_job_id",)
        if record.get(k) not in (None, "")
    }
    legacy.update(
        {f"progress_{k}": progress[k] for k in ("stages_completed", "processing_time_seconds") if k in progress}
    )
    status = enum(record.get("status"), "status", LEGACY_JOB_STATUSES)
    started = parse_time(record.get("started_at"), "started_at")
    completed = parse_time(record.get("completed_at"), "completed_at")
    # The legacy run as it was, kept apart from the row (whose status may be `held`, see `db.job_state`, and whose
    # times change once an operator requeues it): the evidence that attributes the legacy files (`attribution`).
    legacy.update(
        status=status,
        **{name: value.isoformat() for name, value in (("started_at", started), ("completed_at", completed),
                                                        ("updated_at", updated)) if value is not None},
    )
    configuration = dict(config)
    configuration["legacy"] = {"redis_key": f"jobs:{key_id}", **legacy}
    deleted = record.get("is_deleted", False)
    if isinstance(deleted, str):
        deleted = deleted.strip().lower() in ("1", "true", "yes")
    return JobRow(
        id=job_id,
        clerk_user_id=clerk_id(record.get("user_id")),
        job_type=enum(record.get("job_type"), "job_type", JOB_TYPES, "video_generation"),
        status=status_on_import(status),
        priority=enum(record.get("priority"), "priority", PRIORITIES, "normal"),
        topic=topic,
        description=config.get("context") if isinstance(config.get("context"), str) else config.get("description"),
        configuration=configuration,
        progress_percentage=percentage.quantize(Decimal("0.01")),
        current_stage=str(stage)[:100] if stage not in (None, "") else None,
        error_info=_dict_or_none(record.get("error"), "error"),
        metrics=_dict_or_none(record.get("metrics"), "metrics"),
        created_at=created,
        updated_at=updated,
        started_at=started,
        completed_at=completed,
        estimated_completion=parse_time(progress.get("estimated_completion"), "progress.estimated_completion"),
        batch_id=uuid_value(record.get("batch_id"), "batch_id"),
        is_deleted=bool(deleted),
        deleted_at=parse_time(record.get("deleted_at"), "deleted_at"),
    )
