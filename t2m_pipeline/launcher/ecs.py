"""Dagster's ECS launcher, for production (infra/dagster/dagster.yaml), with each run's pools set before its task
starts: Fargate tasks of a backfill or of a job's scenes start together and would race to create a pool's limit
(`pools.ensure_pool_limits`)."""

from __future__ import annotations

import threading

from dagster._core.launcher import LaunchRunContext
from dagster_aws.ecs import EcsRunLauncher

from t2m_pipeline.launcher.pools import ensure_pool_limits_or_report


class PoolSafeEcsRunLauncher(EcsRunLauncher):
    _pools_lock = threading.Lock()  # the run queue launches from several threads (dequeue_use_threads)

    def launch_run(self, context: LaunchRunContext) -> None:
        with self._pools_lock:
            ensure_pool_limits_or_report(self._instance, context.dagster_run, self.__class__)
        super().launch_run(context)
