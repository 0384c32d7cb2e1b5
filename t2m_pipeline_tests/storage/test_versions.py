"""The one version listing: key order across pages with delete markers merged in, exact keys, ids per key."""

import uuid

from t2m_pipeline.storage.versions import iter_versions, key_versions, version_ids_by_key


def test_listing_is_in_key_order_with_markers_and_keys_are_matched_exactly(storage, buckets):
    client, bucket = storage.client, buckets["temp"]
    base = f"temp/versions-{uuid.uuid4().hex[:8]}/"
    for name in ("scene1", "scene10", "scene2"):
        client.put_object(Bucket=bucket, Key=base + name, Body=b"a")
        client.put_object(Bucket=bucket, Key=base + name, Body=b"b")
    client.delete_object(Bucket=bucket, Key=base + "scene10")  # a delete marker between scene10's versions and scene2

    listed = list(iter_versions(client, bucket, base, page_size=2, delete_markers=True))
    assert [v["Key"] for v in listed] == sorted(v["Key"] for v in listed)  # one key-ordered stream across pages
    assert sum(v["IsDeleteMarker"] for v in listed) == 1 and len(listed) == 7
    assert not any(v["IsDeleteMarker"] for v in iter_versions(client, bucket, base))

    assert {v["Key"] for v in key_versions(client, bucket, base + "scene1")} == {base + "scene1"}  # not scene10
    ids = version_ids_by_key(client, {(bucket, base + "scene1"), (bucket, base + "scene2")})
    assert [len(v) for _, v in sorted(ids.items())] == [2, 2]
