"""The legacy migration: Redis -> PostgreSQL and local files -> S3, with a ledger, verify and rollback.

Plain library modules; the Dagster assets (`t2m_pipeline.defs.migration`) and `t2m migrate` are thin shells:

- `redis_reader` / `records` / `redis_import`: SCAN + pipelines, normalisation, quarantine, batched upserts.
- `discovery` / `mapping` / `attribution` / `files_import`: the legacy tree -> partitions -> layout keys -> uploads.
- `batches`: one `migration_batches` row per run, with what it created (for exact rollback).
- `verify` / `rollback`: reconciliation of tree, ledger, `file_metadata` and S3; undo of one batch.
- `mirror`: during cut-over, the new pipeline's job status written back into the legacy Redis shape.
"""
