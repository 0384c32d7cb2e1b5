"""How runs reach their workers: dagster.yaml names `t2m_pipeline.launcher.WarmRunLauncher` and
`t2m_pipeline.launcher.PromptQueuedRunCoordinator`."""

from t2m_pipeline.launcher.coordinator import PromptQueuedRunCoordinator
from t2m_pipeline.launcher.warm_launcher import WarmRunLauncher

__all__ = ["PromptQueuedRunCoordinator", "WarmRunLauncher"]
