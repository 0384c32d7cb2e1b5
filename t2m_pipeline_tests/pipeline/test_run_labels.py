"""Run labels: one clean line per tag value, and who launched a run read from Dagster's own tags."""

from t2m_pipeline.pipeline.run_labels import MAX_TAG_CHARS, JobLabels, launched_by, one_line


def test_a_hostile_topic_becomes_one_short_printable_line():
    value = one_line("Fourier\nseries\x00 \x1b[31m" + "x" * 500)
    assert "\n" not in value and "\x00" not in value and "\x1b" not in value
    assert len(value) == MAX_TAG_CHARS and value.endswith("…") and value.startswith("Fourier series [31m")


def test_a_short_topic_is_kept_as_it_is():
    assert one_line("  Pythagorean   theorem ") == "Pythagorean theorem"


def test_who_launched_a_run():
    parent = "0123456789abcdef"
    assert launched_by({"dagster/sensor_name": "scene_runs"}) == "sensor scene_runs"
    # a re-execution from the UI keeps its parent's sensor tag: the UI's own tag wins
    ui = {"dagster/sensor_name": "scene_runs", "dagster/parent_run_id": parent, "dagster/from_ui": "true"}
    assert launched_by(ui) == "the UI: re-execution of run 01234567"
    assert launched_by({"dagster/from_ui": "true"}) == "the UI"
    retry = {"dagster/sensor_name": "scene_runs", "dagster/parent_run_id": parent, "dagster/retry_number": "1"}
    assert launched_by(retry) == "automatic retry 1 of run 01234567"
    assert launched_by({"dagster/backfill": "abcdefgh"}) == "backfill abcdefgh"
    assert launched_by({}) == "a person (launched directly)"
    handed = {"dagster/sensor_name": "scene_runs", "t2m/handed_off_by": parent}
    assert launched_by(handed) == "run 01234567, for sensor scene_runs"
    assert launched_by({**handed, "dagster/parent_run_id": parent}) == "re-execution of run 01234567"


def test_scene_runs_carry_the_scene_and_job_runs_do_not():
    labels = JobLabels("j", "u", "Topic", "ada@example.com")
    assert labels.tags(3)["t2m/scene"] == "3" and "t2m/scene" not in labels.tags()
    assert labels.tags()["t2m/user"] == "ada@example.com" and labels.metadata() == {"topic": "Topic", "user": "ada@example.com"}


def test_the_dagster_tag_names_are_dagsters_own():
    """run_labels names Dagster's tags without importing dagster (light modules read it): the names must be Dagster's
    (`dagster/from_ui` is set by the UI, not named in Dagster's Python)."""
    from dagster._core.storage import tags

    from t2m_pipeline.pipeline import run_labels

    assert (run_labels.PARENT_RUN_TAG, run_labels.RETRY_NUMBER_TAG, run_labels.SENSOR_NAME_TAG,
            run_labels.BACKFILL_TAG, run_labels.WILL_RETRY_TAG, run_labels.AUTO_RETRY_RUN_ID_TAG) == (
        tags.PARENT_RUN_ID_TAG, tags.RETRY_NUMBER_TAG, tags.SENSOR_NAME_TAG, tags.BACKFILL_ID_TAG,
        tags.WILL_RETRY_TAG, tags.AUTO_RETRY_RUN_ID_TAG)
