"""The scenes domain's resources: the code generator (`template` or `openai` from T2M_CODE_GENERATOR, or named in
run config) and the render backend (T2M_RENDER_BACKEND, T2M_RENDER_SANDBOX; never run config: where generated code
runs is not something a run may choose)."""


import dagster as dg

from t2m_pipeline.config import load_settings
from t2m_pipeline.render.backends import RenderBackend, make_render_backend
from t2m_pipeline.render.codegen import CodeGenerator, make_code_generator
from t2m_pipeline.storage.s3 import S3Storage


class CodeGeneratorResource(dg.ConfigurableResource):
    """Which generator writes scene code; unset means the T2M_CODE_GENERATOR setting."""

    generator: str | None = None

    def get(self) -> CodeGenerator:
        return make_code_generator(load_settings(), self.generator)


class RenderBackendResource(dg.ConfigurableResource):
    """Where generated scene code is rendered: the local sandbox, or one ECS task per render."""

    def get(self, storage: S3Storage) -> RenderBackend:
        return make_render_backend(load_settings(), storage)


@dg.definitions
def scene_resources() -> dg.Definitions:
    return dg.Definitions(resources={"code_generator": CodeGeneratorResource(), "render": RenderBackendResource()})
