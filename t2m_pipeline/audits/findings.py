"""Audit findings and their life in `audit_findings`: seen again -> refreshed, no longer seen -> resolved.

A check streams its findings into `record_findings` together with the scope it judged (its check names and the
subject prefixes it covered, such as one environment's buckets). Findings are upserted in bounded batches, each
marked seen at the run's start time; once the stream is exhausted, every open finding in the scope that this run did
not see is resolved. A run that dies half way resolves nothing, so a crash can never hide a problem. A finding the
audit repaired in the same run (`fixed=True`) is recorded and resolved at once, so the table keeps the history of
what was found and what was done about it.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from itertools import islice
from typing import Any

from sqlalchemy import Engine, and_, case, false, func, or_, select, text, update
from sqlalchemy.dialects.postgresql import insert

from t2m_pipeline.db.engine import in_transaction
from t2m_pipeline.db.models import SEVERITIES, AuditFinding

RECORD_BATCH = 500
SAMPLE_SIZE = 20
_SEVERITY_RANK = {name: rank for rank, name in enumerate(SEVERITIES)}


@dataclass(frozen=True)
class Finding:
    """One thing an audit found wrong. `subject` names it uniquely within its check (an S3 URI, `job/{id}`, ...)."""

    check_name: str
    severity: str
    subject: str
    detail: dict[str, Any] = field(default_factory=dict)
    fixed: bool = False

    def __post_init__(self):
        if self.severity not in SEVERITIES:
            raise ValueError(f"severity {self.severity!r}: expected one of {'|'.join(SEVERITIES)}")

    def as_dict(self) -> dict[str, Any]:
        return {
            "check": self.check_name,
            "severity": self.severity,
            "subject": self.subject,
            "fixed": self.fixed,
            "detail": self.detail,
        }


@dataclass(frozen=True)
class CheckScope:
    """What one run of a check judged: findings of these checks under these subject prefixes (None: all of them).

    Only open findings inside the scope can be resolved by the run, so an audit of one environment's buckets never
    closes a finding about another's, and a run that skipped a bucket leaves that bucket's findings open.
    """

    check_names: tuple[str, ...]
    subject_prefixes: tuple[str, ...] | None = None

    def covers(self, finding: Finding) -> bool:
        return finding.check_name in self.check_names and (
            self.subject_prefixes is None or finding.subject.startswith(self.subject_prefixes)
        )


@dataclass
class RecordSummary:
    """What a recording did, with a bounded sample of the findings (the full list is in the table)."""

    scope: CheckScope
    seen: Counter = field(default_factory=Counter)  # (check, severity) -> count
    unfixed: Counter = field(default_factory=Counter)  # (check, severity) -> findings left open by this run
    fixed: int = 0
    new: int = 0
    resolved: int = 0
    sample: list[dict] = field(default_factory=list)
    open_errors: int = 0

    @property
    def total(self) -> int:
        return sum(self.seen.values())

    def left_open(self, checks: set[str] | None = None, severities: set[str] | None = None) -> int:
        """Findings of this run that stay open (not fixed), optionally only of some checks or severities."""
        return sum(
            count
            for (check, severity), count in self.unfixed.items()
            if (checks is None or check in checks) and (severities is None or severity in severities)
        )

    def as_dict(self) -> dict[str, Any]:
        by_check: dict[str, dict[str, int]] = {}
        for (check, severity), count in sorted(self.seen.items()):
            by_check.setdefault(check, {})[severity] = count
        return {
            "checks": list(self.scope.check_names),
            "found": self.total,
            "by_check": by_check,
            "new": self.new,
            "fixed": self.fixed,
            "resolved_unseen": self.resolved,
            "left_open": self.left_open(),
            "open_errors": self.open_errors,
            "sample": self.sample,
        }


def _db_now(engine: Engine) -> datetime:
    with engine.connect() as conn:
        return conn.execute(text("SELECT clock_timestamp()")).scalar_one()


def _upsert_batch(engine: Engine, batch: list[Finding], seen_at: datetime) -> tuple[int, int]:
    """Upsert a batch as open findings, then resolve the ones the audit fixed. Returns (new, fixed)."""
    # One row per (check, subject) within a statement: ON CONFLICT cannot touch the same row twice.
    unique: dict[tuple[str, str], Finding] = {}
    for finding in batch:
        unique[(finding.check_name, finding.subject)] = finding
    rows = [
        {
            "check_name": f.check_name,
            "severity": f.severity,
            "subject": f.subject,
            "detail": f.detail or None,
            "first_seen_at": seen_at,
            "last_seen_at": seen_at,
        }
        for f in unique.values()
    ]

    def work(conn) -> tuple[int, int]:
        stmt = insert(AuditFinding).values(rows)
        stmt = stmt.on_conflict_do_update(
            index_elements=[AuditFinding.check_name, AuditFinding.subject],
            index_where=AuditFinding.resolved_at.is_(None),
            set_={
                "severity": stmt.excluded.severity,
                "detail": stmt.excluded.detail,
                "last_seen_at": func.greatest(AuditFinding.last_seen_at, stmt.excluded.last_seen_at),
            },
        ).returning(AuditFinding.id, AuditFinding.check_name, AuditFinding.subject, AuditFinding.first_seen_at)
        returned = conn.execute(stmt).all()
        new = sum(1 for row in returned if row.first_seen_at == seen_at)
        fixed_ids = [row.id for row in returned if unique[(row.check_name, row.subject)].fixed]
        if fixed_ids:
            conn.execute(update(AuditFinding).where(AuditFinding.id.in_(fixed_ids)).values(resolved_at=seen_at))
        return new, len(fixed_ids)

    return in_transaction(engine, work)


def _in_scope(scope: CheckScope):
    condition = AuditFinding.check_name.in_(scope.check_names)
    if scope.subject_prefixes == ():
        return false()  # a run that judged nothing (say, every bucket missing) resolves nothing
    if scope.subject_prefixes is not None:
        condition = and_(condition, or_(*(func.starts_with(AuditFinding.subject, p) for p in scope.subject_prefixes)))
    return condition


def record_findings(engine: Engine, scope: CheckScope, findings: Iterable[Finding]) -> RecordSummary:
    """Persist a complete stream of findings for `scope`, then resolve the scope's open findings not seen."""
    summary = RecordSummary(scope)
    seen_at = _db_now(engine)
    iterator = iter(findings)
    while batch := list(islice(iterator, RECORD_BATCH)):
        for finding in batch:
            if not scope.covers(finding):
                raise ValueError(f"finding {finding.check_name} {finding.subject!r} is outside the run's scope")
            summary.seen[(finding.check_name, finding.severity)] += 1
            if len(summary.sample) < SAMPLE_SIZE:
                summary.sample.append(finding.as_dict())
            if not finding.fixed:
                summary.unfixed[(finding.check_name, finding.severity)] += 1
                if finding.severity == "ERROR":
                    summary.open_errors += 1
        new, fixed = _upsert_batch(engine, batch, seen_at)
        summary.new += new
        summary.fixed += fixed

    def sweep(conn) -> int:
        result = conn.execute(
            update(AuditFinding)
            .where(_in_scope(scope), AuditFinding.resolved_at.is_(None), AuditFinding.last_seen_at < seen_at)
            .values(resolved_at=seen_at)
        )
        return result.rowcount

    summary.resolved = in_transaction(engine, sweep)
    summary.sample.sort(key=lambda f: -_SEVERITY_RANK[f["severity"]])
    return summary


def open_counts(engine: Engine, scope: CheckScope) -> Counter:
    """Open findings in a scope per (check, severity): what the latest runs that judged it left open."""
    query = (
        select(AuditFinding.check_name, AuditFinding.severity, func.count())
        .where(_in_scope(scope), AuditFinding.resolved_at.is_(None))
        .group_by(AuditFinding.check_name, AuditFinding.severity)
    )
    with engine.connect() as conn:
        return Counter({(check, severity): count for check, severity, count in conn.execute(query)})


def open_findings(engine: Engine, scope: CheckScope | None = None, limit: int | None = None) -> list[dict[str, Any]]:
    """Open findings, worst first, as plain dicts (for reports and tests)."""
    query = select(
        AuditFinding.check_name,
        AuditFinding.severity,
        AuditFinding.subject,
        AuditFinding.detail,
        AuditFinding.first_seen_at,
        AuditFinding.last_seen_at,
    ).where(AuditFinding.resolved_at.is_(None))
    if scope is not None:
        query = query.where(_in_scope(scope))
    worst_first = case({name: -rank for name, rank in _SEVERITY_RANK.items()}, value=AuditFinding.severity)
    query = query.order_by(worst_first, AuditFinding.check_name, AuditFinding.subject)
    if limit is not None:
        query = query.limit(limit)
    with engine.connect() as conn:
        rows = conn.execute(query).all()
    return [
        {
            "check": row.check_name,
            "severity": row.severity,
            "subject": row.subject,
            "detail": row.detail,
            "first_seen_at": row.first_seen_at.isoformat(),
            "last_seen_at": row.last_seen_at.isoformat(),
        }
        for row in rows
    ]
