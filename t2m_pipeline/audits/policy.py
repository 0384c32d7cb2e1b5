"""The knobs of the audits, with their defaults, in one place (the CLI options and Dagster config mirror them)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from t2m_pipeline.storage.bucket_settings import TEMP_EXPIRATION_DAYS
from t2m_pipeline.storage.s3 import UNRECORDED_TWIN_GRACE

StuckPolicy = Literal["fail", "requeue", "report"]
STUCK_POLICIES: tuple[str, ...] = ("fail", "requeue", "report")


@dataclass(frozen=True)
class AuditPolicy:
    """What counts as wrong and what the audit may repair on its own.

    - stuck_after_s: a job `processing` with no update for this long is stuck (a render is bounded by
      T2M_RENDER_TIMEOUT_S per scene; three hours is far beyond any healthy job).
    - stuck_policy: `fail` (status failed with error_info), `requeue` (back to queued, at most `max_requeues`
      times, then failed) or `report` (finding only).
    - temp_max_age_days: temp objects older than this are deleted where the endpoint does not enforce lifecycle
      rules; on AWS a current temp object older than this plus `temp_grace_days` means the rule is not working.
    - fix_queue: cancel soft-deleted jobs still queued and re-sync queue rows whose status disagrees with the job.
    - retention_days: a finished job's `jobs`/`scenes` partitions are removed this long after it finished
      (deleted jobs' partitions at once); None keeps finished jobs' partitions.
    - verify_checksums: HEAD each recorded version to compare its sha256 (user metadata and S3's ChecksumSHA256)
      with the row; without it only sizes are compared (listing data only, no request per object).
    - list_page_size: ListObjectVersions page size (1000 is AWS's maximum); memory is bounded by it.
    - settle_s: objects and rows younger than this are not judged by reconciliation: a writer puts the object
      first and records its row just after, so a brand-new object without a row is not yet an orphan.
    - remove_duplicates: delete the identical extra versions our own retried writes left (they carry a `write-id`
      and repeat a recorded version's bytes; `S3Storage.duplicate_versions`), once `duplicate_grace_s` old.
    """

    stuck_after_s: int = 3 * 3600
    stuck_policy: str = "fail"
    max_requeues: int = 1
    fix_queue: bool = True
    temp_max_age_days: int = TEMP_EXPIRATION_DAYS
    temp_grace_days: int = 2
    retention_days: int | None = 365
    verify_checksums: bool = True
    head_concurrency: int = 16
    list_page_size: int = 1000
    db_fetch_size: int = 2000
    settle_s: int = 600
    remove_duplicates: bool = True
    duplicate_grace_s: int = int(UNRECORDED_TWIN_GRACE.total_seconds())

    def __post_init__(self):
        if self.stuck_policy not in STUCK_POLICIES:
            raise ValueError(f"stuck policy {self.stuck_policy!r}: expected one of {'|'.join(STUCK_POLICIES)}")
        for name in ("stuck_after_s", "temp_max_age_days", "head_concurrency", "list_page_size", "db_fetch_size"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)!r}")
        if min(self.max_requeues, self.temp_grace_days, self.settle_s, self.duplicate_grace_s) < 0:
            raise ValueError("max_requeues, temp_grace_days, settle_s and duplicate_grace_s must not be negative")
        if self.retention_days is not None and self.retention_days <= 0:
            raise ValueError(f"retention_days must be positive or None, got {self.retention_days!r}")
