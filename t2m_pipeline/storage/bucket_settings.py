"""The declared settings of the four buckets: the one source that bootstrap, Terraform tests and audits compare to.

Each function returns the exact request shape boto3 takes (and `get_*` returns), so bootstrap applies it verbatim
and audits compare it without translation.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from t2m_pipeline.config import BUCKET_KINDS, Settings

TEMP_EXPIRATION_DAYS = 7
ABORT_INCOMPLETE_MULTIPART_DAYS = 1
VIDEOS_INTELLIGENT_TIERING_DAYS = 30  # Terraform only: S3-compatible endpoints have no storage classes.


@dataclass(frozen=True)
class BucketSpec:
    """Everything declared about one bucket."""

    kind: str
    name: str
    versioning: str
    sse_algorithm: str
    kms_key_id: str | None
    public_access_block: dict
    lifecycle_rules: tuple[dict, ...]
    policy: dict

    def encryption_configuration(self) -> dict:
        default: dict = {"SSEAlgorithm": self.sse_algorithm}
        if self.sse_algorithm == "aws:kms" and self.kms_key_id:
            default["KMSMasterKeyID"] = self.kms_key_id
        rule: dict = {"ApplyServerSideEncryptionByDefault": default}
        if self.sse_algorithm == "aws:kms":
            rule["BucketKeyEnabled"] = True
        return {"Rules": [rule]}

    def lifecycle_configuration(self) -> dict:
        return {"Rules": [dict(rule) for rule in self.lifecycle_rules]}

    def policy_json(self) -> str:
        return json.dumps(self.policy, sort_keys=True)


PUBLIC_ACCESS_BLOCK = {
    "BlockPublicAcls": True,
    "IgnorePublicAcls": True,
    "BlockPublicPolicy": True,
    "RestrictPublicBuckets": True,
}


def tls_only_policy(bucket: str) -> dict:
    """The standard policy denying every request that does not arrive over TLS (exactly as on AWS).

    moto 5.2 evaluates only `StringEquals` conditions and applies a conditional Deny to every request, which would
    lock the local endpoint. We keep this policy unchanged and stored on the bucket (doctor and audits read it back
    and compare it); the local endpoint (`devtools.local_s3`) instead teaches moto to skip statements
    whose conditions it cannot evaluate, while still enforcing unconditional ones.
    """
    return {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Sid": "DenyInsecureTransport",
                "Effect": "Deny",
                "Principal": "*",
                "Action": "s3:*",
                "Resource": [f"arn:aws:s3:::{bucket}", f"arn:aws:s3:::{bucket}/*"],
                "Condition": {"Bool": {"aws:SecureTransport": "false"}},
            }
        ],
    }


def lifecycle_rules(kind: str, noncurrent_version_days: int) -> tuple[dict, ...]:
    rules: list[dict] = [
        {
            "ID": "abort-incomplete-multipart",
            "Status": "Enabled",
            "Filter": {"Prefix": ""},
            "AbortIncompleteMultipartUpload": {"DaysAfterInitiation": ABORT_INCOMPLETE_MULTIPART_DAYS},
        },
        {
            "ID": "expire-noncurrent-versions",
            "Status": "Enabled",
            "Filter": {"Prefix": ""},
            "NoncurrentVersionExpiration": {"NoncurrentDays": noncurrent_version_days},
        },
    ]
    if kind == "temp":
        rules.append(
            {
                "ID": "expire-temp-objects",
                "Status": "Enabled",
                "Filter": {"Prefix": ""},
                "Expiration": {"Days": TEMP_EXPIRATION_DAYS},
            }
        )
    return tuple(rules)


def bucket_spec(settings: Settings, kind: str) -> BucketSpec:
    name = settings.bucket(kind)  # type: ignore[arg-type]
    return BucketSpec(
        kind=kind,
        name=name,
        versioning="Enabled",
        sse_algorithm=settings.sse_algorithm,
        kms_key_id=settings.kms_key_id,
        public_access_block=dict(PUBLIC_ACCESS_BLOCK),
        lifecycle_rules=lifecycle_rules(kind, settings.noncurrent_version_days),
        policy=tls_only_policy(name),
    )


def declared_buckets(settings: Settings) -> list[BucketSpec]:
    return [bucket_spec(settings, kind) for kind in BUCKET_KINDS]
