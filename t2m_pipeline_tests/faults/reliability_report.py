"""Run the fault scenarios at a size larger than `make test` does and write the results tables of RELIABILITY.md.
It lives with the tests because it runs their scenarios (`make reliability`; scripts never import the tests).

    .venv/bin/python -m t2m_pipeline_tests.faults.reliability_report                  # every group, full size
    .venv/bin/python -m t2m_pipeline_tests.faults.reliability_report --only pipeline  # one group; other tables stay
    .venv/bin/python -m t2m_pipeline_tests.faults.reliability_report --keys 30 --multiparts 2 --restarts 1 --jobs 1 --output /tmp/r.md

Needs what the tests need: the shared PostgreSQL at T2M_TEST_ADMIN_URL (default postgresql+psycopg://postgres@
127.0.0.1:5432/postgres) for a throwaway metadata database, PostgreSQL server binaries for the private restart
cluster, and the project's moto server (started here on a free loopback port).
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import platform
import re
import shutil
import sys
import tempfile
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

from sqlalchemy import text as sa_text  # noqa: E402

from t2m_pipeline.config import load_settings  # noqa: E402
from t2m_pipeline.db.engine import drop_database, in_transaction, make_engine  # noqa: E402
from t2m_pipeline.db.job_state import apply_transition  # noqa: E402
from t2m_pipeline.db.migrate import upgrade  # noqa: E402
from devtools.fault_proxy import FaultKind, FaultPlan  # noqa: E402
from devtools.private_postgres import PrivatePostgres  # noqa: E402
from devtools.local_s3 import start_local_s3  # noqa: E402
from t2m_pipeline_tests.faults.scenarios import (  # noqa: E402
    MULTIPART_BYTES,
    UploadReport,
    fresh_buckets,
    run_restart_scenario,
    run_upload_scenario,
)

LANDING = {FaultKind.RESET_AFTER, FaultKind.DELAY, FaultKind.LATE_WRITE}
PROTECTION = {
    FaultKind.SLOWDOWN: "botocore standard retries with backoff (`T2M_S3_MAX_ATTEMPTS`, default 10)",
    FaultKind.INTERNAL: "botocore standard retries (5xx are transient)",
    FaultKind.RESET_BEFORE: "botocore standard retries (connection errors are transient); bodies are re-sent from the start",
    FaultKind.RESET_AFTER: "retries + `write-id` cleanup: the retried write removes its own extra version",
    FaultKind.DELAY: "explicit read timeout, retries + `write-id` cleanup",
    FaultKind.LATE_WRITE: "retries + `write-id` cleanup, and `remove_duplicate_versions` (the sweep) for twins that land after it",
}
DESCRIPTION = {
    FaultKind.SLOWDOWN: "503 SlowDown",
    FaultKind.INTERNAL: "500 InternalError",
    FaultKind.RESET_BEFORE: "connection reset before forwarding",
    FaultKind.RESET_AFTER: "connection reset after forwarding (answer lost)",
    FaultKind.DELAY: "answer delayed past the client's read timeout",
    FaultKind.LATE_WRITE: "request held, lands after the client's retry",
}


def upload_outcome(r: UploadReport) -> str:
    if r.failed or r.problems:
        return f"**FAILED**: {r.failed} uploads failed, {len(r.problems)} problems (e.g. {(r.problems or r.failures)[:1]})"
    parts = [f"{r.succeeded}/{r.logical_writes} uploads verified", f"{r.faults} faults in {r.requests} requests"]
    if r.removed_inline or r.removed_by_sweep:
        parts.append(f"{r.removed_inline} duplicate versions removed after retries, {r.removed_by_sweep} by the sweep")
    parts.append("0 duplicates, 0 partial objects, 0 wrong rows left")
    if r.orphan_multipart_uploads:
        parts.append(f"{r.orphan_multipart_uploads} abandoned multipart upload(s) (invisible; lifecycle aborts them)")
    return "; ".join(parts)


def control_outcome(r: UploadReport, what: str) -> str:
    leftovers = sum(1 for p in r.problems if "no write recorded" in p)
    bits = [f"{r.failed}/{r.logical_writes} uploads failed"]
    if leftovers or r.duplicates_before_sweep:
        bits.append(f"{r.duplicates_before_sweep} unrecorded extra versions left on {leftovers} keys")
    verdict = "fault got through" if (r.failed or r.duplicates_before_sweep) else "**fault did NOT get through**"
    return f"{what}: " + ", ".join(bits) + f" ({verdict})"


TABLE_HEAD = ["| fault | rate | trials | outcome | what protects against it | time |", "|---|---|---|---|---|---|"]
GROUPS = ("uploads", "database", "pipeline", "migration", "workers")


def failed_row(name: str, rate: str, exc: Exception) -> str:
    return f"| {name} | {rate} | - | **FAILED**: {type(exc).__name__}: {str(exc)[:200]} | - | - |"


def upload_rows(args, settings, engine, work: Path) -> list[str]:
    """Single and multipart uploads through S3Storage, each fault kind and mixed, each with its controls."""
    rows: list[str] = []

    def upload_run(name: str, plan: FaultPlan, **options) -> UploadReport | None:
        fresh_buckets(settings)
        try:
            return run_upload_scenario(settings, engine, plan, Path(tempfile.mkdtemp(dir=work)), workers=args.workers,
                                       **options)
        except Exception as exc:  # noqa: BLE001 - a crashed scenario is a row of the table, not the end of it
            emit(rows, failed_row(name, f"{args.rate:.0%}", exc))
            return None

    for kinds in [(k,) for k in FaultKind] + [tuple(FaultKind)]:
        name = "mixed (all six kinds)" if len(kinds) > 1 else DESCRIPTION[kinds[0]]
        plan = FaultPlan(rate=args.rate, kinds=kinds, seed=args.seed, delay_seconds=args.held)
        report = upload_run(name, plan, keys=args.keys, multiparts=args.multiparts)
        if report:
            protection = "all of the above" if len(kinds) > 1 else PROTECTION[kinds[0]]
            emit(rows, f"| {name} | {args.rate:.0%} | {report.logical_writes} uploads ({report.multipart_writes} multipart) "
                       f"| {upload_outcome(report)} | {protection} | {report.seconds:.0f} s |")
        # The controls: the same fault with its protection off must get through.
        control = upload_run(f"{name}, control", plan, keys=args.control_keys, multiparts=0, max_attempts=1, sweep=False)
        if control:
            emit(rows, f"| {name}, control | {args.rate:.0%} | {control.logical_writes} uploads "
                       f"| {control_outcome(control, 'retries off (`s3_max_attempts=1`)')} | none | {control.seconds:.0f} s |")
        if set(kinds) & LANDING:
            control = upload_run(f"{name}, control", plan, keys=args.control_keys, multiparts=0, remove_duplicates=False,
                                 sweep=False)
            if control:
                emit(rows, f"| {name}, control | {args.rate:.0%} | {control.logical_writes} uploads "
                           f"| {control_outcome(control, 'cleanup and sweep off')} | retries only | {control.seconds:.0f} s |")
    return rows


def database_rows(args, settings, work: Path) -> list[str]:
    """PostgreSQL restarted under job-state transitions and recorded uploads, on a private cluster; its control."""
    rows: list[str] = []
    fresh_buckets(settings)
    with PrivatePostgres() as cluster:
        url = cluster.url("t2m_restart")
        upgrade(url)
        try:
            r = run_restart_scenario(cluster, settings, url, restarts=args.restarts, iterations_between=10, outage_seconds=1.0)
        except Exception as exc:  # noqa: BLE001 - a crashed scenario is a row of the table, not the end of it
            emit(rows, failed_row("PostgreSQL restart mid-run", f"{args.restarts} restart(s)", exc))
            return rows
        ok = not r.errors and not r.problems and r.restarts == args.restarts
        outcome = (
            f"{r.iterations} transitions + {r.iterations} uploads with rows; "
            f"{r.db_retries} transactions retried; 0 status updates lost, 0 rows duplicated, every row's version holds its bytes"
            if ok else f"**FAILED**: {r.errors[:1] or r.problems[:2]}"
        )
        emit(rows, f"| PostgreSQL restart mid-run (stop -m fast, 1 s down) | {r.restarts} restart(s) | {r.iterations} "
                   f"iterations | {outcome} | `pool_pre_ping`; `in_transaction` re-runs the whole transaction with "
                   f"exponential backoff (tenacity, 60 s); upserts on natural keys | {r.seconds:.0f} s |")

        def no_retry(engine, job_id, status, **changes):
            return in_transaction(engine, lambda c: apply_transition(c, job_id, status, **changes), max_seconds=0)

        c = run_restart_scenario(cluster, settings, url, restarts=1, iterations_between=10, outage_seconds=1.0,
                                 transition=no_retry, write_objects=False)
        got_through = bool(c.errors)
        error = "no error"
        if got_through:
            kind = c.errors[0].split(": ")[1]
            reason = c.errors[0].split("unavailable: ", 1)[-1][:70]
            error = f"the transition raised {kind} ({reason})"
        emit(rows, f"| PostgreSQL restart, control | 1 restart | {c.iterations} iterations | retry off "
                   f"(`max_seconds=0`): {error} "
                   f"({'fault got through' if got_through else '**fault did NOT get through**'}) | none | {c.seconds:.0f} s |")
        rows.extend(restart_during_runs_rows(args, settings, cluster, work))  # printed as they were made
    return rows


def restart_during_runs_rows(args, settings, cluster, work: Path) -> list[str]:
    """Restarts placed inside open transactions of `t2m migrate redis|files` (CLI processes) and a pipeline job."""
    from devtools.private_redis import PrivateRedis
    from t2m_pipeline_tests.faults.restart_scenarios import run_restart_during_runs
    from t2m_pipeline_tests.migration.legacy_world import build_world, make_mp4

    rows: list[str] = []
    videos = [make_mp4(seed) for seed in range(4)]
    protection = "`pool_pre_ping`; every read and write of the runs in `in_transaction` (retry with backoff)"
    with PrivateRedis() as redis_server:
        for control in (False, True):
            name = "PostgreSQL restart during a migration and a pipeline job" + (", control" if control else "")
            restarts = 1 if control else args.restarts
            fresh_buckets(settings)
            root = Path(tempfile.mkdtemp(dir=work)) / "legacy"
            root.mkdir()
            try:
                world = build_world(root, redis_server.url(0), videos)
                r = run_restart_during_runs(cluster, settings, world, restarts=restarts, outage_seconds=1.0,
                                            scenes=1 if control else args.scenes, bulk_files=0 if control else args.bulk_files,
                                            db_retry=not control)
            except Exception as exc:  # noqa: BLE001
                emit(rows, failed_row(name, f"{restarts} restart(s)", exc))
                continue
            files = (r.verify or {}).get("files_in_tree", "?")
            hit_both = r.pipeline_hit == r.migration_hit == r.restarts
            trials = (f"{r.restarts} restart(s); inside an open transaction of the pipeline {r.pipeline_hit}x, of the "
                      f"migration {r.migration_hit}x")
            if control:
                got_through = bool(r.migration_errors) or any("DatabaseUnavailableError" in t for t in r.step_troubles + r.pipeline_errors)
                one_line = any("t2m: error: database" in e for e in r.migration_errors)
                outcome = (f"retry off (`max_seconds=0`): migration exits {r.migration_exit_codes}"
                           f"{' with a one-line `t2m: error: database ...`' if one_line else ''}; pipeline: "
                           f"{len(r.step_troubles)} step attempts failed "
                           f"({'fault got through' if got_through else '**fault did NOT get through**'})")
                if not hit_both:
                    outcome = "**FAILED** to place the restart: " + outcome
                emit(rows, f"| {name} | 1 restart | {trials} | {outcome} | none | {r.seconds:.0f} s |")
                continue
            ok = (hit_both and not r.problems and not r.reruns and r.job_status == "completed" and not r.step_troubles
                  and all(code == 0 for codes in r.migration_exit_codes.values() for code in codes))
            outcome = (
                f"`t2m migrate redis` and `files` exit 0 without a rerun; {r.pipeline_db_retries} pipeline and "
                f"{r.migration_db_retries} migration transactions re-run; `t2m migrate verify` ok ({files} files); job "
                f"`{r.job_status}`, 0 failed step attempts; {r.figures.get('legacy_jobs', '?')} legacy jobs, "
                f"{r.figures.get('job_objects', '?')} job objects, {r.figures.get('status_writes', '?')} status writes: "
                f"0 rows lost or doubled, every status write on the job"
                if ok else f"**FAILED**: exits {r.migration_exit_codes}, reruns {r.reruns[:1]}, job {r.job_status}, "
                           f"problems {r.problems[:2]}, troubles {r.step_troubles[:1]}"
            )
            emit(rows, f"| {name} (stop -m fast, 1 s down) | {r.restarts} restart(s) | {trials}; {args.scenes} scenes, "
                       f"{args.bulk_files} extra files | {outcome} | {protection} | {r.seconds:.0f} s |")
    return rows


def pipeline_rows(args, settings, db_url: str) -> list[str]:
    """Pipeline jobs end to end (sensors -> runs in process, real manim) under mixed S3 faults, and with the legacy
    mirror's Redis down."""
    from t2m_pipeline_tests.faults.pipeline_scenarios import run_pipeline_fault_scenario, run_redis_outage_scenario

    rows: list[str] = []
    pipeline_settings = dataclasses.replace(settings, database_url=db_url)
    engine = make_engine(db_url)
    in_transaction(engine, lambda c: c.execute(sa_text("TRUNCATE users, jobs, job_queue, file_metadata CASCADE")))
    engine.dispose()
    plan = FaultPlan(rate=args.rate, kinds=tuple(FaultKind), seed=args.seed, delay_seconds=1.0)
    trials = f"{args.jobs} job(s) x {args.scenes} scenes"
    fresh_buckets(settings)
    try:
        r = run_pipeline_fault_scenario(pipeline_settings, plan, jobs=args.jobs, scenes=args.scenes)
        ok = r.completed == args.jobs and not r.step_troubles and not r.problems and not r.stale_latest
        outcome = (
            f"{r.completed}/{r.jobs} jobs completed, {r.runs} runs, 0 step attempts failed; {r.proxy['injected_total']} "
            f"faults in {sum(r.proxy['requests'].values())} requests; {r.rows} rows, each version holding its bytes; "
            f"{r.removed_by_sweep} left for the sweep; 0 identical extra versions left ({r.identical_on_top} on top)"
            if ok else f"**FAILED**: {r.completed}/{r.jobs} completed, troubles {r.step_troubles[:1]}, problems "
                       f"{r.problems[:2]}, stale latest {r.stale_latest[:2]}"
        )
        emit(rows, f"| mixed (all six kinds, held 1 s), pipeline jobs | {args.rate:.0%} | {trials} | {outcome} | botocore "
                   f"retries + `write-id` cleanup in `S3Storage`; the sweep | {r.seconds:.0f} s |")
    except Exception as exc:  # noqa: BLE001
        emit(rows, failed_row("mixed, pipeline jobs", f"{args.rate:.0%}", exc))
    fresh_buckets(settings)
    try:
        c = run_pipeline_fault_scenario(pipeline_settings, plan, jobs=1, scenes=args.scenes, s3_max_attempts=1)
        got_through = bool(c.step_troubles) or c.completed == 0
        emit(rows, f"| mixed, pipeline jobs, control | {args.rate:.0%} | 1 job x {args.scenes} scenes | retries off "
                   f"(`T2M_S3_MAX_ATTEMPTS=1`): {len(c.step_troubles)} step attempts failed, {c.completed}/1 completed "
                   f"(Dagster's RetryPolicy is a second layer); the sweep removed {c.removed_by_sweep} versions; "
                   f"{len(c.problems)} problems, {c.identical_on_top} identical copies left as a current version "
                   f"({'fault got through' if got_through else '**fault did NOT get through**'}) | none at the storage "
                   f"layer | {c.seconds:.0f} s |")
    except Exception as exc:  # noqa: BLE001
        emit(rows, failed_row("mixed, pipeline jobs, control", f"{args.rate:.0%}", exc))
    fresh_buckets(settings)
    try:
        o = run_redis_outage_scenario(pipeline_settings, jobs=args.jobs, scenes=args.scenes)
        ok = (o.completed, o.runs_failed, o.steps_failed, o.records_right) == (o.jobs, 0, 0, o.jobs) and o.cursor_held
        outcome = (
            f"{o.completed}/{o.jobs} jobs completed with Redis down ({o.run_seconds:.0f} s), 0 steps failed; "
            f"{o.pending_after_runs} writes waiting when the runs ended (lost with their workers); the resync sensor "
            f"held its cursor while Redis was down, then wrote {o.mirrored} rows: {o.records_right}/{o.jobs} legacy "
            f"records show the final status and progress"
            if ok else f"**FAILED**: {o}"
        )
        emit(rows, f"| legacy Redis down for whole jobs (mirror on) | 100% of mirror writes | {trials} | {outcome} | 2 s "
                   f"socket timeouts, never raising; the `legacy_mirror_resync` sensor (cursor moves only past what it "
                   f"wrote) | {o.seconds:.0f} s |")
    except Exception as exc:  # noqa: BLE001
        emit(rows, failed_row("legacy Redis down", "100%", exc))
    return rows


def migration_rows(args, settings, db_url_for, work: Path) -> list[str]:
    """`t2m migrate files` (a CLI process) over a generated legacy tree behind the fault proxy; its control and rerun."""
    from devtools.private_redis import PrivateRedis
    from t2m_pipeline_tests.faults.migration_scenarios import run_migration_fault_scenario

    rows: list[str] = []
    plan = FaultPlan(rate=args.rate, kinds=tuple(FaultKind), seed=args.seed, delay_seconds=1.0)
    protection = ("botocore retries + `write-id` cleanup; the ledger's write-ahead intent with its write id, adoption "
                  "of the version carrying it, resumable idempotent runs")
    with PrivateRedis() as redis_server:
        for control in (False, True):
            name = "mixed (all six kinds, held 1 s), `t2m migrate files`" + (", control then rerun" if control else "")
            fresh_buckets(settings)
            scenario_settings = dataclasses.replace(settings, database_url=db_url_for(f"migration_{int(control)}"))
            try:
                r = run_migration_fault_scenario(
                    scenario_settings, Path(tempfile.mkdtemp(dir=work)), redis_server.url(0), plan,
                    extra_topics=args.topics, large_files=args.large_files,
                    max_attempts=1 if control else None, rerun=control,
                )
            except Exception as exc:  # noqa: BLE001
                emit(rows, failed_row(name, f"{args.rate:.0%}", exc))
                continue
            trials = f"{r.files_in_tree} legacy entries, {r.migrated} migrated ({r.large_files} multipart)"
            first = r.runs[0]
            if control:
                rerun = r.runs[-1]
                got_through = first.failed > 0 or not first.verify_ok
                outcome = (
                    f"retries off (`T2M_S3_MAX_ATTEMPTS=1`): {first.failed} files failed, verify "
                    f"{'ok' if first.verify_ok else 'failed'} "
                    f"({'fault got through' if got_through else '**fault did NOT get through**'}); rerun with retries, "
                    f"still under faults: exit {rerun.exit_code}, {rerun.uploaded_files} uploaded, {rerun.adopted_versions} "
                    f"adopted, {rerun.unchanged_files} unchanged, verify {'ok' if rerun.verify_ok else '**failed**'}, "
                    f"{len(r.problems)} problems"
                )
                if not rerun.verify_ok or r.problems:
                    outcome = "**FAILED** rerun: " + outcome
                emit(rows, f"| {name} | {args.rate:.0%} | {trials} | {outcome} | retries (rerun) | {r.seconds:.0f} s |")
                continue
            ok = first.exit_code == 0 and first.verify_ok and not r.problems
            outcome = (
                f"exit 0, verify ok; {r.faults} faults in {r.requests} requests; {r.removed_inline} duplicate versions "
                f"removed after retries, {r.removed_by_sweep} by the sweep; every ledger and `file_metadata` row's "
                f"version holds its legacy file's bytes; 0 partial objects, 0 extra versions; "
                f"{r.orphan_multipart_uploads} abandoned multipart upload(s) (invisible; lifecycle aborts them)"
                if ok else f"**FAILED**: exit {first.exit_code}, verify {first.verify_ok}, problems {r.problems[:2]}"
            )
            emit(rows, f"| {name} | {args.rate:.0%} | {trials} | {outcome} | {protection} | {r.seconds:.0f} s |")
    return rows


def worker_rows(args, settings, work: Path) -> list[str]:
    """Render workers SIGKILLed mid-render under the real daemon, with the run-failure write-back as deployed."""
    from t2m_pipeline_tests.faults.worker_kill_scenarios import run_worker_kill_scenario, scenario_databases

    rows: list[str] = []
    fresh_buckets(settings)
    env = {"AWS_ENDPOINT_URL": settings.endpoint_url, "T2M_ENV": "dev", "T2M_MULTIPART_THRESHOLD_MIB": "5"}
    name = "run worker SIGKILLed mid-render (real daemon)"
    try:
        with scenario_databases() as (engine, metadata_url, dagster_url):
            r = run_worker_kill_scenario(engine, settings, metadata_url, dagster_url, env, Path(tempfile.mkdtemp(dir=work)),
                                         retried_jobs=args.kill_jobs, unretried_jobs=1, scenes=args.scenes, write_back="on")
    except Exception as exc:  # noqa: BLE001
        emit(rows, failed_row(name, "-", exc))
        return rows
    retried = [j for j in r.jobs if j.retried]
    control = [j for j in r.jobs if not j.retried]
    completed = sum(j.status_at_end == "completed" and not j.object_problems for j in retried)
    retries_ok = sum(len(j.retry_runs) == 1 and j.retry_runs[0]["status"] == "SUCCESS" for j in retried)
    flipped = sum("failed" in j.statuses_seen for j in retried)
    ok = completed == len(retried) == retries_ok and all(j.killed for j in r.jobs)
    outcome = (
        f"{len(retried)} workers killed: each reported as a crash, retried once from failure (SUCCESS); "
        f"{completed}/{len(retried)} jobs completed with every object verified; {flipped} showed `failed` on the way; "
        f"{sum(bool(j.slot_held_after_failure) for j in r.jobs)} dead workers still held a render slot once failed, "
        f"{sum(bool(j.slot_held_at_end) for j in r.jobs)} at the end; {r.leftover_render_dirs} render dirs left in tmp"
        if ok else f"**FAILED**: {completed}/{len(retried)} completed, {retries_ok} retries succeeded"
    )
    emit(rows, f"| {name} | {len(retried)} kill(s) | {len(retried)} job(s) x {args.scenes} scenes | {outcome} | the code "
               f"server's dead-process check + `run_retries`; monitoring frees the dead worker's pool slot | {r.seconds:.0f} s |")
    for job in control:
        got_through = not job.retry_runs and job.status_at_end != "completed"
        ended_by = ("the run-failure sensor failed the job" if job.status_at_end == "failed"
                    else f"the job stayed `{job.status_at_end}`; the stuck-job audit: `{job.stuck_action}`")
        emit(rows, f"| {name}, control | 1 kill | 1 job x {args.scenes} scenes | retries off for the run "
                   f"(`dagster/max_retries=0`): no retry, the job never completed; {ended_by} "
                   f"({'fault got through' if got_through else '**fault did NOT get through**'}) "
                   f"| the run-failure sensor, then the stuck-job audit (backstop) | {r.seconds:.0f} s |")
    return rows


def emit(rows: list[str], row: str) -> None:
    rows.append(row)
    print(row, flush=True)


def write_section(path: Path, group: str, command: str, note: str, rows: list[str], minutes: float) -> None:
    begin, end = f"<!-- reliability:{group}:begin -->", f"<!-- reliability:{group}:end -->"
    table = "\n".join(
        [
            begin,
            f"Produced by `{command}` on {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC "
            f"({platform.python_implementation()} {platform.python_version()}, {os.cpu_count()} cores, load average "
            f"{os.getloadavg()[0]:.1f} at the end; {minutes:.1f} min). {note}".rstrip(),
            "",
            *TABLE_HEAD,
            *rows,
            end,
        ]
    )
    text = path.read_text() if path.exists() else "# Reliability\n"
    if begin not in text:
        text += f"\n{begin}\n{end}\n"
    path.write_text(re.sub(re.escape(begin) + ".*?" + re.escape(end), lambda _: table, text, flags=re.S))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", action="append", choices=GROUPS, help="run only these groups (repeatable)")
    parser.add_argument("--rate", type=float, default=0.2)
    parser.add_argument("--seed", type=int, default=10)
    parser.add_argument("--keys", type=int, default=150, help="keys per upload scenario (every third written twice)")
    parser.add_argument("--multiparts", type=int, default=8, help="two-part uploads per upload scenario")
    parser.add_argument("--control-keys", type=int, default=60, help="keys per upload run with a protection off")
    parser.add_argument("--restarts", type=int, default=5)
    parser.add_argument("--held", type=float, default=5.0,
                        help="seconds a delayed answer / late write is held (the client's read timeout is 0.5 s less)")
    parser.add_argument("--workers", type=int, default=4, help="uploads in flight at once")
    parser.add_argument("--jobs", type=int, default=3, help="pipeline jobs per pipeline scenario")
    parser.add_argument("--scenes", type=int, default=2, help="scenes per pipeline job")
    parser.add_argument("--bulk-files", type=int, default=1200, help="extra legacy files in the restart-during-runs scenario")
    parser.add_argument("--topics", type=int, default=20, help="generated legacy topic folders in the migration scenario")
    parser.add_argument("--large-files", type=int, default=3, help="9 MiB legacy videos (multipart) in the migration scenario")
    parser.add_argument("--kill-jobs", type=int, default=3, help="jobs whose render worker is killed and retried")
    parser.add_argument("--output", type=Path, default=ROOT / "RELIABILITY.md")
    args = parser.parse_args(argv)
    groups = args.only or list(GROUPS)
    # The storage layer logs each duplicate it removes; here the tables count them (records still reach handlers).
    logging.getLogger("t2m_pipeline").addHandler(logging.NullHandler())

    admin = os.environ.get("T2M_TEST_ADMIN_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")
    db_url = admin.rsplit("/", 1)[0] + f"/t2m_reliability_{uuid.uuid4().hex[:10]}"
    work = Path(tempfile.mkdtemp(prefix="t2m-reliability-"))
    local_s3 = start_local_s3(work)
    endpoint = local_s3.endpoint
    os.environ.update({"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_REGION": "us-east-1"})
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN"):
        os.environ.pop(name, None)
    settings = load_settings({"AWS_ENDPOINT_URL": endpoint, "AWS_REGION": "us-east-1", "T2M_DATABASE_URL": db_url,
                              "T2M_MULTIPART_THRESHOLD_MIB": "5"})
    failed = False
    script = ".venv/bin/python -m t2m_pipeline_tests.faults.reliability_report"
    scenario_dbs: list[str] = []

    def scenario_db(name: str) -> str:
        url = f"{db_url}_{name}"
        upgrade(url)
        scenario_dbs.append(url)
        return url

    try:
        upgrade(db_url)
        for group in groups:
            started = time.monotonic()
            if group == "uploads":
                engine = make_engine(db_url)
                rows = upload_rows(args, settings, engine, work)
                engine.dispose()
                command = (f"{script} --only uploads --rate {args.rate} --seed {args.seed} --keys {args.keys} "
                           f"--multiparts {args.multiparts} --control-keys {args.control_keys} --held {args.held} "
                           f"--workers {args.workers}")
                note = (f"Multipart uploads are {MULTIPART_BYTES // (1024 * 1024)} MiB in two parts; every third key is "
                        f"written twice; delayed answers and late writes are held {args.held} s against a "
                        f"{args.held - 0.5} s read timeout.")
            elif group == "database":
                rows = database_rows(args, settings, work)
                command = f"{script} --only database --restarts {args.restarts} --scenes {args.scenes} --bulk-files {args.bulk_files}"
                note = ("The first two rows: job-state transitions and recorded uploads in a loop; the last two: the real "
                        "migration CLI and a pipeline job, each restart placed (with locks) inside an open transaction of both.")
            elif group == "migration":
                rows = migration_rows(args, settings, scenario_db, work)
                command = (f"{script} --only migration --rate {args.rate} --seed {args.seed} --topics {args.topics} "
                           f"--large-files {args.large_files}")
                note = ("The CLI keeps its 60 s read timeout, so a held answer is latency there and a late write lands "
                        "just before the retry.")
            elif group == "workers":
                rows = worker_rows(args, settings, work)
                command = f"{script} --only workers --kill-jobs {args.kill_jobs} --scenes {args.scenes}"
                note = ("The daemon runs on a copy of the project's dagster.yaml with shorter polling intervals; the "
                        "run-failure sensor runs as deployed.")
            else:
                rows = pipeline_rows(args, settings, db_url)
                command = f"{script} --only pipeline --rate {args.rate} --seed {args.seed} --jobs {args.jobs} --scenes {args.scenes}"
                note = ("Each job is driven as the daemon would (sensors, then its runs in process, real manim at low "
                        "quality); the pipeline's S3 client keeps its 60 s read timeout, so a held answer is latency there.")
            write_section(args.output, group, command, note, rows, (time.monotonic() - started) / 60)
            print(f"wrote the {group} section of {args.output}", flush=True)
            failed |= any("**FAILED**" in r or "did NOT" in r for r in rows)
    finally:
        local_s3.stop(30)
        for url in [db_url, *scenario_dbs]:
            drop_database(url)
        shutil.rmtree(work, ignore_errors=True)  # the multipart test files
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
