"""`t2m migrate`: legacy Redis and local files into PostgreSQL and S3, verify, roll back, requeue held jobs.

Exit status: 0 on success; 1 when `files` leaves a file `failed` (re-run it), `verify` finds anything unaccounted
for, not matching or owned by another job than the evidence names, or `requeue --job` names a job it could not
queue; 2 on a user error (one line on stderr, no stack trace).
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import typer

from t2m_pipeline.cli.output import emit_json, get_console, table
from t2m_pipeline.config import REDIS_URL, load_settings
from t2m_pipeline.migration.legacy_redis import legacy_redis_client
from t2m_pipeline.db.engine import shared_engine

app = typer.Typer(help="Migrate the legacy platform's data.", no_args_is_help=True)


def _fail(message: str) -> None:
    print(f"t2m: error: {message}", file=sys.stderr)
    raise typer.Exit(2)


class _NoBar:
    """What a `--json` run has instead of rich's progress bar (disabled there, so nothing shows either way): rich is
    not imported for it."""

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        return None

    def add_task(self, *args, **kwargs) -> int:
        return 0

    def update(self, *args, **kwargs) -> None:
        return None


def _bar(json_output: bool, columns):
    """For people, a rich progress bar of `columns(rich.progress)`; for `--json`, none."""
    if json_output:
        return _NoBar()
    import rich.progress

    return rich.progress.Progress(*columns(rich.progress), console=get_console())


def _safe_redis_url(url: str) -> str:
    return re.sub(r"//([^@/]*)@", "//***@", url)


def _legacy_root(path: Path) -> Path:
    if not path.is_dir():
        _fail(f"--legacy-root {str(path)!r} is not a directory: expected the folder holding the legacy output/ and storage/")
    if not ((path / "output").is_dir() or (path / "storage").is_dir()):
        _fail(f"--legacy-root {str(path)!r} holds neither output/ nor storage/: is it the legacy root?")
    return path


def _counts_table(title: str, report: dict, keys: list[str]) -> None:
    table(title, ["what", "count"], [[k, report.get(k, 0)] for k in keys])


@app.command("redis")
def redis_command(
    redis_url: str = typer.Option(None, "--redis-url", help="Legacy Redis (default: T2M_REDIS_URL)."),
    json_output: bool = typer.Option(False, "--json", help="Print the report as JSON."),
    processes: int = typer.Option(
        None, "--processes", min=1, max=16, help="Processes sharing the keys (default: one per usable core, up to 4)."
    ),
) -> None:
    """Legacy Redis -> PostgreSQL: users, jobs, job_queue, records; bad records quarantined. Safe to re-run."""
    import redis

    from t2m_pipeline.migration.redis_import import migrate_redis

    settings = load_settings()
    url = redis_url or settings.redis_url
    if not url:
        _fail("no legacy Redis: pass --redis-url redis://host:port/db or set T2M_REDIS_URL")
    if not REDIS_URL.match(url):
        _fail(f"--redis-url {_safe_redis_url(url)!r} is invalid: expected redis://host:port/db")
    client = legacy_redis_client(url, "bulk")
    try:
        client.ping()
    except redis.RedisError as exc:
        _fail(f"legacy Redis {_safe_redis_url(url)} unreachable: {exc}")
    engine = shared_engine(settings.database_url)
    with _bar(json_output, lambda p: [p.SpinnerColumn(), p.TextColumn("{task.description}"), p.TimeElapsedColumn()]) as bar:
        task = bar.add_task("scanning legacy Redis", total=None)
        report = migrate_redis(
            engine, client, processes=processes, progress=lambda keys: bar.update(task, description=f"{keys} keys scanned")
        )
    if json_output:
        emit_json(report)
        return
    _counts_table(
        f"Redis migration (batch {report['batch_id']})",
        report,
        ["keys_scanned", "jobs_inserted", "jobs_updated", "jobs_unchanged", "jobs_kept_newer", "users_inserted",
         "records_inserted", "quarantined", "queue_rows_inserted", "queue_duplicates_collapsed", "other_keys_not_migrated"],
    )
    table("Cache and counter keys (counted, not migrated)", ["prefix", "keys"], sorted(report["cache_keys_not_migrated"].items()))
    if report["queue_missing_job_ids"]:
        get_console().print(f"job_queue names {len(report['queue_missing_job_ids'])} job(s) that do not exist (quarantined).")
    held = report.get("queue_rows_inserted", 0) + report.get("queue_rows_unlisted_queued_jobs", 0)
    if held:
        get_console().print(f"{held} job(s) queued or processing in the legacy system are held: nothing runs them until "
                      "`t2m migrate requeue --job ID | --all`.")
    if report["reattribute_partitions"]:
        get_console().print(f"{len(report['reattribute_partitions'])} migrated topic folder(s) have new evidence: run "
                      "`t2m migrate files` again to put their files where it says (verify fails until then).")


@app.command()
def files(
    legacy_root: Path = typer.Option(..., "--legacy-root", help="The folder holding the legacy output/ and storage/."),
    json_output: bool = typer.Option(False, "--json", help="Print the report as JSON."),
    workers: int = typer.Option(32, min=1, max=256, help="Uploads in flight."),
    partition: list[str] = typer.Option([], "--partition", help="Only this legacy source (repeatable), e.g. topic/my_slug."),
    checksum: bool = typer.Option(False, "--checksum", help="Read and hash every file, even those whose size, mtime and inode are unchanged."),
) -> None:
    """Legacy files -> S3 with file_metadata and a ledger row per file. Resumable; a re-run uploads nothing new and
    reads only files whose size, mtime or inode changed (`--checksum`: every file)."""
    from t2m_pipeline.migration.discovery import discover_sources
    from t2m_pipeline.migration.files_import import FilesMigration
    from t2m_pipeline.migration.upload_shards import upload_shards

    root = _legacy_root(legacy_root)
    settings = load_settings()
    engine = shared_engine(settings.database_url)
    if partition:
        known = set(discover_sources(root, upload_shards(engine, root)))
        unknown = [p for p in partition if p not in known]
        if unknown:
            _fail(f"--partition {unknown[0]!r} is not a legacy source under {str(root)!r}")
    def columns(p):
        return [p.TextColumn("migrating"), p.BarColumn(), p.MofNCompleteColumn(), p.DownloadColumn(), p.TransferSpeedColumn(),
                p.TimeRemainingColumn()]

    with _bar(json_output, columns) as bar:
        files_task = bar.add_task("files", total=None)

        def progress(done: int, size: int, total: int, total_bytes: int) -> None:
            bar.update(files_task, completed=done, total=total)

        report = FilesMigration(settings, engine, root, workers=workers, checksum=checksum, progress=progress).run(partition or None)
    failed = report["outcomes"]["failed"] + report["copies"]["failed"]
    if json_output:
        emit_json(report)
        raise typer.Exit(1 if failed else 0)
    table(
        f"Files migration (batch {report['batch_id']})",
        ["outcome", "files"],
        [*sorted(report["outcomes"].items()), ["uploaded", report["uploaded_files"]], ["uploaded bytes", report["uploaded_bytes"]],
         ["copied for jobs that reused a folder", report["copied_files"]],
         ["unattributed (the evidence cannot decide)", report["unattributed_files"]],
         ["moved: objects removed from where they no longer belong", report["moved_objects_removed"] + report["copies_no_longer_due"]],
         ["unchanged (already migrated)", report["unchanged_files"]],
         ["  of those, not read (size, mtime and inode unchanged)", report["unread_files"]],
         ["adopted after an interruption", report["adopted_versions"]],
         ["flagged invalid by legacy rules", report["flagged_invalid"]]],
    )
    if failed:
        get_console().print(f"{failed} file(s) failed: see the ledger's reasons, then run the command again.")
        raise typer.Exit(1)


@app.command()
def verify(
    legacy_root: Path = typer.Option(..., "--legacy-root", help="The folder holding the legacy output/ and storage/."),
    json_output: bool = typer.Option(False, "--json", help="Print the report as JSON."),
    partition: list[str] = typer.Option([], "--partition", help="Only this legacy source (repeatable)."),
) -> None:
    """Reconcile the legacy tree, the ledger, file_metadata and S3. Exit 0 only when everything is accounted for."""
    from t2m_pipeline.migration.verify import verify_files

    root = _legacy_root(legacy_root)
    settings = load_settings()
    def columns(p):
        return [p.TextColumn("verifying"), p.BarColumn(), p.MofNCompleteColumn(), p.TimeElapsedColumn(), p.TimeRemainingColumn()]

    with _bar(json_output, columns) as bar:
        task = bar.add_task("objects", total=None)
        result = verify_files(
            settings, shared_engine(settings.database_url), root, partition or None,
            progress=lambda done, total: bar.update(task, completed=done, total=total),
        )
    if json_output:
        emit_json(result)
    else:
        table("Ledger outcomes", ["outcome", "files"], sorted(result["outcomes"].items()))
        get_console().print(f"{result['files_in_tree']} files in the tree, {result['objects_checked']} S3 objects checked, "
                      f"{result['problem_count']} problem(s)")
        if result["problems"]:
            table("Problems", ["legacy path", "problem"], [[p["legacy_path"], p["problem"]] for p in result["problems"][:50]])
    raise typer.Exit(0 if result["ok"] else 1)


@app.command()
def rollback(
    batch: str = typer.Option(..., "--batch", help="The migration batch id (from the migrate report)."),
    json_output: bool = typer.Option(False, "--json", help="Print the report as JSON."),
) -> None:
    """Remove exactly what one batch created (S3 versions, rows) and restore rows it changed."""
    from t2m_pipeline.migration.rollback import RollbackError, rollback_batch

    settings = load_settings()
    try:
        report = rollback_batch(settings, shared_engine(settings.database_url), batch)
    except RollbackError as exc:
        _fail(str(exc))
    if json_output:
        emit_json(report)
        return
    get_console().print(f"batch {report['batch_id']} ({report['source']}) rolled back: {report['s3_versions_deleted']} S3 versions deleted")
    table("Rows", ["table", "deleted"], sorted(report["rows_deleted"].items()))
    table("Rows restored", ["table", "restored"], sorted(report["rows_restored"].items()))


@app.command()
def requeue(
    job: list[str] = typer.Option([], "--job", help="A held job to queue (repeatable)."),
    all_held: bool = typer.Option(False, "--all", help="Queue every held job."),
    json_output: bool = typer.Option(False, "--json", help="Print the report as JSON."),
) -> None:
    """Queue migrated jobs that were queued or processing in the legacy system (imported `held`): the pipeline
    renders them. Nothing else ever queues them."""
    from t2m_pipeline.migration.requeue import RequeueError, requeue_held_jobs

    if bool(job) == all_held:
        _fail("name the jobs to queue with --job ID (repeatable), or pass --all for every held job")
    settings = load_settings()
    try:
        report = requeue_held_jobs(shared_engine(settings.database_url), None if all_held else job)
    except RequeueError as exc:
        _fail(str(exc))
    if json_output:
        emit_json(report.as_dict())
    else:
        get_console().print(f"{len(report.requeued)} job(s) queued; the new_jobs sensor launches them.")
        if report.skipped:
            table("Not queued", ["job", "why"], [list(s) for s in report.skipped])
    raise typer.Exit(1 if job and report.skipped else 0)
