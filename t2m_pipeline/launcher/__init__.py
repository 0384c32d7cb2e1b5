"""How runs reach their workers: dagster.yaml names `t2m_pipeline.launcher.WarmRunLauncher`."""

from t2m_pipeline.launcher.warm_launcher import WarmRunLauncher

__all__ = ["WarmRunLauncher"]
