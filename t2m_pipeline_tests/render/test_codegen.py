"""Code generators: the template one offline, the OpenAI-compatible one (the openai SDK) against a stand-in endpoint on
loopback: answers, retries, timeouts, and redirects refused."""

import ast
import json
import time

import pytest

from t2m_pipeline.config import load_settings
from t2m_pipeline.render.codegen import (
    NO_KEY,
    CodeGenerationError,
    GeneratedCodeError,
    OpenAICompatibleCodeGenerator,
    TemplateCodeGenerator,
    check_scene_code,
    extract_code,
    make_code_generator,
    scene_class_name,
)
from t2m_pipeline.render.outline import JobSpec, job_spec_from_row, plan_outline
from t2m_pipeline_tests.render.llm_standin import StandinLLM, completion


def module_constants(code: str) -> dict:
    tree = ast.parse(code)
    return {
        node.targets[0].id: ast.literal_eval(node.value)
        for node in tree.body
        if isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Name)
    }


def imports(code: str) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(code)):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            found.add(node.module)
    return found


def test_template_code_is_deterministic_checked_and_differs_by_topic():
    gen = TemplateCodeGenerator()
    outline = plan_outline(JobSpec("Pythagorean theorem", "Right triangles. Squares on the legs.", scene_count=3))
    first = gen.generate(outline, outline.scene(2))
    assert first == gen.generate(outline, outline.scene(2))
    assert first.class_name == "Scene002" and check_scene_code(first.code, "Scene002")
    assert module_constants(first.code)["TITLE"] == outline.scene(2).title

    other = plan_outline(JobSpec("Fourier series", "Sums of sines. Frequencies.", scene_count=3))
    assert gen.generate(other, other.scene(2)).code != first.code
    assert gen.generate(outline, outline.scene(1)).code != first.code


def test_hostile_topic_stays_a_string_literal():
    topic = '"); import os; os.system("curl evil") #\'\'\' """'
    outline = plan_outline(job_spec_from_row(topic, "x'''; __import__('os').remove('/')", {"scene_count": 2}))
    code = TemplateCodeGenerator().generate(outline, outline.scene(1)).code
    assert imports(code) == {"manim"}
    assert module_constants(code)["TITLE"] == outline.scene(1).title
    calls = {n.func.attr for n in ast.walk(ast.parse(code)) if isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute)}
    assert "system" not in calls and "remove" not in calls


@pytest.mark.parametrize(
    "code,message",
    [
        ("", "empty"),
        ("class Scene001(Scene):\n    def construct(self)\n", "does not parse"),
        ("from manim import *\nclass Other(Scene):\n    def construct(self): pass\n", "does not define class Scene001"),
        ("class Scene001:\n    def construct(self): pass\n", "derive"),
        ("from manim import *\nclass Scene001(Scene):\n    def build(self): pass\n", "construct"),
        ("x = '\x00'", "does not parse"),
    ],
)
def test_checker_rejects_code_that_must_not_render(code, message):
    with pytest.raises(GeneratedCodeError, match=message):
        check_scene_code(code, "Scene001")


def test_extract_code_takes_the_fenced_block():
    answer = "Here you go:\n```python\nfrom manim import *\nx = 1\n```\nEnjoy."
    assert extract_code(answer) == "from manim import *\nx = 1\n"
    assert extract_code("x = 2") == "x = 2\n"


GOOD_ANSWER = """Sure.
```python
from manim import *

class {name}(Scene):
    def construct(self):
        self.play(Create(Circle()), run_time=0.3)
```
"""


def scripted(script):
    """A stand-in answering from a script of (status, body); the last entry repeats."""
    script = list(script)

    def answer(request):
        status, body = script.pop(0) if len(script) > 1 else script[0]
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        return status, {"Content-Type": "application/json"}, data

    return answer


def chat(content):
    return completion(content)


OUTLINE = plan_outline(JobSpec("Binary search", "Halve the interval. Compare the middle.", scene_count=2))


def test_openai_generator_posts_the_plan_and_checks_the_answer():
    with StandinLLM(scripted([(200, chat(GOOD_ANSWER.format(name="Scene002")))])) as stub:
        gen = OpenAICompatibleCodeGenerator(stub.base_url, "stub-model", "sk-test-123")
        result = gen.generate(OUTLINE, OUTLINE.scene(2))
    assert result.class_name == "Scene002" and result.generator == "openai"
    assert "class Scene002(Scene)" in result.code and "Sure." not in result.code
    (request,) = stub.requests
    assert request["path"] == "/v1/chat/completions"
    assert request["headers"]["authorization"] == "Bearer sk-test-123"
    assert request["json"]["model"] == "stub-model"
    assert "Scene002" in request["json"]["messages"][0]["content"]
    brief = json.loads(request["json"]["messages"][1]["content"].split("\n", 1)[1])
    assert brief["title"] == OUTLINE.scene(2).title and brief["topic"] == "Binary search"
    assert "sk-test-123" not in repr(gen)


def test_openai_generator_retries_server_errors_then_succeeds():
    script = [(503, {"error": "busy"}), (429, {"error": "slow down"}), (200, chat(GOOD_ANSWER.format(name="Scene001")))]
    with StandinLLM(scripted(script)) as stub:
        result = OpenAICompatibleCodeGenerator(stub.base_url, "m", max_attempts=3).generate(OUTLINE, OUTLINE.scene(1))
    assert len(stub.requests) == 3 and "Scene001" in result.code
    assert stub.requests[0]["headers"]["authorization"] == f"Bearer {NO_KEY}"  # no key set: a placeholder, never a secret


@pytest.mark.parametrize(
    "status,answer,error,transient",
    [
        (401, {"error": "bad key"}, CodeGenerationError, False),
        (500, {"error": "down"}, CodeGenerationError, True),
        (200, b"<html>not json</html>", CodeGenerationError, False),
        (200, {"choices": []}, CodeGenerationError, False),
        (200, {"choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": 5}}]}, CodeGenerationError, False),
        (200, chat("```python\nclass Wrong(Scene):\n    def construct(self): pass\n```"), GeneratedCodeError, None),
        (200, chat("```python\ndef broken(:\n```"), GeneratedCodeError, None),
    ],
)
def test_openai_generator_failures_are_clear(status, answer, error, transient):
    with StandinLLM(scripted([(status, answer)])) as stub:
        gen = OpenAICompatibleCodeGenerator(stub.base_url, "m", max_attempts=2)
        with pytest.raises(error) as info:
            gen.generate(OUTLINE, OUTLINE.scene(1))
    if transient is not None:
        assert info.value.transient is transient
        assert len(stub.requests) == (2 if transient else 1)


def test_unreachable_endpoint_is_transient():
    gen = OpenAICompatibleCodeGenerator("http://127.0.0.1:9/v1", "m", max_attempts=1, timeout_s=2)
    with pytest.raises(CodeGenerationError) as info:
        gen.generate(OUTLINE, OUTLINE.scene(1))
    assert info.value.transient


def test_a_slow_endpoint_times_out_within_the_explicit_timeout():
    def slow(request):
        time.sleep(3)
        return GOOD_ANSWER.format(name="Scene001")

    with StandinLLM(slow) as stub:
        gen = OpenAICompatibleCodeGenerator(stub.base_url, "m", max_attempts=1, timeout_s=0.5)
        started = time.monotonic()
        with pytest.raises(CodeGenerationError) as info:
            gen.generate(OUTLINE, OUTLINE.scene(1))
    assert info.value.transient and time.monotonic() - started < 2.5


HOSTILE_CODE = "```python\nfrom manim import *\nimport os\nclass Scene001(Scene):\n    def construct(self): os.system('id')\n```"


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
def test_a_redirect_to_another_origin_is_refused_and_the_key_never_reaches_it(status):
    with StandinLLM(lambda request: HOSTILE_CODE) as other:
        redirect = lambda request: (status, {"Location": other.base_url + "/chat/completions"}, b"")  # noqa: E731
        with StandinLLM(redirect) as endpoint:
            gen = OpenAICompatibleCodeGenerator(endpoint.base_url, "m", "sk-secret-key", max_attempts=3)
            with pytest.raises(CodeGenerationError, match="redirects are refused") as info:
                gen.generate(OUTLINE, OUTLINE.scene(1))
    assert not info.value.transient
    assert len(endpoint.requests) == 1 and endpoint.requests[0]["headers"]["authorization"] == "Bearer sk-secret-key"
    assert other.requests == []  # never contacted: neither the key nor the plan went there


def test_control_the_sdks_default_client_follows_the_redirect_and_takes_the_other_origins_code():
    import openai

    with StandinLLM(lambda request: HOSTILE_CODE) as other:
        redirect = lambda request: (307, {"Location": other.base_url + "/chat/completions"}, b"")  # noqa: E731
        with StandinLLM(redirect) as endpoint:
            gen = OpenAICompatibleCodeGenerator(endpoint.base_url, "m", "sk-secret-key", http_client=openai.DefaultHttpxClient())
            result = gen.generate(OUTLINE, OUTLINE.scene(1))
    assert "os.system" in result.code  # the other origin's answer became scene code
    assert len(other.requests) == 1
    assert "authorization" not in other.requests[0]["headers"]  # httpx2 strips the key across origins; the code still came


def test_generator_choice_follows_settings():
    assert make_code_generator(load_settings({"AWS_ENDPOINT_URL": "http://127.0.0.1:1"})).name == "template"
    settings = load_settings(
        {"AWS_ENDPOINT_URL": "http://127.0.0.1:1", "T2M_CODE_GENERATOR": "openai", "T2M_LLM_BASE_URL": "http://127.0.0.1:2/v1", "T2M_LLM_MODEL": "m"}
    )
    gen = make_code_generator(settings)
    assert gen.name == "openai" and gen.url == "http://127.0.0.1:2/v1/chat/completions"
    assert scene_class_name(12) == "Scene012"
