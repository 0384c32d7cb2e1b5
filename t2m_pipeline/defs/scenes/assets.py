"""The pipeline's assets: scene_outline [job] -> scene_code -> rendered_video -> thumbnail [scene] -> combined_video [job].

Two runs per job: the plan run (scene_outline), and one run for all of the job's scenes (the `scenes` multi-asset
over the job's scene-partition range) that ends by combining them. Inside the scenes step each scene goes code ->
render -> thumbnail on its own thread as soon as its input is ready, so two scenes render while a third is coded;
each partition still gets its own materialization and checks the moment it is made, and a single scene re-runs
alone (a one-partition run of the same step, from the UI or a backfill). The step of a job's last thumbnail makes
and reports the combined video (`combine_in_step`); the combined_video asset's own run is the fallback.

Each asset fetches its partition's inputs from S3, calls one function of `t2m_pipeline.pipeline.steps`, writes the
job's status back through `pipeline.status`, and reports its object (S3 URI, size, sha256, version id, and video or
image facts) as materialization metadata. Every S3 write goes through the storage layer, which records the
`file_metadata` row.

Each scene asset then reads its object back and reports its checks (`checks.py`): the row exists, object and row
agree by sha256, and the object is what it claims to be; images and videos carry a small preview image inline
and every object a link (the S3 console on AWS, the local endpoint in development).

Failures: a failure the step understands (`StepFailed`) is written back with its log key and not retried, and its
failure metadata links the log and shows its last lines; a transient S3 or database error is retried by the
retry policy (exponential backoff with jitter) and written back only when the retries are used up.
"""


import queue
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from functools import cached_property
from typing import TypeVar

import dagster as dg
from dagster._core.definitions.data_version import DATA_VERSION_TAG
from dagster._core.storage.tags import (
    ASSET_PARTITION_RANGE_END_TAG,
    ASSET_PARTITION_RANGE_START_TAG,
    PARENT_RUN_ID_TAG,
    RESUME_RETRY_TAG,
)

from t2m_pipeline.config import load_settings
from t2m_pipeline.defs.resources import PostgresResource, S3StorageResource
from t2m_pipeline.defs.scenes import checks, handoff
from t2m_pipeline.defs.scenes.jobs import render_scenes_job
from t2m_pipeline.defs.scenes.partitions import (
    COMBINED_VIDEO,
    RENDERED_VIDEO,
    SCENE_CODE,
    SCENE_OUTLINE,
    SCENES_STEP,
    THUMBNAIL,
    job_partitions,
    scene_partitions,
)
from t2m_pipeline.defs.scenes.resources import CodeGeneratorResource, RenderBackendResource
from t2m_pipeline.partition_keys import JobKey, SceneKey, decode_job_key, decode_scene_key
from t2m_pipeline.pipeline import status, steps
from t2m_pipeline.pipeline.retry import is_transient
from t2m_pipeline.pipeline.run_labels import LAUNCHED_BY_TAG, JobLabels, fallback_labels, job_labels, launched_by
from t2m_pipeline.render.backends import RenderBackend, make_render_backend
from t2m_pipeline.render.codegen import CodeGenerator, scene_class_name
from t2m_pipeline.render.cores import machine_cores
from t2m_pipeline.render.outline import MAX_SCENES
from t2m_pipeline.storage.links import object_url
from t2m_pipeline.storage.s3 import StoredObject
from t2m_pipeline.vocabulary import STAGE_OF_ASSET, Stage

T = TypeVar("T")

RETRY_POLICY = dg.RetryPolicy(max_retries=3, delay=2, backoff=dg.Backoff.EXPONENTIAL, jitter=dg.Jitter.PLUS_MINUS)
RENDER_POOL = "manim_render"
GROUP = "scenes"
MAX_CODE_PREVIEW = 20_000
MAX_RESUMED_RUNS = 10
WARM_FROM_RENDERS = 2  # a step with this many renders to make opens a warm renderer
LOG_TAIL_LINES = 40


def pipeline_of(database: PostgresResource, storage: S3StorageResource) -> steps.Pipeline:
    store = storage.get()
    return steps.Pipeline(store.settings, database.engine, store)


def object_metadata(stored: StoredObject) -> dict:
    return {
        "s3_uri": dg.MetadataValue.path(stored.uri),
        "size_bytes": dg.MetadataValue.int(stored.size),
        "sha256": dg.MetadataValue.text(stored.sha256),
        "version_id": dg.MetadataValue.text(stored.version_id or ""),
        "content_type": dg.MetadataValue.text(stored.content_type),
    }


def label_run(context: dg.AssetExecutionContext, p: steps.Pipeline, user_id: str, job_id: str, scene: int | None) -> dict:
    """Tag the run with the job's topic, user and scene (`tag_run`), and return the same facts as materialization
    metadata."""
    labels = labels_of(context, p, {job_id: user_id})[job_id]
    tag_run(context, labels, scene)
    return {key: dg.MetadataValue.text(value) for key, value in labels.metadata().items()}


def labels_of(context: dg.AssetExecutionContext, p: steps.Pipeline, jobs: dict[str, str]) -> dict[str, JobLabels]:
    """Each job's labels ({job id: user id} in), one query for all. Labels are a courtesy: a database error here
    never fails the step (the ids still tell runs apart)."""
    try:
        with p.engine.connect() as conn:
            found = job_labels(conn, list(jobs))
    except Exception as exc:  # noqa: BLE001 - the step itself reports a database that is really down
        context.log.warning(f"run labels unavailable: {exc}")
        found = {}
    return {job_id: found.get(job_id) or fallback_labels(job_id, user_id) for job_id, user_id in jobs.items()}


def tag_run(context: dg.AssetExecutionContext, labels: JobLabels, scene: int | None) -> None:
    """The run's tags: its job's labels and who really launched it (a run from the UI or a backfill has none of the
    sensors' tags; a re-execution carries its parent's)."""
    current = context.run.tags
    wanted = {**labels.tags(scene), LAUNCHED_BY_TAG: launched_by(current)}
    missing = {k: v for k, v in wanted.items() if current.get(k) != v}
    if missing:
        context.instance.add_run_tags(context.run_id, missing)


def run_step(
    context: dg.AssetExecutionContext,
    p: steps.Pipeline,
    *,
    job_id: str,
    scene: int | None,
    stage: str,
    work: Callable[[], T],
    reopens: bool = True,
) -> tuple[T, float]:
    """Run one step with status write-back; returns (result, seconds)."""
    started = time.monotonic()
    try:
        status.step_started(p.engine, job_id, scene, reopens=reopens)
        result = work()
    except steps.StepFailed as exc:
        _write_failure(context, p, job_id, exc.stage, str(exc), exc.scene, exc.log_key)
        metadata = {"stage": exc.stage, **log_metadata(p, exc.log_key)}
        # `from None`: the clear message and the log are the story; the step's own traceback adds nothing to it.
        raise dg.Failure(description=f"{exc.stage} failed: {exc}", metadata=metadata, allow_retries=False) from None
    except Exception as exc:
        transient = is_transient(exc)
        if transient and context.retry_number < RETRY_POLICY.max_retries:
            context.log.warning(f"transient failure, will retry ({context.retry_number + 1}/{RETRY_POLICY.max_retries}): {exc}")
            raise
        _write_failure(context, p, job_id, stage, f"{type(exc).__name__}: {exc}", scene, None)
        if transient:
            raise
        raise dg.Failure(description=f"{stage} failed: {type(exc).__name__}: {exc}", allow_retries=False) from exc
    seconds = time.monotonic() - started
    status.step_succeeded(p.engine, job_id, stage=stage, seconds=seconds, scene=scene)
    return result, seconds


def log_metadata(p: steps.Pipeline, log_key: str | None) -> dict:
    """A failure's log: its key, a link to it and its last lines as a code block (when it can be read)."""
    if not log_key:
        return {}
    bucket = p.bucket("code")
    metadata = {
        "log_key": dg.MetadataValue.text(log_key),
        "log": dg.MetadataValue.path(f"s3://{bucket}/{log_key}"),
        "log_url": dg.MetadataValue.url(object_url(p.settings, bucket, log_key)),
    }
    try:
        lines = p.storage.get_bytes(bucket, log_key).decode("utf-8", "replace").rstrip().splitlines()
    except Exception:  # noqa: BLE001 - the link and key still say where the log is
        return metadata
    fence = "`" * 3
    tail = "\n".join(lines[-LOG_TAIL_LINES:]).replace(fence, "` ` `")
    shown = min(len(lines), LOG_TAIL_LINES)
    metadata["log_tail"] = dg.MetadataValue.md(f"Last {shown} of {len(lines)} lines:\n\n{fence}\n{tail}\n{fence}")
    return metadata


def _write_failure(context, p: steps.Pipeline, job_id: str, stage: str, message: str, scene: int | None, log_key: str | None) -> None:
    try:
        status.step_failed(p.engine, job_id, stage=stage, message=message, scene=scene, log_key=log_key)
    except Exception as exc:  # noqa: BLE001 - the run-failure sensor writes it back later
        context.log.error(f"could not write the failure back to job {job_id}: {exc}")


@dg.asset(
    key=SCENE_OUTLINE,
    partitions_def=job_partitions,
    retry_policy=RETRY_POLICY,
    group_name=GROUP,
    kinds={"s3", "json"},
    description="The job's scene plan (3 to 7 scenes, or configuration.scene_count) in the code bucket. Its "
    "scenes become `scenes` partitions ({user}/{job}/NNN) with one render_scenes run for them, queued by this run as it "
    "ends (or by the scene_runs sensor, if it could not).",
)
def scene_outline(context: dg.AssetExecutionContext, database: PostgresResource, storage: S3StorageResource) -> dg.MaterializeResult:
    key = decode_job_key(context.partition_key)
    p = pipeline_of(database, storage)
    labels = label_run(context, p, key.user_id, key.job_id, None)
    (outline, stored), seconds = run_step(
        context, p, job_id=key.job_id, scene=None, stage=Stage.PLANNING, work=lambda: steps.plan_job(p, key)
    )
    handoff.hand_off_scene_runs(context, p.engine, outline.scene_count)  # last: before the materialization exists
    return dg.MaterializeResult(
        metadata={
            **labels,
            **object_metadata(stored),
            "scene_count": dg.MetadataValue.int(outline.scene_count),
            "quality": dg.MetadataValue.text(outline.quality),
            "scene_titles": dg.MetadataValue.json([s.title for s in outline.scenes]),
            "seconds": dg.MetadataValue.float(round(seconds, 3)),
        },
        data_version=dg.DataVersion(stored.sha256),
    )


# -- a job's scenes: scene_code -> rendered_video -> thumbnail, each scene on its own ----------------------------


@dataclass(frozen=True)
class Produced:
    """One asset partition a scene stage made: what its materialization and its checks report."""

    asset_key: dg.AssetKey
    partition: str
    metadata: dict
    checks: list[dg.AssetCheckResult]
    data_version: str

    def events(self) -> Iterator[dg.AssetMaterialization | dg.AssetCheckEvaluation]:
        """The partition's own materialization, then its own check evaluations (a range run reports each scene
        apart: a failed scene is the only partition that shows failed)."""
        yield dg.AssetMaterialization(
            self.asset_key, partition=self.partition, metadata=self.metadata, tags={DATA_VERSION_TAG: self.data_version}
        )
        for result in self.checks:
            yield dg.AssetCheckEvaluation(
                asset_key=self.asset_key,
                check_name=str(result.check_name),
                passed=result.passed,
                severity=result.severity,
                description=result.description,
                metadata=result.metadata,
                partition=self.partition,
            )


@dataclass
class SceneTools:
    """What every scene of a step shares: the pipeline, the code generator and the render backend (each made once,
    when a scene first needs it: a thumbnail backfill needs neither), each job's labels, and the step's stop (set
    when the step is torn down: a cancelled run; scenes stop between stages, renders at once)."""

    p: steps.Pipeline
    code_generator_resource: CodeGeneratorResource
    render: RenderBackendResource
    labels: dict[str, dict]
    stop: threading.Event = field(default_factory=threading.Event)
    warm: RenderBackend | None = None  # the step's warm renderer, while it is open

    @cached_property
    def code_generator(self) -> CodeGenerator:
        return self.code_generator_resource.get()

    @cached_property
    def backend(self) -> RenderBackend:
        return self.render.get(self.p.storage)

    @property
    def renderer(self) -> RenderBackend:
        return self.warm or self.backend

    @contextmanager
    def warmed_up(self, renders: int) -> Iterator[None]:
        """For the block, a backend that can (the local sandbox) renders this step's scenes in one warm renderer
        (`render.warm`), started now so that manim's import runs while the scenes' code is written. Only for two
        renders or more: one render costs the same CPU either way (an import, then a render), so it goes cold."""
        warm = getattr(self.backend, "warm", None) if renders >= WARM_FROM_RENDERS else None
        if warm is None:
            yield
            return
        with warm(renders_at_once=min(renders, machine_cores())) as renderer:
            self.warm = renderer
            try:
                yield
            finally:
                self.warm = None


def prestart_renderer(job_name: str, tags: Mapping[str, str]) -> None:
    """A run worker's first act (`definitions.prepare_run`): a render_scenes run over two scenes or more of one job
    starts the warm renderer its step will open (`SceneTools.warmed_up` adopts it), so manim's import runs while
    Dagster opens the run instead of after (about a second either way)."""
    first, last = tags.get(ASSET_PARTITION_RANGE_START_TAG), tags.get(ASSET_PARTITION_RANGE_END_TAG)
    if job_name != render_scenes_job.name or not first or not last:
        return
    first_key, last_key = decode_scene_key(first), decode_scene_key(last)
    renders = last_key.scene_number - first_key.scene_number + 1
    if first_key.job != last_key.job or renders < WARM_FROM_RENDERS:
        return
    prestart = getattr(make_render_backend(load_settings()), "prestart_warm", None)
    if prestart is not None:
        prestart(renders_at_once=min(renders, machine_cores()))


def produce_scene_code(context: dg.AssetExecutionContext, tools: SceneTools, key: SceneKey) -> Produced:
    p = tools.p
    (generated, stored), seconds = run_step(
        context,
        p,
        job_id=key.job_id,
        scene=key.scene_number,
        stage=Stage.CODE_GENERATION,
        work=lambda: steps.generate_code(p, key, tools.code_generator),
    )
    preview = generated.code if len(generated.code) <= MAX_CODE_PREVIEW else generated.code[:MAX_CODE_PREVIEW] + "\n# ..."
    check_results, extra = checks.verify_scene_code(p, stored, scene_class_name(key.scene_number))
    metadata = {
        **tools.labels[key.job_id],
        **object_metadata(stored),
        **extra,
        "generator": dg.MetadataValue.text(generated.generator),
        "class_name": dg.MetadataValue.text(generated.class_name),
        "code": dg.MetadataValue.md(f"```python\n{preview}\n```"),
        "seconds": dg.MetadataValue.float(round(seconds, 3)),
    }
    return Produced(SCENE_CODE, key.encode(), metadata, check_results, stored.sha256)


def produce_rendered_video(context: dg.AssetExecutionContext, tools: SceneTools, key: SceneKey) -> Produced:
    p, render = tools.p, tools.render
    video, seconds = run_step(
        context, p, job_id=key.job_id, scene=key.scene_number, stage=Stage.RENDERING,
        work=lambda: steps.render_video(p, key, tools.renderer, context, timeout_s=render.timeout_s, stop=tools.stop),
    )
    check_results, extra = checks.verify_rendered_video(p, video.stored, video.quality, max_duration_s=render.timeout_s)
    metadata = {
        **tools.labels[key.job_id],
        **object_metadata(video.stored),
        **extra,
        "duration_s": dg.MetadataValue.float(video.info.duration_s),
        "resolution": dg.MetadataValue.text(video.info.resolution),
        "fps": dg.MetadataValue.float(video.info.fps),
        "quality": dg.MetadataValue.text(video.quality),
        "render_seconds": dg.MetadataValue.float(round(video.render_seconds, 3)),
        "render_backend": dg.MetadataValue.text(video.backend),
        "render_usage": dg.MetadataValue.text(video.usage),
        "seconds": dg.MetadataValue.float(round(seconds, 3)),
    }
    return Produced(RENDERED_VIDEO, key.encode(), metadata, check_results, video.stored.sha256)


def produce_thumbnail(context: dg.AssetExecutionContext, tools: SceneTools, key: SceneKey) -> Produced:
    p = tools.p
    (thumb, stored), seconds = run_step(
        context,
        p,
        job_id=key.job_id,
        scene=key.scene_number,
        stage=Stage.THUMBNAILS,
        work=lambda: steps.make_thumbnail(p, key),
        reopens=False,  # a thumbnail alone (say, backfilled for a migrated video) does not re-open a job
    )
    check_results, extra = checks.verify_thumbnail(p, stored, thumb.width, thumb.height)
    metadata = {
        **tools.labels[key.job_id],
        **object_metadata(stored),
        **extra,
        "width": dg.MetadataValue.int(thumb.width),
        "height": dg.MetadataValue.int(thumb.height),
        "at_seconds": dg.MetadataValue.float(thumb.at_seconds),
        "seconds": dg.MetadataValue.float(round(seconds, 3)),
    }
    return Produced(THUMBNAIL, key.encode(), metadata, check_results, stored.sha256)


SCENE_STAGES: tuple[tuple[dg.AssetKey, Callable[[dg.AssetExecutionContext, SceneTools, SceneKey], Produced]], ...] = (
    (SCENE_CODE, produce_scene_code),
    (RENDERED_VIDEO, produce_rendered_video),
    (THUMBNAIL, produce_thumbnail),
)


@dataclass
class SceneOutcome:
    """How one scene's stages went in this step: what it made, and why it stopped, if it did."""

    key: SceneKey
    produced: list[Produced] = field(default_factory=list)
    failure: dg.Failure | None = None
    transient: BaseException | None = None
    stage: str | None = None  # the stage it stopped at


def run_scene(context: dg.AssetExecutionContext, tools: SceneTools, key: SceneKey, stages, done: set, out: queue.Queue) -> SceneOutcome:
    """One scene's selected stages in order, each reported to `out` as soon as it is made; stops at its first
    failure (run_step has written it back). `done`: (asset, partition) already made in this run (a retried step)."""
    outcome = SceneOutcome(key)
    for asset_key, produce in stages:
        if tools.stop.is_set():
            break  # the step is being torn down (a cancelled run): nothing more is started
        if (asset_key, key.encode()) in done:
            continue
        try:
            produced = produce(context, tools, key)
        except dg.Failure as exc:
            outcome.failure, outcome.stage = exc, STAGE_OF_ASSET[asset_key.to_user_string()]
            break
        except Exception as exc:  # noqa: BLE001 - a transient error with retries left: the step is retried
            outcome.transient, outcome.stage = exc, STAGE_OF_ASSET[asset_key.to_user_string()]
            break
        outcome.produced.append(produced)
        out.put(produced)
    return outcome


def made_before(context: dg.AssetExecutionContext, keys: list[str]) -> set[tuple[dg.AssetKey, str]]:
    """(asset, partition) this run, or the run it resumes, has materialized already, so a retried step or a
    re-execution from failure (a crashed worker's retry among them) makes only what is missing: a scene whose code
    was generated is not sent to the language model again. A re-execution of everything makes everything."""
    runs = {context.run_id} if context.retry_number > 0 else set()
    run = context.run
    while run is not None and run.tags.get(RESUME_RETRY_TAG) == "true" and len(runs) < MAX_RESUMED_RUNS:
        parent = run.tags.get(PARENT_RUN_ID_TAG) or run.parent_run_id
        if not parent:
            break
        runs.add(parent)  # the chain of runs resumed from failure, newest first
        run = context.instance.get_run_by_id(parent)
    if not runs:
        return set()
    made = set()
    for asset_key in context.selected_asset_keys:
        records = context.instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=asset_key, asset_partitions=keys), limit=len(keys) * (len(runs) + 2)
        ).records
        made |= {(asset_key, r.partition_key) for r in records if r.run_id in runs and r.partition_key}
    return made


def scene_labels(context: dg.AssetExecutionContext, p: steps.Pipeline, keys: list[SceneKey]) -> dict[str, dict]:
    """Each job's labels as materialization metadata; the run tagged with them when it holds one job (one scene:
    with the scene too)."""
    labels = labels_of(context, p, {key.job_id: key.user_id for key in keys})
    if len(labels) == 1:
        [only] = labels.values()
        tag_run(context, only, keys[0].scene_number if len(keys) == 1 else None)
    return {job_id: {k: dg.MetadataValue.text(v) for k, v in label.metadata().items()} for job_id, label in labels.items()}


def _reported_per_partition(context: dg.AssetExecutionContext) -> None:
    """Tell Dagster this step's results were reported, partition by partition, as events.

    A Pipes session (each render opens one) makes Dagster require every selected output of the step to be yielded
    whole, which for a range means one materialization per partition with the same facts, failed scenes included.
    The step reports each partition's own materialization and checks instead (`Produced.events`), and a failed
    scene raises, so that requirement is lifted here, once every scene is done. Dagster keeps the flag on the
    step's context and has no public way to clear it; the pipeline tests fail if that ever changes."""
    step = context.op_execution_context._step_execution_context  # noqa: SLF001 - see the docstring
    if not hasattr(step, "_requires_typed_event_stream"):
        raise RuntimeError("Dagster's step context changed: the scenes step cannot report per partition")
    step._requires_typed_event_stream = False  # noqa: SLF001


@dg.multi_asset(
    name=SCENES_STEP,
    specs=[
        dg.AssetSpec(
            SCENE_CODE,
            group_name=GROUP,
            kinds={"s3", "python"},
            description="A scene's manim source from the code generator, checked before it is stored. Reads the "
            "scene_outline of its job ({user}/{job}/NNN reads {user}/{job}): Dagster cannot map one dynamic partition "
            "set onto another, so the graph draws no edge rather than a false one; the job's plan run queues its scenes.",
        ),
        dg.AssetSpec(
            RENDERED_VIDEO,
            deps=[SCENE_CODE],
            group_name=GROUP,
            kinds={"s3", "manim"},
            description="The scene rendered by manim inside the render boundary (the local sandbox, or its own ECS "
            "task), reached through Dagster Pipes; the video is checked before it is stored; on failure its log is in "
            "the code bucket.",
        ),
        dg.AssetSpec(
            THUMBNAIL,
            deps=[RENDERED_VIDEO],
            group_name=GROUP,
            kinds={"s3", "jpeg"},
            description="A real frame of the scene's video (at 5 s, or mid-video when shorter) as JPEG.",
        ),
    ],
    check_specs=[*checks.check_specs(SCENE_CODE, scene_partitions), *checks.check_specs(RENDERED_VIDEO, scene_partitions),
                 *checks.check_specs(THUMBNAIL, scene_partitions)],
    partitions_def=scene_partitions,
    # A backfill runs each scene on its own: a render's Pipes context names its run's partitions, and only one job's
    # scenes may share a run (the plan run's handoff makes sure of it), never another user's.
    backfill_policy=dg.BackfillPolicy.multi_run(max_partitions_per_run=1),
    can_subset=True,
    retry_policy=RETRY_POLICY,
    pool=RENDER_POOL,
    description="A run's scenes (one scene, or a job's scene range): each scene goes code -> render -> thumbnail on "
    "its own, as soon as its input is ready, beside the others; renders take one of the machine's cores each. Every "
    "partition gets its own materializations and check results as it is made; a scene that fails fails the step "
    "after the others are done, and only its partitions show failed.",
)
def scenes(
    context: dg.AssetExecutionContext,
    database: PostgresResource,
    storage: S3StorageResource,
    code_generator: CodeGeneratorResource,
    render: RenderBackendResource,
) -> Iterator[dg.AssetMaterialization | dg.AssetCheckEvaluation]:
    keys = [decode_scene_key(pk) for pk in context.partition_keys]
    p = pipeline_of(database, storage)
    one_job(keys)
    tools = SceneTools(p, code_generator, render, scene_labels(context, p, keys))
    stages = [(asset_key, produce) for asset_key, produce in SCENE_STAGES if asset_key in context.selected_asset_keys]
    done = made_before(context, [key.encode() for key in keys])
    making_thumbnails = any(a == THUMBNAIL for a, _ in stages)
    pending_thumbnails = Counter(key.job_id for key in keys if making_thumbnails and (THUMBNAIL, key.encode()) not in done)
    rendering = RENDERED_VIDEO in context.selected_asset_keys
    renders = sum(1 for key in keys if rendering and (RENDERED_VIDEO, key.encode()) not in done)
    made: queue.Queue[Produced] = queue.Queue()
    stack = ExitStack()
    pool = ThreadPoolExecutor(max_workers=min(len(keys), MAX_SCENES), thread_name_prefix="scene")
    finished = False
    try:
        stack.enter_context(tools.warmed_up(renders))
        futures = [pool.submit(run_scene, context, tools, key, stages, done, made) for key in keys]
        while True:
            try:
                produced = made.get(timeout=0.05)
            except queue.Empty:
                if all(f.done() for f in futures) and made.empty():
                    break
                continue
            if produced.asset_key == THUMBNAIL:
                job = decode_scene_key(produced.partition).job
                pending_thumbnails[job.job_id] -= 1
                if pending_thumbnails[job.job_id] == 0:  # the job's last thumbnail here: before its materialization
                    yield from combine_in_step(context, tools, job)
            yield from produced.events()
        outcomes = [f.result() for f in futures]
        finished = True
    finally:
        if not finished:  # the run is being stopped (its interrupt lands on this thread) or the step failed
            tools.stop.set()
        pool.shutdown(wait=True, cancel_futures=True)
        stack.close()  # the warm renderer, once no scene can use it
    _reported_per_partition(context)
    failed = [o for o in outcomes if o.failure is not None]
    transient = [o for o in outcomes if o.transient is not None]
    if transient and not failed:
        raise transient[0].transient  # the retry policy takes the step again; what is made stays made (made_before)
    for o in transient:  # a scene failed for good: no retry of the step, so the transient ones fail now too
        o.failure = _transient_failure(context, tools, o)
        failed.append(o)
    if not failed:
        # each check's output, as Dagster yields one after a check result: its evaluations are the events above
        for output_name, spec in context.assets_def.check_specs_by_output_name.items():
            if spec.key in context.selected_asset_check_keys:
                yield dg.Output(None, output_name=output_name)
    else:
        raise scenes_failure(failed, len(outcomes))


def _transient_failure(context: dg.AssetExecutionContext, tools: SceneTools, outcome: SceneOutcome) -> dg.Failure:
    """A transient error written back as the scene's failure (the step is not retried: another scene failed for
    good, and a retry would run that one again)."""
    exc, key = outcome.transient, outcome.key
    message = f"{type(exc).__name__}: {exc}"
    _write_failure(context, tools.p, key.job_id, outcome.stage or Stage.RENDERING, message, key.scene_number, None)
    return dg.Failure(description=f"{outcome.stage} failed: {message} (transient; not retried: another scene failed for good)")


def one_job(keys: list[SceneKey]) -> None:
    """Fail closed unless the run's scenes are one job's: a range is "every partition added between its ends", and
    one whose ends were read before another plan's partitions committed among them would hold another user's scenes.
    (The plan run's handoff makes ranges of one job's scenes only; backfills run one scene a run.)"""
    jobs = sorted({key.job.encode() for key in keys})
    if len(jobs) > 1:
        # no key in the message: it could reach a job's error_info, and another user's ids are not its owner's to see
        raise dg.Failure(description=f"this run's scenes belong to {len(jobs)} jobs: a run renders one job's scenes only; "
                         "nothing was done", allow_retries=False)


def scenes_failure(failed: list[SceneOutcome], of: int) -> dg.Failure:
    """The step's failure: each failed scene's own message; one failed scene keeps its metadata (log link and tail)
    as it is, several have theirs under their scene number."""
    lines = [f"scene {o.key.scene_number:03d} of job {o.key.job_id}: {o.failure.description}" for o in failed]
    metadata = {"failed_scenes": dg.MetadataValue.json([o.key.encode() for o in failed])}
    for o in failed:
        prefix = "" if len(failed) == 1 else f"{o.key.scene_number:03d}: "
        metadata.update({f"{prefix}{k}": v for k, v in (o.failure.metadata or {}).items()})
    return dg.Failure(description=f"{len(failed)} of {of} scene(s) failed: " + "; ".join(lines), metadata=metadata, allow_retries=False)


def combine_in_step(context: dg.AssetExecutionContext, tools: SceneTools, job: JobKey) -> Iterator[dg.AssetMaterialization | dg.AssetCheckEvaluation]:
    """The job's combined video, made and reported by the scenes step of its last thumbnail (before that
    thumbnail's materialization, which the combine sensor waits for): one run per job's scenes and video, not two.

    Only when every scene has a video and a thumbnail, and not for videos combined already (a thumbnail backfill).
    The job's combines take turns (an advisory lock held until the materialization is stored), so two runs whose
    last scenes end together combine once. Anything going wrong here is logged and left to the combine_scenes run
    the combine_ready_jobs sensor then launches, with its retries and failure write-back: the scenes are made
    either way."""
    p, job_key = tools.p, job.encode()
    reported = False
    try:
        with p.engine.begin() as conn:
            handoff.take_turns(conn, f"combine:{job_key}")
            ready = handoff.combine_run_when_ready(conn, context.instance, job_key)
            if ready is None:
                return
            status.step_started(p.engine, job.job_id, None)
            made, seconds = steps.timed(steps.combine, p, job)
            status.step_succeeded(p.engine, job.job_id, stage=Stage.COMBINING, seconds=seconds)
            produced = produce_combined_video(p, job, tools.labels[job.job_id], made, seconds, ready.run_key)
            context.log.info(f"combined the job's {made[2]} scene video(s) in {seconds:.2f} s: job {job.job_id} completed")
            yield from produced.events()
            reported = True
    except Exception as exc:  # noqa: BLE001 - the sensor's combine run takes it, with retries and write-back
        if reported:  # only the lock's connection was lost (a database restart): the video is made and reported
            context.log.warning(f"combined video made; its lock's connection ended with {type(exc).__name__}")
        else:
            context.log.warning(f"combined video not made in this run ({type(exc).__name__}: {exc}); the "
                                f"{handoff.COMBINE_SENSOR} sensor launches a combine_scenes run for it")


def produce_combined_video(p: steps.Pipeline, key: JobKey, labels: dict, made, seconds: float, combined_from: str) -> Produced:
    """The combined video's materialization and checks, wherever it was made (`combined_from`: the scene videos'
    versions it holds, `handoff.combine_run_key`)."""
    info, stored, scene_count = made
    state = status.job_completed(p.engine, key.job_id)
    check_results, extra = checks.verify_combined_video(p, stored, key, scene_count)
    metadata = {
        **labels,
        **object_metadata(stored),
        **extra,
        "duration_s": dg.MetadataValue.float(info.duration_s),
        "resolution": dg.MetadataValue.text(info.resolution),
        "scenes": dg.MetadataValue.int(scene_count),
        "job_status": dg.MetadataValue.text(state.status if state else "unknown"),
        "seconds": dg.MetadataValue.float(round(seconds, 3)),
        handoff.COMBINED_FROM: dg.MetadataValue.text(combined_from),
    }
    return Produced(COMBINED_VIDEO, key.encode(), metadata, check_results, stored.sha256)


@dg.asset(
    key=COMBINED_VIDEO,
    partitions_def=job_partitions,
    retry_policy=RETRY_POLICY,
    group_name=GROUP,
    kinds={"s3", "mp4"},
    description="All scene videos of the job concatenated in order; completes the job. Reads the rendered_video "
    "of each of its scenes ({user}/{job} reads {user}/{job}/001...): no edge in the graph (Dagster cannot map the "
    "scene partitions onto the job's). Made by the scenes run of the job's last thumbnail, which reports it here; "
    "this asset's own run (combine_scenes) is for the rest: launched by the combine_ready_jobs sensor when that "
    "could not, or from the UI.",
    check_specs=checks.check_specs(COMBINED_VIDEO, job_partitions),
)
def combined_video(context: dg.AssetExecutionContext, database: PostgresResource, storage: S3StorageResource) -> dg.MaterializeResult:
    key = decode_job_key(context.partition_key)
    p = pipeline_of(database, storage)
    labels = label_run(context, p, key.user_id, key.job_id, None)
    with p.engine.connect() as conn:
        combined_from = handoff.combine_run_key(key.encode(), status.job_objects(conn, key.job_id))
    made, seconds = run_step(context, p, job_id=key.job_id, scene=None, stage=Stage.COMBINING, work=lambda: steps.combine(p, key))
    produced = produce_combined_video(p, key, labels, made, seconds, combined_from)
    return dg.MaterializeResult(
        check_results=produced.checks, metadata=produced.metadata, data_version=dg.DataVersion(produced.data_version)
    )


SCENE_ASSETS = [scene_outline, scenes, combined_video]
