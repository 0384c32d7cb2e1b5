"""`t2m audit`: the storage and metadata audits from the command line (the library calls of the Dagster maintenance jobs).

Exit status: 0 when no ERROR finding is left open by this run, 1 when one is, 2 on a user error.
"""

from __future__ import annotations

import os

import typer

from t2m_pipeline.audits.policy import STUCK_POLICIES, AuditPolicy
from t2m_pipeline.audits.runner import AUDITS, run_audits
from t2m_pipeline.cli.output import emit_json, get_console, table
from t2m_pipeline.config import ConfigError, load_settings
from t2m_pipeline.db.engine import shared_engine
from t2m_pipeline.storage.s3 import make_s3_client

DEFAULTS = AuditPolicy()


def _dagster_instance():
    """The Dagster instance for partition retention, when DAGSTER_HOME says where it is."""
    if not os.environ.get("DAGSTER_HOME"):
        return None
    from dagster import DagsterInstance

    return DagsterInstance.get()


def audit(
    json_output: bool = typer.Option(False, "--json", help="Print JSON."),
    only: list[str] = typer.Option([], "--only", help=f"Run only this audit (repeatable): {'|'.join(AUDITS)}."),
    stuck_after_minutes: int = typer.Option(DEFAULTS.stuck_after_s // 60, help="A processing job silent this long is stuck."),
    stuck_policy: str = typer.Option(DEFAULTS.stuck_policy, help=f"What to do with a stuck job: {'|'.join(STUCK_POLICIES)}."),
    retention_days: int = typer.Option(DEFAULTS.retention_days or 0, help="Remove finished jobs' partitions after this many days (0: keep)."),
    fix_queue: bool = typer.Option(DEFAULTS.fix_queue, "--fix-queue/--no-fix-queue", help="Cancel deleted queued jobs, re-sync queue rows."),
    checksums: bool = typer.Option(DEFAULTS.verify_checksums, "--checksums/--no-checksums", help="HEAD each version to compare sha256."),
    settle_minutes: int = typer.Option(DEFAULTS.settle_s // 60, help="Objects and rows younger than this are not judged."),
    remove_duplicates: bool = typer.Option(
        DEFAULTS.remove_duplicates, "--remove-duplicates/--keep-duplicates",
        help="Delete identical extra versions our own retried writes left.",
    ),
    limit: int = typer.Option(20, help="Findings listed per audit in the table."),
) -> None:
    """Audit buckets, objects vs file_metadata, the temp bucket, stuck jobs and partition retention; record findings."""
    unknown = [name for name in only if name not in AUDITS]
    if unknown:
        raise ConfigError(f"--only {unknown[0]!r} is invalid: expected one of {'|'.join(AUDITS)}")
    if stuck_policy not in STUCK_POLICIES:
        raise ConfigError(f"--stuck-policy {stuck_policy!r} is invalid: expected one of {'|'.join(STUCK_POLICIES)}")
    if limit < 0 or retention_days < 0:
        raise ConfigError("--limit and --retention-days must not be negative")
    try:
        policy = AuditPolicy(
            stuck_after_s=stuck_after_minutes * 60,
            stuck_policy=stuck_policy,
            fix_queue=fix_queue,
            retention_days=retention_days or None,
            verify_checksums=checksums,
            settle_s=settle_minutes * 60,
            remove_duplicates=remove_duplicates,
        )
    except ValueError as exc:  # a one-line user error, like a bad setting
        raise ConfigError(f"invalid audit option: {exc}") from None
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    settings = load_settings()
    selected = tuple(name for name in AUDITS if name in (tuple(only) or AUDITS))
    instance = _dagster_instance() if "partitions" in selected else None
    engine, client = shared_engine(settings.database_url), make_s3_client(settings)
    reports = []
    columns = [TextColumn("auditing {task.fields[audit]:<10}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn()]
    with Progress(*columns, console=get_console(), disable=json_output) as bar:
        task = bar.add_task("audits", total=len(selected), audit=selected[0])
        for name in selected:  # one at a time, in run_audits' order, so the bar says which one runs
            bar.update(task, audit=name)
            reports += run_audits(settings, engine, client, policy, instance=instance, audits=(name,))
            bar.advance(task)
    open_errors = sum(report.open_errors for report in reports)
    if json_output:
        emit_json({"ok": open_errors == 0, "open_errors": open_errors, "audits": [report.as_dict() for report in reports]})
    else:
        rows = []
        for report in reports:
            s = report.summary.as_dict() if report.summary else {}
            counts = [s.get(name, 0) for name in ("found", "new", "fixed", "resolved_unseen")]
            rows.append([report.audit, report.skipped or "done", *counts, report.open_errors])
        table("t2m audit", ["audit", "status", "found", "new", "fixed", "resolved", "open errors"], rows)
        findings = [f for report in reports if report.summary for f in report.summary.sample[:limit]]
        if findings:
            table(
                "Findings (worst first, sample)",
                ["check", "severity", "subject", "fixed"],
                [[f["check"], f["severity"], f["subject"], "yes" if f["fixed"] else ""] for f in findings],
            )
        get_console().print("ok: no ERROR finding open" if open_errors == 0 else f"FAIL: {open_errors} ERROR finding(s) open")
    if open_errors:
        raise typer.Exit(1)
