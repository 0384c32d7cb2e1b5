"""A check that cannot read its object back fails (ERROR, saying why) instead of failing, and so retrying, the step
whose object is already written and recorded; a readable one passes."""

import dataclasses
import uuid

import dagster as dg

from t2m_pipeline.defs.scenes import checks
from t2m_pipeline.defs.scenes.partitions import SCENE_CODE
from t2m_pipeline.pipeline.steps import Pipeline
from t2m_pipeline.storage.s3 import ObjectOwner

CODE = b"from manim import *\n\nclass Scene001(Scene):\n    def construct(self):\n        pass\n"


def test_an_unreadable_object_fails_every_check_with_its_reason(settings, engine, storage, buckets, make_user):
    user_id, _ = make_user()
    stored = storage.put_bytes(
        buckets["code"], f"checks/{uuid.uuid4()}/scene.py", CODE, owner=ObjectOwner(str(user_id), "scene_code"),
        content_type="text/x-python",
    )
    p = Pipeline(settings, engine, storage)
    results, metadata = checks.verify_scene_code(p, stored, "Scene001")
    assert [r.passed for r in results] == [True, True, True] and metadata["object_url"].value.endswith(stored.version_id)

    gone = dataclasses.replace(stored, version_id="no-such-version")
    results, metadata = checks.verify_scene_code(p, gone, "Scene001")
    assert [r.check_name for r in results] == list(checks.CHECKS[SCENE_CODE])
    assert all(not r.passed and r.severity == dg.AssetCheckSeverity.ERROR for r in results)
    assert all(r.description.startswith("not judged: ") for r in results) and set(metadata) == {"object_url"}
