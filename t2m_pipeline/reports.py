"""Reports people would rather look at than read: migration, verify and audit results as pandas tables.

Built from what the platform already recorded (the migration ledger, `file_metadata`, users and jobs; the verify
result; an audit's findings summary), grouped the way a data engineer asks (per topic, user and outcome). The Dagster
layer shows them as table metadata; a migration batch's report is also a CSV in S3 (`storage.layout.report_key`).
Plain pandas in, plain pandas out: nothing here knows Dagster.
"""

from __future__ import annotations

import io
import uuid

from typing import TYPE_CHECKING

from sqlalchemy import text
from sqlalchemy.engine import Connection

if TYPE_CHECKING:  # pandas is imported where a report is built: every run worker loads this module, few build one
    import pandas as pd

UNATTRIBUTED = "(unattributed)"
NO_TOPIC = "(none)"

# One row per ledger entry of a batch: what it was, where it went, whose it is.
_BATCH_FILES_SQL = text(
    """
    SELECT l.legacy_path, l.partition_key, l.outcome, coalesce(l.size, 0) AS size_bytes, l.bucket, l.key,
           coalesce(nullif(u.email, ''), u.clerk_user_id, CAST(fm.user_id AS text)) AS user_label,
           left(j.topic, 200) AS job_topic, CAST(fm.job_id AS text) AS job_id
    FROM migration_ledger l
    LEFT JOIN file_metadata fm ON fm.id = l.file_metadata_id
    LEFT JOIN users u ON u.id = fm.user_id
    LEFT JOIN jobs j ON j.id = fm.job_id
    WHERE l.batch_id = :batch_id
    ORDER BY l.partition_key, l.legacy_path
    """
)
FILE_COLUMNS = ["legacy_path", "partition", "topic", "user", "outcome", "size_bytes", "bucket", "key", "job_id"]
SUMMARY_COLUMNS = ["topic", "user", "outcome", "files", "bytes"]


def _topic(partition_key: str | None, job_topic: str | None) -> str:
    """The job's topic when the file has one, else the legacy folder it came from (`topic/{slug}`, `uploads/...`)."""
    if job_topic:
        return job_topic
    return partition_key or NO_TOPIC


def migration_files(conn: Connection, batch_id: uuid.UUID | str) -> pd.DataFrame:
    """Every file (and copy) a migration batch recorded, one row each."""
    import pandas as pd

    rows = conn.execute(_BATCH_FILES_SQL, {"batch_id": str(batch_id)}).mappings().all()
    frame = pd.DataFrame(
        [
            {
                "legacy_path": r["legacy_path"],
                "partition": r["partition_key"] or "",
                "topic": _topic(r["partition_key"], r["job_topic"]),
                "user": r["user_label"] or UNATTRIBUTED,
                "outcome": r["outcome"],
                "size_bytes": int(r["size_bytes"]),
                "bucket": r["bucket"] or "",
                "key": r["key"] or "",
                "job_id": r["job_id"] or "",
            }
            for r in rows
        ],
        columns=FILE_COLUMNS,
    )
    return frame


def summarize(files: pd.DataFrame) -> pd.DataFrame:
    """Files and bytes per topic, user and outcome: the table a person reads first."""
    import pandas as pd

    if files.empty:
        return pd.DataFrame(columns=SUMMARY_COLUMNS)
    grouped = files.groupby(["topic", "user", "outcome"], sort=True).agg(
        files=("legacy_path", "size"), bytes=("size_bytes", "sum")
    )
    return grouped.reset_index()[SUMMARY_COLUMNS]


def verify_table(result: dict) -> pd.DataFrame:
    """A verify result per partition: counts and whether it passed."""
    import pandas as pd

    rows = [
        {
            "partition": key,
            "passed": bool(part["ok"]),
            "files": part["files"],
            "ledger_rows": part["ledger_rows"],
            "objects_checked": part["objects_checked"],
            "copies": part["copies"],
            "unattributed": part["unattributed"],
            "problems": part["problem_count"],
        }
        for key, part in sorted(result.get("by_partition", {}).items())
    ]
    return pd.DataFrame(rows, columns=["partition", "passed", "files", "ledger_rows", "objects_checked", "copies",
                                       "unattributed", "problems"])


def problems_table(problems: list[dict]) -> pd.DataFrame:
    """Verify problems counted by what is wrong (the list itself is bounded; the counts are not)."""
    import pandas as pd

    frame = pd.DataFrame(problems, columns=["legacy_path", "partition", "problem"])
    if frame.empty:
        return pd.DataFrame(columns=["problem", "files"])
    return frame.groupby("problem").size().rename("files").reset_index().sort_values("files", ascending=False)


def findings_table(by_check: dict[str, dict[str, int]]) -> pd.DataFrame:
    """An audit's findings per check and severity."""
    import pandas as pd

    rows = [
        {"check": check, "severity": severity, "findings": count}
        for check, severities in sorted(by_check.items())
        for severity, count in sorted(severities.items())
    ]
    return pd.DataFrame(rows, columns=["check", "severity", "findings"])


# A cell a spreadsheet would run as a formula (legacy file names and topics are anyone's text): OWASP's CSV injection.
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def _inert(value):
    return "'" + value if isinstance(value, str) and value.startswith(_FORMULA_START) else value


def to_csv(frame: pd.DataFrame, *, neutralize_formulas: bool = True) -> bytes:
    """The frame as UTF-8 CSV; text cells that would start a formula get a leading `'` (off only for the control)."""
    import pandas as pd

    if neutralize_formulas:
        frame = frame.apply(lambda column: column.map(_inert) if pd.api.types.is_string_dtype(column) else column)
    buffer = io.StringIO()
    frame.to_csv(buffer, index=False)
    return buffer.getvalue().encode("utf-8")
