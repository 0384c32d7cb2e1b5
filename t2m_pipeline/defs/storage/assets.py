"""What the platform stores, as external assets: the buckets, the objects in them, the temp bucket's scratch and the
`jobs` table. Nothing in Dagster materializes them (the pipeline and the migration write through the storage layer,
the API submits jobs, the sensors add partitions); they are here so the checks that judge them (`defs/audits/checks.py`) sit on them, and the
maintenance jobs that act on them (`defs/audits/maintenance.py`) show what they did as observations.
"""

import dagster as dg

GROUP = "storage"

S3_BUCKETS = dg.AssetSpec(
    "s3_buckets",
    group_name=GROUP,
    kinds={"s3"},
    description="The environment's four buckets (videos, code, thumbnails, temp) and their settings: versioning, "
    "encryption, public access block, TLS-only policy, lifecycle rules (declared in storage/bucket_settings.py).",
)
STORED_OBJECTS = dg.AssetSpec(
    "stored_objects",
    group_name=GROUP,
    kinds={"s3", "postgres"},
    description="Every object version in the videos, code and thumbnails buckets with its file_metadata row: what the "
    "scene assets and the migration wrote through the storage layer.",
)
TEMP_BUCKET = dg.AssetSpec(
    "temp_bucket",
    group_name=GROUP,
    kinds={"s3"},
    description="Scratch of renders and uploads in the temp bucket, kept 7 days (the lifecycle rule on AWS, the "
    "temp_bucket_cleanup job where the endpoint does not enforce lifecycle).",
)
JOBS_TABLE = dg.AssetSpec(
    "jobs_table",
    group_name=GROUP,
    kinds={"postgres"},
    description="The metadata database's `jobs` rows and their `job_queue` rows: every job's status, and the queue "
    "the new_jobs sensor takes work from.",
)
JOBS_PARTITION_SET = dg.AssetSpec(
    "jobs_partition_set",
    group_name=GROUP,
    kinds={"dagster"},
    description="The `jobs` dynamic partition set ({user}/{job}) of scene_outline and combined_video: one key per "
    "planned job, added by the new_jobs sensor, removed by the partition_retention job.",
)
SCENES_PARTITION_SET = dg.AssetSpec(
    "scenes_partition_set",
    group_name=GROUP,
    kinds={"dagster"},
    description="The `scenes` dynamic partition set ({user}/{job}/NNN) of scene_code, rendered_video and thumbnail: "
    "added by the scene_runs sensor, removed by the partition_retention job.",
)
