"""Bucket settings against their declarations (storage/bucket_settings.py): drift is a finding per bucket setting."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from t2m_pipeline.audits.findings import CheckScope, Finding
from t2m_pipeline.config import Settings
from t2m_pipeline.storage.bootstrap import diff_bucket_settings, read_bucket_settings
from t2m_pipeline.storage.bucket_settings import declared_buckets
from t2m_pipeline.storage.errors import BucketNotFoundError, StorageError

CHECK = "bucket_settings"
# Lifecycle drift costs money or keeps scratch too long; every other setting guards data or access.
WARNING_SETTINGS = frozenset({"lifecycle_rules"})
FIX_HINT = "re-apply the declared settings: `t2m infra bootstrap` on an S3-compatible endpoint, `terraform apply` on AWS"


def bucket_subject(bucket: str, setting: str) -> str:
    return f"s3://{bucket}#{setting}"


@dataclass
class BucketSettingsAudit:
    """Per bucket: the settings that differ ({"declared": ..., "live": ...}), or why it could not be read."""

    scope: CheckScope
    drift: dict[str, dict[str, Any]] = field(default_factory=dict)
    unreadable: dict[str, str] = field(default_factory=dict)
    findings: list[Finding] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.drift and not self.unreadable


def audit_bucket_settings(settings: Settings, client: Any) -> BucketSettingsAudit:
    specs = declared_buckets(settings)
    audit = BucketSettingsAudit(CheckScope((CHECK,), tuple(f"s3://{spec.name}#" for spec in specs)))
    for spec in specs:
        try:
            drift = diff_bucket_settings(spec, read_bucket_settings(client, spec.name))
        except BucketNotFoundError as exc:
            audit.unreadable[spec.name] = str(exc)
            audit.findings.append(
                Finding(CHECK, "ERROR", bucket_subject(spec.name, "exists"), {"kind": spec.kind, "error": str(exc), "fix": FIX_HINT})
            )
            continue
        except StorageError as exc:
            audit.unreadable[spec.name] = str(exc)
            audit.findings.append(Finding(CHECK, "ERROR", bucket_subject(spec.name, "readable"), {"kind": spec.kind, "error": str(exc)}))
            continue
        if drift:
            audit.drift[spec.name] = drift
        for setting, difference in sorted(drift.items()):
            severity = "WARNING" if setting in WARNING_SETTINGS else "ERROR"
            detail = {"kind": spec.kind, "setting": setting, **difference, "fix": FIX_HINT}
            audit.findings.append(Finding(CHECK, severity, bucket_subject(spec.name, setting), detail))
    return audit
