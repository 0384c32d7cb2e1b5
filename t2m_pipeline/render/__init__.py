"""Turning a job into video: scene outlines, code generators, the manim runner, thumbnails and concatenation.

Plain modules with no Dagster in them; the assets in `t2m_pipeline.defs.scenes` are thin shells over these.
"""
