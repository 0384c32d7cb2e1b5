"""`t2m jobs` and `t2m urls`: submit and inspect jobs, hand out presigned URLs to their owner."""

from __future__ import annotations

import uuid

import click
import typer
from sqlalchemy import select

from t2m_pipeline.cli.output import emit_json
from t2m_pipeline.config import load_settings
from t2m_pipeline.db.engine import shared_engine
from t2m_pipeline.db.job_state import JobNotFoundError
from t2m_pipeline.db.jobs import QUALITIES, job_summary, submit_job
from t2m_pipeline.db.models import PRIORITIES, User
from t2m_pipeline.render.outline import MAX_SCENES
from t2m_pipeline.storage.errors import NotOwnerError
from t2m_pipeline.storage.s3 import MAX_URL_SECONDS, S3Storage

app = typer.Typer(help="Submit and inspect jobs.", no_args_is_help=True)


class UsageError(click.ClickException):
    """A bad argument: printed as one line, exit status 2."""

    exit_code = 2

    def show(self, file=None) -> None:
        click.echo(f"t2m: error: {self.format_message()}", err=True)


def _job_uuid(job_id: str) -> uuid.UUID:
    try:
        return uuid.UUID(job_id)
    except ValueError:
        raise JobNotFoundError(f"job id {job_id!r} is not a UUID") from None


def _summary(job_id: str) -> dict:
    summary = job_summary(shared_engine(load_settings().database_url), _job_uuid(job_id))
    if summary is None:
        raise JobNotFoundError(f"job {job_id} does not exist")
    return summary


def one_line(value: object, limit: int = 300) -> str:
    """Text from a row other systems may write, shown on one line and bounded."""
    text = " ".join(str(value).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def newest_objects(objects: list[dict]) -> list[dict]:
    """One entry per (bucket, key): the newest recorded version (rows come oldest first per key)."""
    latest: dict[tuple[str, str], dict] = {}
    for obj in objects:
        latest[(obj["bucket"], obj["key"])] = obj
    return sorted(latest.values(), key=lambda o: o["key"])


@app.command()
def submit(
    user: str = typer.Option(..., "--user", help="The user's Clerk id (created when new)."),
    email: str = typer.Option(..., "--email", help="The user's email."),
    topic: str = typer.Option(..., "--topic", help="What the video explains (1 to 500 characters)."),
    context: str = typer.Option("", "--context", help="More detail for the scenes."),
    quality: str = typer.Option("low", "--quality", help=f"{'|'.join(QUALITIES)}"),
    priority: str = typer.Option("normal", "--priority", help=f"{'|'.join(PRIORITIES)}"),
    scene_count: int | None = typer.Option(None, "--scenes", help=f"Number of scenes, 1 to {MAX_SCENES} (default: 3 to 7)."),
    json_output: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Queue a video job (the same rows the web app writes); the `new_jobs` sensor picks it up. Prints its id."""
    if scene_count is not None and not 1 <= scene_count <= MAX_SCENES:
        raise UsageError(f"--scenes {scene_count}: expected 1 to {MAX_SCENES}")
    engine = shared_engine(load_settings().database_url)
    try:
        job_id = submit_job(
            engine, clerk_user_id=user, email=email, topic=topic, context=context,
            quality=quality, priority=priority, scene_count=scene_count,
        )
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    if json_output:
        emit_json({"job_id": str(job_id)})
    else:
        print(job_id)


@app.command()
def show(
    job_id: str = typer.Argument(..., help="The job's id."),
    json_output: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """A job's status, progress, stage, times, error, metrics and S3 objects."""
    summary = _summary(job_id)
    if json_output:
        emit_json(summary)
        return
    print(f"job {summary['id']}  {summary['status']}  {summary['progress_percentage']:.0f}%  stage {summary['current_stage'] or '-'}")
    print(f"topic: {summary['topic']}")
    print(f"created {summary['created_at']}  started {summary['started_at'] or '-'}  completed {summary['completed_at'] or '-'}")
    if summary["error_info"]:
        error = summary["error_info"]
        if not isinstance(error, dict) or "unreadable" in error:
            print(f"error: {one_line(error.get('unreadable') if isinstance(error, dict) else error)}")
        else:
            print(f"error in {error.get('stage')} (scene {error.get('scene')}): {one_line(error.get('message'))}")
            if error.get("log_key"):
                print(f"log: {one_line(error['log_key'])}")
    metrics = summary["metrics"] if isinstance(summary["metrics"], dict) and "unreadable" not in summary["metrics"] else {}
    if isinstance(metrics.get("stage_seconds"), dict):
        print("seconds per stage: " + ", ".join(f"{k} {v:.1f}" for k, v in metrics["stage_seconds"].items() if isinstance(v, (int, float))))
    if metrics.get("bytes_written") is not None:
        print(f"bytes written: {metrics['bytes_written']}")
    objects = newest_objects(summary["objects"])
    print(f"objects ({len(objects)}):")
    for o in objects:
        print(f"  {o['file_type']:<15} s3://{o['bucket']}/{o['key']}  {o['size']} bytes  version {o['version_id'] or '-'}")


def urls(
    job_id: str = typer.Argument(..., help="The job's id."),
    user: str = typer.Option(..., "--user", help="Clerk id of the user asking: only the job's owner gets URLs."),
    expires: int | None = typer.Option(None, "--expires", help="Lifetime in seconds, up to 7 days (default 1 h, 2 h for videos)."),
    json_output: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Presigned GET URLs for a job's code, videos and thumbnails: for the job's owner only."""
    if expires is not None and not 1 <= expires <= MAX_URL_SECONDS:
        raise UsageError(f"--expires {expires}: expected 1 to {MAX_URL_SECONDS} seconds (7 days)")
    settings = load_settings()
    engine = shared_engine(settings.database_url)
    summary = _summary(job_id)
    with engine.connect() as conn:
        requester = conn.execute(select(User.id).where(User.clerk_user_id == user)).scalar_one_or_none()
    if requester is None or str(requester) != summary["user_id"]:
        raise NotOwnerError(f"user {user} does not own job {job_id}: no URL issued")
    if not summary["objects"]:
        if json_output:
            print("[]")  # a script parses the list: empty, not a sentence
            return
        error = summary["error_info"] if isinstance(summary["error_info"], dict) else {}
        why = f": {one_line(error.get('message') or error.get('unreadable'))}" if error else ""
        print(f"job {summary['id']} has no objects yet (status {summary['status']}{why})")
        return
    storage = S3Storage(settings, engine)
    results = [
        {
            "file_type": o["file_type"],
            "bucket": o["bucket"],
            "key": o["key"],
            "version_id": o["version_id"],
            "url": storage.url_for_owner(requester, o["bucket"], o["key"], version_id=o["version_id"], expires=expires),
        }
        for o in newest_objects(summary["objects"])
    ]
    if json_output:
        emit_json(results)
    else:
        for r in results:
            print(f"{r['file_type']:<15} {r['key']}\n  {r['url']}")
