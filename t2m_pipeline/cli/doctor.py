"""`t2m doctor`: is everything the platform needs reachable and configured as declared?"""

from __future__ import annotations

import typer

from t2m_pipeline.cli.output import emit_json, table
from t2m_pipeline.config import Settings, load_settings
from t2m_pipeline.db.engine import health_check, make_engine, safe_url
from t2m_pipeline.db.migrate import head_revision
from t2m_pipeline.storage.bootstrap import diff_bucket_settings, read_bucket_settings
from t2m_pipeline.storage.bucket_settings import declared_buckets
from t2m_pipeline.storage.errors import StorageError
from t2m_pipeline.storage.s3 import make_s3_client


def run_checks(settings: Settings) -> list[dict]:
    """One result per check: name, ok, detail. Never raises for an unreachable service: that is a failed check."""
    results = []
    engine = make_engine(settings.database_url)
    health = health_check(engine)
    engine.dispose()
    head = head_revision()
    if not health["reachable"]:
        results.append({"check": "database", "ok": False, "detail": f"{safe_url(settings.database_url)}: {health['error']}"})
    else:
        migrated = health["revision"] == head
        detail = f"revision {health['revision']}" + ("" if migrated else f", expected {head}: run `t2m db upgrade`")
        results.append({"check": "database", "ok": migrated, "detail": detail})

    client = make_s3_client(settings, max_attempts=2)
    for spec in declared_buckets(settings):
        try:
            drift = diff_bucket_settings(spec, read_bucket_settings(client, spec.name))
            detail = "settings as declared" if not drift else "drift in " + ", ".join(sorted(drift))
            results.append({"check": f"bucket {spec.kind}", "ok": not drift, "detail": f"{spec.name}: {detail}"})
        except StorageError as exc:
            results.append({"check": f"bucket {spec.kind}", "ok": False, "detail": str(exc)})

    if settings.redis_url:
        import redis

        try:
            redis.Redis.from_url(settings.redis_url, socket_connect_timeout=3).ping()
            results.append({"check": "redis", "ok": True, "detail": "reachable"})
        except redis.RedisError as exc:
            results.append({"check": "redis", "ok": False, "detail": f"{type(exc).__name__}: {exc}"})
    return results


def doctor(json_output: bool = typer.Option(False, "--json", help="Print JSON.")) -> None:
    """Check the database (reachable, migrated), each bucket (exists, settings as declared) and Redis when configured."""
    results = run_checks(load_settings())
    if json_output:
        emit_json(results)
    else:
        table("t2m doctor", ["check", "status", "detail"], [[r["check"], "ok" if r["ok"] else "FAIL", r["detail"]] for r in results])
    if not all(r["ok"] for r in results):
        raise typer.Exit(1)
