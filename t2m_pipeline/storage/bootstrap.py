"""Create the environment's buckets with their declared settings, read settings back, and diff the two.

`bootstrap` is idempotent: it (re)applies every declared setting, so running it twice leaves the same state.
"""

from __future__ import annotations

import json
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from t2m_pipeline.storage.bucket_settings import BucketSpec
from t2m_pipeline.storage.errors import map_error


def bootstrap_bucket(client: Any, spec: BucketSpec, region: str) -> bool:
    """Create (when missing) and configure one bucket; returns True when it was created."""
    created = False
    try:
        try:
            client.head_bucket(Bucket=spec.name)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") not in ("404", "NoSuchBucket", "NotFound"):
                raise
            args: dict[str, Any] = {"Bucket": spec.name}
            if region != "us-east-1":
                args["CreateBucketConfiguration"] = {"LocationConstraint": region}
            try:
                client.create_bucket(**args)
                created = True
            except ClientError as race:
                if race.response.get("Error", {}).get("Code") != "BucketAlreadyOwnedByYou":
                    raise
        client.put_bucket_versioning(Bucket=spec.name, VersioningConfiguration={"Status": spec.versioning})
        client.put_bucket_encryption(
            Bucket=spec.name, ServerSideEncryptionConfiguration=spec.encryption_configuration()
        )
        client.put_public_access_block(Bucket=spec.name, PublicAccessBlockConfiguration=spec.public_access_block)
        client.put_bucket_lifecycle_configuration(
            Bucket=spec.name, LifecycleConfiguration=spec.lifecycle_configuration()
        )
        client.put_bucket_policy(Bucket=spec.name, Policy=spec.policy_json())
    except (ClientError, BotoCoreError) as exc:
        raise map_error(exc, spec.name) from exc
    return created


def _absent(exc: ClientError) -> bool:
    code = exc.response.get("Error", {}).get("Code", "")
    return code.startswith("NoSuch") or code in ("ServerSideEncryptionConfigurationNotFoundError", "404")


def read_bucket_settings(client: Any, bucket: str) -> dict[str, Any]:
    """The bucket's live settings in the declared shapes (None where a setting is absent)."""

    def fetch(call, extract):
        try:
            return extract(call(Bucket=bucket))
        except ClientError as exc:
            if _absent(exc) and exc.response.get("Error", {}).get("Code") != "NoSuchBucket":
                return None
            raise map_error(exc, bucket) from exc
        except BotoCoreError as exc:
            raise map_error(exc, bucket) from exc

    return {
        "versioning": fetch(client.get_bucket_versioning, lambda r: r.get("Status")),
        "encryption": fetch(
            client.get_bucket_encryption,
            lambda r: [
                {k: v for k, v in rule.items() if k in ("ApplyServerSideEncryptionByDefault", "BucketKeyEnabled")}
                for rule in r["ServerSideEncryptionConfiguration"]["Rules"]
            ],
        ),
        "public_access_block": fetch(client.get_public_access_block, lambda r: r["PublicAccessBlockConfiguration"]),
        "lifecycle_rules": fetch(client.get_bucket_lifecycle_configuration, lambda r: r["Rules"]),
        "policy": fetch(client.get_bucket_policy, lambda r: json.loads(r["Policy"])),
    }


def _normalise_rules(rules: list[dict] | None) -> list[dict]:
    return sorted((json.loads(json.dumps(rule, sort_keys=True)) for rule in rules or []), key=lambda r: r.get("ID", ""))


def _normalise_encryption(rules: list[dict] | None) -> list[dict]:
    out = []
    for rule in rules or []:
        rule = dict(rule)
        if not rule.get("BucketKeyEnabled"):
            rule.pop("BucketKeyEnabled", None)
        out.append(rule)
    return out


def diff_bucket_settings(spec: BucketSpec, live: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Setting name -> {"declared": ..., "live": ...} for every setting that differs; empty when all agree."""
    declared = {
        "versioning": spec.versioning,
        "encryption": _normalise_encryption(spec.encryption_configuration()["Rules"]),
        "public_access_block": spec.public_access_block,
        "lifecycle_rules": _normalise_rules(list(spec.lifecycle_rules)),
        "policy": spec.policy,
    }
    actual = dict(live)
    actual["encryption"] = _normalise_encryption(live.get("encryption"))
    actual["lifecycle_rules"] = _normalise_rules(live.get("lifecycle_rules"))
    return {
        name: {"declared": declared[name], "live": actual.get(name)}
        for name in declared
        if json.dumps(declared[name], sort_keys=True) != json.dumps(actual.get(name), sort_keys=True)
    }
