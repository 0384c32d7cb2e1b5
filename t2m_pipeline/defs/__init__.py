"""The Dagster layer: thin definitions over the library modules, one folder per domain."""
