import uuid

import pytest
from hypothesis import given
from hypothesis import strategies as st

from t2m_pipeline import partition_keys as pk


@given(user=st.uuids(), job=st.uuids(), scene=st.integers(1, 999))
def test_scene_keys_round_trip(user, job, scene):
    key = pk.encode_scene_key(user, job, scene)
    assert pk.decode_scene_key(key) == pk.SceneKey(str(user), str(job), scene)
    assert pk.decode_job_key(pk.decode_scene_key(key).job.encode()) == pk.JobKey(str(user), str(job))
    assert all(c in "0123456789abcdef-/" for c in key)


@pytest.mark.parametrize(
    "user,job,scene",
    [("User_2abc", uuid.uuid4(), 1), (uuid.uuid4(), "../x", 1), (uuid.uuid4(), uuid.uuid4(), 0), (uuid.uuid4(), uuid.uuid4(), 1000),
     ("{7bb66505-3072-47b2-baff-b73c9c6adb5e}", uuid.uuid4(), 1), (uuid.uuid4(), uuid.uuid4(), True), (None, uuid.uuid4(), 1)],
)
def test_keys_with_forbidden_components_cannot_be_built(user, job, scene):
    with pytest.raises(pk.PartitionKeyError):
        pk.encode_scene_key(user, job, scene)


@given(st.text(max_size=120))
def test_decoding_arbitrary_text_is_a_clear_error_or_a_valid_key(text):
    try:
        key = pk.decode_scene_key(text)
    except pk.PartitionKeyError:
        return
    assert key.encode() == text


def test_uppercase_uuids_are_canonicalised():
    user, job = uuid.uuid4(), uuid.uuid4()
    assert pk.encode_job_key(str(user).upper(), job) == f"{user}/{job}"


@pytest.mark.parametrize("suffix", ["\n", "\r\n", " "])
def test_trailing_whitespace_is_refused(suffix):
    user, job = uuid.uuid4(), uuid.uuid4()
    with pytest.raises(pk.PartitionKeyError):
        pk.encode_job_key(f"{user}{suffix}", job)
    with pytest.raises(pk.PartitionKeyError):
        pk.decode_scene_key(f"{user}/{job}/001{suffix}")
