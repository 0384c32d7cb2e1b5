"""A data engineer's first day, end to end in a real browser (headless Chromium from Debian, driven by selenium).

The stack script `make dev` runs (scripts/dev.py) starts on free ports, with its own state directory and databases.
The submit command it prints runs in a fresh environment (env -i: PATH and HOME only); the job completes; the UI's
thumbnail partition shows its preview image and its passing checks; the stack stops (within 10 s) and starts again;
the objects are still there (`t2m audit` clean, every object fetched through its owner's presigned URL). Screenshots
go to artifacts/e2e/ (gitignored).
"""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
import urllib.request
import uuid
from pathlib import Path

import pytest

from devtools.local_s3 import free_port
from t2m_pipeline_tests.conftest import ADMIN_URL

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[1]
ARTIFACTS = REPO / "artifacts" / "e2e"
CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
FIRST_START_ONLY = "No cursor for event type"  # dagster's run-retry daemon, on an instance it has never seen


class DevStack:
    """`python scripts/dev.py` as a person runs it, its output collected line by line."""

    def __init__(self, local_dir: Path, ui_port: int, s3_port: int, env: dict[str, str]):
        self.args = [sys.executable, str(REPO / "scripts" / "dev.py"), "--port", str(ui_port), "--s3-port", str(s3_port),
                     "--local-dir", str(local_dir)]
        self.env = env
        self.lines: list[str] = []
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 300) -> str:
        """Start it and wait for the submit command it prints; returns that command."""
        self.lines = []
        self.proc = subprocess.Popen(
            self.args, cwd=REPO, env=self.env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, text=True, start_new_session=True,
        )
        threading.Thread(target=lambda: [self.lines.append(line.rstrip("\n")) for line in self.proc.stdout], daemon=True).start()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in list(self.lines):
                if "[t2m] submit a job: " in line:
                    return line.split("[t2m] submit a job: ", 1)[1]
            if self.proc.poll() is not None:
                break
            time.sleep(0.5)
        raise AssertionError("make dev did not come up:\n" + "\n".join(self.lines[-60:]))

    def stop(self) -> float:
        """Ctrl-C, as a person stops it; returns how long it took until every process of it was gone."""
        started = time.monotonic()
        self.proc.send_signal(signal.SIGINT)
        self.proc.wait(60)
        return time.monotonic() - started

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)


def fresh_terminal(command: str, home: Path, timeout: float = 120) -> subprocess.CompletedProcess:
    """`command` in a new terminal: env -i with only PATH and HOME."""
    return subprocess.run(
        ["env", "-i", f"PATH={os.environ['PATH']}", f"HOME={home}", "sh", "-c", command],
        check=False, cwd=REPO, capture_output=True, text=True, timeout=timeout,  # callers judge the exit code
    )


def t2m_command(submit_command: str, args: str) -> str:
    """The printed command's way of reaching the stack (its stack-file prefix and t2m), with other arguments."""
    words = shlex.split(submit_command)
    head = words[: words.index("jobs")]
    return " ".join(shlex.quote(w) for w in head) + " " + args


def browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    assert Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists(), "install Debian's chromium and chromium-driver (.ci/run does)"
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                "--disable-sync", "--no-first-run", f"--user-data-dir={tempfile.mkdtemp(prefix='t2m-chromium-')}",
                "--window-size=1600,1100", "--disable-dev-shm-usage"):
        options.add_argument(arg)
    return webdriver.Chrome(options=options, service=Service(CHROMEDRIVER))


def dismiss_dialogs(driver) -> None:
    from selenium.webdriver.common.by import By

    for button in driver.find_elements(By.XPATH, "//button[normalize-space()='Skip']"):
        if button.is_displayed():
            button.click()


def wait_for(driver, predicate, what: str, seconds: float = 60):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        dismiss_dialogs(driver)
        found = predicate()
        if found:
            return found
        time.sleep(1)
    driver.save_screenshot(str(ARTIFACTS / f"timeout-{what.replace(' ', '-')}.png"))
    raise AssertionError(f"the UI did not show {what} within {seconds:.0f} s")


@pytest.fixture
def stack_databases():
    from t2m_pipeline.db.engine import drop_database

    suffix = uuid.uuid4().hex[:10]
    base = ADMIN_URL.rsplit("/", 1)[0]
    urls = (f"{base}/t2m_e2e_{suffix}", f"{base.replace('+psycopg:', '+psycopg2:')}/t2m_e2e_dagster_{suffix}")
    yield urls
    for url in urls:
        drop_database(url.replace("+psycopg2:", "+psycopg:"))


def test_first_day_in_the_browser(stack_databases, tmp_path):
    from selenium.webdriver.common.by import By

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    metadata_url, dagster_url = stack_databases
    ui_port, s3_port = free_port(), free_port()
    # What a developer's shell has: no AWS or T2M variables (the test session's own are left out).
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "T2M_", "DAGSTER_"))}
    env.update(T2M_DATABASE_URL=metadata_url, T2M_DAGSTER_PG_URL=dagster_url, HOME=str(tmp_path))
    stack = DevStack(tmp_path / "stack", ui_port, s3_port, env)
    driver = None
    try:
        submit = stack.start()
        # Quiet by default: no start-up warning but the one Dagster's daemon gives once for a brand-new instance.
        warnings = [line for line in stack.lines if "warning" in line.lower() and FIRST_START_ONLY not in line]
        assert not warnings, "\n".join(stack.lines)

        done = fresh_terminal(submit + " --scenes 1 --json", tmp_path)
        assert done.returncode == 0, done.stderr
        job_id = json.loads(done.stdout)["job_id"]
        show = t2m_command(submit, f"jobs show {job_id} --json")
        deadline, summary = time.monotonic() + 600, {}
        while time.monotonic() < deadline:
            summary = json.loads(fresh_terminal(show, tmp_path).stdout)
            if summary["status"] in ("completed", "failed"):
                break
            time.sleep(2)
        assert summary.get("status") == "completed", summary
        noise = [line for line in stack.lines if " - INFO - " in line or " - DEBUG - " in line]
        assert not noise, "\n".join(noise[:20])  # daemon, sensors and run workers at WARNING: a quiet terminal
        scene_key = f"{summary['user_id']}/{job_id}/001"

        driver = browser()
        ui = f"http://127.0.0.1:{ui_port}"
        driver.get(f"{ui}/assets/thumbnail?view=partitions&partition={urllib.parse.quote(scene_key, safe='')}")
        preview = wait_for(
            driver, lambda: [i for i in driver.find_elements(By.CSS_SELECTOR, "img[src^='data:image/webp;base64,']") if i.is_displayed()],
            "the thumbnail preview",
        )[0]
        assert driver.execute_script("return arguments[0].complete && arguments[0].naturalWidth", preview) >= 96
        driver.save_screenshot(str(ARTIFACTS / "1-thumbnail-partition.png"))
        assert "object_url" in driver.find_element(By.TAG_NAME, "body").text

        driver.get(f"{ui}/assets/thumbnail?view=checks")
        checks = ("row_recorded", "object_matches_row", "thumbnail_decodes", "thumbnail_not_blank")
        wait_for(driver, lambda: all(c in driver.find_element(By.TAG_NAME, "body").text for c in checks), "the thumbnail's checks")
        body = driver.find_element(By.TAG_NAME, "body").text
        assert scene_key in body  # the latest evaluation is this very partition's
        assert body.count("Succeeded") >= len(checks) and "Failed" not in body.split("Execute all", 1)[1].split("Execute\n", 1)[0]
        driver.save_screenshot(str(ARTIFACTS / "2-thumbnail-checks.png"))

        objects = json.loads(fresh_terminal(t2m_command(submit, f"urls {job_id} --user demo --json"), tmp_path).stdout)
        assert {o["file_type"] for o in objects} >= {"scene_code", "scene_video", "thumbnail", "combined_video"}

        # Restart: the same command, the same state.
        seconds = stack.stop()
        assert seconds < 10, f"make dev took {seconds:.1f} s to stop"
        (ARTIFACTS / "stop-seconds.txt").write_text(f"{seconds:.2f}\n")
        submit_again = stack.start()
        assert submit_again == submit
        assert not any("RESET" in line for line in stack.lines), "\n".join(stack.lines)
        assert not [line for line in stack.lines if "warning" in line.lower()], "\n".join(stack.lines)

        audit = fresh_terminal(t2m_command(submit, "audit --settle-minutes 0 --json"), tmp_path, timeout=300)
        report = json.loads(audit.stdout)
        assert audit.returncode == 0 and report["ok"], audit.stdout + audit.stderr
        objects_audit = next(a for a in report["audits"] if a["audit"] == "objects")
        assert objects_audit["findings"]["found"] == 0 and objects_audit["stats"]
        again = json.loads(fresh_terminal(t2m_command(submit, f"urls {job_id} --user demo --json"), tmp_path).stdout)
        assert [(o["key"], o["version_id"]) for o in again] == [(o["key"], o["version_id"]) for o in objects]
        for o in again:  # every object, fetched as its owner would: bytes are there after the restart
            with urllib.request.urlopen(o["url"], timeout=30) as answer:
                assert answer.status == 200 and answer.read()

        driver.get(f"{ui}/assets/thumbnail?view=partitions&partition={urllib.parse.quote(scene_key, safe='')}")
        wait_for(driver, lambda: driver.find_elements(By.CSS_SELECTOR, "img[src^='data:image/webp;base64,']"), "the preview after the restart")
        driver.save_screenshot(str(ARTIFACTS / "3-after-restart.png"))
    finally:
        if driver is not None:
            driver.quit()
        (ARTIFACTS / "make-dev.log").write_text("\n".join(stack.lines) + "\n")
        if stack.proc is not None and stack.proc.poll() is None:
            try:
                stack.stop()
            except Exception:  # noqa: BLE001
                stack.kill()
