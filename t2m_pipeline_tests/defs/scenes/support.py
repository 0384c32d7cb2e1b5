"""Shared by the pipeline's tests: a metadata database of their own, job rows inserted with plain SQL, resources,
and running a sensor's run request the way the daemon would (the real job definition, in process).

The pipeline's sensors claim every queued job they see, so these tests use their own database (emptied before each
test) instead of the session's, where other tests leave queued jobs behind.
"""

from __future__ import annotations

import dataclasses
import json
import uuid

import dagster as dg
import pytest
from sqlalchemy import text

from t2m_pipeline_tests.conftest import ADMIN_URL

PIPELINE_TABLES = "users, jobs, job_queue, file_metadata"


@pytest.fixture(scope="session")
def pipeline_db_url(service_env):
    from t2m_pipeline.db.engine import drop_database, shared_engine
    from t2m_pipeline.db.migrate import upgrade

    url = ADMIN_URL.rsplit("/", 1)[0] + f"/t2m_pipeline_test_{uuid.uuid4().hex[:10]}"
    upgrade(url)
    yield url
    shared_engine.cache_clear()
    drop_database(url)


@pytest.fixture
def pipeline_engine(pipeline_db_url):
    """The pipeline database, emptied: each test sees only the jobs it inserts."""
    from t2m_pipeline.db.engine import make_engine

    engine = make_engine(pipeline_db_url)
    with engine.begin() as conn:
        conn.execute(text(f"TRUNCATE {PIPELINE_TABLES} CASCADE"))
    yield engine
    engine.dispose()


@pytest.fixture
def resources(settings, pipeline_db_url, pipeline_engine, buckets):
    """The pipeline's resources, built from the session's settings on this module's database (as a script would:
    nothing is redirected through the environment)."""
    from t2m_pipeline.defs.scenes.resources import pipeline_resources_for

    return pipeline_resources_for(dataclasses.replace(settings, database_url=pipeline_db_url))


@pytest.fixture
def instance():
    with dg.instance_for_test() as inst:
        yield inst


def insert_job(
    engine,
    *,
    topic: str = "Pythagorean theorem",
    description: str | None = "Right triangles. The squares on the legs add up to the square on the hypotenuse.",
    configuration: object = None,
    priority: str = "normal",
    status: str = "queued",
    job_type: str = "video_generation",
    is_deleted: bool = False,
    queue: bool = True,
    clerk_id: str | None = None,
    raw_configuration_sql: str | None = None,
) -> tuple[str, str]:
    """A user, a job and its queue row, written the way the T2M web app writes them: plain SQL. Returns (user, job)."""
    clerk_id = clerk_id or f"user_{uuid.uuid4().hex[:12]}"
    config_sql = raw_configuration_sql or "CAST(:configuration AS jsonb)"
    with engine.begin() as conn:
        conn.execute(
            text("INSERT INTO users (clerk_user_id, email) VALUES (:c, :e) ON CONFLICT (clerk_user_id) DO NOTHING"),
            {"c": clerk_id, "e": f"{clerk_id}@example.com"},
        )
        user_id = conn.execute(text("SELECT id FROM users WHERE clerk_user_id = :c"), {"c": clerk_id}).scalar_one()
        job_id = conn.execute(
            text(
                f"""INSERT INTO jobs (user_id, job_type, status, priority, topic, description, configuration, is_deleted)
                    VALUES (:u, :t, :s, :p, :topic, :d, {config_sql}, :del) RETURNING id"""
            ),
            {
                "u": user_id, "t": job_type, "s": status, "p": priority, "topic": topic, "d": description,
                "configuration": None if configuration is None else json.dumps(configuration), "del": is_deleted,
            },
        ).scalar_one()
        if queue:
            conn.execute(text("INSERT INTO job_queue (job_id, priority, status) VALUES (:j, :p, :s)"), {"j": job_id, "p": priority, "s": status})
    return str(user_id), str(job_id)


def job_row(engine, job_id):
    with engine.connect() as conn:
        return conn.execute(text("SELECT * FROM jobs WHERE id = :j"), {"j": job_id}).mappings().one()


def queue_row(engine, job_id):
    with engine.connect() as conn:
        return conn.execute(text("SELECT * FROM job_queue WHERE job_id = :j"), {"j": job_id}).mappings().one()


def file_rows(engine, job_id):
    with engine.connect() as conn:
        return conn.execute(
            text("SELECT * FROM file_metadata WHERE job_id = :j ORDER BY s3_key, created_at"), {"j": job_id}
        ).mappings().all()


def pipeline_defs(resources: dict) -> dg.Definitions:
    from t2m_pipeline.defs.scenes.sensors import PIPELINE_SENSORS
    from t2m_pipeline.defs.scenes.assets import SCENE_ASSETS
    from t2m_pipeline.defs.scenes.jobs import PIPELINE_JOBS

    return dg.Definitions(assets=SCENE_ASSETS, jobs=PIPELINE_JOBS, sensors=PIPELINE_SENSORS, resources=resources)


def sensor_result(sensor, instance, resources, cursor=None) -> dg.SensorResult:
    """One tick, and what the daemon does with its dynamic partition requests."""
    with dg.build_sensor_context(instance=instance, resources=resources, cursor=cursor) as context:
        result = sensor(context)
    apply_partition_requests(instance, result)
    return result


def apply_partition_requests(instance, result: dg.SensorResult) -> None:
    """What the daemon does with a tick's dynamic partition requests."""
    for request in result.dynamic_partitions_requests or []:
        instance.add_dynamic_partitions(request.partitions_def_name, list(request.partition_keys))


def run_requested(defs: dg.Definitions, instance, job_name: str, request: dg.RunRequest, **overrides):
    """Run a sensor's run request through the real job definition, in process, on the same instance."""
    job = defs.resolve_job_def(job_name)
    return job.execute_in_process(
        instance=instance, partition_key=request.partition_key, tags=dict(request.tags), raise_on_error=False, **overrides
    )


def drive_job(defs, instance, resources):
    """What the daemon would do for one job: each sensor's requests run in process. Stops at the first failed run."""
    from t2m_pipeline.defs.scenes.sensors import combine_ready_jobs, new_jobs, scene_runs

    outcomes = []
    tick = sensor_result(new_jobs, instance, resources)
    (request,) = tick.run_requests
    apply_partition_requests(instance, tick)
    outcomes.append(run_requested(defs, instance, "plan_job", request))
    if not outcomes[-1].success:
        return outcomes
    for scene_request in sensor_result(scene_runs, instance, resources).run_requests:
        outcomes.append(run_requested(defs, instance, "render_scenes", scene_request))
        if not outcomes[-1].success:
            return outcomes
    for combine_request in sensor_result(combine_ready_jobs, instance, resources).run_requests:
        outcomes.append(run_requested(defs, instance, "combine_scenes", combine_request))
    return outcomes


def expected_job_objects(settings, user_id, job_id, scenes: int) -> set[tuple[str, str]]:
    """Every object the layout says a finished job of `scenes` scenes has: (bucket, key)."""
    from t2m_pipeline.storage import layout

    objects = {(settings.bucket("code"), layout.job_plan_key(user_id, job_id, "scene_outline.json"))}
    for n in range(1, scenes + 1):
        objects |= {
            (settings.bucket("code"), layout.scene_code_key(user_id, job_id, n)),
            (settings.bucket("videos"), layout.scene_video_key(user_id, job_id, n)),
            (settings.bucket("thumbnails"), layout.thumbnail_key(user_id, job_id, n)),
        }
    objects.add((settings.bucket("videos"), layout.combined_video_key(user_id, job_id)))
    return objects


def materialize_thumbnail(instance, resources: dict, partition_key: str) -> dg.ExecuteInProcessResult:
    """A thumbnail alone for one scene partition (say, backfilled for a migrated video): the scenes step with only
    `thumbnail` selected, as the UI or a backfill would run it."""
    from t2m_pipeline.defs.scenes.assets import scenes
    from t2m_pipeline.defs.scenes.partitions import THUMBNAIL
    from t2m_pipeline.defs.scenes.resources import CodeGeneratorResource, RenderBackendResource

    return dg.materialize(
        [scenes], selection=[THUMBNAIL], partition_key=partition_key, instance=instance,
        resources={"database": resources["database"], "storage": resources["storage"],
                   "code_generator": CodeGeneratorResource(), "render": RenderBackendResource()},
    )
