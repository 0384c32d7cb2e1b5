"""How runs reach their workers: dagster.yaml names `t2m_pipeline.launcher.WarmRunLauncher`,
`t2m_pipeline.launcher.PromptQueuedRunCoordinator` and the storage they all write through,
`t2m_pipeline.launcher.storage.PooledPostgresStorage` (imported by name only where Dagster's storage is opened)."""

from t2m_pipeline.launcher.coordinator import PromptQueuedRunCoordinator
from t2m_pipeline.launcher.warm_launcher import WarmRunLauncher

__all__ = ["PromptQueuedRunCoordinator", "WarmRunLauncher"]
