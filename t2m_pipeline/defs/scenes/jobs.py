"""The runs the sensors launch: one per job to plan it, one for its scenes (code, render and thumbnail each; the run
of a job's last thumbnail combines its videos too), and one per job to combine when that could not. In-process executors: a run is one process (step subprocesses would double the start-up cost);
the tag lets the run queue cap how many CPU-heavy runs share the machine (dagster.yaml), and each job's priority
which queued run starts first."""

import os

import dagster as dg

from t2m_pipeline.defs.scenes.checks import CHECKS
from t2m_pipeline.defs.scenes.partitions import (
    COMBINED_VIDEO,
    RENDERED_VIDEO,
    SCENE_CODE,
    SCENE_OUTLINE,
    THUMBNAIL,
    job_partitions,
    scene_partitions,
)

# What a run worker prints on its console (the event log keeps everything): `make dev` sets WARNING unless VERBOSE=1.
RUN_CONSOLE_LOG_LEVEL = os.environ.get("T2M_RUN_LOG_LEVEL", "").strip().upper() or "INFO"
RUN_CONFIG = {"loggers": {"console": {"config": {"log_level": RUN_CONSOLE_LOG_LEVEL}}}}
CPU_TAG = "t2m/cpu"
MAX_RUNTIME_TAG = "dagster/max_runtime"  # seconds; enforced by run monitoring (dagster.yaml)
# The queue starts higher priorities first: a job under way is finished (combine, then its scenes) before the next
# is planned, so renders are not left waiting behind planning runs and a user's first video comes first.
PRIORITY_TAG = "dagster/priority"
PRIORITY = {"plan": "0", "scenes": "1", "combine": "2"}


def pipeline_selection(*keys: dg.AssetKey) -> dg.AssetSelection:
    """The assets with the checks they report as they materialize (checks.py), and no other: a check another domain
    puts on them (the audits' partition-key checks judge a whole partition set) never runs in a partition's run."""
    own = [dg.AssetCheckKey(key, name) for key in keys for name in CHECKS.get(key, ())]
    return dg.AssetSelection.assets(*keys).without_checks() | dg.AssetSelection.checks(*own)


plan_job = dg.define_asset_job(
    "plan_job",
    config=RUN_CONFIG,
    selection=pipeline_selection(SCENE_OUTLINE),
    partitions_def=job_partitions,
    executor_def=dg.in_process_executor,
    tags={MAX_RUNTIME_TAG: "600", PRIORITY_TAG: PRIORITY["plan"]},
    description="Plan one job: its scene outline and scene partitions.",
)
render_scenes_job = dg.define_asset_job(
    "render_scenes",
    config=RUN_CONFIG,
    selection=pipeline_selection(SCENE_CODE, RENDERED_VIDEO, THUMBNAIL),
    partitions_def=scene_partitions,
    executor_def=dg.in_process_executor,
    tags={CPU_TAG: "heavy", MAX_RUNTIME_TAG: "1800", PRIORITY_TAG: PRIORITY["scenes"]},  # a render times out at 300 s anyway
    description="A job's scenes (its scene-partition range; or one scene): code, manim render, thumbnail, the scenes "
    "side by side; then, once every scene of the job is made, the job's combined video.",
)
combine_job = dg.define_asset_job(
    "combine_scenes",
    config=RUN_CONFIG,
    selection=pipeline_selection(COMBINED_VIDEO),
    partitions_def=job_partitions,
    executor_def=dg.in_process_executor,
    # not heavy: it copies packets (a re-encode, for scenes that differ, holds one of the machine's cores)
    tags={MAX_RUNTIME_TAG: "1800", PRIORITY_TAG: PRIORITY["combine"]},
    description="Concatenate a job's scene videos and complete the job, when the scenes run could not (or from the UI).",
)

PIPELINE_JOBS = [plan_job, render_scenes_job, combine_job]
