"""Pipeline benchmarks: the `new_jobs` sensor tick with 10,000 queued jobs, and the per-scene pipeline overhead.

1. Sensor tick. 10,000 queued jobs are inserted into a throwaway metadata database with one multi-row INSERT per
   table (random priorities). The real sensor function is evaluated with `build_sensor_context` against it, tick
   after tick (100 jobs claimed per tick), and timed. Baseline in the same run: the dispatch query as written
   (walking the partial index `ix_job_queue_dispatch`) against the same query with an ORDER BY that does not match
   the index (PostgreSQL must read and sort every queued row), and the tick against Dagster's 60 s tick limit.
2. Per-scene overhead. For each of N scenes of one job, the wall time of a one-scene `render_scenes` run (scene_code +
   rendered_video + thumbnail, executed in process through Dagster, S3 over HTTP to a local moto server, status
   write-back to PostgreSQL) minus the wall time of a bare `manim` render of the very same code (same quality, same
   machine, interleaved in the same run).

Run: `python benchmarks/pipeline_bench.py --write` (= `make bench-pipeline`); writes its section of BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
ADMIN_URL = os.environ.get("T2M_TEST_ADMIN_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")
QUIET = {"loggers": {"console": {"config": {"log_level": "ERROR"}}}}
SECTION_START, SECTION_END = "<!-- pipeline_bench:start -->", "<!-- pipeline_bench:end -->"


def throwaway_db(tag: str) -> str:
    from t2m_pipeline.db.migrate import upgrade

    url = ADMIN_URL.rsplit("/", 1)[0] + f"/t2m_bench_{tag}_{uuid.uuid4().hex[:8]}"
    upgrade(url)
    return url


# -- 1. sensor tick -----------------------------------------------------------------------------------------------

INSERT_JOBS = """
INSERT INTO jobs (id, user_id, status, priority, topic, description, configuration)
SELECT gen_random_uuid(), u.id, 'queued', (ARRAY['low','normal','high','urgent'])[1 + (random() * 3)::int],
       'Benchmark topic ' || i, 'Context ' || i, jsonb_build_object('scene_count', 3, 'quality', 'low')
FROM generate_series(1, :n) AS i CROSS JOIN (SELECT id FROM users LIMIT 1) AS u
"""
INSERT_QUEUE = "INSERT INTO job_queue (job_id, priority, status) SELECT id, priority, 'queued' FROM jobs ORDER BY created_at, id"


def bench_sensor(jobs: int, ticks: int) -> dict:
    import dagster as dg
    from sqlalchemy import text

    from t2m_pipeline.db.engine import drop_database, make_engine, shared_engine
    from t2m_pipeline.defs.scenes import sensors
    from t2m_pipeline.defs.resources import PostgresResource
    from t2m_pipeline.pipeline.dispatch import QUEUED_JOBS_SQL

    url = throwaway_db("sensor")
    engine = make_engine(url)
    try:
        with engine.begin() as conn:
            conn.execute(text("INSERT INTO users (clerk_user_id, email) VALUES ('user_bench', 'bench@example.com')"))
            started = time.perf_counter()
            conn.execute(text(INSERT_JOBS), {"n": jobs})
            conn.execute(text(INSERT_QUEUE))
            insert_seconds = time.perf_counter() - started
        with engine.begin() as conn:
            conn.execute(text("ANALYZE jobs; ANALYZE job_queue"))

        def query_ms(sql: str, repeat: int = 20) -> tuple[float, str]:
            with engine.connect() as conn:
                plan = "\n".join(r[0] for r in conn.execute(text("EXPLAIN " + sql), {"limit": sensors.MAX_JOBS_PER_TICK, "exclude": []}))
                samples = []
                for _ in range(repeat):
                    t0 = time.perf_counter()
                    conn.execute(text(sql), {"limit": sensors.MAX_JOBS_PER_TICK, "exclude": []}).all()
                    samples.append((time.perf_counter() - t0) * 1000)
            return statistics.median(samples), plan

        indexed_ms, indexed_plan = query_ms(QUEUED_JOBS_SQL.text)
        unindexed_sql = QUEUED_JOBS_SQL.text.replace("ELSE 3 END", "WHEN 'low' THEN 3 ELSE 4 END")
        unindexed_ms, unindexed_plan = query_ms(unindexed_sql)

        instance = dg.DagsterInstance.ephemeral()
        resources = {"database": PostgresResource(database_url=url)}
        tick_seconds, cursor, launched = [], None, 0
        for _ in range(ticks):
            with dg.build_sensor_context(instance=instance, resources=resources, cursor=cursor) as context:
                t0 = time.perf_counter()
                result = sensors.new_jobs(context)
                tick_seconds.append(time.perf_counter() - t0)
            cursor = result.cursor
            launched += len(result.run_requests)
        with engine.connect() as conn:
            still_queued = conn.execute(text("SELECT count(*) FROM jobs WHERE status = 'queued'")).scalar_one()
    finally:
        engine.dispose()
        shared_engine.cache_clear()
        drop_database(url)
    return {
        "jobs": jobs,
        "insert_seconds": round(insert_seconds, 2),
        "batch": sensors.MAX_JOBS_PER_TICK,
        "ticks": ticks,
        "tick_median_s": round(statistics.median(tick_seconds), 3),
        "tick_max_s": round(max(tick_seconds), 3),
        "tick_first_s": round(tick_seconds[0], 3),
        "launched": launched,
        "still_queued": still_queued,
        "query_indexed_ms": round(indexed_ms, 2),
        "query_unindexed_ms": round(unindexed_ms, 2),
        "indexed_uses_index": "ix_job_queue_dispatch" in indexed_plan and "Sort Key" not in indexed_plan,
        "unindexed_sorts": "Sort Key" in unindexed_plan,
    }


# -- 2. per-scene overhead ----------------------------------------------------------------------------------------


def bench_scene_overhead(scenes: int) -> dict:
    import dagster as dg

    from devtools.local_s3 import start_local_s3

    logs = Path(tempfile.mkdtemp(prefix="t2m-bench-"))
    local_s3 = start_local_s3(logs)
    endpoint = local_s3.endpoint
    os.environ.update(
        {"AWS_ENDPOINT_URL": endpoint, "AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench", "AWS_REGION": "us-east-1", "T2M_ENV": "dev"}
    )
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ACCOUNT_ID"):
        os.environ.pop(name, None)
    url = throwaway_db("scenes")
    os.environ["T2M_DATABASE_URL"] = url
    from t2m_pipeline.config import load_settings
    from t2m_pipeline.db.engine import drop_database, make_engine, shared_engine
    from t2m_pipeline.defs.scenes.sensors import new_jobs, scene_runs
    from t2m_pipeline.defs.scenes.assets import SCENE_ASSETS
    from t2m_pipeline.defs.scenes.jobs import PIPELINE_JOBS
    from t2m_pipeline.defs.scenes.resources import pipeline_resources_for
    from t2m_pipeline.db.jobs import submit_job
    from t2m_pipeline.partition_keys import decode_scene_key
    from t2m_pipeline.pipeline.steps import Pipeline, load_outline
    from t2m_pipeline.render.codegen import TemplateCodeGenerator, scene_class_name
    from t2m_pipeline.render.entrypoint import manim_command
    from t2m_pipeline.storage import layout
    from t2m_pipeline.storage.bootstrap import bootstrap_bucket
    from t2m_pipeline.storage.bucket_settings import declared_buckets
    from t2m_pipeline.storage.s3 import S3Storage, make_s3_client

    settings = load_settings()
    client = make_s3_client(settings)
    for spec in declared_buckets(settings):
        bootstrap_bucket(client, spec, settings.region)
    engine = make_engine(url)
    rows = []
    try:
        resources = pipeline_resources_for(dataclasses.replace(settings, database_url=url))
        defs = dg.Definitions(assets=SCENE_ASSETS, jobs=PIPELINE_JOBS, resources=resources)
        instance = dg.DagsterInstance.ephemeral()
        submit_job(engine, clerk_user_id="user_bench", email="b@example.com", topic="Benchmark of the pipeline",
                            context="One idea. Another idea. A third idea. And a fourth one.", scene_count=scenes)
        with dg.build_sensor_context(instance=instance, resources=resources) as context:
            tick = new_jobs(context)
        for request in tick.dynamic_partitions_requests:
            instance.add_dynamic_partitions(request.partitions_def_name, list(request.partition_keys))
        assert defs.resolve_job_def("plan_job").execute_in_process(instance=instance, partition_key=tick.run_requests[0].partition_key, run_config=QUIET).success
        with dg.build_sensor_context(instance=instance, resources=resources) as context:
            scene_runs(context)  # registers the job's scenes as partitions (and asks for one run over them)
        requests = [dg.RunRequest(partition_key=key) for key in instance.get_dynamic_partitions("scenes")]  # one scene a run
        storage = S3Storage(settings, engine)
        render_job = defs.resolve_job_def("render_scenes")
        # Warm-up: imports, font caches and the first connection are paid once, by neither side.
        warm = requests[0]
        render_job.execute_in_process(instance=instance, partition_key=warm.partition_key, run_config=QUIET)
        for i, request in enumerate(requests[1:], start=2):
            key = decode_scene_key(request.partition_key)
            number = key.scene_number
            outline = load_outline(Pipeline(settings, engine, storage), key.job)
            code = TemplateCodeGenerator().generate(outline, outline.scene(number)).code  # what the run will render

            def pipeline_run() -> float:
                t0 = time.perf_counter()
                assert render_job.execute_in_process(instance=instance, partition_key=request.partition_key, run_config=QUIET).success
                elapsed = time.perf_counter() - t0
                stored = storage.get_bytes(settings.bucket("code"), layout.scene_code_key(key.user_id, key.job_id, number)).decode()
                assert stored == code, "the bare render must render the code the pipeline rendered"
                return elapsed

            def bare_manim() -> float:
                with tempfile.TemporaryDirectory(prefix="t2m-bare-") as tmp:
                    Path(tmp, "scene.py").write_text(code)
                    t0 = time.perf_counter()
                    subprocess.run(
                        manim_command(sys.executable, "low", scene_class_name(number), Path(tmp) / "media"),
                        cwd=tmp, check=True, capture_output=True,
                    )
                    return time.perf_counter() - t0

            # Interleaved, alternating which goes first, so drift on the machine hits both sides alike.
            if i % 2:
                bare, full = bare_manim(), pipeline_run()
            else:
                full, bare = pipeline_run(), bare_manim()
            rows.append({"scene": number, "pipeline_s": round(full, 3), "bare_manim_s": round(bare, 3), "overhead_s": round(full - bare, 3)})
    finally:
        engine.dispose()
        shared_engine.cache_clear()
        drop_database(url)
        local_s3.stop()
    overheads = [r["overhead_s"] for r in rows]
    bares = [r["bare_manim_s"] for r in rows]
    fulls = [r["pipeline_s"] for r in rows]
    return {
        "scenes": rows,
        "median_pipeline_s": round(statistics.median(fulls), 3),
        "median_bare_s": round(statistics.median(bares), 3),
        "median_overhead_s": round(statistics.median(overheads), 3),
        "overhead_ratio": round(statistics.median(fulls) / statistics.median(bares), 2),
    }


# -- report -------------------------------------------------------------------------------------------------------


def markdown(sensor: dict, scenes: dict, command: str) -> str:
    lines = [
        SECTION_START,
        "## Pipeline: sensor tick with 10,000 queued jobs, per-scene overhead (benchmarks/pipeline_bench.py)",
        "",
        f"Command: `{command}` (the same as `make bench-pipeline`). Machine: 2 cores; PostgreSQL on loopback; S3 = moto "
        "server over HTTP on loopback (`devtools.local_s3`).",
        "",
        f"**`new_jobs` sensor tick.** {sensor['jobs']:,} queued jobs (random priorities) inserted with one multi-row "
        f"INSERT per table in {sensor['insert_seconds']} s; the sensor function evaluated {sensor['ticks']} times in a row "
        f"with `build_sensor_context` against that database, each tick claiming {sensor['batch']} jobs (dispatch query, "
        "`queued -> processing` transitions in one transaction, run requests, partition requests).",
        "",
        "| measure | value |",
        "|---|---:|",
        f"| tick, median of {sensor['ticks']} (s) | {sensor['tick_median_s']} |",
        f"| tick, first / max (s) | {sensor['tick_first_s']} / {sensor['tick_max_s']} |",
        f"| jobs launched / still queued after the ticks | {sensor['launched']:,} / {sensor['still_queued']:,} |",
        f"| dispatch query through `ix_job_queue_dispatch` (ms, median of 20) | {sensor['query_indexed_ms']} |",
        f"| same query, ORDER BY not matching the index: reads and sorts every queued row (ms) | {sensor['query_unindexed_ms']} |",
        "",
        f"Tick vs Dagster's 60 s tick limit: {sensor['tick_median_s'] / 60 * 100:.2f} % of it "
        f"({60 / max(sensor['tick_median_s'], 1e-6):.0f}x headroom). Index vs sort baseline: "
        f"{sensor['query_unindexed_ms'] / max(sensor['query_indexed_ms'], 1e-6):.1f}x faster "
        f"(plan uses the index without a sort: {sensor['indexed_uses_index']}; baseline plan sorts: {sensor['unindexed_sorts']}). "
        "The tick's cost is the claim of its batch (one savepoint and transition per job), so it is bounded by the "
        "batch size, not by the backlog.",
        "",
        f"**Per-scene pipeline overhead.** One job of {len(scenes['scenes']) + 1} scenes (template generator, `-ql`); the "
        "first scene's run is a warm-up and not counted. For each other scene: a one-scene `render_scenes` run executed in "
        "process (scene_code + rendered_video + thumbnail: outline and code read from S3, code generated and stored, "
        "manim in a credential-free subprocess, video probed and uploaded with its sha256, thumbnail decoded and "
        "uploaded, `file_metadata` rows, status write-back, Dagster's event log) against a bare `manim render -ql` of "
        "the same code, interleaved in the same run.",
        "",
        "| scene | pipeline run (s) | bare manim (s) | overhead (s) |",
        "|---:|---:|---:|---:|",
    ]
    for row in scenes["scenes"]:
        lines.append(f"| {row['scene']} | {row['pipeline_s']} | {row['bare_manim_s']} | {row['overhead_s']} |")
    lines += [
        "",
        f"Median: pipeline {scenes['median_pipeline_s']} s vs bare manim {scenes['median_bare_s']} s: overhead "
        f"{scenes['median_overhead_s']} s per scene, ratio {scenes['overhead_ratio']}x. Not included: launching a run "
        "worker process under the daemon (a few seconds per run on this machine; the daemon test shows the whole path).",
        SECTION_END,
    ]
    return "\n".join(lines) + "\n"


def write_section(text: str) -> None:
    path = ROOT / "BENCHMARKS.md"
    current = path.read_text() if path.exists() else "# Benchmarks\n\nEach section: what was measured, the exact command, results beside a baseline from the same run.\n"
    pattern = re.compile(re.escape(SECTION_START) + ".*?" + re.escape(SECTION_END) + "\n?", re.S)
    updated = pattern.sub(lambda _: text, current) if pattern.search(current) else current.rstrip("\n") + "\n\n" + text
    path.write_text(updated)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=10_000)
    parser.add_argument("--ticks", type=int, default=10)
    parser.add_argument("--scenes", type=int, default=9, help="scenes of the benchmark job (the first is a warm-up)")
    parser.add_argument("--write", action="store_true", help="write the results into BENCHMARKS.md")
    args = parser.parse_args()
    sensor = bench_sensor(args.jobs, args.ticks)
    print(json.dumps(sensor, indent=2))
    scenes = bench_scene_overhead(args.scenes)
    print(json.dumps(scenes, indent=2))
    command = "python benchmarks/pipeline_bench.py --write"
    if (args.jobs, args.ticks, args.scenes) != (10_000, 10, 9):
        command = f"python benchmarks/pipeline_bench.py --jobs {args.jobs} --ticks {args.ticks} --scenes {args.scenes} --write"
    text = markdown(sensor, scenes, command)
    if args.write:
        write_section(text)
        print("BENCHMARKS.md updated")
    else:
        print(text)


if __name__ == "__main__":
    main()
