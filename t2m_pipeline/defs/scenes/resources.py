"""The scenes domain's resources: the code generator and the render backend.

Two groups of settings are deliberately *not* resource fields, because the launchpad can override any resource field
in a run's config: where generated code runs (the sandbox, the ECS backend, its subnets and security groups) and the
language model's endpoint with its API key (a run that could point the key at another URL could hand it out). They
come from the deployment's environment through the settings class, read when the resource is used; a run chooses
only which generator writes the code.
"""

import dagster as dg

from t2m_pipeline.config import Settings, load_settings
from t2m_pipeline.defs.resources import SettingsResource, resources_for
from t2m_pipeline.render.backends import RenderBackend, make_render_backend
from t2m_pipeline.render.codegen import CodeGenerator, make_code_generator
from t2m_pipeline.storage.s3 import S3Storage


class CodeGeneratorResource(SettingsResource):
    """Which generator writes scene code (`template` or `openai`; unset: the settings' default)."""

    code_generator: str | None = None

    def get(self) -> CodeGenerator:
        return make_code_generator(load_settings(), self.code_generator)


class RenderBackendResource(dg.ConfigurableResource):
    """Where generated scene code is rendered: the local sandbox, or one ECS task per render (the deployment's
    choice, never a run's: no fields)."""

    def get(self, storage: S3Storage) -> RenderBackend:
        return make_render_backend(load_settings(), storage)

    @property
    def timeout_s(self) -> int:
        """How long one render may take (T2M_RENDER_TIMEOUT_S), also the longest video a render can make."""
        return load_settings().render_timeout_s


class JobQueueResource(dg.ConfigurableResource):
    """How the `new_jobs` sensor waits for work: a tick that finds no queued job listens for one (the queue's
    NOTIFY, `dispatch.queue_notifications`) for up to `wait_ms` and claims it the moment it is committed.

    Well under the sensor daemon's 5 s pass on purpose: a tick still running at the next pass is skipped, and the one
    after would start 5 s later (a 4 s wait overran once under load, BENCHMARKS.md). 0 turns the wait off (a script
    or a test evaluating one tick at a time)."""

    wait_ms: int = 3_500

    @property
    def wait_s(self) -> float:
        return max(0, min(self.wait_ms, 4_500)) / 1000


def pipeline_resources_for(settings: Settings, *, job_queue_wait_ms: int = 0) -> dict:
    """Every resource the scene pipeline's runs and sensors need, for a settings object (a script's or a test's,
    which evaluate one sensor tick at a time: by default a tick does not wait for jobs)."""
    return {
        **resources_for(settings),
        "code_generator": CodeGeneratorResource.from_settings(settings),
        "render": RenderBackendResource(),
        "job_queue": JobQueueResource(wait_ms=job_queue_wait_ms),
    }


@dg.definitions
def scene_resources() -> dg.Definitions:
    return dg.Definitions(
        resources={"code_generator": CodeGeneratorResource.from_environment(), "render": RenderBackendResource(), "job_queue": JobQueueResource()}
    )
