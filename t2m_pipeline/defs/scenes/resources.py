"""The code generator as a resource: `template` or `openai` from T2M_CODE_GENERATOR, or named in run config."""


import dagster as dg

from t2m_pipeline.config import load_settings
from t2m_pipeline.render.codegen import CodeGenerator, make_code_generator


class CodeGeneratorResource(dg.ConfigurableResource):
    """Which generator writes scene code; unset means the T2M_CODE_GENERATOR setting."""

    generator: str | None = None

    def get(self) -> CodeGenerator:
        return make_code_generator(load_settings(), self.generator)
