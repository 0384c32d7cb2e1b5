"""The operator's requeue of held legacy jobs: an op in a job launched by hand (the Launchpad, with the jobs named in
its run config), never an asset, so no "Materialize" queues anything. No schedule: only an operator decides.

(No `from __future__ import annotations` here: Dagster reads the config and resource annotations at runtime.)
"""

import dagster as dg

from t2m_pipeline.defs.resources import PostgresResource
from t2m_pipeline.defs.storage.assets import JOBS_TABLE
from t2m_pipeline.migration.requeue import RequeueError, requeue_held_jobs


class RequeueConfig(dg.Config):
    """Which held jobs to queue: the ids, or every held job. Neither: nothing is queued."""

    job_ids: list[str] = []
    all_held: bool = False


@dg.op(description="Queue the held migrated jobs named in the run config (`job_ids`, or `all_held: true`).")
def queue_held_legacy_jobs(context: dg.OpExecutionContext, config: RequeueConfig, database: PostgresResource) -> None:
    if config.job_ids and config.all_held:
        raise dg.Failure("set job_ids or all_held, not both")
    if not (config.job_ids or config.all_held):
        context.log.warning("no job named: nothing queued (set job_ids, or all_held: true, in the run config)")
        context.add_output_metadata({"requeued": 0, "skipped": 0, "note": "no job named in the run config"})
        return
    try:
        report = requeue_held_jobs(database.engine, None if config.all_held else config.job_ids)
    except RequeueError as exc:
        raise dg.Failure(str(exc)) from None
    for job_id, why in report.skipped:
        context.log.warning(f"job {job_id} not queued: {why}")
    metadata = {"requeued": len(report.requeued), "skipped": len(report.skipped), "jobs": dg.MetadataValue.json(report.as_dict())}
    context.log.info(f"{len(report.requeued)} held job(s) queued, {len(report.skipped)} skipped")
    context.log_event(dg.AssetObservation(asset_key=JOBS_TABLE.key, description="held legacy jobs queued", metadata=metadata))
    context.add_output_metadata(metadata)


@dg.job(
    name="legacy_jobs_requeue",
    tags={"t2m/domain": "migration"},
    executor_def=dg.in_process_executor,
    description="Operator action: queue migrated jobs that were queued or processing in the legacy system (imported "
    "`held`), named in the run config. Nothing else ever queues them.",
)
def legacy_jobs_requeue_job():
    queue_held_legacy_jobs()
