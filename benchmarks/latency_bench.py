"""Submit-to-video latency through the real Dagster daemon, against bare manim renders of the same code (issue 13).

What runs: a local S3 endpoint (moto server over HTTP), a fresh metadata database migrated with Alembic, a fresh
Dagster storage database, and `dagster-daemon run -w workspace.yaml` on a DAGSTER_HOME holding the project's
`dagster.yaml` unchanged (the daemon starts the code server of `t2m_pipeline.definitions`, which spawns the run
workers). Jobs are queued with `t2m_pipeline.db.jobs.submit_job(..., quality="low")`, as the web app would; nobody
clicks anything.

1. Latency. A warm-up job first (not counted: the code server's imports, first connections, font caches). Then one
   job per `--scenes` size, one at a time: seconds from the row's insert (`jobs.created_at`) to `completed`
   (`jobs.completed_at`, polled in PostgreSQL). Right after each job, its scenes are rendered by hand: each scene's
   code is fetched from the code bucket (`layout.scene_code_key`) and rendered with the same manim command the
   pipeline uses (`manim render -ql ... scene.py SceneNNN`, without the pipeline and without its sandbox), one
   after another; the ratio is insert-to-completed / the sum of those bare renders.
2. Throughput. `--throughput-jobs` jobs of `--throughput-scenes` scenes submitted at once; seconds from the first
   insert to the last completion, against all their scenes rendered by hand back to back (and, for information,
   the ideal on 2 cores: that sum / 2).
3. Breakdown, from Dagster's own records (run records and each run's event log): for each run, sensor wait (from
   what it reacts to: the row's insert for `plan_job`, the job's `scene_outline` materialization for
   `render_scenes`, its last `thumbnail` materialization for `combine_scenes`, the parent's end for a retry; none
   for a run the run before it queued, `t2m/handed_off_by`) to the run's creation; run queue (created to RUN_STARTING, which the queue daemon reports when it dequeues); process
   start (RUN_STARTING to the worker's "Started process for run" event: spawn, `import dagster`, the instance);
   code load (that event to RUN_START: the worker imports `t2m_pipeline.definitions` and builds the job); each step
   (STEP_START to STEP_SUCCESS/FAILURE); in-run overhead (RUN_START to the first step, between steps, last step to
   the run's end). Two views per job: the wall-clock split (each instant of insert-to-completed goes to the most
   advanced thing happening for the job: a step over in-run overhead over code load over process start over queue
   over sensor wait; the columns add up to the wall time) and the run-seconds summed over the job's runs (what
   every run paid). Plus the sensors' tick spacing and, for the throughput window, how many renders ran at once.
4. Run-worker start-up imports: `python -X importtime -c "import t2m_pipeline.definitions"` (heaviest modules and
   packages, total) and `import dagster` alone, with the wall time of each process against `python -c pass`.

Run: `python benchmarks/latency_bench.py --write` (= `make bench-latency`); `--quick` for a small smoke run;
`--scenes 1,3,7`, `--throughput-jobs N`, `--throughput-scenes N`. Writes its section of BENCHMARKS.md with
`--write`; records the 1-minute load average before, during and after (the machine may be shared).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
SECTION_START, SECTION_END = "<!-- latency_bench:start -->", "<!-- latency_bench:end -->"
CONTEXT = "One idea. Another idea. A third idea. A fourth idea. A fifth idea. A sixth idea. A seventh idea."
JOB_TAG = "t2m/job_id"
PARENT_RUN_TAG = "dagster/parent_run_id"
POLL_S = 0.25
# What each run's sensor reacts to (an asset materialization of the job); plan_job reacts to the row itself.
TRIGGER_ASSET = {"render_scenes": "scene_outline", "combine_scenes": "thumbnail"}
STEPS = ("scene_outline", "scene_code", "rendered_video", "thumbnail", "combined_video")
SCENES_STEP = "scenes"  # one step makes a run's scenes (code, render, thumbnail each): split per scene below
OVERHEADS = ("in-run overhead", "code load", "process start", "run queue", "sensor wait")
# Wall-clock split: the first category active at an instant takes it (renders first: they are the real work).
PRIORITY = ("rendered_video", "combined_video", "scene_outline", "scene_code", "thumbnail", *OVERHEADS)
COLUMNS = ("sensor wait", "run queue", "process start", "code load", "in-run overhead", *STEPS)


def load1() -> float:
    return round(os.getloadavg()[0], 2)


# -- services -----------------------------------------------------------------------------------------------------


def start_s3(log_dir: Path):
    """The local S3 endpoint (moto server over HTTP on a free loopback port), from the project's one starter."""
    from devtools.local_s3 import start_local_s3

    return start_local_s3(log_dir)


@dataclass
class Stack:
    engine: object
    settings: object
    storage: object
    instance: object
    daemon: subprocess.Popen
    daemon_log: Path
    env: dict


@contextmanager
def running_stack(workdir: Path):
    """S3, both databases, buckets, the daemon on the project's dagster.yaml; everything torn down afterwards."""
    from dagster import DagsterInstance

    from devtools.dagster_daemon import daemon_databases, stop_process_group

    s3 = start_s3(workdir)
    aws = {"AWS_ENDPOINT_URL": s3.endpoint, "AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench",
           "AWS_REGION": "us-east-1", "AWS_DEFAULT_REGION": "us-east-1", "T2M_ENV": "dev"}
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ACCOUNT_ID", "T2M_REDIS_URL"):
        os.environ.pop(name, None)
    os.environ.update(aws)
    try:
        with daemon_databases("t2m_latency") as (engine, metadata_url, dagster_url):
            os.environ.update({"T2M_DATABASE_URL": metadata_url, "T2M_DAGSTER_PG_URL": dagster_url})
            from t2m_pipeline.config import load_settings
            from t2m_pipeline.storage.bootstrap import bootstrap_bucket
            from t2m_pipeline.storage.bucket_settings import declared_buckets
            from t2m_pipeline.storage.s3 import S3Storage, make_s3_client

            settings = load_settings()
            client = make_s3_client(settings)
            for spec in declared_buckets(settings):
                bootstrap_bucket(client, spec, settings.region)
            home = workdir / "dagster_home"
            home.mkdir()
            shutil.copy(ROOT / "dagster.yaml", home / "dagster.yaml")  # unchanged: the instance as deployed locally
            env = {**os.environ, "DAGSTER_HOME": str(home)}
            log_path = workdir / "daemon.log"
            with open(log_path, "wb") as log:
                daemon = subprocess.Popen(
                    [str(Path(sys.executable).parent / "dagster-daemon"), "run", "-w", str(ROOT / "workspace.yaml")],
                    cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                )
            instance = DagsterInstance.from_config(str(home))
            try:
                yield Stack(engine, settings, S3Storage(settings, engine), instance, daemon, log_path, env)
            finally:
                stop_process_group(daemon)
                instance.dispose()
    finally:
        s3.stop()


# -- jobs ---------------------------------------------------------------------------------------------------------


def submit(stack: Stack, scenes: int, label: str) -> uuid.UUID:
    from t2m_pipeline.db.jobs import submit_job

    return submit_job(stack.engine, clerk_user_id="user_latency_bench", email="bench@example.com",
                      topic=f"Latency benchmark: {label}", context=CONTEXT, quality="low", scene_count=scenes)


def wait_completed(stack: Stack, job_ids: list[uuid.UUID], timeout: float, loads: list[float]) -> dict:
    """Poll jobs.status until every job is completed; {job_id: (created_at, completed_at, user_id)}. A failed job,
    a dead daemon or the timeout stops the benchmark with the daemon log's tail."""
    from sqlalchemy import text

    deadline = time.monotonic() + timeout
    while True:
        with stack.engine.connect() as conn:
            rows = conn.execute(
                text("SELECT id, status, created_at, completed_at, user_id, error_info FROM jobs WHERE id = ANY(:ids)"),
                {"ids": job_ids},
            ).all()
        loads.append(load1())
        failed = [r for r in rows if r.status in ("failed", "cancelled")]
        problem = None
        if failed:
            problem = f"job {failed[0].id} {failed[0].status}: {json.dumps(failed[0].error_info)[:500]}"
        elif all(r.status == "completed" for r in rows) and len(rows) == len(job_ids):
            return {r.id: (r.created_at, r.completed_at, r.user_id) for r in rows}
        elif stack.daemon.poll() is not None:
            problem = f"the daemon exited ({stack.daemon.returncode})"
        elif time.monotonic() > deadline:
            problem = f"not completed within {timeout:.0f} s: " + ", ".join(f"{r.id} {r.status}" for r in rows)
        if problem:
            tail = stack.daemon_log.read_text(errors="replace")[-4000:]
            raise SystemExit(f"latency benchmark stopped: {problem}\n--- daemon log ({stack.daemon_log}) ---\n{tail}")
        time.sleep(POLL_S)


def bare_renders(stack: Stack, user_id, job_id, scenes: int) -> list[float]:
    """Each scene's generated code, fetched from the code bucket, rendered by hand one after another: seconds each."""
    from t2m_pipeline.render.codegen import scene_class_name
    from t2m_pipeline.render.entrypoint import manim_command
    from t2m_pipeline.storage import layout

    seconds = []
    for number in range(1, scenes + 1):
        code = stack.storage.get_bytes(stack.settings.bucket("code"), layout.scene_code_key(user_id, job_id, number))
        with tempfile.TemporaryDirectory(prefix="t2m-bare-") as tmp:
            Path(tmp, "scene.py").write_bytes(code)
            command = manim_command(sys.executable, "low", scene_class_name(number), Path(tmp) / "media")
            t0 = time.perf_counter()
            subprocess.run(command, cwd=tmp, check=True, capture_output=True)
            seconds.append(time.perf_counter() - t0)
    return seconds


# -- breakdown from Dagster's records -----------------------------------------------------------------------------


@dataclass
class RunTimes:
    job_id: str  # the T2M job (the run's t2m/job_id tag)
    run_id: str
    job_name: str
    created: float
    parent: str | None
    handed_off: bool = False  # queued by the run before it (handoff.py), not by a sensor
    marks: dict = field(default_factory=dict)  # starting, process, started, ended
    steps: dict = field(default_factory=dict)  # step key -> [start, end]
    materializations: list = field(default_factory=list)  # (asset key, timestamp, partition, render seconds or None)
    outcome: str = ""

    def step_intervals(self) -> list[tuple[str, float, float]]:
        """(stage, start, end) of each step; the scenes step split per scene by its materializations: code from the
        step's start to the scene's scene_code, rendered_video from there to its video (a wait for a core
        included), thumbnail from there to its thumbnail; and the job's combined video, if the step made it, for
        its own seconds up to its materialization."""
        out = []
        for key, (start, end) in self.steps.items():
            end = end if end is not None else self.marks.get("ended", start)
            if key != SCENES_STEP:
                out.append((key, start, end))
                continue
            made: dict[str, dict[str, float]] = {}
            for asset, ts, partition, seconds in self.materializations:
                if asset == "combined_video" and start <= ts <= end:  # the job's combine, made by this step
                    out.append((asset, ts - (seconds or 0.0), ts))
                elif partition and start <= ts <= end:
                    made.setdefault(partition, {})[asset] = ts
            for stamps in made.values():
                cursor = start
                for stage in ("scene_code", "rendered_video", "thumbnail"):
                    if stage in stamps:
                        out.append((stage, cursor, stamps[stage]))
                        cursor = stamps[stage]
        return out

    def render_intervals(self) -> list[tuple[str, float, float]]:
        """Each manim render in this run: its own seconds (`render_seconds`) up to its video's materialization."""
        return [("manim", ts - seconds, ts) for asset, ts, _, seconds in self.materializations if asset == "rendered_video" and seconds]

    def intervals(self, trigger: float) -> list[tuple[str, float, float]]:
        m = self.marks
        out = [("sensor wait", trigger, self.created)]
        for name, a, b in (("run queue", self.created, m.get("starting")), ("process start", m.get("starting"), m.get("process")),
                           ("code load", m.get("process"), m.get("started"))):
            if a is not None and b is not None:
                out.append((name, a, b))
        cursor = m.get("started")
        for key, start, end in sorted(self.step_intervals(), key=lambda item: item[1]):
            if cursor is not None and start > cursor:
                out.append(("in-run overhead", cursor, start))
            out.append((key, start, end))
            cursor = end if cursor is None else max(cursor, end)
        if cursor is not None and m.get("ended") and m["ended"] > cursor:
            out.append(("in-run overhead", cursor, m["ended"]))
        return [(name, a, b) for name, a, b in out if b > a]


def job_runs(instance, job_id) -> list[RunTimes]:
    from dagster import DagsterEventType, RunsFilter

    from t2m_pipeline.pipeline.run_labels import HANDED_OFF_BY_TAG

    runs = []
    for record in instance.get_run_records(filters=RunsFilter(tags={JOB_TAG: str(job_id)}), ascending=True):
        run = record.dagster_run
        times = RunTimes(str(job_id), run.run_id, run.job_name, record.create_timestamp.timestamp(), run.tags.get(PARENT_RUN_TAG),
                         handed_off=HANDED_OFF_BY_TAG in run.tags)
        for entry in instance.all_logs(run.run_id):
            event = entry.dagster_event
            if event is None:
                continue
            kind, ts = event.event_type, entry.timestamp
            if kind == DagsterEventType.RUN_STARTING:
                times.marks.setdefault("starting", ts)
            elif kind == DagsterEventType.ENGINE_EVENT and "Started process for run" in (event.message or entry.user_message or ""):
                times.marks.setdefault("process", ts)
            elif kind == DagsterEventType.RUN_START:
                times.marks.setdefault("started", ts)
            elif kind in (DagsterEventType.RUN_SUCCESS, DagsterEventType.RUN_FAILURE, DagsterEventType.RUN_CANCELED):
                times.marks["ended"], times.outcome = ts, kind.value
            elif kind == DagsterEventType.STEP_START:
                times.steps[event.step_key] = [ts, None]
            elif kind in (DagsterEventType.STEP_SUCCESS, DagsterEventType.STEP_FAILURE) and event.step_key in times.steps:
                times.steps[event.step_key][1] = ts
            elif kind == DagsterEventType.ASSET_MATERIALIZATION:
                materialization = event.event_specific_data.materialization
                asset = event.asset_key.to_user_string()
                # its own seconds: a render's, or a combine's made in the scenes step (before the last thumbnail)
                own = materialization.metadata.get("render_seconds" if asset == "rendered_video" else "seconds")
                times.materializations.append((asset, ts, materialization.partition, own.value if own else None))
        runs.append(times)
    return runs


def trigger_of(run: RunTimes, runs: list[RunTimes], inserted: float) -> float:
    """When what this run's sensor reacts to happened (see the module docstring); a handed-off run waits for none."""
    if run.handed_off and not run.parent:
        return run.created
    if run.parent:
        parent = next((r for r in runs if r.run_id == run.parent), None)
        if parent is not None and parent.marks.get("ended"):
            return parent.marks["ended"]
    asset = TRIGGER_ASSET.get(run.job_name)
    if asset is None:
        return inserted
    seen = [ts for r in runs for key, ts, _, _ in r.materializations if key == asset and ts <= run.created]
    return max(seen) if seen else inserted


def by_job(runs: list[RunTimes]) -> dict[str, list[RunTimes]]:
    groups: dict[str, list[RunTimes]] = {}
    for run in runs:
        groups.setdefault(run.job_id, []).append(run)
    return groups


def all_intervals(runs: list[RunTimes], inserted: dict[str, float]) -> list[tuple[str, float, float]]:
    """Every run's intervals; `inserted` maps a job id to its row's insert time."""
    return [
        interval
        for job_id, group in by_job(runs).items()
        for run in group
        for interval in run.intervals(trigger_of(run, group, inserted[job_id]))
    ]


def wall_split(intervals: list[tuple[str, float, float]], start: float, end: float) -> dict[str, float]:
    """Each instant of [start, end] to the highest-priority category active then; 'unattributed' if none."""
    bounds = sorted({start, end, *(t for _, a, b in intervals for t in (a, b) if start < t < end)})
    rank = {name: i for i, name in enumerate(PRIORITY)}
    split = {name: 0.0 for name in (*COLUMNS, "unattributed")}
    for a, b in zip(bounds, bounds[1:]):
        mid = (a + b) / 2
        active = [name for name, s, e in intervals if s <= mid < e]
        name = min(active, key=lambda n: rank.get(n, len(rank))) if active else "unattributed"
        split[name] = split.get(name, 0.0) + (b - a)
    return split


def run_seconds(intervals: list[tuple[str, float, float]]) -> dict[str, float]:
    totals = {name: 0.0 for name in COLUMNS}
    for name, a, b in intervals:
        totals[name] = totals.get(name, 0.0) + (b - a)
    return totals


def concurrency(intervals: list[tuple[str, float, float]], step: str, start: float, end: float) -> dict[int, float]:
    """Seconds of [start, end] during which 0, 1, 2, ... `step` steps ran at once."""
    events = sorted([(a, 1) for name, a, _ in intervals if name == step] + [(b, -1) for name, _, b in intervals if name == step])
    histogram: dict[int, float] = {}
    level, cursor = 0, start
    for t, delta in events:
        t = min(max(t, start), end)
        histogram[level] = histogram.get(level, 0.0) + (t - cursor)
        level, cursor = level + delta, t
    histogram[level] = histogram.get(level, 0.0) + (end - cursor)
    return {k: v for k, v in sorted(histogram.items()) if v > 1e-9}


def per_run_means(runs: list[RunTimes], inserted: dict[str, float]) -> dict[str, dict]:
    """Mean seconds of each stage per run, by Dagster job (plan_job, render_scenes, combine_scenes)."""
    by_name: dict[str, list[dict]] = {}
    for job_id, group in by_job(runs).items():
        for run in group:
            by_name.setdefault(run.job_name, []).append(run_seconds(run.intervals(trigger_of(run, group, inserted[job_id]))))
    return {
        name: {"runs": len(rows), **{col: round(statistics.mean(r[col] for r in rows), 2) for col in COLUMNS}}
        for name, rows in sorted(by_name.items())
    }


def sensor_ticks(instance, after: float, before: float) -> dict[str, dict]:
    """Spacing of each sensor's tick starts in the window (the daemon's loop and each sensor's minimum interval)."""
    from dagster._core.scheduler.instigation import InstigatorType

    out = {}
    for state in instance.all_instigator_state(instigator_type=InstigatorType.SENSOR):
        ticks = sorted(t.timestamp for t in instance.get_ticks(state.instigator_origin_id, state.selector_id, after=after, before=before))
        gaps = [b - a for a, b in zip(ticks, ticks[1:])]
        if gaps:
            out[state.instigator_name] = {"ticks": len(ticks), "median_gap_s": round(statistics.median(gaps), 2),
                                          "min_gap_s": round(min(gaps), 2), "max_gap_s": round(max(gaps), 2)}
    return dict(sorted(out.items()))


# -- imports ------------------------------------------------------------------------------------------------------

_IMPORT_LINE = re.compile(r"^import time:\s+(\d+) \|\s+(\d+) \|( *)(\S+)\s*$")


def parse_importtime(stderr: str) -> list[tuple[str, int, int, str | None]]:
    """(module, cumulative µs, depth, importer) per line of `-X importtime`: children come before their parent."""
    rows = []
    for line in stderr.splitlines():
        match = _IMPORT_LINE.match(line)
        if match:
            rows.append((match.group(4), int(match.group(2)), (len(match.group(3)) - 1) // 2))
    out = []
    for i, (name, cumulative, depth) in enumerate(rows):
        parent = next((n for n, _, d in rows[i + 1:] if d < depth), None)
        out.append((name, cumulative, depth, parent))
    return out


def python_wall(code: str, env: dict, repeat: int = 3) -> float:
    samples = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-c", code], env=env, cwd=ROOT, check=True, capture_output=True)
        samples.append(time.perf_counter() - t0)
    return statistics.median(samples)


def import_profile(env: dict) -> dict:
    def importtime(code: str) -> list:
        subprocess.run([sys.executable, "-c", code], env=env, cwd=ROOT, check=True, capture_output=True)  # .pyc, page cache
        done = subprocess.run([sys.executable, "-X", "importtime", "-c", code], env=env, cwd=ROOT, check=True, capture_output=True, text=True)
        return parse_importtime(done.stderr)

    startup = {name for name, *_ in importtime("pass")}

    def total_ms(rows) -> float:
        return sum(c for name, c, depth, _ in rows if depth == 0 and name not in startup) / 1000

    definitions, dagster_alone = importtime("import t2m_pipeline.definitions"), importtime("import dagster")
    first_party = sorted(((n, c, p) for n, c, d, p in definitions if n.startswith("t2m_pipeline.") and n != "t2m_pipeline.definitions"),
                         key=lambda row: -row[1])[:8]
    packages: dict[str, tuple[int, str | None]] = {}
    for name, cumulative, _, parent in definitions:
        top = name.split(".")[0]
        outermost = parent is None or parent.split(".")[0] != top  # where the package was entered from outside it
        if top != "t2m_pipeline" and name not in startup and outermost and cumulative > packages.get(top, (0, None))[0]:
            packages[top] = (cumulative, parent)
    third_party = sorted(packages.items(), key=lambda item: -item[1][0])[:10]
    base = python_wall("pass", env)
    return {
        "definitions_total_ms": round(total_ms(definitions)),
        "dagster_total_ms": round(total_ms(dagster_alone)),
        "definitions_wall_s": round(python_wall("import t2m_pipeline.definitions", env) - base, 2),
        "dagster_wall_s": round(python_wall("import dagster", env) - base, 2),
        "python_pass_wall_s": round(base, 3),
        "first_party": [{"module": n, "cumulative_ms": round(c / 1000), "imported_by": p} for n, c, p in first_party],
        "third_party": [{"package": n, "cumulative_ms": round(c / 1000), "imported_by": p} for n, (c, p) in third_party],
    }


# -- the benchmark ------------------------------------------------------------------------------------------------


def summarize(instance, jobs: dict, window: tuple[float, float] | None = None) -> dict:
    """Breakdown for jobs {job_id: (created_at, completed_at, user_id)}: per job, or over one window for many."""
    runs, inserted = [], {}
    for job_id, (created, _, _) in jobs.items():
        runs += job_runs(instance, job_id)
        inserted[str(job_id)] = created.timestamp()
    intervals = all_intervals(runs, inserted)
    start = window[0] if window else min(inserted.values())
    end = window[1] if window else max(c.timestamp() for _, c, _ in jobs.values())
    return {
        "runs": len(runs),
        "run_outcomes": sorted({r.outcome for r in runs}),
        "wall_split": {k: round(v, 2) for k, v in wall_split(intervals, start, end).items()},
        "run_seconds": {k: round(v, 2) for k, v in run_seconds(intervals).items()},
        "per_run_means": per_run_means(runs, inserted),
        "renders_at_once": {k: round(v, 2) for k, v in concurrency([i for r in runs for i in r.render_intervals()], "manim", start, end).items()},
    }


def bench(args) -> dict:
    from t2m_pipeline.config import render_sandbox_mode

    loads = [load1()]
    result: dict = {"load_before": loads[0], "cores": os.cpu_count(), "started": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M")}
    workdir = Path(tempfile.mkdtemp(prefix="t2m-latency-"))
    result["imports"] = import_profile({**os.environ})  # before the daemon starts: nothing else of ours competes
    with running_stack(workdir) as stack:
        mode = render_sandbox_mode(stack.env)
        result["render_sandbox"] = f"{mode}: " + ("bubblewrap" if mode != "none" and shutil.which("bwrap") else "no sandbox")
        t_window = time.time()
        warm = submit(stack, args.warmup_scenes, "warm-up")
        done = wait_completed(stack, [warm], args.timeout, loads)
        created, completed, _ = done[warm]
        result["warmup"] = {"scenes": args.warmup_scenes, "seconds": round((completed - created).total_seconds(), 2)}
        print(f"warm-up job of {args.warmup_scenes} scene(s): {result['warmup']['seconds']} s", flush=True)

        result["latency"] = []
        for scenes in args.scenes:
            job_id = submit(stack, scenes, f"{scenes} scenes")
            done = wait_completed(stack, [job_id], args.timeout, loads)
            created, completed, user_id = done[job_id]
            bare = bare_renders(stack, user_id, job_id, scenes)
            loads.append(load1())
            wall = (completed - created).total_seconds()
            row = {"scenes": scenes, "insert_to_completed_s": round(wall, 2), "bare_s": [round(b, 2) for b in bare],
                   "bare_sum_s": round(sum(bare), 2), "ratio": round(wall / sum(bare), 2),
                   "breakdown": summarize(stack.instance, done)}
            result["latency"].append(row)
            print(f"{scenes} scene(s): {row['insert_to_completed_s']} s vs bare {row['bare_sum_s']} s = {row['ratio']}x", flush=True)

        if args.throughput_jobs:
            n, scenes = args.throughput_jobs, args.throughput_scenes
            ids = [submit(stack, scenes, f"throughput {i + 1}/{n}") for i in range(n)]
            done = wait_completed(stack, ids, args.throughput_timeout, loads)
            first = min(c for c, _, _ in done.values())
            last = max(c for _, c, _ in done.values())
            wall = (last - first).total_seconds()
            bare = [s for job_id in ids for s in bare_renders(stack, done[job_id][2], job_id, scenes)]
            loads.append(load1())
            result["throughput"] = {
                "jobs": n, "scenes": scenes, "first_insert_to_last_completed_s": round(wall, 2),
                "bare_renders": len(bare), "bare_sum_s": round(sum(bare), 2), "ratio": round(wall / sum(bare), 2),
                "ideal_2_cores_s": round(sum(bare) / 2, 2), "ratio_to_ideal": round(wall / (sum(bare) / 2), 2),
                "per_job_s": sorted(round((c - a).total_seconds(), 1) for a, c, _ in done.values()),
                "breakdown": summarize(stack.instance, done, (first.timestamp(), last.timestamp())),
            }
            t = result["throughput"]
            print(f"throughput {n} x {scenes}: {t['first_insert_to_last_completed_s']} s vs bare back to back "
                  f"{t['bare_sum_s']} s = {t['ratio']}x", flush=True)
        result["sensor_ticks"] = sensor_ticks(stack.instance, t_window, time.time())
        result["dequeue"] = dequeue_settings(stack.instance)
    shutil.rmtree(workdir, ignore_errors=True)
    loads.append(load1())
    result["load_after"] = loads[-1]
    result["load_max"] = max(loads)
    return result


def dequeue_settings(instance) -> dict:
    """The instance's settings that bound latency, read back from the daemon's instance (not from the YAML)."""
    coordinator = instance.run_coordinator
    concurrency_config = instance.get_concurrency_config()
    queue = concurrency_config.run_queue_config
    return {
        "dequeue_interval_seconds": coordinator.dequeue_interval_seconds,
        "max_concurrent_runs": queue.max_concurrent_runs if queue else None,
        "tag_concurrency_limits": queue.tag_concurrency_limits if queue else None,
        "default_pool_limit": concurrency_config.pool_config.default_pool_limit,
        "pool_granularity": str(concurrency_config.pool_config.pool_granularity),
        "run_monitoring_poll_interval_seconds": instance.run_monitoring_poll_interval_seconds,
    }


# -- report -------------------------------------------------------------------------------------------------------


def _f(value: float) -> str:
    return f"{value:.1f}"


def scenes_label(n: int) -> str:
    return f"{n} scene" + ("s" if n != 1 else "")


def breakdown_rows(label: str, view: dict, extra: str = "") -> str:
    cells = " | ".join(_f(view.get(col, 0.0)) for col in COLUMNS)
    return f"| {label} | {cells} |{extra}"


def markdown(result: dict, command: str) -> str:
    from t2m_pipeline.defs.scenes.sensors import SENSOR_INTERVAL_S

    lat, imp = result["latency"], result["imports"]
    lines = [
        SECTION_START,
        "## Submit to video: latency through the real daemon (benchmarks/latency_bench.py, issue 13)",
        "",
        "**Where issue 13 stands**: two runs per job: `plan_job`, and one `render_scenes` run over the job's "
        "scene-partition range (the `scenes` step: each scene code -> render -> thumbnail on its own beside the others, "
        "each render holding one of the machine's cores; every partition keeps its own materializations and checks, "
        "and a scene re-runs alone) that ends with the job's `combined_video` (`combine_in_step`; a `combine_scenes` "
        "run only when that fails). The step's renders share one warm renderer (`render/warm.py`: "
        "one sandbox per job that imports manim once, while the code is written, and forks each render into a cgroup "
        "of its own; a render then takes 0.4x a cold sandbox's time, `make bench-render`). A queued row starts at once: the `new_jobs` tick listens for "
        "the queue's notification instead of waiting for the daemon's next pass (5 s). Each run's worker is a fork of "
        "a warm server that has imported the code and S3's models (`t2m_pipeline/launcher`), and a scenes run's "
        "worker starts its warm renderer before Dagster opens the run (`prepare_run`); the plan run queues the "
        "scenes' run (`defs/scenes/handoff.py`); Dagster's storage keeps its connections (`PooledPostgresStorage`: "
        "as shipped, dagster-postgres opened one per call, about 140 to create a scenes run, `make bench-create-run`); queued runs dequeue every half "
        "second (`PromptQueuedRunCoordinator`: Dagster's queue daemon, at its floor). Before these, on this machine: "
        "3 scenes 3.55x (15.22 s against 4.29 s; one run per scene, 4.7 s of sensor wait); the issue measured 4.7x.",
        "",
        f"Command: `{command}` (`make bench-latency` runs the full size). Measured {result['started']} UTC on a "
        f"{result['cores']}-core machine; 1-minute load average {result['load_before']} before, "
        f"{result['load_after']} after, at most {result['load_max']} during the run"
        + (" (the bench's own renders load the machine too: compare rows of one run, not runs)."
           if result["load_max"] > 1.5 else "."),
        f"`dagster-daemon run -w workspace.yaml` on fresh PostgreSQL databases (metadata migrated with Alembic, "
        f"Dagster storage), S3 = moto server over HTTP on loopback; renders in the pipeline sandboxed "
        f"(`T2M_RENDER_SANDBOX` {result['render_sandbox']}). Jobs queued with `submit_job(..., "
        f"quality='low')`; a warm-up job of {scenes_label(result['warmup']['scenes'])} first ({result['warmup']['seconds']} s, "
        "not counted). Bare = each scene's code fetched from the code bucket and rendered by hand with the pipeline's "
        "manim command (`python -m manim render -ql --media_dir M --disable_caching --progress_bar none --format mp4 "
        "-o output scene.py SceneNNN`, no sandbox, no pipeline), one after another, right after its job (the daemon "
        "idle meanwhile, its sensors still ticking).",
        "",
        "| scenes | insert to completed (s) | bare renders, sum (s) | ratio | runs |",
        "|---:|---:|---:|---:|---:|",
    ]
    for row in lat:
        lines.append(f"| {row['scenes']} | {row['insert_to_completed_s']} | {row['bare_sum_s']} | **{row['ratio']}x** | {row['breakdown']['runs']} |")
    if "throughput" in result:
        t = result["throughput"]
        lines += [
            "",
            f"**Throughput.** {t['jobs']} jobs of {t['scenes']} scenes submitted at once: first insert to last "
            f"completed **{t['first_insert_to_last_completed_s']} s**, against their {t['bare_renders']} bare renders "
            f"back to back {t['bare_sum_s']} s: **{t['ratio']}x** (ideal on 2 cores, sum / 2 = {t['ideal_2_cores_s']} s: "
            f"{t['ratio_to_ideal']}x of it). Each job's own insert to completed: {', '.join(str(s) for s in t['per_job_s'])} s. "
            "Renders running at once over the window: "
            + ", ".join(f"{k}: {_f(v)} s" for k, v in t["breakdown"]["renders_at_once"].items()) + ".",
        ]
    header = "| job | " + " | ".join(COLUMNS) + " |"
    rule = "|---|" + "---:|" * len(COLUMNS)
    lines += [
        "",
        "**Where the time goes, wall clock** (seconds of insert to completed; each instant goes to the most advanced "
        "thing happening for the job: a step, else in-run overhead, else code load, else process start, else run "
        "queue, else sensor wait; a row adds up to the wall time). Stages from Dagster's run records and event logs: "
        "sensor wait = what the run's sensor reacts to (the row's insert, the outline's or the last thumbnail's "
        "materialization) to the run's creation; run queue = creation to RUN_STARTING (reported at dequeue); process "
        "start = RUN_STARTING to the worker's `Started process for run` (the warm run server forks a worker that "
        "has imported the code already, and it opens the instance); code load = that to RUN_START (the worker "
        "loads the job from `t2m_pipeline.definitions`, imported by the server); in-run overhead = RUN_START to the first step, between steps, after the "
        "last one.",
        "",
        header,
        rule,
    ]
    for row in lat:
        split = row["breakdown"]["wall_split"]
        lines.append(breakdown_rows(f"{scenes_label(row['scenes'])} ({row['insert_to_completed_s']} s)", split))
    if "throughput" in result:
        t = result["throughput"]
        lines.append(breakdown_rows(f"throughput window ({t['first_insert_to_last_completed_s']} s)", t["breakdown"]["wall_split"]))
    unattributed = [row["breakdown"]["wall_split"].get("unattributed", 0) for row in lat]
    lines += [
        "",
        f"(Unattributed, no run of the job in any stage: {', '.join(_f(u) for u in unattributed)} s.)",
        "",
        "**What every run paid, summed over the job's runs** (run-seconds; renders overlap, so a row exceeds the wall time):",
        "",
        "| job | " + " | ".join(COLUMNS) + " |",
        rule,
    ]
    for row in lat:
        lines.append(breakdown_rows(f"{scenes_label(row['scenes'])}, {row['breakdown']['runs']} runs", row["breakdown"]["run_seconds"]))
    if "throughput" in result:
        t = result["throughput"]
        lines.append(breakdown_rows(f"throughput, {t['breakdown']['runs']} runs", t["breakdown"]["run_seconds"]))
    means: dict[str, list] = {}
    for row in lat:
        for name, m in row["breakdown"]["per_run_means"].items():
            means.setdefault(name, []).append(m)
    lines += ["", "Mean per run, latency jobs (s):", "", "| Dagster job | runs | " + " | ".join(COLUMNS) + " |",
              "|---|---:|" + "---:|" * len(COLUMNS)]
    for name, rows in sorted(means.items()):
        count = sum(m["runs"] for m in rows)
        cells = " | ".join(_f(sum(m[col] * m["runs"] for m in rows) / count) for col in COLUMNS)
        lines.append(f"| {name} | {count} | {cells} |")
    ticks = result["sensor_ticks"]
    lines += [
        "",
        f"Sensor ticks during the run (start to start; `minimum_interval_seconds` = {SENSOR_INTERVAL_S} for the "
        f"pipeline's sensors, {SENSOR_INTERVAL_S * 2} for the failure sensor; the daemon passes every 5 s): "
        + "; ".join(f"`{name}` median {t['median_gap_s']} s (min {t['min_gap_s']}, max {t['max_gap_s']}, {t['ticks']} ticks)"
                    for name, t in ticks.items()) + "."
        + (" A 5 s sensor ticks about every 10 s: the sensor daemon passes over the sensors every 5 s "
           "(`MIN_INTERVAL_LOOP_TIME`), and at the next pass slightly less than 5 s have passed since the tick "
           "started, so it waits for the pass after."
           if ticks.get("new_jobs", {}).get("median_gap_s", 0) > 7.5 else ""),
        "Instance settings read back from the daemon's instance: " + ", ".join(f"{k} = {v}" for k, v in result["dequeue"].items()) + ".",
        "",
        f"**Run-worker start-up imports.** `python -X importtime -c \"import t2m_pipeline.definitions\"`: "
        f"**{imp['definitions_total_ms']} ms** of imports beyond the interpreter's own "
        f"(process wall time {imp['definitions_wall_s']} s over `python -c pass`); `import dagster` alone: "
        f"{imp['dagster_total_ms']} ms ({imp['dagster_wall_s']} s wall). Heaviest packages (cumulative at their first "
        "import, and the module that pulled them in):",
        "",
        "| package | cumulative (ms) | first imported by |",
        "|---|---:|---|",
    ]
    lines += [f"| {p['package']} | {p['cumulative_ms']} | `{p['imported_by']}` |" for p in imp["third_party"]]
    lines += ["", "Heaviest first-party modules (cumulative, ms):", "", "| module | cumulative (ms) | imported by |", "|---|---:|---|"]
    lines += [f"| `{m['module']}` | {m['cumulative_ms']} | `{m['imported_by']}` |" for m in imp["first_party"]]
    lines.append(SECTION_END)
    return "\n".join(lines) + "\n"


def write_section(text: str) -> None:
    path = ROOT / "BENCHMARKS.md"
    current = path.read_text() if path.exists() else "# Benchmarks\n"
    pattern = re.compile(re.escape(SECTION_START) + ".*?" + re.escape(SECTION_END) + "\n?", re.S)
    updated = pattern.sub(lambda _: text, current) if pattern.search(current) else current.rstrip("\n") + "\n\n" + text
    path.write_text(updated)


def scene_list(raw: str) -> list[int]:
    try:
        values = [int(part) for part in raw.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{raw!r}: expected scene counts like 1,3,7") from None
    if not values or any(not 1 <= v <= 50 for v in values):
        raise argparse.ArgumentTypeError(f"{raw!r}: each scene count must be 1 to 50")
    return values


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenes", type=scene_list, default=[1, 3, 7], help="scene counts of the latency jobs (default 1,3,7)")
    parser.add_argument("--throughput-jobs", type=int, default=10, help="jobs submitted at once (0: no throughput run)")
    parser.add_argument("--throughput-scenes", type=int, default=3)
    parser.add_argument("--warmup-scenes", type=int, default=1)
    parser.add_argument("--timeout", type=float, default=900, help="seconds one latency job may take")
    parser.add_argument("--throughput-timeout", type=float, default=3600)
    parser.add_argument("--quick", action="store_true", help="smoke run: one 1-scene job, 2 jobs of 2 scenes at once")
    parser.add_argument("--write", action="store_true", help="write the results into BENCHMARKS.md")
    parser.add_argument("--json", action="store_true", help="print the raw results as JSON")
    args = parser.parse_args()
    if args.quick:
        args.scenes, args.throughput_jobs, args.throughput_scenes = [1], 2, 2
    result = bench(args)
    if args.json:
        print(json.dumps(result, indent=2, default=str))
    text = markdown(result, "python benchmarks/latency_bench.py " + " ".join(sys.argv[1:]))
    if args.write:
        write_section(text)
        print("BENCHMARKS.md updated")
    else:
        print(text)


if __name__ == "__main__":
    main()
