"""Hostile input, property-based: partition keys built from user-controlled ids (`partition_keys`) either refuse
clearly or yield canonical keys that lead back to the same ids and to layout keys under the same user.

(Arbitrary names through the layout builders: `test_security.py`; arbitrary JSON as a job's `configuration`
through the new-jobs sensor lands with the pipeline's sensor.)
"""

import uuid

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from t2m_pipeline import partition_keys as pk
from t2m_pipeline.storage import layout


def id_like():
    """Things other systems put where an id belongs: UUIDs in many spellings, near-UUIDs, junk of any type."""
    spelled = st.uuids().flatmap(
        lambda u: st.sampled_from([u, str(u), str(u).upper(), u.hex, "{" + str(u) + "}", f"urn:uuid:{u}", f"{u}\n",
                                   f"{u}/../x", str(u).replace("-", "\u2010"), str(u)[:-1] + "\uff10", f"{u}/{u}"])
    )
    return st.one_of(spelled, st.text(max_size=60), st.integers(), st.none(), st.binary(max_size=40), st.floats())


@given(user=id_like(), job=id_like(), scene=st.one_of(st.integers(-10, 1010), st.booleans(), st.text(max_size=4)))
@settings(max_examples=400, deadline=None)
def test_encoding_user_controlled_ids_refuses_or_yields_a_canonical_key(user, job, scene):
    try:
        key = pk.encode_scene_key(user, job, scene)
    except pk.PartitionKeyError as exc:
        assert str(exc) and "\n" not in str(exc).strip()
        return
    # accepted: exactly the hyphenated UUID form (any case) and a scene 1..999
    assert all(isinstance(v, (str, uuid.UUID)) and len(str(v)) == 36 for v in (user, job))
    decoded = pk.decode_scene_key(key)
    assert (decoded.user_id, decoded.job_id) == (str(uuid.UUID(str(user))), str(uuid.UUID(str(job))))
    assert decoded.scene_number == scene and decoded.encode() == key
    assert set(key) <= set("0123456789abcdef-/") and key.count("/") == 2


@given(st.one_of(st.text(max_size=120), st.uuids().map(lambda u: f"{u}/{uuid.uuid4()}"),
                 st.uuids().map(lambda u: f"{str(u).upper()}/{u}"), st.uuids().map(lambda u: f"{u}/{u}/")))
@settings(max_examples=300, deadline=None)
def test_decoding_arbitrary_job_keys_refuses_or_round_trips(text):
    try:
        key = pk.decode_job_key(text)
    except pk.PartitionKeyError:
        return
    assert key.encode() == text


@given(user=st.uuids(), job=st.uuids(), scene=st.integers(1, 999))
@settings(max_examples=200, deadline=None)
def test_a_decoded_partition_key_addresses_only_its_users_objects(user, job, scene):
    """From a partition key back to S3: every key built from it sits under that user's and job's prefix."""
    decoded = pk.decode_scene_key(pk.encode_scene_key(user, job, scene))
    prefix = f"users/{user}/jobs/{job}/"
    for key in (
        layout.scene_code_key(decoded.user_id, decoded.job_id, decoded.scene_number),
        layout.scene_video_key(decoded.user_id, decoded.job_id, decoded.scene_number),
        layout.thumbnail_key(decoded.user_id, decoded.job_id, decoded.scene_number),
        layout.combined_video_key(decoded.job.user_id, decoded.job.job_id),
    ):
        assert key.startswith(prefix)
        assert f"scene_{scene:03d}" in key or "combined" in key


# -- arbitrary JSON as a job's configuration, written by another system, through the new_jobs sensor ----------------

_TEXT = st.text(alphabet=st.characters(blacklist_characters="\x00", blacklist_categories=("Cs",)), max_size=40)
_JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats(allow_nan=False, allow_infinity=False) | _TEXT,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(_TEXT, children, max_size=4),
    max_leaves=12,
)
# Close to valid, so the checks past the first are reached too.
_NEAR_VALID = st.fixed_dictionaries(
    {},
    optional={"quality": st.one_of(st.sampled_from(["low", "medium", "high", "ultra", "LOW", ""]), _JSON),
              "scene_count": st.one_of(st.integers(-3, 40), _JSON), "context": _JSON, "topic": _JSON},
)
CONFIGURATIONS = st.one_of(_JSON, _NEAR_VALID)
TOPICS = st.one_of(st.just("Pythagorean theorem"), st.text(alphabet=st.characters(blacklist_characters="\x00",
                                                                                   blacklist_categories=("Cs",)), max_size=500))


@pytest.fixture(scope="module")
def sensor_database(service_env):
    """The sensor claims every queued job it sees: it gets a database of its own, not the session's."""
    from t2m_pipeline.db.engine import drop_database, make_engine
    from t2m_pipeline.db.migrate import upgrade
    from t2m_pipeline_tests.conftest import ADMIN_URL

    url = ADMIN_URL.rsplit("/", 1)[0] + f"/t2m_faults_sensor_{uuid.uuid4().hex[:10]}"
    upgrade(url)
    engine = make_engine(url)
    yield url, engine
    engine.dispose()
    from t2m_pipeline.db.engine import shared_engine

    shared_engine.cache_clear()
    drop_database(url)


@pytest.fixture(scope="module")
def dagster_instance():
    import dagster as dg

    with dg.instance_for_test() as instance:
        yield instance


def insert_job_with_plain_sql(engine, topic: str, configuration) -> str:
    """What another system does: a user, a job with whatever configuration JSON it has, a queue row."""
    import json

    from sqlalchemy import text

    clerk = f"user_hostile_{uuid.uuid4().hex[:12]}"
    with engine.begin() as conn:
        conn.execute(text("INSERT INTO users (clerk_user_id, email) VALUES (:c, 'x@example.com')"), {"c": clerk})
        job_id = conn.execute(
            text("INSERT INTO jobs (user_id, topic, configuration) SELECT id, :t, CAST(:cfg AS jsonb) FROM users "
                 "WHERE clerk_user_id = :c RETURNING id"),
            {"t": topic, "cfg": json.dumps(configuration), "c": clerk},
        ).scalar_one()
        conn.execute(text("INSERT INTO job_queue (job_id) VALUES (:j)"), {"j": job_id})
    return str(job_id)


def job_states(engine) -> dict:
    from sqlalchemy import text

    with engine.connect() as conn:
        return {str(r.id): (r.status, r.updated_at) for r in conn.execute(text("SELECT id, status, updated_at FROM jobs"))}


@given(configuration=CONFIGURATIONS, topic=TOPICS)
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_arbitrary_configuration_json_is_launched_or_rejected_and_stalls_nothing(sensor_database, dagster_instance,
                                                                                configuration, topic):
    import dagster as dg

    from t2m_pipeline.defs.scenes.sensors import new_jobs
    from t2m_pipeline.defs.resources import PostgresResource
    from t2m_pipeline.defs.scenes.resources import JobQueueResource

    url, engine = sensor_database
    before = job_states(engine)
    hostile = insert_job_with_plain_sql(engine, topic, configuration)
    good = insert_job_with_plain_sql(engine, "Pythagorean theorem", {"quality": "low", "scene_count": 2})
    with dg.build_sensor_context(instance=dagster_instance, resources={"database": PostgresResource(database_url=url), "job_queue": JobQueueResource(wait_ms=0)}) as ctx:
        result = new_jobs(ctx)  # never raises, whatever the row holds

    launched = {pk.decode_job_key(r.partition_key).job_id for r in result.run_requests}
    assert good in launched  # one bad row does not stall the others
    with engine.connect() as conn:
        from sqlalchemy import text

        row = conn.execute(text("SELECT status, error_info FROM jobs WHERE id = :j"), {"j": hostile}).one()
        queue = conn.execute(text("SELECT status FROM job_queue WHERE job_id = :j"), {"j": hostile}).scalar_one()
    if hostile in launched:
        assert (row.status, queue) == ("processing", "processing")
    else:  # a clear, one-line reason on the row; nothing is silently dropped
        assert (row.status, queue) == ("failed", "failed")
        message = row.error_info["message"]
        assert message.startswith("job row rejected: ") and "\n" not in message
    after = job_states(engine)
    assert {k: v for k, v in after.items() if k in before} == before  # nothing else touched
