"""The legacy naming rules: ledger text form of raw paths, slugs, the scene prefix trap, upload names."""

from hypothesis import given
from hypothesis import strategies as st

from t2m_pipeline.migration.legacy_paths import (
    code_version,
    is_failed_plan,
    media_version,
    parse_upload_name,
    path_bytes,
    path_text,
    scene_folder_number,
    slugify,
)


@given(st.binary(min_size=1, max_size=200).filter(lambda b: b"\x00" not in b))
def test_path_text_is_reversible_and_printable(raw):
    text = path_text(raw)
    assert path_bytes(text) == raw
    text.encode("utf-8")  # always valid UTF-8 (no lone surrogates)...
    assert not any(ord(c) < 0x20 or c == "\x7f" for c in text)  # ...and no control characters


def test_path_text_escapes_bytes_that_are_not_utf8_and_percent():
    assert path_text(b"output/caf\xe9/a%b.txt") == "output/caf%E9/a%25b.txt"
    assert path_text("output/caf\u00e9/x\x01.txt".encode()) == "output/caf\u00e9/x%01.txt"


def test_slug_rule_and_scene_prefix_trap():
    assert slugify("Pythagorean Theorem") == "pythagorean_theorem"
    assert slugify("C++ & Rust: 2 langs!") == "c_rust_2_langs_"
    assert scene_folder_number("scene1") == 1 and scene_folder_number("scene10") == 10
    assert scene_folder_number("scene01") is None and scene_folder_number("scene1x") is None
    assert code_version("s", 1, "s_scene1_v3.py") == 3
    assert code_version("s", 1, "s_scene10_v3.py") is None  # scene1 is a prefix of scene10: exact match only
    assert media_version("s", "s_scene10_v2") == (10, 2) and media_version("s", "t_scene1_v1") is None


def test_failed_plan_and_upload_names():
    assert is_failed_plan(b"# Scene 3 - Error: refused") and not is_failed_plan(b"# Scene 3\nplan")
    parsed = parse_upload_name("user_2abc_20240105_101010_deadbeef.png")
    assert (parsed.clerk_user_id, parsed.file_id, parsed.ext) == ("user_2abc", "user_2abc_20240105_101010_deadbeef", ".png")
    assert parse_upload_name("weird name.png") is None
    assert parse_upload_name("user x_20240105_101010_deadbeef.png") is None  # not a Clerk id


@given(st.binary(max_size=64) | st.text(max_size=64).map(lambda t: t.encode("utf-8", "surrogatepass")))
def test_the_fast_path_of_path_text_is_the_escaping_path_where_it_applies(raw):
    from t2m_pipeline.migration.legacy_paths import _escaped_path_text

    assert path_text(raw) == _escaped_path_text(raw)
