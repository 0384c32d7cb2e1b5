"""Lifecycle audits: storage and metadata that stay true over time.

Plain library modules (the Dagster layer in `defs/audits` and `t2m audit` are thin shells over them):
bucket settings drift, `file_metadata` vs S3 reconciliation (streamed), temp-bucket expiry, stuck jobs and queue
consistency, retention of dynamic partitions, and the findings table that remembers all of it.
"""
