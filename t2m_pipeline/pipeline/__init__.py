"""The pipeline's rules without Dagster: job dispatch, status write-back and progress, and each asset's work."""
