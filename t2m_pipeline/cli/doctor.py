"""`t2m doctor`: is everything the platform needs reachable and configured as declared?"""

from __future__ import annotations

import typer

from t2m_pipeline.cli.output import emit_json, table
from t2m_pipeline.config import Settings, load_settings
from t2m_pipeline.db.engine import health_check, make_engine, safe_url
from t2m_pipeline.db.migrate import head_revision
from t2m_pipeline.migration.legacy_redis import legacy_redis_client
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

    results.append(render_check(settings))

    if settings.redis_url:
        import redis

        try:
            legacy_redis_client(settings.redis_url, "probe").ping()
            results.append({"check": "redis", "ok": True, "detail": "reachable"})
        except redis.RedisError as exc:
            results.append({"check": "redis", "ok": False, "detail": f"{type(exc).__name__}: {exc}"})
    return results


def render_check(settings: Settings) -> dict:
    """Where generated code renders, and whether that boundary holds (a probe that must be refused)."""
    if settings.render_backend == "ecs":
        return {"check": "render backend", **ecs_task_check(settings)}
    if settings.render_sandbox == "unconfined-local-only":
        return {"check": "render backend", "ok": False,
                "detail": "UNCONFINED (T2M_RENDER_SANDBOX=unconfined-local-only): generated code runs with this worker's privileges"}
    from t2m_pipeline.render.probe import probe_sandbox

    probe = probe_sandbox()
    return {"check": "render backend", "ok": probe.ok, "detail": f"local sandbox: {probe.detail}"}


def ecs_task_check(settings: Settings) -> dict:
    """The render task definition as the ECS backend needs it: non-root, read-only root, no secrets, its own role."""
    import boto3
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        described = boto3.client("ecs", region_name=settings.region).describe_task_definition(taskDefinition=settings.render_task_definition)
    except (BotoCoreError, ClientError) as exc:
        return {"ok": False, "detail": f"ECS task definition {settings.render_task_definition}: {str(exc).splitlines()[0][:200]}"}
    definition = described["taskDefinition"]
    containers = {c["name"]: c for c in definition.get("containerDefinitions", [])}
    container = containers.get(settings.render_container)
    problems = []
    if container is None:
        problems.append(f"no container {settings.render_container}")
    else:
        if container.get("user") in (None, "", "0", "root"):
            problems.append("runs as root")
        if not container.get("readonlyRootFilesystem"):
            problems.append("root filesystem writable")
        if container.get("secrets"):
            problems.append("secrets injected")
    if not definition.get("taskRoleArn"):
        problems.append("no task role of its own")
    detail = f"ECS task definition {definition.get('family')}:{definition.get('revision')} in {settings.render_cluster}"
    return {"ok": not problems, "detail": detail + (": " + ", ".join(problems) if problems else ": non-root, read-only root, no secrets")}


def doctor(json_output: bool = typer.Option(False, "--json", help="Print JSON.")) -> None:
    """Check the database (reachable, migrated), each bucket (exists, settings as declared), the render backend (a
    probe that must be refused) and Redis when configured."""
    results = run_checks(load_settings())
    if json_output:
        emit_json(results)
    else:
        table("t2m doctor", ["check", "status", "detail"], [[r["check"], "ok" if r["ok"] else "FAIL", r["detail"]] for r in results])
    if not all(r["ok"] for r in results):
        raise typer.Exit(1)
