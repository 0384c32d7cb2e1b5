"""Code generators: a scene plan in, manim source out. Pluggable: `template` (offline) or `openai` (any
OpenAI-compatible chat endpoint). Whatever produced it, the source is checked before it is rendered.

Generated code is untrusted: it is only ever rendered inside the render boundary (render.backends). The template
generator never splices job text into code except as `repr()` string literals, so a hostile topic cannot become code.
"""

from __future__ import annotations

import ast
import json
import re
from dataclasses import dataclass
from typing import Protocol

from t2m_pipeline.config import Settings
from t2m_pipeline.render.outline import SceneOutline, ScenePlan

MAX_CODE_BYTES = 200_000
GENERATORS = ("template", "openai")


class GeneratedCodeError(ValueError):
    """Generated source that must not be rendered: it does not parse or lacks the expected scene class."""


class CodeGenerationError(RuntimeError):
    """The generator could not produce source (endpoint down, bad answer). `transient` says a retry may help."""

    def __init__(self, message: str, *, transient: bool = False):
        super().__init__(message)
        self.transient = transient


def scene_class_name(scene_number: int) -> str:
    """The class a scene's source must define: `Scene001`, `Scene002`, ..."""
    return f"Scene{scene_number:03d}"


def check_scene_code(code: str, class_name: str) -> str:
    """The source if it parses and defines `class_name` (a class with a `construct` method); else GeneratedCodeError."""
    if not isinstance(code, str) or not code.strip():
        raise GeneratedCodeError("generated code is empty")
    if len(code.encode("utf-8", "surrogatepass")) > MAX_CODE_BYTES:
        raise GeneratedCodeError(f"generated code is over {MAX_CODE_BYTES} bytes")
    try:
        tree = ast.parse(code, filename="scene.py")
    except SyntaxError as exc:
        raise GeneratedCodeError(f"generated code does not parse: line {exc.lineno}: {exc.msg}") from None
    except ValueError as exc:  # e.g. null bytes
        raise GeneratedCodeError(f"generated code does not parse: {exc}") from None
    classes = {node.name: node for node in tree.body if isinstance(node, ast.ClassDef)}
    node = classes.get(class_name)
    if node is None:
        found = ", ".join(sorted(classes)) or "none"
        raise GeneratedCodeError(f"generated code does not define class {class_name} (classes found: {found})")
    if not node.bases:
        raise GeneratedCodeError(f"class {class_name} does not derive from a manim Scene")
    methods = {item.name for item in node.body if isinstance(item, ast.FunctionDef)}
    if "construct" not in methods:
        raise GeneratedCodeError(f"class {class_name} has no construct() method")
    return code


@dataclass(frozen=True)
class GeneratedCode:
    code: str
    class_name: str
    generator: str


class CodeGenerator(Protocol):
    name: str

    def generate(self, outline: SceneOutline, scene: ScenePlan) -> GeneratedCode: ...


# -- template ---------------------------------------------------------------------------------------------------

_SHAPE_SOURCE = {
    "circle": "Circle(radius=0.6, color={c}, fill_opacity=0.5)",
    "square": "Square(side_length=1.1, color={c}, fill_opacity=0.5)",
    "triangle": "Triangle(color={c}, fill_opacity=0.5).scale(0.7)",
    "star": "Star(outer_radius=0.7, color={c}, fill_opacity=0.5)",
    "hexagon": "RegularPolygon(n=6, color={c}, fill_opacity=0.5).scale(0.7)",
    "arrow": "Arrow(LEFT, RIGHT, color={c})",
    "dot": "Dot(radius=0.25, color={c})",
    "ellipse": "Ellipse(width=1.6, height=0.9, color={c}, fill_opacity=0.5)",
}
_INTRO_SOURCE = {
    "create": "self.play(Create(shapes), run_time=0.4)",
    "grow": "self.play(LaggedStart(*[GrowFromCenter(s) for s in shapes], lag_ratio=0.2), run_time=0.4)",
    "spin": "self.play(SpinInFromNothing(shapes), run_time=0.4)",
    "fade": "self.play(FadeIn(shapes, shift=UP), run_time=0.4)",
    "shift": "self.play(FadeIn(shapes, shift=RIGHT), run_time=0.4)",
}
_OUTRO_SOURCE = {
    "create": "self.play(Rotate(shapes, angle=PI / 2), run_time=0.3)",
    "grow": "self.play(shapes.animate.scale(1.2), run_time=0.3)",
    "spin": "self.play(Rotate(shapes, angle=PI), run_time=0.3)",
    "fade": "self.play(shapes.animate.set_opacity(0.3), run_time=0.3)",
    "shift": "self.play(shapes.animate.shift(LEFT * 0.5), run_time=0.3)",
}
_COLOR = re.compile(r"^[A-Z_]{2,20}$")


class TemplateCodeGenerator:
    """Offline and deterministic: a title, the scene's shapes, a caption, a few animations (about 2 s)."""

    name = "template"

    def generate(self, outline: SceneOutline, scene: ScenePlan) -> GeneratedCode:
        class_name = scene_class_name(scene.number)
        color = scene.color if _COLOR.match(scene.color) else "BLUE"
        shapes = ", ".join(_SHAPE_SOURCE.get(s, _SHAPE_SOURCE["circle"]).format(c=color) for s in scene.shapes) or (
            _SHAPE_SOURCE["circle"].format(c=color)
        )
        animation = scene.animation if scene.animation in _INTRO_SOURCE else "create"
        lines = scene.caption_lines
        code = f'''"""Scene {scene.number} of {outline.scene_count}: generated by the template generator."""

from manim import *

TITLE = {scene.title!r}
CAPTION = {lines!r}


class {class_name}(Scene):
    def construct(self):
        title = Text(TITLE, font_size=40)
        if title.width > config.frame_width - 1:
            title.scale_to_fit_width(config.frame_width - 1)
        self.play(Write(title), run_time=0.4)
        self.play(title.animate.to_edge(UP), run_time=0.3)
        shapes = VGroup({shapes}).arrange(RIGHT, buff=0.6)
        {_INTRO_SOURCE[animation]}
        caption = VGroup(*[Text(line, font_size=24) for line in CAPTION]).arrange(DOWN, aligned_edge=LEFT)
        if caption.width > config.frame_width - 1:
            caption.scale_to_fit_width(config.frame_width - 1)
        caption.next_to(shapes, DOWN, buff=0.5)
        self.play(FadeIn(caption), run_time=0.3)
        {_OUTRO_SOURCE[animation]}
        self.wait(0.2)
'''
        return GeneratedCode(check_scene_code(code, class_name), class_name, self.name)


# -- OpenAI-compatible --------------------------------------------------------------------------------------------

SYSTEM_PROMPT = (
    "You write Python code for Manim Community Edition 0.19 or later. Answer with one ```python code block only. "
    "The code must `from manim import *` and define exactly one scene class named {class_name} deriving from "
    "Scene, with a construct() method. Keep the animation under 5 seconds. Do not read or write files, do not "
    "use the network, do not import anything but manim and the standard math module."
)
_FENCE = re.compile(r"```(?:python|py)?[ \t]*\n(.*?)```", re.DOTALL)


def extract_code(content: str) -> str:
    """The first fenced code block of a chat answer, or the whole answer when it has none."""
    match = _FENCE.search(content)
    return (match.group(1) if match else content).strip() + "\n"


NO_KEY = "no-key"  # what the SDK sends when T2M_LLM_API_KEY is unset (it refuses to send nothing)


class OpenAICompatibleCodeGenerator:
    """Chat completions through the `openai` SDK at `base_url`, with explicit timeouts and the SDK's retries
    (429, 5xx, connection errors; exponential backoff, Retry-After honoured).

    Redirects are refused, not followed: the SDK's default client follows them, to any origin, and takes that
    origin's answer as scene code (t2m_pipeline_tests/render/test_codegen.py shows both). `http_client` exists for
    that control only.
    """

    name = "openai"

    def __init__(
        self,
        base_url: str,
        model: str,
        api_key: str | None = None,
        *,
        timeout_s: float = 120.0,
        connect_timeout_s: float = 10.0,
        max_attempts: int = 3,
        http_client=None,
    ):
        import openai

        self.url = base_url.rstrip("/") + "/chat/completions"
        self.model = model
        timeout = openai.Timeout(timeout_s, connect=connect_timeout_s)
        self._client = openai.OpenAI(
            base_url=base_url,
            api_key=api_key or NO_KEY,
            timeout=timeout,
            max_retries=max(0, max_attempts - 1),
            http_client=http_client or openai.DefaultHttpxClient(follow_redirects=False, timeout=timeout),
        )

    def __repr__(self) -> str:  # never the key
        return f"OpenAICompatibleCodeGenerator(url={self.url!r}, model={self.model!r})"

    def messages(self, outline: SceneOutline, scene: ScenePlan) -> list[dict]:
        class_name = scene_class_name(scene.number)
        brief = {
            "topic": outline.topic,
            "context": outline.context,
            "scene": scene.number,
            "of": outline.scene_count,
            "title": scene.title,
            "narration": scene.narration,
            "suggested_shapes": list(scene.shapes),
            "suggested_animation": scene.animation,
            "color": scene.color,
        }
        return [
            {"role": "system", "content": SYSTEM_PROMPT.format(class_name=class_name)},
            {"role": "user", "content": "Write the scene described by this JSON:\n" + json.dumps(brief, ensure_ascii=False)},
        ]

    def _complete(self, messages: list[dict]) -> str:
        import openai
        from openai.types.chat import ChatCompletion

        try:
            answer = self._client.chat.completions.create(model=self.model, messages=messages, temperature=0.2)
        except openai.APIStatusError as exc:
            status = exc.status_code
            if 300 <= status < 400:
                raise CodeGenerationError(f"code endpoint {self.url} answered HTTP {status}: redirects are refused") from None
            transient = status in (408, 409, 429) or status >= 500
            raise CodeGenerationError(f"code endpoint {self.url} answered HTTP {status}", transient=transient) from None
        except openai.APIConnectionError as exc:  # timeouts included
            raise CodeGenerationError(f"code endpoint {self.url} unreachable: {type(exc).__name__}", transient=True) from None
        except (openai.APIError, ValueError) as exc:
            raise CodeGenerationError(f"code endpoint {self.url} answered with something that is not a chat completion ({type(exc).__name__})") from None
        if not isinstance(answer, ChatCompletion):
            raise CodeGenerationError(f"code endpoint {self.url} answered with something that is not a chat completion")
        if not answer.choices:
            raise CodeGenerationError(f"code endpoint {self.url} answered without choices[0].message.content")
        content = answer.choices[0].message.content
        if not isinstance(content, str):
            raise CodeGenerationError(f"code endpoint {self.url} answered with non-text content")
        return content

    def generate(self, outline: SceneOutline, scene: ScenePlan) -> GeneratedCode:
        content = self._complete(self.messages(outline, scene))
        class_name = scene_class_name(scene.number)
        return GeneratedCode(check_scene_code(extract_code(content), class_name), class_name, self.name)


def make_code_generator(settings: Settings, name: str | None = None) -> CodeGenerator:
    """The generator the settings (or an explicit `name`) ask for."""
    name = name or settings.code_generator
    if name == "template":
        return TemplateCodeGenerator()
    if name == "openai":
        if not (settings.llm_base_url and settings.llm_model):
            raise CodeGenerationError("the openai generator needs T2M_LLM_BASE_URL and T2M_LLM_MODEL")
        return OpenAICompatibleCodeGenerator(settings.llm_base_url, settings.llm_model, settings.llm_api_key)
    raise CodeGenerationError(f"unknown code generator {name!r}: expected one of {'|'.join(GENERATORS)}")
