"""Security properties of the foundation, over arbitrary input (hypothesis).

- A presigned URL is issued only to the owner of the exact version it points at; anyone else gets NotOwnerError
  and nothing is signed.
- Keys built from hostile names stay inside their prefix: one segment under the right user, job and folder.
"""

import posixpath
import uuid
from urllib.parse import parse_qs, unquote, urlsplit

import pytest
from hypothesis import HealthCheck, given, settings as hsettings
from hypothesis import strategies as st

from t2m_pipeline.storage import layout
from t2m_pipeline.storage.errors import NotOwnerError, ObjectNotFoundError
from t2m_pipeline.storage.s3 import ObjectOwner, S3Storage

EXAMPLES = hsettings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@pytest.fixture(scope="module")
def world(settings, engine, buckets):
    """Three users' objects; one key whose newer version was recorded for another user (a mis-attributed write)."""
    from t2m_pipeline.db.engine import in_transaction
    from t2m_pipeline.db.users import ensure_user

    storage = S3Storage(settings, engine)
    users = [in_transaction(engine, lambda c: ensure_user(c, f"user_sec_{uuid.uuid4().hex[:12]}")) for _ in range(3)]
    objects = []  # (bucket, key, version_id, owner)
    for n, user in enumerate(users):
        job = uuid.uuid4()
        for bucket, key, ctype in (
            (buckets["videos"], layout.scene_video_key(user, job, 1), "video/mp4"),
            (buckets["code"], layout.scene_code_key(user, job, 1), "text/x-python"),
            (buckets["thumbnails"], layout.thumbnail_key(user, job, 1), "image/jpeg"),
        ):
            stored = storage.put_bytes(bucket, key, f"{n}:{key}".encode(), owner=ObjectOwner(user, "x"), content_type=ctype)
            objects.append((bucket, key, stored.version_id, user))
    shared_bucket, shared_key, _, first_owner = objects[0]
    newer = storage.put_bytes(shared_bucket, shared_key, b"newer", owner=ObjectOwner(users[1], "x"), content_type="video/mp4")
    objects.append((shared_bucket, shared_key, newer.version_id, users[1]))
    signed: list[str] = []
    storage.client.meta.events.register("before-sign.s3.GetObject", lambda **kw: signed.append("signed"))
    return storage, users, objects, signed


def requesters(users):
    """Real users, case and format variants of their ids, and arbitrary text."""
    real = st.sampled_from(users)
    variants = real.flatmap(
        lambda u: st.sampled_from([str(u).upper(), u.hex, "{" + str(u) + "}", f"urn:uuid:{u}", f" {u}", f"{u}\x00"])
    )
    return st.one_of(real, real.map(str), variants, st.uuids(), st.text(max_size=80))


@given(data=st.data())
@EXAMPLES
def test_a_presigned_url_is_issued_only_to_the_owner_of_that_version(world, data):
    storage, users, objects, signed = world
    bucket, key, version_id, owner = data.draw(st.sampled_from(objects))
    ask_for_version = data.draw(st.booleans())
    requester = data.draw(requesters(users))
    before = len(signed)
    try:
        url = storage.url_for_owner(requester, bucket, key, version_id=version_id if ask_for_version else None)
    except (NotOwnerError, ObjectNotFoundError):
        assert len(signed) == before  # refused before anything was signed
        if ask_for_version:
            assert str(requester) != str(owner)
        return
    # issued: the requester owns the exact version the URL reads
    parts = urlsplit(url)
    assert unquote(parts.path) == f"/{bucket}/{key}"
    url_version = parse_qs(parts.query)["versionId"][0]
    owner_of = {(b, k, v): o for b, k, v, o in objects}
    assert str(owner_of[(bucket, key, url_version)]) == str(requester)
    if ask_for_version:
        assert url_version == version_id


def test_the_newest_row_decides_without_a_version(world):
    """The mis-attributed newer version: its recorded owner may read it; the first owner only by naming their version."""
    storage, users, objects, _ = world
    bucket, key, first_version, first_owner = objects[0]
    with pytest.raises(NotOwnerError):
        storage.url_for_owner(first_owner, bucket, key)
    assert f"versionId={first_version}" in storage.url_for_owner(first_owner, bucket, key, version_id=first_version)
    assert "versionId=" in storage.url_for_owner(users[1], bucket, key)


def test_no_url_for_an_object_without_a_row(world, buckets):
    storage, users, _, signed = world
    before = len(signed)
    with pytest.raises(ObjectNotFoundError):
        storage.url_for_owner(users[0], buckets["videos"], layout.scene_video_key(users[0], uuid.uuid4(), 9))
    assert len(signed) == before


hostile_names = st.one_of(
    st.text(max_size=300),
    st.binary(max_size=300),
    st.lists(st.sampled_from(["..", ".", "/", "\\", "%2e%2e%2f", "\x00", "\u2215", "\uff0e\uff0e\uff0f", "~", "users",
                              "..\\..\\", "\u202e", "con", " ", "a"]), max_size=12).map("".join),
)


@given(user=st.uuids(), other=st.uuids(), job=st.uuids(), scene=st.integers(1, 999), name=hostile_names,
       parts=st.lists(hostile_names, min_size=1, max_size=6))
@hsettings(max_examples=300, deadline=None)
def test_keys_built_from_hostile_names_stay_inside_their_prefix(user, other, job, scene, name, parts):
    base = f"users/{user}/jobs/{job}"
    built = {
        f"{base}/code/scene_{scene:03d}/plans/": layout.scene_plan_key(user, job, scene, name),
        f"{base}/code/scene_{scene:03d}/logs/": layout.scene_log_key(user, job, scene, name),
        f"{base}/code/plans/": layout.job_plan_key(user, job, name),
    }
    for prefix, key in built.items():
        rest = key[len(prefix):]
        assert key.startswith(prefix) and rest == layout.sanitize_name(name)
        assert "/" not in rest and "\\" not in rest and rest not in (".", "..")
        assert posixpath.normpath(key) == key  # resolving the key changes nothing: no traversal
        if other != user:
            assert not key.startswith(f"users/{other}/")
    legacy = layout.unattributed_key(name, parts)
    segments = legacy.split("/")
    assert segments[:2] == ["legacy", "unattributed"] and len(segments) == 2 + 1 + len(parts)
    assert posixpath.normpath(legacy) == legacy
