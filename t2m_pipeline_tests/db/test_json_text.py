"""`json_text.dumps` writes what `json.dumps(value, default=str)` writes, as JSON values: orjson where it agrees, json
where orjson refuses (an integer beyond 64 bits, a lone surrogate, a key that is not a string)."""

import json
import uuid
from datetime import datetime, timezone

from hypothesis import given, settings
from hypothesis import strategies as st

from t2m_pipeline.db import json_text

SCALARS = (
    st.none() | st.booleans() | st.integers(min_value=-(2**80), max_value=2**80)
    | st.floats(allow_nan=False, allow_infinity=False) | st.text()
    | st.datetimes(timezones=st.just(timezone.utc)) | st.uuids()
)
VALUES = st.recursive(
    SCALARS,
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text() | st.integers(-5, 5), inner, max_size=5),
    max_leaves=25,
)


@settings(max_examples=400, deadline=None)
@given(VALUES)
def test_the_same_json_as_json_dumps(value):
    assert json.loads(json_text.dumps(value)) == json.loads(json.dumps(value, default=str))


def test_what_orjson_refuses_is_written_by_json():
    for value in ({"big": 2**70}, {"s": "\ud800"}, {1: "x"}):
        assert json_text.dumps(value) == json.dumps(value, default=str)
    when = datetime(2024, 1, 1, 10, 0, tzinfo=timezone.utc)
    assert json.loads(json_text.dumps([when, uuid.UUID(int=1)])) == [str(when), str(uuid.UUID(int=1))]


def _typed(value):
    """The value with each number's type, so 1 and 1.0 differ."""
    if isinstance(value, dict):
        return {k: _typed(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_typed(v) for v in value]
    return (type(value).__name__, value)


@settings(max_examples=400, deadline=None)
@given(VALUES, st.booleans())
def test_loads_reads_what_json_loads_reads(value, ascii_only):
    text = json.dumps(value, default=str, ensure_ascii=ascii_only)
    assert _typed(json_text.loads(text)) == _typed(json.loads(text))


def test_loads_on_jsonb_text(migration_db):
    """What PostgreSQL writes for jsonb numbers (no exponent: a tiny float is a long run of zeros)."""
    from sqlalchemy import text

    _, engine = migration_db
    documents = ['{"a": 1.5e-320, "b": 123456789012345678901234567890, "c": 0.1, "d": -0, "e": "\\u00e9\\n"}', "[1e16, 2.50]"]
    with engine.connect() as conn:
        out = conn.execute(text("SELECT CAST(d AS jsonb)::text FROM unnest(CAST(:d AS text[])) d"), {"d": documents}).scalars().all()
    for written in out:
        assert _typed(json_text.loads(written)) == _typed(json.loads(written))
