"""`prestart_renderer`: the run-worker hook that starts a scenes run's warm renderer while Dagster opens the run. The
adoption itself is in `render/test_warm.py`; the hook's call in each worker in `launcher/test_warm_launcher.py`."""

import uuid

import pytest
from dagster._core.storage.tags import (
    ASSET_PARTITION_RANGE_END_TAG,
    ASSET_PARTITION_RANGE_START_TAG,
)

from t2m_pipeline.defs.scenes.assets import prestart_renderer
from t2m_pipeline.defs.scenes.jobs import combine_job, render_scenes_job
from t2m_pipeline.partition_keys import encode_scene_key
from t2m_pipeline.render import warm
from t2m_pipeline.render.cores import machine_cores
from t2m_pipeline.render.sandbox import sandbox_status

pytestmark = pytest.mark.skipif(not sandbox_status().available, reason="needs bubblewrap")
USER, JOB = uuid.uuid4(), uuid.uuid4()


@pytest.fixture(autouse=True)
def nothing_left_prestarted(fake_aws_credentials, monkeypatch):
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")
    yield
    if warm._prestarted is not None:
        warm._prestarted.close()
        warm._prestarted = None


def scenes(first: int, last: int, job=JOB) -> dict[str, str]:
    return {ASSET_PARTITION_RANGE_START_TAG: encode_scene_key(USER, JOB, first), ASSET_PARTITION_RANGE_END_TAG: encode_scene_key(USER, job, last)}


def test_a_scenes_run_over_several_scenes_starts_its_renderer_ahead():
    prestart_renderer(render_scenes_job.name, scenes(1, 3))
    assert warm._prestarted is not None and warm._prestarted.options["renders_at_once"] == min(3, machine_cores())


@pytest.mark.parametrize("job_name, tags", [
    (render_scenes_job.name, scenes(2, 2)),  # one render goes the cold way
    (render_scenes_job.name, {}),  # a single-partition run (a re-run from the UI)
    (render_scenes_job.name, scenes(1, 3, job=uuid.uuid4())),  # two jobs' scenes: the step refuses the run
    (combine_job.name, scenes(1, 3)),
])
def test_control_any_other_run_starts_nothing(job_name, tags):
    prestart_renderer(job_name, tags)
    assert warm._prestarted is None


def mounts_of(renderer) -> list[str]:
    root = str(renderer.slot.root) if renderer.slot else "-"
    return [line.split()[4] for line in open("/proc/self/mountinfo").read().splitlines() if root in line.split()[4]]


@pytest.mark.parametrize("finished", [True, False], ids=["finish_run", "control-never-closed"])
def test_a_renderer_no_step_adopted_is_closed_when_its_run_ends(finished):
    """A run that never reaches a warm step (it failed first, or was left one scene to render) must not leave the
    renderer's disks mounted: its worker ends with os._exit, which skips atexit, so the location's finish_run
    closes it. The control never calls it: the disks stay mounted (on the host) while the process lives."""
    import time

    from t2m_pipeline.definitions import finish_run

    prestart_renderer(render_scenes_job.name, scenes(1, 2))
    renderer = warm._prestarted
    deadline = time.monotonic() + 30
    while not mounts_of(renderer) and time.monotonic() < deadline:
        time.sleep(0.05)
    if "disk" not in renderer.cold.protections or not mounts_of(renderer):
        pytest.skip("no disk of its own here (not root)")
    if finished:
        finish_run()
    deadline = time.monotonic() + 30
    while mounts_of(renderer) and time.monotonic() < deadline:
        time.sleep(0.1)
    if finished:
        assert warm._prestarted is None and mounts_of(renderer) == []
    else:
        assert len(mounts_of(renderer)) >= 2  # its work disk and a lane's, still there
