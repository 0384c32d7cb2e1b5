"""The local and the production dagster.yaml agree on every concurrency and retry rule; only the sizes differ, and
those differences are listed here, on purpose. Every tag a limit names is one the code really sets."""

from pathlib import Path

import yaml

from t2m_pipeline.defs.scenes.assets import RENDER_POOL
from t2m_pipeline.defs.scenes.jobs import CPU_TAG
from t2m_pipeline.pipeline.run_labels import USER_ID_TAG

REPO = Path(__file__).resolve().parents[2]
LOCAL = yaml.safe_load((REPO / "dagster.yaml").read_text())
PRODUCTION = yaml.safe_load((REPO / "infra" / "dagster" / "dagster.yaml").read_text())

# (setting, local, production): a 2-core machine against Fargate, where each run and each render is its own task.
SIZES = {
    ("runs", "max_concurrent_runs"): (4, 20),
    ("tag", CPU_TAG): (2, 10),
    ("tag", "dagster/backfill"): (3, 10),
    ("pools", "default_limit"): (2, 10),
}


def limits(config: dict) -> dict:
    runs = config["concurrency"]["runs"]
    out = {("runs", "max_concurrent_runs"): runs["max_concurrent_runs"], ("pools", "default_limit"): config["concurrency"]["pools"]["default_limit"]}
    for rule in runs["tag_concurrency_limits"]:
        value = rule.get("value")
        out[("tag", rule["key"]) if value in (None, "heavy") else ("tag", rule["key"], str(value))] = rule["limit"]
    return out


def test_the_same_rules_with_only_the_listed_sizes_differing():
    local, production = limits(LOCAL), limits(PRODUCTION)
    assert set(local) == set(production), set(local) ^ set(production)
    differing = {k: (local[k], production[k]) for k in local if local[k] != production[k]}
    assert differing == SIZES


def test_retries_monitoring_and_the_coordinator_agree():
    assert LOCAL["run_retries"] == PRODUCTION["run_retries"]
    assert LOCAL["run_monitoring"]["enabled"] and PRODUCTION["run_monitoring"]["enabled"]
    for config in (LOCAL, PRODUCTION):
        assert config["run_coordinator"]["module"] == "t2m_pipeline.launcher"
        assert config["run_coordinator"]["class"] == "PromptQueuedRunCoordinator"
        assert "max_concurrent_runs" not in (config["run_coordinator"].get("config") or {})  # one place: concurrency
    assert LOCAL["run_coordinator"]["config"]["dequeue_interval_seconds"] == PRODUCTION["run_coordinator"]["config"]["dequeue_interval_seconds"]


def test_every_limited_tag_is_one_the_code_sets():
    from t2m_pipeline.definitions import defs

    job_tags = {(k, v) for job in defs.get_repository_def().get_all_jobs() for k, v in job.tags.items()}
    for config in (LOCAL, PRODUCTION):
        for rule in config["concurrency"]["runs"]["tag_concurrency_limits"]:
            key, value = rule["key"], rule.get("value")
            if key == "dagster/backfill":
                continue  # Dagster sets it on every backfill run
            if key == USER_ID_TAG:
                continue  # set by the sensors on every pipeline run (t2m_pipeline_tests/defs/scenes/test_run_labels.py)
            assert (key, value) in job_tags, (key, value)
    rendered = defs.get_repository_def().asset_graph.get(__import__("dagster").AssetKey("rendered_video"))
    assert rendered.pools == {RENDER_POOL}
