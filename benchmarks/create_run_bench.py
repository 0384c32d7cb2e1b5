"""What creating one run costs against Dagster's PostgreSQL storage: Dagster's own `postgres:` storage against the
project's (`t2m_pipeline.launcher.storage.PooledPostgresStorage`, the same with its connections kept), issue 13.

Each round creates, on each storage in turn, `--runs` `render_scenes` runs over a fresh 3-scene partition range (the
run a plan run's handoff queues: its planned events resolve the range once per asset and check), on a fresh Dagster
database holding a few, then `--partitions`, other `scenes` partitions (Dagster reads every key of the partitions
set for each resolution); the first run of each side is a warm-up. Reported: the median seconds per
`create_run_for_job` of each side and their ratio, and the connections each opened per run (psycopg2.connect calls).

Run: `python benchmarks/create_run_bench.py --write` (writes its section of BENCHMARKS.md).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
SECTION_START, SECTION_END = "<!-- create_run_bench:start -->", "<!-- create_run_bench:end -->"


def storages() -> dict[str, dict]:
    project = yaml.safe_load((ROOT / "dagster.yaml").read_text())["storage"]
    return {"Dagster's postgres storage": {"postgres": project["custom"]["config"]}, "PooledPostgresStorage": project}


def measure(runs: int, rounds: int, partitions: int) -> dict:
    """One database holding `partitions` other scenes partitions: both storages, alternating in rounds."""
    import dagster as dg
    import psycopg2
    from dagster._core.storage.tags import ASSET_PARTITION_RANGE_END_TAG, ASSET_PARTITION_RANGE_START_TAG

    from devtools.dagster_daemon import daemon_databases

    seconds: dict[str, list[float]] = {}
    connections: dict[str, list[int]] = {}
    connect = psycopg2.connect
    opened = [0]

    def counting(*args, **kwargs):
        opened[0] += 1
        return connect(*args, **kwargs)

    psycopg2.connect = counting
    try:
        with daemon_databases("t2m_create_run") as (_, metadata_url, dagster_url):
            os.environ.update({"T2M_DATABASE_URL": metadata_url, "T2M_DAGSTER_PG_URL": dagster_url})
            from t2m_pipeline.definitions import defs
            from t2m_pipeline.defs.scenes.jobs import RUN_CONFIG

            job = defs.resolve_job_def("render_scenes")
            filled = False
            for rnd in range(rounds):
                for name, storage in storages().items():
                    home = tempfile.mkdtemp(prefix="t2m-create-run-")
                    Path(home, "dagster.yaml").write_text(yaml.safe_dump({"storage": storage, "telemetry": {"enabled": False}}))
                    with dg.DagsterInstance.from_config(home) as instance:
                        if not filled and partitions:
                            instance.add_dynamic_partitions("scenes", [f"filler/{i:08d}/001" for i in range(partitions)])
                            filled = True
                        for n in range(runs + 1):
                            keys = [f"r{rnd}-{len(seconds.get(name, []))}-{n}/{name[:6]}/{s:03d}" for s in (1, 2, 3)]
                            instance.add_dynamic_partitions("scenes", keys)
                            opened[0] = 0
                            started = time.perf_counter()
                            instance.create_run_for_job(job_def=job, run_config=RUN_CONFIG, tags={
                                ASSET_PARTITION_RANGE_START_TAG: keys[0], ASSET_PARTITION_RANGE_END_TAG: keys[-1]})
                            took = time.perf_counter() - started
                            if n:  # the first is a warm-up
                                seconds.setdefault(name, []).append(took)
                                connections.setdefault(name, []).append(opened[0])
    finally:
        psycopg2.connect = connect
    base, ours = storages()
    return {
        "started": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M"),
        "load": round(os.getloadavg()[0], 2),
        "runs": len(seconds[base]),
        "partitions": partitions,
        "median": {k: statistics.median(v) for k, v in seconds.items()},
        "connections": {k: statistics.median(v) for k, v in connections.items()},
        "ratio": statistics.median(seconds[ours]) / statistics.median(seconds[base]),
    }


def section(results: list[dict], command: str) -> str:
    base, ours = storages()
    lines = [
        SECTION_START,
        "## Creating a run: Dagster's postgres storage against the pooled one (benchmarks/create_run_bench.py, issue 13)",
        "",
        f"Command: `{command}`. Measured {results[0]['started']} UTC on a {os.cpu_count()}-core machine (1-minute load "
        f"average {results[-1]['load']} at the end); PostgreSQL 127.0.0.1, a fresh Dagster database per row. Each side "
        f"creates {results[0]['runs']} `render_scenes` runs over a fresh 3-scene range (what the plan run's handoff "
        "queues), the sides alternating in rounds, a warm-up run each first.",
        "",
        "| other scenes partitions | storage | seconds per create_run (median) | new connections per run (median) | pooled / Dagster's |",
        "|---:|---|---:|---:|---:|",
    ]
    for result in results:
        for name in (base, ours):
            ratio = f"**{result['ratio']:.2f}x**" if name == ours else "-"
            lines.append(f"| {result['partitions']} | {name} | {result['median'][name]:.3f} | {result['connections'][name]:.0f} | {ratio} |")
    lines += [
        "",
        "`t2m_pipeline/launcher/storage.py`: the same tables and configuration, its run and event-log engines keep a "
        "connection, pinged at checkout. What remains grows with the partitions set: Dagster resolves a range run's "
        "partitions by reading every key of `scenes`, once per asset and check of the run (14 times), so the audits' "
        "retention of old jobs' partitions (`audits/retention.py`) is what keeps it small.",
        SECTION_END,
    ]
    return "\n".join(lines)


def write(text: str) -> None:
    path = ROOT / "BENCHMARKS.md"
    current = path.read_text()
    if SECTION_START in current:
        head, rest = current.split(SECTION_START, 1)
        current = head + text + rest.split(SECTION_END, 1)[1]
    else:
        current = current.rstrip() + "\n\n" + text + "\n"
    path.write_text(current)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=6, help="runs per side per round (after a warm-up)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--partitions", default="0,20000", help="other scenes partitions in the database, one row each")
    parser.add_argument("--write", action="store_true")
    args = parser.parse_args()
    results = [measure(args.runs, args.rounds, int(n)) for n in args.partitions.split(",")]
    command = " ".join(["python benchmarks/create_run_bench.py", *sys.argv[1:]])
    text = section(results, command)
    print(text)
    if args.write:
        write(text)


if __name__ == "__main__":
    main()
