import uuid

import pytest

from t2m_pipeline.audits.findings import CheckScope, Finding, open_counts, open_findings, record_findings
from t2m_pipeline_tests.audits.conftest import findings_rows


@pytest.fixture
def prefix():
    return f"test://{uuid.uuid4().hex}/"


def test_seen_again_is_refreshed_not_duplicated_and_unseen_is_resolved(engine, prefix):
    scope = CheckScope(("check_a", "check_b"), (prefix,))
    one, two = prefix + "one", prefix + "two"
    first = record_findings(engine, scope, [Finding("check_a", "ERROR", one, {"n": 1}), Finding("check_b", "WARNING", two)])
    assert (first.new, first.resolved, first.open_errors) == (2, 0, 1)
    [row] = findings_rows(engine, one)
    assert row["resolved_at"] is None and row["detail"] == {"n": 1}

    second = record_findings(engine, scope, [Finding("check_a", "ERROR", one, {"n": 2})])
    assert (second.new, second.resolved) == (0, 1)
    [row_again] = findings_rows(engine, one)
    assert row_again["id"] == row["id"] and row_again["first_seen_at"] == row["first_seen_at"]
    assert row_again["last_seen_at"] > row["last_seen_at"] and row_again["detail"] == {"n": 2}
    [gone] = findings_rows(engine, two)
    assert gone["resolved_at"] is not None

    record_findings(engine, scope, [])
    assert all(r["resolved_at"] is not None for r in findings_rows(engine, one))

    # Seen once more after being resolved: a new open finding, the old one stays as history.
    record_findings(engine, scope, [Finding("check_a", "ERROR", one)])
    rows = findings_rows(engine, one)
    assert len(rows) == 2 and rows[0]["resolved_at"] is not None and rows[1]["resolved_at"] is None


def test_a_run_resolves_only_inside_its_scope(engine, prefix):
    mine, theirs = prefix + "mine/", prefix + "theirs/"
    record_findings(engine, CheckScope(("check_a",), (theirs,)), [Finding("check_a", "WARNING", theirs + "x")])
    record_findings(engine, CheckScope(("check_a",), (mine,)), [Finding("check_a", "WARNING", mine + "x")])
    record_findings(engine, CheckScope(("check_a",), (mine,)), [])
    assert findings_rows(engine, theirs + "x")[0]["resolved_at"] is None
    assert findings_rows(engine, mine + "x")[0]["resolved_at"] is not None
    # A check the run did not judge keeps its findings open even under the same prefix.
    record_findings(engine, CheckScope(("check_b",), (theirs,)), [])
    assert findings_rows(engine, theirs + "x")[0]["resolved_at"] is None
    assert record_findings(engine, CheckScope(("check_a",), ()), []).resolved == 0  # judged nothing, resolves nothing
    assert findings_rows(engine, theirs + "x")[0]["resolved_at"] is None
    with pytest.raises(ValueError, match="outside the run's scope"):
        record_findings(engine, CheckScope(("check_a",), (mine,)), [Finding("check_a", "INFO", theirs + "y")])


def test_a_fixed_finding_is_recorded_resolved_and_closes_an_open_one(engine, prefix):
    scope = CheckScope(("check_a",), (prefix,))
    subject = prefix + "stuck"
    record_findings(engine, scope, [Finding("check_a", "WARNING", subject, {"action": "reported"})])
    summary = record_findings(engine, scope, [Finding("check_a", "WARNING", subject, {"action": "fixed"}, fixed=True)])
    assert summary.fixed == 1 and summary.open_errors == 0
    [row] = findings_rows(engine, subject)
    assert row["resolved_at"] is not None and row["detail"] == {"action": "fixed"}
    assert open_findings(engine, scope) == []


def test_many_findings_are_written_in_batches_with_a_bounded_sample(engine, prefix):
    scope = CheckScope(("check_a",), (prefix,))
    findings = (Finding("check_a", "INFO" if i % 2 else "ERROR", f"{prefix}{i:05d}") for i in range(1_234))
    summary = record_findings(engine, scope, findings)
    assert summary.total == 1_234 and summary.new == 1_234 and summary.open_errors == 617
    assert len(summary.sample) == 20 and summary.sample[0]["severity"] == "ERROR"
    listed = open_findings(engine, scope)
    assert len(listed) == 1_234 and listed[0]["severity"] == "ERROR" and listed[-1]["severity"] == "INFO"


def test_open_counts_are_per_check_and_severity_inside_the_scope(engine, prefix):
    scope = CheckScope(("check_a", "check_b"), (prefix + "mine/",))
    record_findings(engine, CheckScope(("check_a",), (prefix + "theirs/",)), [Finding("check_a", "ERROR", prefix + "theirs/x")])
    findings = [
        Finding("check_a", "ERROR", prefix + "mine/1"),
        Finding("check_a", "ERROR", prefix + "mine/2"),
        Finding("check_b", "WARNING", prefix + "mine/3"),
        Finding("check_b", "INFO", prefix + "mine/4", fixed=True),
    ]
    record_findings(engine, scope, findings)
    assert open_counts(engine, scope) == {("check_a", "ERROR"): 2, ("check_b", "WARNING"): 1}
    record_findings(engine, scope, [])
    assert open_counts(engine, scope) == {}


def test_bad_severity_is_refused():
    with pytest.raises(ValueError, match="severity"):
        Finding("check_a", "FATAL", "x")
