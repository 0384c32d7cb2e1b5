"""Pool limits on a PostgreSQL-backed instance, as the daemon's: Dagster creates a pool's limit lazily, from whichever
worker claims it first, and on PostgreSQL concurrent first claims fail all but one (the controls show it). The
launcher sets each pool a run claims before the run's worker starts, and the workers' claims then succeed."""

import threading

import dagster as dg
import pytest
from dagster._core.execution.plan.instance_concurrency_context import InstanceConcurrencyContext
from dagster._core.launcher import LaunchRunContext
from dagster._core.storage.event_log.schema import ConcurrencyLimitsTable

from devtools.dagster_daemon import daemon_databases
from t2m_pipeline.launcher import ecs, warm_launcher
from t2m_pipeline.launcher.pools import ensure_pool_limits
from t2m_pipeline.launcher.warm_launcher import WarmRunLauncher

WORKERS = 8
DEFAULT_LIMIT = 2


@dg.op(pool="tiny_pool")
def pooled() -> None:
    pass


@dg.job
def pooled_job():
    pooled()


@pytest.fixture
def instance(service_env):
    with daemon_databases("t2m_pools") as (_, _, dagster_url):
        overrides = {
            "storage": {"postgres": {"postgres_url": dagster_url}},
            "concurrency": {"pools": {"default_limit": DEFAULT_LIMIT}},
        }
        with dg.instance_for_test(overrides=overrides) as instance:
            yield instance


def at_once(work) -> list[str]:
    """`work(i)` in WORKERS threads released together; the errors they raised, by type."""
    barrier, errors = threading.Barrier(WORKERS), []

    def run(i: int) -> None:
        barrier.wait()
        try:
            work(i)
        except Exception as exc:  # noqa: BLE001 - collected
            errors.append(type(exc).__name__)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(WORKERS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return errors


def claims_at_once(instance: dg.DagsterInstance) -> list[str]:
    """What WORKERS run workers do at their pooled step's start, all at once: claim a slot of the pool."""
    runs = [instance.create_run_for_job(pooled_job) for _ in range(WORKERS)]

    def claim(i: int) -> None:
        with InstanceConcurrencyContext(instance, runs[i]) as context:
            context.claim("tiny_pool", "pooled")

    return at_once(claim)


def test_control_workers_that_claim_a_new_pool_at_once_fail_on_postgresql(instance):
    errors = claims_at_once(instance)
    assert errors and set(errors) == {"InternalError"}  # the loser's aborted transaction (InFailedSqlTransaction)


def test_a_launch_sets_the_pool_limit_and_the_workers_claims_then_succeed(instance):
    run = instance.create_run_for_job(pooled_job)
    assert run.run_op_concurrency.all_pools == {"tiny_pool"}
    assert ensure_pool_limits(instance, run) == ["tiny_pool"]
    [limit] = instance.event_log_storage.get_pool_limits()
    assert (limit.name, limit.limit, limit.from_default) == ("tiny_pool", DEFAULT_LIMIT, True)
    assert ensure_pool_limits(instance, run) == []  # set already: nothing to do
    assert claims_at_once(instance) == []


def test_a_pool_whose_default_changed_is_set_to_the_new_default(instance):
    storage = instance.event_log_storage
    run = instance.create_run_for_job(pooled_job)
    ensure_pool_limits(instance, run)
    storage.set_concurrency_slots("tiny_pool", 1)  # what an older default left: then mark it the default's again
    with storage.index_transaction() as conn:
        conn.execute(ConcurrencyLimitsTable.update().values(using_default_limit=True))
    # control: a worker finding the outdated default re-initialises it, and fails on PostgreSQL
    with pytest.raises(Exception, match="InFailedSqlTransaction"):
        storage.initialize_concurrency_limit_to_default("tiny_pool")
    assert ensure_pool_limits(instance, run) == ["tiny_pool"]
    [limit] = storage.get_pool_limits()
    assert (limit.limit, limit.from_default) == (DEFAULT_LIMIT, True)  # the new default, still marked as the default
    assert claims_at_once(instance) == []


def test_the_warm_launcher_sets_pools_before_it_launches(instance, monkeypatch):
    seen = []
    monkeypatch.setattr(warm_launcher, "ensure_pool_limits_or_report", lambda inst, run, cls: seen.append(run.run_id))

    class NoServer(WarmRunLauncher):
        def serves(self, context):
            raise RuntimeError("stop here")  # the launch gets no further than choosing how to start the worker

    launcher = NoServer()
    launcher.register_instance(instance)
    run = instance.create_run_for_job(pooled_job)
    with pytest.raises(RuntimeError, match="stop here"):
        launcher.launch_run(LaunchRunContext(dagster_run=run, workspace=None))
    assert seen == [run.run_id]


def test_the_ecs_launcher_sets_pools_before_it_starts_the_task(instance, monkeypatch):
    order = []
    monkeypatch.setattr(ecs, "ensure_pool_limits_or_report", lambda inst, run, cls: order.append("pools"))
    monkeypatch.setattr(ecs.EcsRunLauncher, "launch_run", lambda self, context: order.append("task"))
    import boto3  # the launcher describes its task definition when built: one in the moto server

    boto3.client("ecs").register_task_definition(family="t2m-run", containerDefinitions=[{"name": "run", "image": "t2m", "memory": 512}])
    launcher = ecs.PoolSafeEcsRunLauncher(task_definition="t2m-run", container_name="run", use_current_ecs_task_config=False)
    launcher.register_instance(instance)
    launcher.launch_run(LaunchRunContext(dagster_run=instance.create_run_for_job(pooled_job), workspace=None))
    assert order == ["pools", "task"]


def test_a_pool_limit_that_cannot_be_set_is_reported_on_the_run_and_the_launch_goes_on(instance, monkeypatch):
    from t2m_pipeline.launcher.pools import ensure_pool_limits_or_report

    def broken(pool):
        raise RuntimeError("storage down")

    monkeypatch.setattr(instance.event_log_storage, "initialize_concurrency_limit_to_default", broken)
    run = instance.create_run_for_job(pooled_job)
    ensure_pool_limits_or_report(instance, run, WarmRunLauncher)  # does not raise: the worker sets it as Dagster does
    assert any("could not set the run's pool limits" in (e.message or "") and "storage down" in (e.message or "") for e in instance.all_logs(run.run_id))
