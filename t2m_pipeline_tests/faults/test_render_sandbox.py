"""What the manim runner's sandbox confines, with real manim: generated code that writes by relative name, into
HOME or into the temp directory writes inside its own render directory, and all of it is gone after the render.

Confined too (bubblewrap, T2M_RENDER_SANDBOX=auto with bwrap installed, as .ci/run does): writes by absolute path
or by `../` into the project checkout or a legacy root fail, and loopback services are unreachable.
The environment (no AWS_*, T2M_DATABASE_URL, T2M_REDIS_URL, T2M_LLM_API_KEY values) is checked in
t2m_pipeline_tests/render/test_manim_runner.py.
"""

import json
import uuid
from pathlib import Path

from t2m_pipeline.render.manim_runner import render_scene

# Writes by every path that stays relative to the render's own places, then one short animation so a video exists.
CONFINED_WRITES_SCENE = """
import json, os, tempfile
from pathlib import Path
from manim import *

MARK = {mark!r}

class Scene001(Scene):
    def construct(self):
        written = {{}}
        Path("relative-" + MARK).write_text(MARK)
        written["relative"] = os.path.realpath("relative-" + MARK)
        home = Path(os.path.expanduser("~")) / ("home-" + MARK)
        home.write_text(MARK)
        written["home"] = os.path.realpath(home)
        with tempfile.NamedTemporaryFile("w", prefix="tmp-" + MARK, delete=False) as fh:
            fh.write(MARK)
        written["tempfile"] = os.path.realpath(fh.name)
        written["cwd"] = os.path.realpath(os.getcwd())
        print("WROTE" + json.dumps(written), flush=True)
        self.add(Dot())
        self.wait(0.2)
"""


def test_relative_home_and_temp_writes_stay_inside_the_render_directory_and_vanish(tmp_path):
    mark = uuid.uuid4().hex
    work_root = tmp_path / "renders"
    work_root.mkdir()
    code = CONFINED_WRITES_SCENE.format(mark=mark)
    with render_scene(code, "Scene001", quality="low", timeout_s=120, work_root=work_root) as result:
        line = next(line for line in result.log.splitlines() if line.startswith("WROTE"))
        written = json.loads(line[len("WROTE"):])
        render_dir = Path(written.pop("cwd"))
        # the render directory is a fresh one under the work root, and each write landed inside it
        assert render_dir.parent == work_root.resolve() and render_dir.name.startswith("t2m-render-")
        for how, path in written.items():
            assert Path(path).is_relative_to(render_dir), (how, path)
            assert Path(path).read_text() == mark, how
        assert result.video_path.is_relative_to(render_dir.parent)
    # after the render nothing it wrote is left, anywhere under the work root
    assert not render_dir.exists()
    assert list(work_root.iterdir()) == []


ESCAPE_SCENE = """
import json, os, socket
from pathlib import Path
from manim import *

TARGETS = {targets!r}

class Scene001(Scene):
    def construct(self):
        outcome = {{}}
        for name, path in TARGETS.items():
            try:
                Path(path).write_text("escaped")
                outcome[name] = "written"
            except OSError as exc:
                outcome[name] = type(exc).__name__
        try:
            socket.create_connection(("127.0.0.1", 5432), timeout=2).close()
            outcome["postgres"] = "connected"
        except OSError as exc:
            outcome["postgres"] = type(exc).__name__
        print("OUTCOME" + json.dumps(outcome), flush=True)
        self.add(Dot())
        self.wait(0.2)
"""


def test_generated_code_cannot_write_outside_its_render_directory_or_reach_services(tmp_path):
    import t2m_pipeline

    mark = uuid.uuid4().hex
    project = Path(t2m_pipeline.__file__).resolve().parents[1]
    legacy_root = tmp_path / "legacy"
    (legacy_root / "output").mkdir(parents=True)
    work_root = tmp_path / "renders"
    work_root.mkdir()
    targets = {
        "project_absolute": str(project / f"escape-{mark}.txt"),
        "legacy_absolute": str(legacy_root / "output" / f"escape-{mark}.txt"),
        "legacy_relative": f"../../legacy/output/escape-rel-{mark}.txt",
        "parent_relative": f"../escape-parent-{mark}.txt",
    }
    code = ESCAPE_SCENE.format(targets=targets)
    with render_scene(code, "Scene001", quality="low", timeout_s=120, work_root=work_root) as result:
        line = next(line for line in result.log.splitlines() if line.startswith("OUTCOME"))
        outcome = json.loads(line[len("OUTCOME"):])
    assert all(value != "written" for value in outcome.values()), outcome
    assert outcome["postgres"] != "connected"
    assert not list(project.glob(f"escape-*{mark}*"))
    assert not list(legacy_root.rglob(f"*{mark}*"))
    assert not list(tmp_path.glob(f"*{mark}*")) and not list(work_root.glob(f"*{mark}*"))
