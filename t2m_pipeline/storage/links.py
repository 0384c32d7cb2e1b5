"""Links a person can open for an object: the S3 console on AWS, the object on an S3-compatible endpoint."""

from __future__ import annotations

from urllib.parse import quote, urlencode

from t2m_pipeline.config import Settings


def object_url(settings: Settings, bucket: str, key: str, version_id: str | None = None) -> str:
    """The AWS console's page of the object (sign-in required), or its URL on the local endpoint in development."""
    if settings.endpoint_url:
        url = f"{settings.endpoint_url.rstrip('/')}/{bucket}/{quote(key)}"
        return url + (f"?{urlencode({'versionId': version_id})}" if version_id else "")
    query = {"region": settings.region, "bucketType": "general", "prefix": key}
    if version_id:
        query["versionId"] = version_id
    return f"https://{settings.region}.console.aws.amazon.com/s3/object/{quote(bucket)}?{urlencode(query)}"
