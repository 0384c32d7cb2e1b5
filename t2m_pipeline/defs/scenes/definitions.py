"""The scenes domain: its assets, the runs that materialize them, the code generator and render backend resources."""

import dagster as dg

from t2m_pipeline.defs.scenes.assets import SCENE_ASSETS
from t2m_pipeline.defs.scenes.jobs import PIPELINE_JOBS
from t2m_pipeline.defs.scenes.resources import CodeGeneratorResource, RenderBackendResource

defs = dg.Definitions(
    assets=SCENE_ASSETS,
    jobs=PIPELINE_JOBS,
    resources={"code_generator": CodeGeneratorResource(), "render": RenderBackendResource()},
)
