"""Who owns a legacy file, by evidence: the one place this rule is written.

A topic folder (`output/{slug}/`) is keyed by topic, never by user or job, and several jobs can share it: the first
run produced the files, a later job with the same topic reused them (the legacy app then served the same files to
both users), a job still queued never ran. The evidence, per legacy job (kept from its Redis record by the import,
`configuration.legacy`, whatever the row's status became since):

- whether it ran: legacy status processing/completed/failed, a `started_at`, or `progress.stages_completed`; a job
  queued (or cancelled) that never started never ran and gets nothing;
- its run: `started_at` (else `created_at`) to `completed_at` (else `updated_at`);
- when it was served the folder: a completed job at its completion; `videos:job_{id}` (its `file_path` names the
  folder's combined video, and its `created_at`) says so too, and a record naming another folder takes the job away
  from this one.

Per file, by its mtime:
- the owner is the one job whose run contains the mtime (a run that contains it within `SLACK` only counts when no
  run contains it exactly): that job's run wrote it. So when two runs wrote into one folder (a failed run, then a
  re-run that added new versions), each owns what its own run wrote;
- every other job that ran, completed, and was served the folder at or after the mtime gets a server-side copy under
  its own prefix: it completed by reusing the file;
- when no run, or more than one, contains the mtime, the evidence cannot decide: the file goes to
  `legacy/unattributed/{slug}/...` with the candidate jobs in its metadata and the reason in the ledger. Never a
  guess (the jobs that completed after it still get their copies: the legacy app served it to them).

Uploads (`storage/uploads/...`) belong to the Clerk id in their name (and `user_files:{clerk}`), see `mapping`.
Only jobs that came from the legacy Redis can claim a folder, so a job created later in the new system with the same
topic never changes where migrated files belong. `decide` is pure (evidence in, decision out); `load_index` reads
the evidence from PostgreSQL.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone

from sqlalchemy import text
from sqlalchemy.engine import Connection

from t2m_pipeline.migration.legacy_paths import slugify
from t2m_pipeline.vocabulary import LEGACY_FOLDER_SQL, LEGACY_NON_ASCII_TOPIC_SQL, LEGACY_TOPIC_SQL

SYSTEM_CLERK_ID = "system_legacy_unattributed"
SYSTEM_USER_METADATA = {
    "system": True,
    "purpose": "owner of legacy files no job or user claims",
    "email_unknown": True,
    "source": "legacy migration",
}
# Clocks and file systems round: a file written in the last instant of a run may carry a time just outside it.
SLACK = timedelta(seconds=2)
RAN_STATUSES = frozenset({"processing", "completed", "failed"})
_PATH_SEPARATORS = re.compile(r"[/\\]+")


@dataclass(frozen=True)
class JobRef:
    job_id: uuid.UUID
    user_id: uuid.UUID


@dataclass(frozen=True)
class LegacyRun:
    """One legacy job's evidence, as its Redis record had it."""

    job: JobRef
    status: str  # the legacy status
    created_at: datetime
    started_at: datetime | None = None
    completed_at: datetime | None = None
    updated_at: datetime | None = None
    stages_completed: tuple[str, ...] = ()
    video_folder: str | None = None  # the topic folder whose combined video `videos:job_{id}` names
    video_record: bool = False  # a `videos:job_{id}` record exists (whatever it names)
    video_created_at: datetime | None = None

    @property
    def ran(self) -> bool:
        return self.status in RAN_STATUSES or self.started_at is not None or bool(self.stages_completed)

    @property
    def run(self) -> tuple[datetime, datetime] | None:
        """When the run could have written files; None when the record cannot say."""
        if not self.ran:
            return None
        start = self.started_at or self.created_at
        end = self.completed_at or self.updated_at or self.video_created_at
        if start is None or end is None or end < start:
            return None
        return start, end

    @property
    def served_at(self) -> datetime | None:
        """When the legacy app handed this job the folder's files: its completion (or its video record's time)."""
        if self.status == "completed":
            return self.completed_at or self.video_created_at or self.updated_at
        if self.video_record and self.video_folder is not None:
            return self.video_created_at
        return None

    def describe(self) -> dict:
        run = self.run
        return {
            "job_id": str(self.job.job_id),
            "user_id": str(self.job.user_id),
            "legacy_status": self.status,
            "ran": self.ran,
            "run": [run[0].isoformat(), run[1].isoformat()] if run else None,
            "served_at": self.served_at.isoformat() if self.served_at else None,
        }


@dataclass(frozen=True)
class Attribution:
    """What the evidence says of one legacy file: its owner (None: undecidable), the jobs that get copies, why."""

    owner: JobRef | None
    copies: tuple[JobRef, ...] = ()
    reason: str = ""
    candidates: tuple[dict, ...] = ()  # when undecidable: the jobs that could have produced it (`LegacyRun.describe`)

    def metadata(self) -> dict:
        meta: dict = {"attribution": self.reason}
        if self.owner is None:
            meta["candidate_jobs"] = list(self.candidates)
        return meta


def _contains(run: tuple[datetime, datetime] | None, when: datetime, slack: timedelta = timedelta(0)) -> bool:
    return run is not None and run[0] - slack <= when <= run[1] + slack


def _iso(when: datetime) -> str:
    return when.astimezone(timezone.utc).isoformat()


def decide(runs: list[LegacyRun], mtime: datetime | None) -> Attribution:
    """The attribution of one file of a topic folder whose candidate jobs are `runs` (see the module docstring)."""
    if not runs:
        return Attribution(None, reason="unattributed: no legacy job has this folder's topic or names it in videos:job_*")
    ran = [r for r in runs if r.ran]
    if mtime is None:
        return Attribution(None, reason="unattributed: the file's modification time is unknown",
                           candidates=tuple(r.describe() for r in runs))
    owners = [r for r in ran if _contains(r.run, mtime)] or [r for r in ran if _contains(r.run, mtime, SLACK)]
    owner = owners[0] if len(owners) == 1 else None
    copies = tuple(
        r.job for r in ran if r is not owner and r.served_at is not None and mtime <= r.served_at + SLACK
    )
    copied = f"; copies for {', '.join(str(j.job_id) for j in copies)} (completed after it, reusing the folder)" if copies else ""
    if owner is not None:
        start, end = owner.run  # type: ignore[misc]
        reason = f"produced by job {owner.job.job_id}: file time {_iso(mtime)} within its run {_iso(start)} .. {_iso(end)}"
        return Attribution(owner.job, copies, reason + copied)
    if not ran:
        why = "every job with this topic never ran (" + ", ".join(f"{r.job.job_id} {r.status}" for r in runs) + ")"
    elif owners:
        why = f"file time {_iso(mtime)} lies within the runs of several jobs (" + ", ".join(str(r.job.job_id) for r in owners) + ")"
    else:
        why = f"file time {_iso(mtime)} lies within no job's run"
    return Attribution(None, copies, f"unattributed: {why}{copied}", tuple(r.describe() for r in runs))


def combined_video_folder(file_path: object) -> str | None:
    """The topic folder whose combined video a `videos:job_*` `file_path` names (`.../{slug}/{slug}_combined.mp4`)."""
    if not isinstance(file_path, str):
        return None
    parts = [p for p in _PATH_SEPARATORS.split(file_path.strip()) if p]
    if len(parts) >= 2 and parts[-1] == f"{parts[-2]}_combined.mp4":
        return parts[-2]
    return None


@dataclass
class AttributionIndex:
    """The evidence, loaded once per run: legacy jobs by topic folder, video records, upload owners."""

    runs_by_folder: dict[str, list[LegacyRun]] = field(default_factory=dict)
    video_records: dict[uuid.UUID, dict] = field(default_factory=dict)  # videos:job_{id}, by job id
    owner_by_file_id: dict[str, str] = field(default_factory=dict)  # from user_files:{clerk}
    file_records: dict[str, dict] = field(default_factory=dict)  # files:{id}

    def runs_for(self, folder: str) -> list[LegacyRun]:
        return self.runs_by_folder.get(folder, [])

    def for_file(self, folder: str, mtime: datetime | None) -> Attribution:
        return decide(self.runs_for(folder), mtime)

    def video_record_for(self, job_id: uuid.UUID, folder: str) -> dict | None:
        """The job's `videos:job_{id}` record when it names this folder's combined video."""
        record = self.video_records.get(job_id)
        return record if record is not None and combined_video_folder(record.get("file_path")) == folder else None


def _time(value) -> datetime | None:
    from t2m_pipeline.migration.records import BadRecord, parse_time

    if isinstance(value, datetime):
        return value
    try:
        return parse_time(value, "time")
    except BadRecord:
        return None


def add_run(index: AttributionIndex, run: LegacyRun, topic: str) -> None:
    """File the run under its folder: the one its video record names, else its topic's slug."""
    folder = run.video_folder or slugify(topic)
    index.runs_by_folder.setdefault(folder, []).append(run)


_FOLDER_FILTER = f"""
    AND ({LEGACY_FOLDER_SQL} = ANY(:folders) OR {LEGACY_NON_ASCII_TOPIC_SQL} OR id = ANY(CAST(:named AS uuid[])))"""
LEGACY_JOBS_SQL = (
    f"SELECT id, user_id, status, {LEGACY_TOPIC_SQL} AS topic, configuration->'legacy' AS legacy, "
    f"created_at, started_at, completed_at, updated_at FROM jobs WHERE configuration ? 'legacy'"
)


def load_index(conn: Connection, folders: list[str] | None = None, records: AttributionIndex | None = None) -> AttributionIndex:
    """The evidence. `folders`: only the legacy jobs that can be filed under these topic folders are read (a files
    run's wave: 100,000 legacy jobs cost seconds to read whole), by a filter that keeps every such job and a few
    more; `add_run` then files them by the one rule. `records`: an index whose video and upload records are reused
    (read once per run)."""
    base = records if records is not None else load_records(conn)
    index = AttributionIndex(video_records=base.video_records, owner_by_file_id=base.owner_by_file_id, file_records=base.file_records)
    where, params = "", {}
    if folders is not None:
        wanted = set(folders)
        named = [str(j) for j, v in index.video_records.items() if combined_video_folder(v.get("file_path")) in wanted]
        slugs = sorted(f for f in wanted if f.isascii())  # a slug is ASCII (other names are not even valid text)
        where, params = _FOLDER_FILTER, {"folders": slugs, "named": named}
    rows = conn.execute(text(LEGACY_JOBS_SQL + where), params)
    for row in rows:
        legacy = row.legacy if isinstance(row.legacy, dict) else {}
        has_status = isinstance(legacy.get("status"), str)  # imports before the status was kept: the row is the record
        video = index.video_records.get(row.id)
        stages = legacy.get("progress_stages_completed")
        run = LegacyRun(
            job=JobRef(row.id, row.user_id),
            status=legacy["status"] if has_status else row.status,
            created_at=row.created_at,
            started_at=_time(legacy.get("started_at")) if has_status else row.started_at,
            completed_at=_time(legacy.get("completed_at")) if has_status else row.completed_at,
            updated_at=_time(legacy.get("updated_at")) if has_status else row.updated_at,
            stages_completed=tuple(str(s) for s in stages) if isinstance(stages, list) else (),
            video_folder=combined_video_folder(video.get("file_path")) if video else None,
            video_record=video is not None,
            video_created_at=_time(video.get("created_at")) if video else None,
        )
        add_run(index, run, row.topic or "")
    for runs in index.runs_by_folder.values():
        runs.sort(key=lambda r: (r.created_at, str(r.job.job_id)))
    return index


def load_records(conn: Connection) -> AttributionIndex:
    """The `videos:job_*`, `files:*` and `user_files:*` records (an index without runs)."""
    index = AttributionIndex()
    videos = conn.execute(
        text("SELECT source_key, payload FROM migration_legacy_records WHERE kind = 'video' AND source_key LIKE 'videos:job\\_%'")
    )
    for row in videos:
        try:
            job_id = uuid.UUID(row.source_key.removeprefix("videos:job_"))
        except ValueError:
            continue
        if isinstance(row.payload, dict):
            index.video_records[job_id] = row.payload
    records = conn.execute(
        text("SELECT source_key, kind, payload FROM migration_legacy_records WHERE kind IN ('file', 'user_files')")
    )
    for row in records:
        if row.kind == "file" and isinstance(row.payload, dict):
            index.file_records[row.source_key.split(":", 1)[1]] = row.payload
        elif row.kind == "user_files" and isinstance(row.payload, list):
            clerk = row.source_key.split(":", 1)[1]
            for file_id in row.payload:
                index.owner_by_file_id.setdefault(str(file_id), clerk)
    return index
