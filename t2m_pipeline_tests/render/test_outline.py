import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from t2m_pipeline.render.outline import (
    MAX_SCENES,
    JobSpec,
    JobSpecError,
    SceneOutline,
    job_spec_from_row,
    plan_outline,
)


def test_spec_reads_context_quality_and_scene_count_from_configuration():
    spec = job_spec_from_row("Pythagoras", "from description", {"context": "from config", "quality": "medium", "scene_count": 4})
    assert spec == JobSpec("Pythagoras", "from config", "medium", 4)
    assert job_spec_from_row("Pythagoras", "from description", None) == JobSpec("Pythagoras", "from description", "low", None)


@pytest.mark.parametrize(
    "topic,configuration,field",
    [
        ("t", "just a string", "configuration"),
        ("t", [1, 2], "configuration"),
        ("", {}, "topic"),
        ("   \x00 ", {}, "topic"),
        (None, {}, "topic"),
        ("t", {"quality": "8k"}, "quality"),
        ("t", {"scene_count": "DROP TABLE jobs"}, "scene_count"),
        ("t", {"scene_count": 0}, "scene_count"),
        ("t", {"scene_count": MAX_SCENES + 1}, "scene_count"),
        ("t", {"scene_count": True}, "scene_count"),
        ("t", {"context": {"nested": 1}}, "context"),
        ("x" * 501, {}, "topic"),
    ],
)
def test_hostile_rows_are_one_clear_error(topic, configuration, field):
    with pytest.raises(JobSpecError, match=field):
        job_spec_from_row(topic, None, configuration)


def test_planner_is_deterministic_and_follows_the_topic():
    spec = JobSpec("Pythagorean theorem", "Right triangles. The squares of the legs add up. A proof by rearrangement.")
    first, again = plan_outline(spec), plan_outline(spec)
    assert first == again
    assert 3 <= first.scene_count <= 7
    assert [s.number for s in first.scenes] == list(range(1, first.scene_count + 1))
    assert first.scenes[0].title == "Pythagorean theorem"
    assert first.scenes[-1].title.startswith("Summary")
    other = plan_outline(JobSpec("Fourier series", "Sums of sines."))
    assert [s.title for s in other.scenes] != [s.title for s in first.scenes]


@given(count=st.integers(1, MAX_SCENES))
def test_scene_count_from_configuration_is_honoured(count):
    assert plan_outline(JobSpec("Topic", "Context.", scene_count=count)).scene_count == count


def test_outline_round_trips_through_json_and_rejects_tampering():
    outline = plan_outline(JobSpec("Graphs ünïcode", "Nodes and edges.", scene_count=3))
    assert SceneOutline.from_json(outline.to_json()) == outline
    data = json.loads(outline.to_json())
    data["scenes"][1]["number"] = 7
    with pytest.raises(JobSpecError):
        SceneOutline.from_json(json.dumps(data))
    with pytest.raises(JobSpecError):
        SceneOutline.from_json(b"not json")


def test_control_characters_never_reach_titles():
    outline = plan_outline(job_spec_from_row("Evil\u2028topic\x1b[31m", "line\x00one. two", {"scene_count": 2}))
    for scene in outline.scenes:
        assert not any(ord(c) < 32 or c in "\u2028\u2029\x7f" for c in scene.title + scene.narration)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=30),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4),
    max_leaves=12,
)
configurations = json_values | st.fixed_dictionaries(
    {}, optional={"scene_count": json_values, "quality": json_values, "context": json_values, "topic": json_values}
)


@given(topic=json_values, description=json_values, configuration=configurations)
def test_any_row_content_is_a_plan_or_one_clear_error(topic, description, configuration):
    try:
        spec = job_spec_from_row(topic, description, configuration)
    except JobSpecError as exc:
        assert str(exc) and "\n" not in str(exc)
        return
    outline = plan_outline(spec)
    assert 1 <= outline.scene_count <= MAX_SCENES
    assert SceneOutline.from_json(outline.to_json()) == outline
