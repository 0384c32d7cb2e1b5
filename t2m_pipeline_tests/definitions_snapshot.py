"""A plain-data picture of the code location: every asset, check, job, sensor and schedule spec a data engineer sees.

`python -m t2m_pipeline_tests.definitions_snapshot --write` records it in `definitions_snapshot.json` beside this file
after an intended change; `test_definitions_snapshot.py` fails on any other.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import dagster as dg

SNAPSHOT = Path(__file__).with_name("definitions_snapshot.json")


def _partitions(partitions_def) -> str | None:
    if partitions_def is None:
        return None
    name = getattr(partitions_def, "name", None)
    return f"{type(partitions_def).__name__}:{name}" if name else type(partitions_def).__name__


def snapshot(defs: dg.Definitions) -> dict:
    repo = defs.get_repository_def()
    graph = repo.asset_graph
    assets = {}
    for key in sorted(graph.get_all_asset_keys(), key=lambda k: k.to_user_string()):
        node = graph.get(key)
        spec_deps = {}
        for parent in sorted(node.parent_keys, key=lambda k: k.to_user_string()):
            mapping = graph.get_partition_mapping(key, parent)
            spec_deps[parent.to_user_string()] = type(mapping).__name__ if mapping is not None else None
        assets[key.to_user_string()] = {
            "group": node.group_name,
            "partitions": _partitions(node.partitions_def),
            "deps": spec_deps,
            "kinds": sorted(node.kinds),
            "owners": sorted(node.owners),
            "tags": {k: v for k, v in sorted(node.tags.items()) if not k.startswith("dagster/kind/")},
            "description": node.description,
            "pools": sorted(node.pools or ()),
            "checks": sorted(k.name for k in node.check_keys),
        }
    checks = {}
    for check_key in sorted(graph.asset_check_keys, key=lambda k: k.to_user_string()):
        spec = graph.get_check_spec(check_key)
        checks[check_key.to_user_string()] = {"description": spec.description, "blocking": spec.blocking}
    jobs = {}
    for job in sorted(repo.get_all_jobs(), key=lambda j: j.name):
        if job.name.startswith("__"):
            continue
        jobs[job.name] = {
            "description": job.description,
            "tags": dict(sorted(job.tags.items())),
            "partitions": _partitions(job.partitions_def),
            "assets": sorted(k.to_user_string() for k in (job.asset_layer.selected_asset_keys if job.asset_layer else ())),
            "ops": sorted(n.name for n in job.graph.node_dict.values()) if not job.asset_layer.selected_asset_keys else [],
        }
    sensors = {
        s.name: {
            "description": s.description,
            "jobs": sorted(t.job_name for t in s.targets),
            "minimum_interval_seconds": s.minimum_interval_seconds,
            "default_status": s.default_status.value,
        }
        for s in sorted(repo.sensor_defs, key=lambda s: s.name)
    }
    schedules = {
        s.name: {
            "description": s.description,
            "cron": s.cron_schedule,
            "job": s.job_name,
            "timezone": s.execution_timezone,
            "default_status": s.default_status.value,
        }
        for s in sorted(repo.schedule_defs, key=lambda s: s.name)
    }
    resources = sorted(repo.get_top_level_resources())
    return {"assets": assets, "checks": checks, "jobs": jobs, "sensors": sensors, "schedules": schedules,
            "resources": resources}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--write", action="store_true", help="record the current definitions as the snapshot")
    parser.add_argument("--out", type=Path, help="write the snapshot here instead")
    args = parser.parse_args()
    from t2m_pipeline.definitions import defs

    text = json.dumps(snapshot(defs), indent=1, sort_keys=True) + "\n"
    target = args.out or (SNAPSHOT if args.write else None)
    if target:
        target.write_text(text)
    else:
        print(text)


if __name__ == "__main__":
    main()
