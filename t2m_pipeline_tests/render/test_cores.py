"""The machine's render cores: never more local renders at once than cores, a dead holder's core comes back, and the
lock directory must be the worker's own."""

import os
import subprocess
import sys
import threading
import time

import pytest

from t2m_pipeline.render.cores import DIRECTORY_NAME, RenderCoresError, render_core


def most_at_once(hold, workers: int = 6, seconds: float = 0.2) -> int:
    """Run `workers` threads that each hold `hold()` for `seconds`; the most that held it at the same time."""
    lock, inside, peak = threading.Lock(), [0], [0]

    def work():
        with hold():
            with lock:
                inside[0] += 1
                peak[0] = max(peak[0], inside[0])
            time.sleep(seconds)
            with lock:
                inside[0] -= 1

    threads = [threading.Thread(target=work) for _ in range(workers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return peak[0]


def test_never_more_renders_at_once_than_cores(tmp_path):
    assert most_at_once(lambda: render_core(cores=2, root=tmp_path)) == 2
    # control: without the cores, all six run at once
    from contextlib import nullcontext

    assert most_at_once(nullcontext) == 6


def test_a_killed_holder_gives_its_core_back(tmp_path):
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time\nfrom t2m_pipeline.render.cores import render_core\n"
         f"with render_core(cores=1, root={str(tmp_path)!r}):\n    print('held', flush=True); time.sleep(60)"],
        stdout=subprocess.PIPE, text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        got = []

        def take():
            with render_core(cores=1, root=tmp_path) as n:
                got.append(n)

        waiting = threading.Thread(target=take)
        waiting.start()
        time.sleep(0.3)
        assert not got  # the only core is held
        holder.kill()
        waiting.join(timeout=5)
        assert got == [0]
    finally:
        holder.kill()
        holder.wait()


def test_a_lock_directory_that_is_not_ours_is_refused(tmp_path):
    directory = tmp_path / DIRECTORY_NAME
    directory.mkdir(mode=0o777)
    os.chmod(directory, 0o777)  # another user could take every core
    with pytest.raises(RenderCoresError, match="not this worker's own"):
        with render_core(cores=1, root=tmp_path):
            pass
    os.rmdir(directory)
    (tmp_path / "elsewhere").mkdir(mode=0o700)
    os.symlink(tmp_path / "elsewhere", directory)  # a link to somewhere else
    with pytest.raises(OSError):
        with render_core(cores=1, root=tmp_path):
            pass
