"""The `t2m` process leaves without the interpreter's teardown once its work is done and written, and only then:
with a thread still running, the exit is the ordinary one (which waits for it)."""

from __future__ import annotations

import subprocess
import sys

PROCESS = """
import atexit, sys, threading
from t2m_pipeline import cli
atexit.register(lambda: print("teardown ran", flush=True))
if sys.argv[1] == "thread-running":
    threading.Thread(target=threading.Event().wait, args=(0.5,)).start()
sys.argv = ["t2m", *sys.argv[2:]]
cli.entry()
"""


def t2m_process(case: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", PROCESS, case, *args], capture_output=True, text=True, timeout=120)


def test_the_process_skips_the_teardown_once_done_and_keeps_its_output_and_status():
    done = t2m_process("nothing-left", "--help")
    assert done.returncode == 0 and "Usage: t2m" in done.stdout and "teardown ran" not in done.stdout
    failed = t2m_process("nothing-left", "nope")
    assert failed.returncode == 2 and failed.stderr.startswith("t2m: error: ") and "teardown ran" not in failed.stdout


def test_control_a_thread_still_running_gets_the_ordinary_exit():
    result = t2m_process("thread-running", "--help")
    assert result.returncode == 0 and "Usage: t2m" in result.stdout and "teardown ran" in result.stdout
