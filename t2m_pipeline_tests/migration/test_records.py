"""Normalising legacy job records: timestamps, enums, ids, both storage forms."""

import json
import uuid
from datetime import datetime, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from t2m_pipeline.migration.records import BadRecord, decode_job_hash, decode_json, enum, legacy_time, normalise_job, parse_time


def test_timestamps_naive_utc_with_and_without_microseconds_iso_and_zones():
    utc = timezone.utc
    assert parse_time("2024-01-02 03:04:05", "t") == datetime(2024, 1, 2, 3, 4, 5, tzinfo=utc)
    assert parse_time("2024-01-02 03:04:05.000123", "t") == datetime(2024, 1, 2, 3, 4, 5, 123, tzinfo=utc)
    assert parse_time("2024-01-02T03:04:05Z", "t") == datetime(2024, 1, 2, 3, 4, 5, tzinfo=utc)
    assert parse_time("2024-01-02T05:04:05+02:00", "t") == datetime(2024, 1, 2, 3, 4, 5, tzinfo=utc)
    for bad in ("yesterday", 12, "2024-13-01 00:00:00"):
        with pytest.raises(BadRecord, match="bad timestamp"):
            parse_time(bad, "t")
    assert legacy_time(datetime(2024, 1, 2, 3, 4, 5, tzinfo=utc)) == "2024-01-02 03:04:05"
    assert legacy_time(datetime(2024, 1, 2, 3, 4, 5, 7, tzinfo=utc)) == "2024-01-02 03:04:05.000007"


def test_enums_accept_python_enum_strings_and_refuse_unknown_values():
    allowed = ("queued", "processing")
    assert enum("JobStatus.QUEUED", "status", allowed) == "queued"
    assert enum("PROCESSING", "status", allowed) == "processing"
    with pytest.raises(BadRecord, match="unknown status value"):
        enum("JobStatus.EXPLODED", "status", allowed)


def test_hash_form_and_required_fields():
    job_id = str(uuid.uuid4())
    record = {"id": job_id, "user_id": "user_a", "status": "queued", "configuration": {"topic": "T"}, "created_at": "2024-01-01 00:00:00"}
    fields = decode_job_hash({k.encode(): json.dumps(v).encode() for k, v in record.items()})
    assert normalise_job(job_id, fields) == normalise_job(job_id, record)
    assert normalise_job(job_id, record).priority == "normal"
    with pytest.raises(BadRecord, match="does not match the key"):
        normalise_job(str(uuid.uuid4()), record)
    with pytest.raises(BadRecord, match="configuration.topic"):
        normalise_job(job_id, {**record, "configuration": {"context": "no topic"}})
    with pytest.raises(BadRecord, match="bad Clerk user id"):
        normalise_job(job_id, {**record, "user_id": "user with spaces"})


_JSON_LEAF = st.none() | st.booleans() | st.integers() | st.text(alphabet=st.characters(codec=None), max_size=8)
_JSON = st.recursive(_JSON_LEAF, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=4), inner, max_size=4), max_leaves=30)


def _outcome(raw: bytes):
    try:
        return ("value", decode_json(raw, "x"))
    except BadRecord as exc:
        return ("refused", str(exc))


@given(value=_JSON, ascii_only=st.booleans(), deep=st.integers(0, 260))
def test_skipping_the_storable_walk_never_changes_what_is_refused(value, ascii_only, deep):
    """NUL, lone surrogates (as escapes or raw), deep nesting: the fast path decides exactly as the full walk does."""
    from t2m_pipeline.migration import records

    text = "[" * deep + json.dumps(value, ensure_ascii=ascii_only) + "]" * deep
    raw = text.encode("utf-8", "surrogatepass")
    fast = _outcome(raw)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(records, "_may_hide_unstorable", lambda text: True)
        exact = _outcome(raw)
    assert fast == exact


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(min_value=-(2**80), max_value=2**80)
    | st.floats(allow_nan=False, allow_infinity=False) | st.text(),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(), inner, max_size=5),
    max_leaves=30,
)
EDGES = ['{"a":1e400}', "NaN", "[Infinity]", '"\\ud800"', '"\\u0000"', "\ufeff{}", "123456789012345678901234567890",
         "-9223372036854775809", "18446744073709551615", "1.7976931348623159e308", "[" * 250 + "]" * 250, "[1,]", "",
         '{"a":1,"a":2}', "4.9e-324", "-0", '"a\x01b"', " {\"x\" : [1.5e-320, -0.0]} "]


def _either(loads, text):
    from t2m_pipeline.migration.records import BadRecord

    try:
        return "value", loads(text, "x")
    except BadRecord:
        return "refused", None


@given(JSON_VALUES, st.booleans())
def test_the_fast_json_reader_reads_what_the_exact_one_reads(value, ascii_only):
    from t2m_pipeline.migration.records import _loads, _loads_exact

    text = json.dumps(value, ensure_ascii=ascii_only)
    assert _either(_loads, text) == _either(_loads_exact, text)


def test_the_fast_json_reader_on_the_edges():
    from t2m_pipeline.migration.records import _loads, _loads_exact

    for text in EDGES:
        fast, exact = _either(_loads, text), _either(_loads_exact, text)
        assert fast == exact and type(fast[1]) is type(exact[1]), text
