"""A job's scene outline: what each scene shows, planned deterministically from the job's topic and context.

Job rows are written by other systems with plain SQL, so `job_spec_from_row` validates every field it reads and
raises `JobSpecError` (one line naming the field) instead of letting a hostile row reach code generation.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import textwrap
import unicodedata
from dataclasses import asdict, dataclass
from typing import Any

from t2m_pipeline.vocabulary import scene_numbers

QUALITIES = ("low", "medium", "high", "ultra")
MIN_PLANNED_SCENES, MAX_PLANNED_SCENES = 3, 7  # the planner's own choice when the job does not say
MAX_SCENES = 20  # what `configuration.scene_count` may ask for
MAX_TOPIC_CHARS, MAX_CONTEXT_CHARS = 500, 2000
MAX_TITLE_CHARS, MAX_NARRATION_CHARS = 60, 160
OUTLINE_VERSION = 1

SHAPES = ("circle", "square", "triangle", "star", "hexagon", "arrow", "dot", "ellipse")
ANIMATIONS = ("create", "grow", "spin", "fade", "shift")
COLORS = ("BLUE", "GREEN", "YELLOW", "RED", "PURPLE", "TEAL", "ORANGE", "GOLD", "MAROON", "PINK")

_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u2028\u2029]")
_SENTENCE = re.compile(r"(?<=[.!?])\s+|\n+")


MAX_CONFIGURATION_BYTES = 64 * 1024  # a job's configuration JSON, as PostgreSQL prints it
MAX_JSON_DEPTH = 32
MAX_INT_DIGITS = 18


class JobSpecError(ValueError):
    """A job row's content cannot be planned; the message names the field and what was expected."""


def _json_depth(text: str) -> int:
    """The deepest nesting of arrays and objects, counted without parsing (brackets inside strings ignored)."""
    depth = deepest = 0
    in_string = escaped = False
    for char in text:
        if in_string:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        elif char in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif char in "]}":
            depth -= 1
    return deepest


def decode_bounded_json(raw: str | None, what: str = "configuration", size: int | None = None) -> Any:
    """JSON a row holds (fetched as text, never decoded by the driver) into Python values, bounded: at most
    MAX_CONFIGURATION_BYTES, MAX_JSON_DEPTH levels, MAX_INT_DIGITS-digit integers, finite numbers. JobSpecError
    (one line naming `what`) otherwise: the row is rejected, nothing else is affected."""

    def bounded_int(token: str) -> int:
        if len(token.lstrip("-")) > MAX_INT_DIGITS:
            raise JobSpecError(f"{what} holds a {len(token.lstrip('-'))}-digit number: expected at most {MAX_INT_DIGITS} digits")
        return int(token)

    def finite_float(token: str) -> float:
        value = float(token)
        if not math.isfinite(value):
            raise JobSpecError(f"{what} holds the number {token[:40]}, which is not finite")
        return value

    def no_constant(token: str):
        raise JobSpecError(f"{what} holds {token}: expected finite numbers only")

    if size is not None and size > MAX_CONFIGURATION_BYTES:
        raise JobSpecError(f"{what} is {size} bytes: expected at most {MAX_CONFIGURATION_BYTES}")
    if raw is None:
        return None
    if len(raw.encode("utf-8", "surrogatepass")) > MAX_CONFIGURATION_BYTES:
        raise JobSpecError(f"{what} is over {MAX_CONFIGURATION_BYTES} bytes")
    depth = _json_depth(raw)
    if depth > MAX_JSON_DEPTH:
        raise JobSpecError(f"{what} is nested {depth} levels deep: expected at most {MAX_JSON_DEPTH}")
    try:
        return json.loads(raw, parse_int=bounded_int, parse_float=finite_float, parse_constant=no_constant)
    except JobSpecError:
        raise
    except (ValueError, RecursionError) as exc:
        raise JobSpecError(f"{what} is not valid JSON: {str(exc)[:120]}") from None


def decode_configuration(raw: str | None, size: int | None = None) -> Any:
    """A job's `configuration`, bounded (decode_bounded_json)."""
    return decode_bounded_json(raw, "configuration", size)


def clean_text(value: str, limit: int) -> str:
    """Printable text on one line, at most `limit` characters: what a title or caption may show."""
    text = unicodedata.normalize("NFC", value)
    text = _CONTROL.sub(" ", text)
    text = re.sub(r"\s+", " ", text).strip()
    if len(text) > limit:
        text = text[: limit - 1].rstrip() + "…"
    return text


@dataclass(frozen=True)
class JobSpec:
    """What the pipeline needs from a job row, validated."""

    topic: str
    context: str
    quality: str = "low"
    scene_count: int | None = None


def job_spec_from_row(topic: Any, description: Any, configuration: Any) -> JobSpec:
    """Validate the fields of a `jobs` row (topic, description, configuration JSON) into a JobSpec."""
    if configuration is None:
        configuration = {}
    if not isinstance(configuration, dict):
        raise JobSpecError(f"configuration must be a JSON object, got {type(configuration).__name__}")
    if not isinstance(topic, str) or not clean_text(topic, MAX_TOPIC_CHARS):
        raise JobSpecError("topic must be non-empty text")
    if len(topic) > MAX_TOPIC_CHARS:
        raise JobSpecError(f"topic is {len(topic)} characters: expected at most {MAX_TOPIC_CHARS}")
    context = configuration.get("context", description)
    if context is None:
        context = ""
    if not isinstance(context, str):
        raise JobSpecError(f"context (configuration.context, else description) must be text, got {type(context).__name__}")
    quality = configuration.get("quality", "low")
    if quality not in QUALITIES:
        raise JobSpecError(f"configuration.quality {quality!r}: expected one of {'|'.join(QUALITIES)}")
    scene_count = configuration.get("scene_count")
    if scene_count is not None:
        if isinstance(scene_count, bool) or not isinstance(scene_count, int) or not 1 <= scene_count <= MAX_SCENES:
            raise JobSpecError(f"configuration.scene_count {scene_count!r}: expected a whole number from 1 to {MAX_SCENES}")
    return JobSpec(
        topic=clean_text(topic, MAX_TOPIC_CHARS),
        context=clean_text(context, MAX_CONTEXT_CHARS),
        quality=quality,
        scene_count=scene_count,
    )


@dataclass(frozen=True)
class ScenePlan:
    number: int
    title: str
    narration: str
    shapes: tuple[str, ...]
    animation: str
    color: str

    @property
    def caption_lines(self) -> list[str]:
        """The narration wrapped for the screen, at most three lines."""
        lines = textwrap.wrap(self.narration, 42)[:3]
        return lines or [self.title]


@dataclass(frozen=True)
class SceneOutline:
    topic: str
    context: str
    quality: str
    scenes: tuple[ScenePlan, ...]

    @property
    def scene_count(self) -> int:
        return len(self.scenes)

    def scene(self, number: int) -> ScenePlan:
        for plan in self.scenes:
            if plan.number == number:
                return plan
        raise KeyError(f"the outline has no scene {number} (it has {self.scene_count})")

    def to_json(self) -> bytes:
        data = {"version": OUTLINE_VERSION, **asdict(self)}
        return json.dumps(data, ensure_ascii=False, indent=2, sort_keys=True).encode("utf-8")

    @classmethod
    def from_json(cls, raw: bytes | str) -> SceneOutline:
        try:
            data = json.loads(raw)
            scenes = tuple(
                ScenePlan(
                    number=int(s["number"]),
                    title=str(s["title"]),
                    narration=str(s["narration"]),
                    shapes=tuple(str(x) for x in s["shapes"]),
                    animation=str(s["animation"]),
                    color=str(s["color"]),
                )
                for s in data["scenes"]
            )
            outline = cls(str(data["topic"]), str(data["context"]), str(data["quality"]), scenes)
        except (ValueError, KeyError, TypeError) as exc:
            raise JobSpecError(f"stored scene outline is malformed: {exc}") from exc
        if [s.number for s in scenes] != list(scene_numbers(len(scenes))):
            raise JobSpecError("stored scene outline is malformed: scenes are not numbered 1..N")
        return outline


def _digest(*parts: str) -> bytes:
    return hashlib.sha256("\x00".join(parts).encode("utf-8")).digest()


def _pick(options: tuple[str, ...], seed: bytes, index: int) -> str:
    return options[seed[index % len(seed)] % len(options)]


def _sentences(context: str) -> list[str]:
    return [s.strip() for s in _SENTENCE.split(context) if len(s.strip()) > 3]


def plan_outline(spec: JobSpec) -> SceneOutline:
    """3 to 7 scenes (or `spec.scene_count`): an introduction, one scene per idea of the context, a summary."""
    seed = _digest(spec.topic, spec.context)
    count = spec.scene_count or MIN_PLANNED_SCENES + seed[0] % (MAX_PLANNED_SCENES - MIN_PLANNED_SCENES + 1)
    ideas = _sentences(spec.context)
    fallbacks = [
        f"Looking closer at {spec.topic}",
        f"An example of {spec.topic}",
        f"Why {spec.topic} matters",
        f"{spec.topic} step by step",
        f"A picture of {spec.topic}",
    ]
    scenes = []
    for number in scene_numbers(count):
        scene_seed = _digest(spec.topic, spec.context, str(number))
        if number == 1:
            title = f"{spec.topic}"
            narration = ideas[0] if ideas else f"An introduction to {spec.topic}."
        elif number == count:
            title = f"Summary: {spec.topic}"
            narration = f"What we learned about {spec.topic}."
        else:
            idea_index = number - 1
            if idea_index < len(ideas):
                narration = ideas[idea_index]
                title = f"Idea {number - 1}"
            else:
                title = fallbacks[(number - 2) % len(fallbacks)]
                narration = f"{title}."
        shape_count = 1 + scene_seed[1] % 3
        ranked = sorted(SHAPES, key=lambda shape: _digest(shape, scene_seed.hex()))
        shapes = tuple(ranked[:shape_count])
        scenes.append(
            ScenePlan(
                number=number,
                title=clean_text(title, MAX_TITLE_CHARS),
                narration=clean_text(narration, MAX_NARRATION_CHARS),
                shapes=shapes,
                animation=_pick(ANIMATIONS, scene_seed, 6),
                color=_pick(COLORS, scene_seed, 7),
            )
        )
    return SceneOutline(spec.topic, spec.context, spec.quality, tuple(scenes))
