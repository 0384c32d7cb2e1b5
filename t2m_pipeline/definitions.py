"""The code location: every definition under `t2m_pipeline/defs/`, found by Dagster itself (`load_from_defs_folder`
walks the folder; each module's assets, checks, jobs, sensors and schedules, and each domain's `@dg.definitions`
resources). A new module in a domain folder is part of the location without being listed anywhere.
"""

import warnings
from pathlib import Path

import dagster as dg

# Two features we use on purpose, named so nothing else is hidden: a multi-run backfill policy on the legacy-files
# asset (beta) and checks on partitioned assets (preview). Without these filters every code-server start warns.
warnings.filterwarnings("ignore", category=dg.BetaWarning, message=r"Parameter `backfill_policy` of function `asset`")
warnings.filterwarnings("ignore", category=dg.PreviewWarning, message=r"Specifying a partitions_def on an AssetCheckSpec")

defs = dg.load_from_defs_folder(path_within_project=Path(__file__).parent)


def prepare_run_workers() -> None:
    """Called once by the warm run server (`t2m_pipeline/launcher/warm_server.py`) before it forks run workers: boto3
    and S3's parsed models, which every run's first client would otherwise load for itself (0.2 s, more under load)."""
    from t2m_pipeline.storage.s3 import load_service_models

    load_service_models()


def prepare_run(job_name: str, tags: dict[str, str]) -> None:
    """Called by the warm run server in each run's worker before the run starts: what the run will need, started
    while Dagster opens it (a scenes run's warm renderer)."""
    from t2m_pipeline.defs.scenes.assets import prestart_renderer

    prestart_renderer(job_name, tags)


def finish_run() -> None:
    """Called by the warm run server in each run's worker after the run: a renderer `prepare_run` started that the
    run never took is closed (its disks unmounted) before the worker exits."""
    import sys

    warm = sys.modules.get("t2m_pipeline.render.warm")
    if warm is not None:
        warm.close_prestarted()
