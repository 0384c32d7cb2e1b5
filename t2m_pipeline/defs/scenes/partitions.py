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
