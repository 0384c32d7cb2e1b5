"""The scene assets' checks and pictures: each asset reads back what it wrote and reports one check result per
rule of `t2m_pipeline.pipeline.object_checks`, a link to the object and, for images and videos, a small preview
image inline (a data: URI in markdown short enough for the Dagster UI to render it in place).

Thin by design: what is checked lives in the library module; here it becomes `AssetCheckSpec`s (with their
descriptions), `AssetCheckResult`s (with their severities) and metadata.
"""

from typing import Any

import dagster as dg

from t2m_pipeline.config import Settings
from t2m_pipeline.defs.scenes.partitions import COMBINED_VIDEO, RENDERED_VIDEO, SCENE_CODE, THUMBNAIL
from t2m_pipeline.pipeline import object_checks as oc
from t2m_pipeline.pipeline.steps import Pipeline
from t2m_pipeline.storage.links import object_url
from t2m_pipeline.storage.s3 import StoredObject

RESOLUTIONS = ", ".join(f"{q} {w}x{h}" for q, (w, h) in oc.QUALITY_RESOLUTIONS.items())
DESCRIPTIONS = {
    "row_recorded": "ERROR when the version written has no file_metadata row (the platform would not know it exists).",
    "object_matches_row": "ERROR unless the object read back from S3 has the sha256 and size its file_metadata row records.",
    "code_checks": "ERROR unless the stored source parses and defines the scene class the renderer runs.",
    "video_probes": "ERROR unless the video read back from S3 decodes with a positive duration, at most the render timeout.",
    "video_size": f"WARN unless the video has the resolution its quality renders ({RESOLUTIONS}).",
    "thumbnail_decodes": "ERROR unless the thumbnail read back from S3 decodes as a JPEG of the size its row records.",
    "thumbnail_not_blank": "WARN when the thumbnail is one flat colour: it shows nothing of the scene.",
    "combined_probes": "ERROR unless the combined video read back from S3 decodes and lasts the sum of its scenes' "
    f"recorded durations (within {oc.DURATION_TOLERANCE_S} s a scene): a short one is missing a scene.",
}
CHECKS = {
    SCENE_CODE: ("row_recorded", "object_matches_row", "code_checks"),
    RENDERED_VIDEO: ("row_recorded", "object_matches_row", "video_probes", "video_size"),
    THUMBNAIL: ("row_recorded", "object_matches_row", "thumbnail_decodes", "thumbnail_not_blank"),
    COMBINED_VIDEO: ("row_recorded", "object_matches_row", "combined_probes", "video_size"),
}


def check_specs(asset: dg.AssetKey, partitions_def: dg.PartitionsDefinition) -> list[dg.AssetCheckSpec]:
    """Partitioned like their asset, so each partition's materialization has its own check results in the UI."""
    return [
        dg.AssetCheckSpec(name, asset=asset, description=DESCRIPTIONS[name], partitions_def=partitions_def)
        for name in CHECKS[asset]
    ]


def link_metadata(settings: Settings, stored: StoredObject) -> dict[str, Any]:
    return {"object_url": dg.MetadataValue.url(object_url(settings, stored.bucket, stored.key, stored.version_id))}


def preview_metadata(data_uri: str | None) -> dict[str, Any]:
    """Shown inline in the UI's metadata table (markdown under 1,000 characters is)."""
    return {"preview": dg.MetadataValue.md(f"![preview]({data_uri})")} if data_uri else {}


def _results(asset: dg.AssetKey, outcomes: list[oc.Outcome]) -> list[dg.AssetCheckResult]:
    by_name = {o.check: o for o in outcomes}
    results = []
    for name in CHECKS[asset]:
        o = by_name[name]
        results.append(
            dg.AssetCheckResult(
                check_name=name,
                passed=o.passed,
                severity=dg.AssetCheckSeverity.ERROR if o.severity == oc.ERROR else dg.AssetCheckSeverity.WARN,
                description=o.description,
                metadata=o.metadata,
            )
        )
    return results


def verify(asset: dg.AssetKey, p: Pipeline, stored: StoredObject, judge) -> tuple[list[dg.AssetCheckResult], dict[str, Any]]:
    """Read the object back, run the row checks and `judge(path) -> (outcomes, metadata)`; a read that fails fails
    every check that needed the bytes (ERROR) instead of the step."""
    try:
        with oc.read_back(p.storage, stored) as path:
            outcomes = oc.row_checks(p.engine, stored, path)
            more, metadata = judge(path)
            outcomes += more
    except Exception as exc:  # noqa: BLE001 - never fail (and so retry) a step whose object is written and recorded
        reason = f"{type(exc).__name__}: {exc}"
        outcomes = [oc.Outcome(name, False, oc.ERROR, f"not judged: {reason}") for name in CHECKS[asset]]
        metadata = {}
    return _results(asset, outcomes), {**link_metadata(p.settings, stored), **metadata}


def verify_scene_code(p: Pipeline, stored: StoredObject, class_name: str):
    return verify(SCENE_CODE, p, stored, lambda path: (oc.code_checks(path, class_name), {}))


def verify_rendered_video(p: Pipeline, stored: StoredObject, quality: str, *, max_duration_s: float):
    def judge(path):
        outcomes = oc.video_checks(path, quality=quality, max_duration_s=max_duration_s)
        return outcomes, preview_metadata(oc.video_preview(path))

    return verify(RENDERED_VIDEO, p, stored, judge)


def verify_thumbnail(p: Pipeline, stored: StoredObject, width: int, height: int):
    def judge(path):
        return oc.image_checks(path, width=width, height=height), preview_metadata(oc.preview_data_uri(path.read_bytes()))

    return verify(THUMBNAIL, p, stored, judge)


def verify_combined_video(p: Pipeline, stored: StoredObject, job_key, scene_count: int):
    from t2m_pipeline.pipeline.steps import load_outline

    job_id = job_key.job_id

    def judge(path):
        quality = load_outline(p, job_key).quality
        durations = oc.scene_durations(p.engine, job_id)
        expected = sum(durations) if len(durations) == scene_count else None
        outcomes = oc.video_checks(path, quality=quality, expected_duration_s=expected, tolerance_s=oc.DURATION_TOLERANCE_S * scene_count)
        probes = next(o for o in outcomes if o.check == "video_probes")
        if expected is None:
            probes = oc.Outcome("video_probes", False, oc.ERROR, f"{len(durations)} scene video(s) recorded, the outline has {scene_count}", probes.metadata)
        combined = oc.Outcome("combined_probes", probes.passed, probes.severity, probes.description, probes.metadata)
        others = [o for o in outcomes if o.check != "video_probes"]
        return [combined, *others], preview_metadata(oc.video_preview(path))

    return verify(COMBINED_VIDEO, p, stored, judge)
