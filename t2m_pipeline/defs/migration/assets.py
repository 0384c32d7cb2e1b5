"""Migration assets: legacy Redis -> PostgreSQL, discovery of legacy sources, legacy files -> S3 (a partitioned asset
a data engineer backfills from the UI, many partitions per run) and the verify check per partition. (The operator's
requeue of held legacy jobs acts on jobs, so it is a job of its own: `requeue.py`.)

Thin: each asset calls one library function (`t2m_pipeline.migration`) and reports what it did as metadata. A run of
`legacy_files` covers many partitions (its backfill policy), yet each partition's materialization and verify result
are that partition's own (`add_asset_metadata(partition_key=...)`, one `AssetCheckEvaluation` per partition).
Migrated scenes join the pipeline's graph: their `scenes` partitions are registered and `scene_code` /
`rendered_video` materializations reported, so `thumbnail` can be backfilled for legacy videos.
"""


import time
from collections.abc import Iterator

import dagster as dg
from dagster._core.definitions.asset_checks.asset_check_evaluation import AssetCheckEvaluationTargetMaterializationData

from t2m_pipeline.defs.migration.partitions import LEGACY_SOURCES_NAME, check_source_key, legacy_sources
from t2m_pipeline.defs.migration.resources import LegacySourcesResource
from t2m_pipeline.defs.resources import PostgresResource, S3StorageResource
from t2m_pipeline.defs.scenes.partitions import RENDERED_VIDEO, SCENE_CODE, SCENES_PARTITIONS_NAME
from t2m_pipeline.defs.tables import table_metadata
from t2m_pipeline.migration.discovery import discover_sources
from t2m_pipeline.migration.files_import import FilesMigration
from t2m_pipeline.migration.redis_import import migrate_redis
from t2m_pipeline.migration.upload_shards import upload_shards
from t2m_pipeline.migration.verify import verify_files
from t2m_pipeline.partition_keys import encode_scene_key
from t2m_pipeline.reports import migration_files, problems_table, summarize, to_csv
from t2m_pipeline.storage.layout import report_key
from t2m_pipeline.storage.links import object_url

GROUP = "migration"
MAX_PARTITIONS_PER_RUN = 50
PROGRESS_EVERY_S = 5.0


@dg.asset(group_name=GROUP, description="Legacy Redis (jobs, sets, queue, files/videos/batch records) upserted into PostgreSQL.")
def legacy_redis_data(
    context: dg.AssetExecutionContext, database: PostgresResource, legacy: LegacySourcesResource
) -> dg.MaterializeResult:
    report = migrate_redis(database.engine, legacy.redis())
    context.log.info(f"redis migration batch {report['batch_id']}: {report.get('jobs_inserted', 0)} jobs inserted")
    return dg.MaterializeResult(metadata=_flat(report))


@dg.asset(
    group_name=GROUP,
    deps=[legacy_redis_data],
    description="Discovery: registers a `legacy_sources` partition per topic folder, upload shard and loose files.",
)
def legacy_sources_catalog(
    context: dg.AssetExecutionContext, database: PostgresResource, legacy: LegacySourcesResource
) -> dg.MaterializeResult:
    root = legacy.root()
    shards = upload_shards(database.engine, root)  # a new upload type folder's shards are decided here, by its size
    found = [check_source_key(k) for k in discover_sources(root, shards)]
    known = set(context.instance.get_dynamic_partitions(LEGACY_SOURCES_NAME))
    new = [k for k in found if k not in known]
    if new:
        context.instance.add_dynamic_partitions(LEGACY_SOURCES_NAME, new)
    return dg.MaterializeResult(
        metadata={"partitions": len(found), "new_partitions": len(new), "new": ", ".join(new[:50]), "upload_shards": dg.MetadataValue.json(shards)}
    )


class LegacyFilesConfig(dg.Config):
    """What a run of legacy_files may choose (where the legacy data is, and where it goes, is the deployment's)."""

    checksum: bool = False  # read and hash every file, even those whose size, mtime and inode are unchanged


@dg.asset(
    group_name=GROUP,
    partitions_def=legacy_sources,
    backfill_policy=dg.BackfillPolicy.multi_run(max_partitions_per_run=MAX_PARTITIONS_PER_RUN),
    deps=[legacy_sources_catalog],
    description="The legacy files of each source partition in S3 (layout keys), with file_metadata and ledger rows.",
)
def legacy_files(
    context: dg.AssetExecutionContext,
    config: LegacyFilesConfig,
    database: PostgresResource,
    storage: S3StorageResource,
    legacy: LegacySourcesResource,
) -> dg.MaterializeResult:
    keys = [check_source_key(k) for k in context.partition_keys]
    last = [0.0]

    def progress(files: int, size: int, total_files: int, total_bytes: int) -> None:
        now = time.monotonic()
        if now - last[0] >= PROGRESS_EVERY_S or files == total_files:
            last[0] = now
            done = f"{files}/{total_files} files, {size}/{total_bytes} bytes"
            context.instance.add_run_tags(context.run_id, {"t2m/migration_progress": done})
            context.log.info(f"legacy files: {done}")

    store = storage.get()
    migration = FilesMigration(
        store.settings, database.engine, legacy.root(), workers=legacy.workers, checksum=config.checksum, progress=progress
    )
    report = migration.run(keys)
    _join_scene_graph(context, report["scenes"])
    with database.engine.connect() as conn:
        files = migration_files(conn, report["batch_id"])
    csv = store.put_report(report_key("migration", report["batch_id"], "files.csv"), to_csv(files))
    csv_link = {
        "report_csv": dg.MetadataValue.url(object_url(store.settings, csv.bucket, csv.key)),
        "report_s3_uri": dg.MetadataValue.path(csv.uri),
    }
    # One run covers many partitions (the backfill policy): each partition's materialization shows its own files.
    for key in keys:
        mine = files[files["partition"] == key]
        context.add_asset_metadata(
            {**_flat(report["by_partition"][key]), "summary": table_metadata(summarize(mine)), **csv_link}, partition_key=key
        )
    context.log.info(
        f"legacy files batch {report['batch_id']}: {report['files']} files in {len(keys)} partitions, "
        f"{report['uploaded_files']} uploaded, {report['copied_files']} copied, {report['moved_objects_removed']} moved"
    )
    return dg.MaterializeResult(
        metadata={"batch_id": report["batch_id"], "partitions_in_run": len(keys), "summary": table_metadata(summarize(files)), **csv_link}
    )


def _join_scene_graph(context: dg.AssetExecutionContext, scenes: list[dict]) -> None:
    """Register migrated scenes as `scenes` partitions and report their code and video materializations."""
    keys = {encode_scene_key(s["user_id"], s["job_id"], s["scene_number"]): s for s in scenes}
    known = set(context.instance.get_dynamic_partitions(SCENES_PARTITIONS_NAME))
    added = [k for k in keys if k not in known]
    if added:
        context.instance.add_dynamic_partitions(SCENES_PARTITIONS_NAME, added)
    for key, scene in keys.items():
        if key not in added and not scene["new"]:
            continue  # already in the graph and nothing new: no repeated events on a rerun
        for asset_key, part in ((SCENE_CODE, "code"), (RENDERED_VIDEO, "video")):
            obj = scene.get(part)
            if obj:
                context.log_event(
                    dg.AssetMaterialization(
                        asset_key=asset_key,
                        partition=key,
                        description="migrated from the legacy platform",
                        metadata={
                            "s3_uri": dg.MetadataValue.path(f"s3://{obj['bucket']}/{obj['key']}"),
                            "version_id": obj["version_id"] or "",
                            "size_bytes": obj["size"],
                            "sha256": obj["sha256"],
                            "source": "legacy migration",
                        },
                    )
                )


@dg.asset_check(
    asset=legacy_files,
    partitions_def=legacy_sources,
    description="Verify per partition: every file in the ledger once; every migrated object exists with its size and "
    "sha256, under the user and job the evidence names (and the copies the copy rule gives); no file elsewhere.",
)
def legacy_files_verified(
    context: dg.AssetCheckExecutionContext,
    database: PostgresResource,
    storage: S3StorageResource,
    legacy: LegacySourcesResource,
) -> Iterator:
    """One result per partition, also when the run covers many: Dagster's `AssetCheckResult` takes the step's
    partition, which a multi-partition run does not have (one unpartitioned result, every partition "skipped"), so
    each partition's `AssetCheckEvaluation` is yielded with its partition, then the check's (empty) output."""
    keys = [check_source_key(k) for k in context.partition_keys]
    result = verify_files(storage.get().settings, database.engine, legacy.root(), keys, workers=legacy.workers)
    for key in keys:
        part = result["by_partition"][key]
        yield dg.AssetCheckEvaluation(
            asset_key=legacy_files.key,
            check_name="legacy_files_verified",
            passed=part["ok"],
            partition=key,
            severity=dg.AssetCheckSeverity.ERROR,
            target_materialization_data=_latest_materialization(context.instance, key),
            metadata={
                "files_in_tree": part["files"],
                "ledger_rows": part["ledger_rows"],
                "objects_checked": part["objects_checked"],
                "copies": part["copies"],
                "unattributed": part["unattributed"],
                "problems": part["problem_count"],
                "first_problems": dg.MetadataValue.json(part["problems"][:20]),
                "problems_by_kind": table_metadata(problems_table(part["problems"])),
            },
        )
    yield dg.Output(None)


def _latest_materialization(instance: dg.DagsterInstance, key: str) -> AssetCheckEvaluationTargetMaterializationData | None:
    """What the UI ties a partition's result to (Dagster fills it for an `AssetCheckResult`; not exported, 1.13 pinned)."""
    records = instance.fetch_materializations(dg.AssetRecordsFilter(asset_key=legacy_files.key, asset_partitions=[key]), limit=1).records
    if not records:
        return None
    return AssetCheckEvaluationTargetMaterializationData(
        run_id=records[0].event_log_entry.run_id, storage_id=records[0].storage_id, timestamp=records[0].timestamp
    )


def _flat(report: dict) -> dict:
    """Report values Dagster metadata can show: numbers and text as they are, the rest as JSON."""
    out = {}
    for key, value in report.items():
        if isinstance(value, (int, float, str)) and not isinstance(value, bool):
            out[key] = value
        else:
            out[key] = dg.MetadataValue.json(value)
    return out


MIGRATION_ASSETS = [legacy_redis_data, legacy_sources_catalog, legacy_files]
MIGRATION_CHECKS = [legacy_files_verified]
