"""The pipeline's partitions: one dynamic set of jobs, one of scenes. Keys come from `t2m_pipeline.partition_keys`."""

import dagster as dg

from t2m_pipeline.partition_keys import JOBS_PARTITIONS_NAME, SCENES_PARTITIONS_NAME

job_partitions = dg.DynamicPartitionsDefinition(name=JOBS_PARTITIONS_NAME)
scene_partitions = dg.DynamicPartitionsDefinition(name=SCENES_PARTITIONS_NAME)

# Asset keys other domains (migration, audits) refer to.
SCENE_OUTLINE = dg.AssetKey("scene_outline")
SCENE_CODE = dg.AssetKey("scene_code")
RENDERED_VIDEO = dg.AssetKey("rendered_video")
THUMBNAIL = dg.AssetKey("thumbnail")
COMBINED_VIDEO = dg.AssetKey("combined_video")

# The step that makes a run's scenes (scene_code, rendered_video, thumbnail: one multi-asset).
SCENES_STEP = "scenes"


def scene_keys_in_range(instance: dg.DagsterInstance, first: str, last: str) -> list[str] | None:
    """The `scenes` partitions Dagster reads in the range first..last (every key added from the first to the last,
    in order), or None when either end is not a partition."""
    with dg.partition_loading_context(dynamic_partitions_store=instance):
        try:
            return list(scene_partitions.get_partition_keys_in_range(dg.PartitionKeyRange(first, last)))
        except dg.DagsterInvalidInvocationError:
            return None
