"""Every asset, check, job, sensor and schedule spec against the recorded snapshot: an unintended change fails here.

After an intended change: `python -m t2m_pipeline_tests.definitions_snapshot --write`, and commit the JSON with it.
"""

import json

import dagster as dg

from t2m_pipeline_tests.definitions_snapshot import SNAPSHOT, snapshot


def test_the_code_location_matches_its_snapshot():
    from t2m_pipeline.definitions import defs

    recorded = json.loads(SNAPSHOT.read_text())
    assert snapshot(defs) == recorded, "definitions changed: if intended, re-record the snapshot (see the docstring)"


def test_a_renamed_asset_fails_the_snapshot():
    """The control: the same comparison over definitions with one asset renamed."""
    from t2m_pipeline.definitions import defs

    renamed = []
    for asset in defs.assets:
        if isinstance(asset, dg.AssetsDefinition) and dg.AssetKey("thumbnail") in asset.keys:
            asset = asset.with_attributes(asset_key_replacements={dg.AssetKey("thumbnail"): dg.AssetKey("thumbnail_v2")})
        renamed.append(asset)
    # jobs that select the old key would not even resolve: compare what the assets alone say
    recorded = json.loads(SNAPSHOT.read_text())["assets"]
    # A live instance for the new repository's load context: an instance another test left open (its context var
    # outlives it) must not decide this test.
    with dg.instance_for_test():
        got = snapshot(dg.Definitions(assets=renamed, resources=defs.resources))["assets"]
    assert got != recorded and "thumbnail_v2" in got and "thumbnail" not in got
