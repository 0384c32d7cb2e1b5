"""The temp bucket's 7-day expiry, done by the audit where the endpoint does not enforce lifecycle rules.

S3-compatible endpoints (moto, MinIO without ILM) keep the declared rule but never apply it, so scratch piles up.
There the audit deletes every version older than the limit, in batches, and records each deletion as a fixed
finding. On AWS the rule does the work and the audit only reports current objects well past the limit (the rule is
not working). Only the environment's temp bucket is ever touched: `assert_temp_bucket` guards every delete.
`overdue_temp_versions` is the same judgement without the deletes: what the expiry should have removed by now.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from t2m_pipeline.audits.findings import CheckScope, Finding
from t2m_pipeline.audits.policy import AuditPolicy
from t2m_pipeline.audits.reconcile import S3Version, iter_s3_versions, object_subject
from t2m_pipeline.config import Settings
from t2m_pipeline.storage.errors import map_error

CHECK = "temp_expired"
DELETE_BATCH = 1000  # DeleteObjects' limit


class NotTempBucketError(RuntimeError):
    """Refused: the cleanup was pointed at a bucket that is not the environment's temp bucket."""


def assert_temp_bucket(settings: Settings, bucket: str) -> None:
    expected = settings.bucket("temp")
    if bucket != expected or "-t2m-temp-" not in bucket:
        raise NotTempBucketError(f"temp cleanup refused for bucket {bucket!r}: only {expected!r} may be cleaned")


@dataclass
class TempCleanupStats:
    bucket: str = ""
    enforced_by: str = ""
    counts: Counter = field(default_factory=Counter)

    def as_dict(self) -> dict[str, Any]:
        return {"bucket": self.bucket, "enforced_by": self.enforced_by, **dict(sorted(self.counts.items()))}


def temp_scope(settings: Settings) -> CheckScope:
    return CheckScope((CHECK,), (f"s3://{settings.bucket('temp')}/",))


def overdue(settings: Settings, policy: AuditPolicy, version: S3Version, now: datetime) -> bool:
    """Should the expiry have removed this version by now? Past the limit plus the grace (the cleanup runs daily, the
    rule in the background); on AWS only current objects count (the rule expires older versions on its own terms)."""
    if version.delete_marker or not (settings.is_local_endpoint or version.is_latest):
        return False
    return version.last_modified < now - timedelta(days=policy.temp_max_age_days + policy.temp_grace_days)


def overdue_temp_versions(settings: Settings, client: Any, policy: AuditPolicy, now: datetime | None = None) -> Iterator[S3Version]:
    """The temp versions the expiry should have removed by now; deletes nothing."""
    now = now or datetime.now(timezone.utc)
    for version in iter_s3_versions(client, settings.bucket("temp"), policy.list_page_size):
        if overdue(settings, policy, version, now):
            yield version


def _age_days(version: S3Version, now: datetime) -> float:
    return round((now - version.last_modified).total_seconds() / 86400, 2)


def _delete_versions(
    client: Any, settings: Settings, bucket: str, versions: list[S3Version], now: datetime, limit_days: int, stats: TempCleanupStats
) -> Iterator[Finding]:
    if not versions:
        return
    assert_temp_bucket(settings, bucket)
    objects = [{"Key": v.key, "VersionId": v.version_id} for v in versions]
    try:
        response = client.delete_objects(Bucket=bucket, Delete={"Objects": objects, "Quiet": True})
    except (ClientError, BotoCoreError) as exc:
        raise map_error(exc, bucket) from exc
    errors = {(e.get("Key"), e.get("VersionId")): e for e in response.get("Errors", [])}
    for version in versions:
        error = errors.get((version.key, version.version_id))
        subject = object_subject(bucket, version.key, version.version_id)
        detail = {
            "size": version.size,
            "last_modified": version.last_modified.isoformat(),
            "age_days": _age_days(version, now),
            "limit_days": limit_days,
        }
        if error is not None:
            stats.counts["delete_failed"] += 1
            yield Finding(CHECK, "WARNING", subject, {**detail, "action": "delete failed", "error": error.get("Code")})
        elif version.delete_marker:
            stats.counts["delete_markers_removed"] += 1
        else:
            stats.counts["deleted"] += 1
            stats.counts["bytes_deleted"] += version.size
            yield Finding(CHECK, "INFO", subject, {**detail, "action": "deleted"}, fixed=True)


def temp_findings(
    settings: Settings, client: Any, policy: AuditPolicy, stats: TempCleanupStats, now: datetime | None = None
) -> Iterator[Finding]:
    """Delete (local endpoint) or report (AWS) expired temp objects, as a stream of findings."""
    now = now or datetime.now(timezone.utc)
    bucket = settings.bucket("temp")
    assert_temp_bucket(settings, bucket)
    stats.bucket = bucket
    if not settings.is_local_endpoint:
        stats.enforced_by = "lifecycle rule (reported only)"
        for version in iter_s3_versions(client, bucket, policy.list_page_size):
            stats.counts["versions"] += 1
            if overdue(settings, policy, version, now):
                stats.counts["not_expired_by_lifecycle"] += 1
                detail = {
                    "size": version.size,
                    "last_modified": version.last_modified.isoformat(),
                    "age_days": _age_days(version, now),
                    "limit_days": policy.temp_max_age_days,
                    "meaning": "the lifecycle rule should have expired it: check the bucket's lifecycle configuration",
                }
                yield Finding(CHECK, "WARNING", object_subject(bucket, version.key, version.version_id), detail)
        return
    stats.enforced_by = "audit (endpoint does not enforce lifecycle)"
    cutoff = now - timedelta(days=policy.temp_max_age_days)
    expired: list[S3Version] = []
    for version in iter_s3_versions(client, bucket, policy.list_page_size):
        stats.counts["versions"] += 1
        if version.last_modified >= cutoff:
            continue
        expired.append(version)
        if len(expired) > DELETE_BATCH:
            # Keep the newest-listed version: it may be the listing's page marker, which must still exist when
            # the next page is requested (moto resumes from the marker's exact version).
            batch, expired = expired[:-1], expired[-1:]
            yield from _delete_versions(client, settings, bucket, batch, now, policy.temp_max_age_days, stats)
    yield from _delete_versions(client, settings, bucket, expired, now, policy.temp_max_age_days, stats)
