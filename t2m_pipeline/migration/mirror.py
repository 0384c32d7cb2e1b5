"""The cut-over mirror (`T2M_LEGACY_REDIS_MIRROR=1`): the new pipeline's job status and progress written back into
`jobs:{id}` in the legacy shape, so the legacy API keeps answering until cut-over.

`mirror_job_status(settings, job_row)` never raises and never blocks a job for long (short socket timeouts). A
write that fails is kept as the job's *latest* state in an in-process queue and retried on the next call (or by
`flush_pending`): status is state, not a log, so only the newest state per job matters and nothing piles up.
That queue dies with its run worker, so `resync_jobs` is the durable retry: the `legacy_mirror_resync` sensor
mirrors every job row changed since its cursor, and the cursor only moves past what was written.
The existing record's form is kept: a JSON string stays a string (fields merged), a hash gets JSON-encoded fields.
A record the legacy system changed after our row (a newer `updated_at`) is left alone: the newer state wins.
"""

from __future__ import annotations

import json
import logging
import threading
import uuid
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from decimal import Decimal

from sqlalchemy import Engine, text

from t2m_pipeline.config import Settings
from t2m_pipeline.db.engine import in_transaction
from t2m_pipeline.db.job_state import legacy_status
from t2m_pipeline.migration.legacy_redis import legacy_redis_client
from t2m_pipeline.migration.records import BadRecord, legacy_time, parse_time
from t2m_pipeline.pipeline.status import after_status_write

log = logging.getLogger(__name__)
MAX_PENDING = 10_000
_pending: OrderedDict[str, tuple[str, dict]] = OrderedDict()  # job id -> (redis url, legacy-shape fields)
_lock = threading.Lock()
_clients: dict[str, object] = {}


def _get(row, name, default=None):
    if isinstance(row, Mapping):
        return row.get(name, default)
    return getattr(row, name, default)


def legacy_fields(job_row, clerk_user_id: str | None = None) -> dict:
    """The legacy JSON fields for a `jobs` row, a mapping, or `job_state.JobState` (`job_id`): status, progress, times."""
    progress = _get(job_row, "progress_percentage") or 0
    job_id = _get(job_row, "id") or _get(job_row, "job_id")
    if not job_id:
        raise ValueError("a job row needs an id")
    fields = {
        "id": str(job_id),
        "status": legacy_status(str(_get(job_row, "status")), _get(job_row, "configuration")),
        "progress": {
            "percentage": float(progress) if isinstance(progress, (Decimal, int, float)) else float(str(progress)),
            "current_stage": _get(job_row, "current_stage"),
            "estimated_completion": legacy_time(_get(job_row, "estimated_completion")),
        },
        "updated_at": legacy_time(_get(job_row, "updated_at") or datetime.now(timezone.utc)),
        "started_at": legacy_time(_get(job_row, "started_at")),
        "completed_at": legacy_time(_get(job_row, "completed_at")),
    }
    error = _get(job_row, "error_info")
    if error:
        fields["error"] = {
            "error_code": str(error.get("error_code") or error.get("stage") or "PIPELINE_ERROR"),
            "error_message": str(error.get("error_message") or error.get("message") or json.dumps(error, default=str)),
            "error_details": error,
            "stack_trace": None,
            "retry_count": int(error.get("retry_count", 0) or 0),
            "max_retries": int(error.get("max_retries", 3) or 3),
        }
    else:
        fields["error"] = None
    if clerk_user_id:
        fields["user_id"] = clerk_user_id
    for name in ("created_at",):
        if isinstance(_get(job_row, name), datetime):
            fields[name] = legacy_time(_get(job_row, name))
    config = _get(job_row, "configuration")
    if isinstance(config, dict):
        fields["configuration"] = {k: v for k, v in config.items() if k != "legacy"}
    for name in ("priority", "job_type"):
        if _get(job_row, name):
            fields[name] = str(_get(job_row, name))
    if _get(job_row, "is_deleted") is not None:
        fields["is_deleted"] = bool(_get(job_row, "is_deleted"))
    return fields


def _client(url: str):
    client = _clients.get(url)
    if client is None:
        client = legacy_redis_client(url, "mirror")
        _clients[url] = client
    return client


_ALWAYS = ("status", "progress", "updated_at", "started_at", "completed_at", "error")


def _newer_than(recorded: object, ours: str | None) -> bool:
    """Whether the legacy record's `updated_at` is later than ours (unreadable times never win)."""
    if isinstance(recorded, bytes):  # a hash field: JSON-encoded, or the bare string the legacy system wrote
        try:
            recorded = json.loads(recorded)
        except ValueError:
            recorded = recorded.decode("utf-8", "replace")
    try:
        theirs = parse_time(recorded, "updated_at")
        mine = parse_time(ours, "updated_at")
    except (BadRecord, ValueError):
        return False
    return bool(theirs and mine and theirs > mine)


def _write(url: str, fields: dict) -> bool:
    """Read-modify-write of `jobs:{id}` under WATCH, keeping the record's form and its other fields; False when the
    legacy record is newer than `fields` and was left alone."""
    import redis

    client = _client(url)
    key = f"jobs:{fields['id']}"
    with client.pipeline() as pipe:
        for _ in range(5):
            try:
                pipe.watch(key)
                kind = pipe.type(key).decode()
                if kind == "hash":
                    current = {k.decode(): v for k, v in pipe.hgetall(key).items()}
                    if _newer_than(current.get("updated_at"), fields["updated_at"]):
                        return False
                    stages = _stages(current.get("progress"), fields)
                    updates = {
                        k: json.dumps(v) for k, v in fields.items() if k in _ALWAYS or k not in current
                    }
                    updates["progress"] = json.dumps({**fields["progress"], **stages})
                    pipe.multi()
                    pipe.hset(key, mapping=updates)
                else:
                    raw = pipe.get(key) if kind == "string" else None
                    try:
                        current = json.loads(raw) if raw else {}
                    except ValueError:
                        current = {}
                    if not isinstance(current, dict):
                        current = {}
                    if _newer_than(current.get("updated_at"), fields["updated_at"]):
                        return False
                    merged = {**fields, **{k: v for k, v in current.items() if k not in _ALWAYS}}
                    old_progress = current.get("progress") if isinstance(current.get("progress"), dict) else {}
                    merged["progress"] = {**old_progress, **{k: v for k, v in fields["progress"].items()}}
                    merged.setdefault("is_deleted", False)
                    pipe.multi()
                    pipe.set(key, json.dumps(merged))
                pipe.execute()
                return True
            except redis.WatchError:
                continue
    raise RuntimeError(f"{key}: concurrent writers kept changing it")


def _stages(raw_progress: bytes | None, fields: dict) -> dict:
    try:
        old = json.loads(raw_progress) if raw_progress else {}
    except ValueError:
        old = {}
    return {k: v for k, v in (old or {}).items() if k not in fields["progress"]} if isinstance(old, dict) else {}


def flush_pending(settings: Settings | None = None) -> int:
    """Retry queued writes (oldest first); returns how many are still pending. Never raises."""
    with _lock:
        items = list(_pending.items())
    for job_id, (url, fields) in items:
        try:
            _write(url, fields)
        except Exception as exc:  # noqa: BLE001
            log.warning("legacy mirror still failing for job %s: %s", job_id, type(exc).__name__)
            break  # Redis is still down: keep the order, try again later
        with _lock:
            if _pending.get(job_id, (None, None))[1] is fields:
                _pending.pop(job_id, None)
    with _lock:
        return len(_pending)


def pending_count() -> int:
    with _lock:
        return len(_pending)


def mirror_job_status(settings: Settings, job_row, clerk_user_id: str | None = None) -> bool:
    """Write the job's status and progress into the legacy `jobs:{id}`; True when written now (False: off, failed
    and queued for a retry, or the legacy record is newer and kept).

    A no-op (False) unless `T2M_LEGACY_REDIS_MIRROR=1` and `T2M_REDIS_URL` are set. Never raises.
    """
    try:
        if not (settings.legacy_redis_mirror and settings.redis_url):
            return False
        fields = legacy_fields(job_row, clerk_user_id)
        if _pending:
            flush_pending(settings)
        try:
            written = _write(settings.redis_url, fields)
        except Exception as exc:  # noqa: BLE001 - the pipeline must never fail because the legacy Redis did
            with _lock:
                _pending.pop(fields["id"], None)
                _pending[fields["id"]] = (settings.redis_url, fields)
                while len(_pending) > MAX_PENDING:
                    _pending.popitem(last=False)
            log.warning("legacy mirror write for job %s queued for retry: %s", fields["id"], type(exc).__name__)
            return False
        with _lock:
            _pending.pop(fields["id"], None)
        return written
    except Exception as exc:  # noqa: BLE001
        log.warning("legacy mirror skipped: %s", type(exc).__name__)
        return False


RESYNC_BATCH = 500
RESYNC_LOOKBACK = timedelta(hours=1)
# `updated_at` is stamped by the writer's clock before its commit, on several hosts: a row can become visible with a
# stamp older than rows already read. The cursor therefore never passes `now - RESYNC_LAG`; rows inside that window
# are read (and written, idempotently) again on the next pass, so a late commit or a clock behind by less is not lost.
RESYNC_LAG = timedelta(minutes=2)


@dataclass(frozen=True)
class ResyncResult:
    """One resync pass: rows written, rows whose legacy record was newer (kept), rows that could not be turned into a
    legacy record (skipped), where to carry on, and why it stopped early (if it did)."""

    written: int
    cursor: str
    kept_newer: int = 0
    skipped: int = 0
    error: str | None = None

    def summary(self) -> str:
        return f"{self.written} job row(s) mirrored, {self.kept_newer} newer in the legacy Redis kept, {self.skipped} skipped"


def resync_cursor(updated_at: datetime, job_id: str = "") -> str:
    return f"{updated_at.astimezone(timezone.utc).isoformat()}|{job_id}"


def resync_jobs(
    settings: Settings, engine: Engine, cursor: str | None, limit: int = RESYNC_BATCH, now: datetime | None = None
) -> ResyncResult:
    """Mirror the job rows changed after `cursor` (oldest first, at most `limit`); stop at the first failed write.

    The cursor is `updated_at|id` of the last row written, held back to `now - RESYNC_LAG`, so a failed write is
    retried next time and a row changed again later comes round again. Without a cursor it starts
    `RESYNC_LOOKBACK` ago. A row that cannot become a legacy record is logged and passed over: one bad row never
    holds back the others.
    """
    now = now or datetime.now(timezone.utc)
    if not cursor:
        cursor = resync_cursor(now - RESYNC_LOOKBACK)
    since, _, after_id = cursor.partition("|")
    after_id = after_id or str(uuid.UUID(int=0))  # the nil UUID sorts first
    query = text(
        """
        SELECT j.*, u.clerk_user_id FROM jobs j LEFT JOIN users u ON u.id = j.user_id
        WHERE (j.updated_at, j.id) > (CAST(:since AS timestamptz), CAST(:after_id AS uuid))
        ORDER BY j.updated_at, j.id LIMIT :limit
        """
    )
    rows = in_transaction(
        engine, lambda conn: conn.execute(query, {"since": since, "after_id": after_id, "limit": limit}).mappings().all()
    )
    written = kept_newer = skipped = 0
    last = cursor
    for row in rows:
        try:
            fields = legacy_fields(row, row["clerk_user_id"])
        except Exception as exc:  # noqa: BLE001 - the row's data, not Redis: pass over it
            log.warning("legacy mirror: job %s cannot be written in the legacy shape: %s", row["id"], exc)
            skipped += 1
        else:
            try:
                if _write(settings.redis_url, fields):
                    written += 1
                else:
                    kept_newer += 1
            except Exception as exc:  # noqa: BLE001 - whatever Redis says, the cursor stays and the next pass retries
                error = f"jobs:{row['id']}: {type(exc).__name__}: {exc}"
                return ResyncResult(written, _held_back(last, now), kept_newer, skipped, error)
            with _lock:
                _pending.pop(str(row["id"]), None)
        last = resync_cursor(row["updated_at"], str(row["id"]))
    return ResyncResult(written, _held_back(last, now), kept_newer, skipped)


def _held_back(cursor: str, now: datetime) -> str:
    since = datetime.fromisoformat(cursor.partition("|")[0])
    return cursor if since <= now - RESYNC_LAG else resync_cursor(now - RESYNC_LAG)


_enabled: Settings | None = None  # set by the process's configuration: the Dagster resource or the CLI


def enable_mirror(settings: Settings) -> None:
    """Mirror this process's status writes into the legacy Redis when `settings` turn the mirror on (the cut-over
    window), and stop when they do not. The Dagster layer calls it from its `legacy_mirror` resource (turned off by a
    database without one). The only writers that announce status writes are the scene assets and the run-failure
    sensor; the CLI and the audits change statuses through `db.job_state`, which the resync sensor mirrors."""
    global _enabled
    _enabled = settings if settings.legacy_redis_mirror and settings.redis_url else None


@after_status_write
def mirror_status_write(state) -> None:
    """Every pipeline status write, mirrored while `enable_mirror` has turned the mirror on; `mirror_job_status`
    never raises and queues a failed write for the resync sensor."""
    settings = _enabled
    if settings is not None:
        mirror_job_status(settings, state)
