"""The limit of each pool a run claims, set before its worker starts: one rule for every launcher of ours."""

from __future__ import annotations

from dagster._core.storage.event_log.schema import ConcurrencyLimitsTable


def ensure_pool_limits_or_report(instance, run, launcher_class) -> None:
    """`ensure_pool_limits`, never failing the launch: on an error the run's event log says so, and its worker sets
    the limits itself as Dagster does (the race then possible again, for this run only)."""
    try:
        ensure_pool_limits(instance, run)
    except Exception as exc:  # noqa: BLE001 - reported on the run
        instance.report_engine_event(f"could not set the run's pool limits before its start: {type(exc).__name__}: {exc}", run, cls=launcher_class)


def ensure_pool_limits(instance, run) -> list[str]:
    """Give each pool the run's steps claim its default limit (dagster.yaml `concurrency.pools.default_limit`) if it
    has none, or an outdated default; the pools set.

    Dagster sets it lazily, in the first worker whose step claims the pool, and on PostgreSQL that breaks: two workers
    that both find the pool missing both INSERT it, the loser's IntegrityError aborts its transaction, its fallback
    UPDATE fails (InFailedSqlTransaction), and the run fails outside any step, as a crash, so run retries start a
    second run of the partition (the daemon test caught a second render run). A pool whose default changed fails
    every claiming worker the same way. Launches are one at a time (the launcher's lock), so setting it here, before
    the fork, leaves the workers nothing to set."""
    pools = run.run_op_concurrency.all_pools if run.run_op_concurrency else None
    default = instance.global_op_concurrency_default_limit
    storage = instance.event_log_storage
    if not pools or default is None or not storage.supports_global_concurrency_limits:
        return []
    limits = {limit.name: limit for limit in storage.get_pool_limits()}
    done = []
    for pool in sorted(pools):
        known = limits.get(pool)
        if known is None:
            try:
                storage.initialize_concurrency_limit_to_default(pool)  # the INSERT of a missing pool: it works
            except Exception:
                if pool not in {limit.name for limit in storage.get_pool_limits()}:
                    raise  # not the race this is for (another process set it meanwhile): a real error
                continue
        elif known.from_default and known.limit != default:
            storage.set_concurrency_slots(pool, default)  # Dagster's own update path is the one that fails
            with storage.index_transaction() as conn:  # still the default's: a later default change applies again
                conn.execute(
                    ConcurrencyLimitsTable.update()
                    .where(ConcurrencyLimitsTable.c.concurrency_key == pool)
                    .values(using_default_limit=True)
                )
        else:
            continue
        done.append(pool)
    return done
