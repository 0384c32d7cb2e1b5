"""JSON text to and from PostgreSQL's jsonb, fast: orjson where it means what json means (`dumps` writes what
`json.dumps(value, default=str)` writes, about ten times faster: 100,000 legacy jobs write 400,000 documents, and
every migrated file a `file_metadata.metadata`; `loads` reads jsonb's own text as `json.loads` does).

orjson writes the same values except where it refuses what json accepts (an integer beyond 64 bits, a lone
surrogate, a key that is not a string): those documents are written by json, as before. Dates and dataclasses go
through `default=str`, as in json. NaN and the infinities, which orjson would write as null, never reach here: the
decoded records refuse them (`records._loads`), and jsonb cannot hold them.
"""

from __future__ import annotations

import json
import re

import orjson

_OPTIONS = orjson.OPT_PASSTHROUGH_DATETIME | orjson.OPT_PASSTHROUGH_DATACLASS
LONG_INTEGER = re.compile(r"[0-9]{19}")  # orjson reads an integer beyond 64 bits as a float; json reads it exactly
# ([0-9], not \d: JSON's digits are ASCII, and the narrower class scans a document in half the time)


def dumps(value) -> str:
    try:
        return orjson.dumps(value, default=str, option=_OPTIONS).decode()
    except TypeError:  # orjson.JSONEncodeError included
        return json.dumps(value, default=str)


def loads(text: str):
    """jsonb's text (valid JSON, no lone surrogate, no NaN) as `json.loads` reads it; json reads a text with a run of
    19 digits, which may be an integer beyond orjson's 64 bits."""
    if LONG_INTEGER.search(text):
        return json.loads(text)
    return orjson.loads(text)


def recordset(rows: list[dict]) -> str:
    """Rows as one JSON array, for `jsonb_to_recordset(CAST(:rows AS jsonb)) AS t(name type, ...)` (a missing key or
    a null is SQL NULL). A bulk statement's rows encoded in C: psycopg dumps an array parameter element by element in
    Python, and the migration's unnest arrays were a tenth of its client CPU."""
    return dumps(rows)
