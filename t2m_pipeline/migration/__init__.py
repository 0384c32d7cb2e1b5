"""The legacy migration: Redis -> PostgreSQL and local files -> S3, with a ledger, verify and rollback.

Plain library modules; the Dagster assets (`t2m_pipeline.defs.migration`) and `t2m migrate` are thin shells:

- `redis_reader` / `records` / `redis_import`: SCAN + pipelines, normalisation, quarantine, batched upserts.
- `discovery` / `attribution` / `mapping` / `files_import`: the legacy tree -> partitions -> who owns each file (by
  evidence) -> layout keys -> uploads and server-side copies, re-attributed on every run.
- `batches`: one `migration_batches` row per run, with what it created (for exact rollback).
- `verify` / `rollback`: reconciliation of tree, ledger, `file_metadata` and S3, ownership included; undo of one batch.
- `requeue`: held legacy jobs (queued or processing there) queued when an operator decides.
- `mirror`: during cut-over, the new pipeline's job status written back into the legacy Redis shape.
"""
