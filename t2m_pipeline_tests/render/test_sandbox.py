"""The local render sandbox, run as the worker runs it (as root here, as in CI), judged from outside.

Each test runs a small Python program inside `run_sandboxed` (no manim: these are the boundary's mechanics; the
attack suite in faults/test_render_attacks.py drives the real pipeline) and checks, from the host, what it could
do. Where a protection is switched off for a control, the same program gets through.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
import uuid
from pathlib import Path

import dagster as dg
import pytest

from t2m_pipeline.render import sandbox
from t2m_pipeline.render.sandbox import (
    INSIDE_CODE,
    PROTECTIONS,
    RenderLimits,
    SandboxUnavailableError,
    render_slot,
    run_sandboxed,
    sandbox_env,
)

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="the sandbox's strict mode is built for a worker that runs as root")

SMALL = RenderLimits(memory_bytes=384 << 20, processes=48, file_bytes=64 << 20, disk_bytes=96 << 20, open_files=128)


def run_probe(code: str, *, protections=PROTECTIONS, limits=SMALL, timeout_s: float = 30, env_extra=None, work_root=None, keep=None):
    """Run `code` inside; returns (result, the JSON lines it printed merged into one dict, the slot's uid)."""
    lines: list[bytes] = []
    with render_slot(work_root, limits=limits, protections=protections) as slot:
        if keep is not None:
            keep(slot)
        result = run_sandboxed(
            [sys.executable, "-I", "-c", textwrap.dedent(code)],
            slot=slot,
            env=sandbox_env(env_extra or {}, protections, work=slot.inside(sandbox.INSIDE_WORK, protections)),
            files={INSIDE_CODE: b"pass\n"},
            timeout_s=timeout_s,
            on_line=lines.append,
            limits=limits,
            protections=protections,
        )
        uid = slot.uid
    report = {}
    for line in lines:
        try:
            report.update(json.loads(line))
        except ValueError:
            pass
    return result, report, uid


IDENTITY = """
    import ctypes, json, os
    status = dict(line.split(":\\t", 1) for line in open("/proc/self/status").read().splitlines() if ":\\t" in line)
    libc = ctypes.CDLL(None, use_errno=True)
    remount = libc.mount(b"none", b"/", None, 32 | 4096, None)  # MS_REMOUNT | MS_BIND: / read-write
    remount_usr = libc.mount(b"none", b"/usr", None, 32 | 4096, None)
    userns = libc.unshare(0x10000000)
    print(json.dumps({"cap_eff": status["CapEff"].strip(), "cap_bnd": status["CapBnd"].strip(), "nnp": status["NoNewPrivs"].strip(),
                      "remount": remount, "remount_usr": remount_usr, "new_userns": userns, "pid": os.getpid()}), flush=True)
    import time; time.sleep(1.5)
"""


def host_uid_of(uid_seen: list, slot_uid: int) -> None:
    """Sample, from the host, the uids of the processes running as the render's uid."""
    out = subprocess.run(["ps", "-eo", "uid=,cmd="], capture_output=True, text=True, check=True).stdout
    uid_seen.extend(int(line.split()[0]) for line in out.splitlines() if line.strip() and int(line.split()[0]) == slot_uid)


def test_inside_no_capabilities_no_new_privs_and_remounts_refused_as_root():
    result, report, uid = run_probe(IDENTITY)
    assert result.returncode == 0, result.stderr_tail
    assert report["cap_eff"] == "0000000000000000" and report["cap_bnd"] == "0000000000000000"
    assert report["nnp"] == "1"
    assert report["remount"] == -1 and report["remount_usr"] == -1  # refused: the view stays read-only
    assert report["new_userns"] == -1  # no nested user namespace to gain capabilities in
    assert sandbox.UID_BASE <= uid < sandbox.UID_BASE + sandbox.UID_SPAN


def test_control_without_the_unprivileged_uid_root_keeps_its_capabilities_and_remounts():
    result, report, _ = run_probe(IDENTITY, protections=PROTECTIONS - {"unprivileged"})
    assert result.returncode == 0, result.stderr_tail
    assert report["cap_eff"] != "0000000000000000"
    assert report["remount"] == 0  # what the issue found: root in the old sandbox remounted / read-write


def test_the_render_runs_as_its_unprivileged_uid_seen_from_the_host():
    seen: list[int] = []
    holder = {}

    def watch(slot):
        holder["uid"] = slot.uid

    code = "import time; print('{}', flush=True); time.sleep(2)"
    import threading

    def sample():
        time.sleep(1.0)
        if "uid" in holder:
            host_uid_of(seen, holder["uid"])

    t = threading.Thread(target=sample)
    t.start()
    run_probe(code, keep=watch)
    t.join()
    assert seen, "no process of the render's uid was visible from the host while it ran"
    assert all(u != 0 for u in seen)


VIEW = """
    import glob, json, os
    def readable(path):
        try:
            with open(path, "rb") as fh:
                return fh.read(200).decode("utf-8", "replace")
        except OSError as exc:
            return type(exc).__name__
    print(json.dumps({
        "root": sorted(os.listdir("/")),
        "root_home": sorted(os.listdir("/root")) if os.path.isdir("/root") else None,
        "planted": readable(PLANTED),
        "other": readable(OTHER),
        "usr_local": sorted(os.listdir("/usr/local")),
        "proc": sorted(p for p in os.listdir("/proc") if p.isdigit()),
        "proc1": readable("/proc/1/cmdline")[:40],
        "env": dict(os.environ),
        "code": readable("/t2m-code/scene.py"),
    }), flush=True)
"""


@pytest.fixture
def host_dir():
    """A directory outside /tmp (the sandbox mounts its own /tmp over the host's), like DAGSTER_HOME or a checkout."""
    path = Path(f"/var/tmp/t2m-sandbox-test-{uuid.uuid4().hex}")
    path.mkdir(mode=0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def test_the_view_is_minimal_and_the_environment_an_allowlist(host_dir, monkeypatch):
    tmp_path = host_dir
    marker = uuid.uuid4().hex
    planted = tmp_path / "dagster_home" / "dagster.yaml"
    planted.parent.mkdir()
    planted.write_text(f"secret: {marker}\n")
    os.chmod(planted.parent, 0o755)
    os.chmod(planted, 0o644)  # world-readable: only the view keeps it out
    other = tmp_path / "t2m-render-other" / "work" / "scene.py"
    other.parent.mkdir(parents=True)
    other.write_text(f"# {marker}\n")
    monkeypatch.setenv("STRIPE_SK", f"sk_live_{marker}")
    code = VIEW.replace("PLANTED", repr(str(planted))).replace("OTHER", repr(str(other)))
    result, report, _ = run_probe(code, env_extra={"STRIPE_SK": os.environ["STRIPE_SK"]})
    assert result.returncode == 0, result.stderr_tail
    assert marker not in json.dumps(report)
    assert report["planted"] == "FileNotFoundError" and report["other"] == "FileNotFoundError"
    # the interpreter's prefix and the venv are bound where they live (the checkout's top folder: /work here, /check in CI)
    prefixes = {Path(p).resolve().parts[1] for p in (sys.base_prefix, sys.prefix)}
    assert set(report["root"]) <= {"usr", "bin", "sbin", "lib", "lib32", "lib64", "libx32", "etc", "var", "root",
                                   "proc", "dev", "tmp", "t2m-render", "t2m-code", "t2m-entry"} | prefixes
    assert report["root_home"] == [".pyenv"] or report["root_home"] in ([], None)  # the interpreter's prefix, nothing else
    assert report["usr_local"] == []
    assert report["proc"] == ["1", "2"] or set(report["proc"]) <= {"1", "2", "3"}  # bubblewrap's init and us
    assert "bwrap" in report["proc1"]
    assert set(report["env"]) <= set(sandbox.ENV_ALLOWLIST) | set(sandbox.work_env("")) | {"PWD"}
    assert report["code"] == "pass\n"


def test_control_with_the_whole_host_visible_the_planted_file_is_read(host_dir):
    tmp_path = host_dir
    marker = uuid.uuid4().hex
    planted = tmp_path / "dagster_home" / "dagster.yaml"
    planted.parent.mkdir()
    planted.write_text(f"secret: {marker}\n")
    os.chmod(tmp_path, 0o755)
    os.chmod(planted.parent, 0o755)
    os.chmod(planted, 0o644)
    code = VIEW.replace("PLANTED", repr(str(planted))).replace("OTHER", repr("/nonexistent"))
    result, report, _ = run_probe(code, protections=PROTECTIONS - {"filesystem"})
    assert result.returncode == 0, result.stderr_tail
    assert marker in report["planted"]


def test_control_without_the_allowlist_the_worker_environment_is_inherited(monkeypatch):
    marker = uuid.uuid4().hex
    monkeypatch.setenv("APP_CONFIG_DSN", f"postgresql://app:{marker}@db/app")
    code = VIEW.replace("PLANTED", repr("/nonexistent")).replace("OTHER", repr("/nonexistent"))
    result, report, _ = run_probe(code, protections=PROTECTIONS - {"environment"})
    assert marker in report["env"].get("APP_CONFIG_DSN", "")


NETWORK = """
    import json, socket
    out = {}
    try:
        socket.create_connection(("127.0.0.1", PORT), timeout=2).close()
        out["tcp"] = "connected"
    except OSError as exc:
        out["tcp"] = type(exc).__name__
    try:
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.sendto(b"MARK", ("127.0.0.1", UDP))
        s.sendto(b"MARK", ("192.0.2.1", 9))
        out["udp"] = "sent"
    except OSError as exc:
        out["udp"] = type(exc).__name__
    print(json.dumps(out), flush=True)
"""


@pytest.mark.parametrize("network", [True, False], ids=["sandboxed", "control-shared-network"])
def test_no_network_reaches_the_host_loopback(network):
    marker = uuid.uuid4().hex.encode()
    tcp = socket.socket()
    tcp.bind(("127.0.0.1", 0))
    tcp.listen()
    tcp.settimeout(0.5)
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.bind(("127.0.0.1", 0))
    udp.settimeout(0.5)
    code = NETWORK.replace("PORT", str(tcp.getsockname()[1])).replace("UDP", str(udp.getsockname()[1])).replace("MARK", marker.decode())
    protections = PROTECTIONS if network else PROTECTIONS - {"network"}
    result, report, _ = run_probe(code, protections=protections)
    try:
        connection = tcp.accept()[0]
        connection.close()
        accepted = True
    except TimeoutError:
        accepted = False
    try:
        received = udp.recvfrom(100)[0]
    except TimeoutError:
        received = b""
    tcp.close()
    udp.close()
    if network:
        assert report["tcp"] != "connected" and not accepted
        assert received == b"" and report["udp"] != "sent"
    else:
        assert accepted and received == marker


BOMBS = """
    import json, os, time
    kind = KIND
    out = {"kind": kind}
    if kind == "fork":
        n = 0
        try:
            for _ in range(300):          # capped: even unconfined this stops at 300 sleeping children
                if os.fork() == 0:
                    time.sleep(20); os._exit(0)
                n += 1
        except OSError as exc:
            out["error"] = exc.errno
        out["forked"] = n
    elif kind == "memory":
        chunks = []
        try:
            for _ in range(24):            # capped at 1.5 GiB
                chunks.append(bytearray(64 << 20))
        except MemoryError:
            out["error"] = "MemoryError"
        out["mib"] = 64 * len(chunks)
    elif kind == "disk":
        written = 0
        try:
            for i in range(64):            # capped at 640 MiB in 10 MiB files (each under the file size limit)
                with open(f"/t2m-render/fill-{i}", "wb") as fh:
                    fh.write(b"x" * (10 << 20))
                written += 10
        except OSError as exc:
            out["error"] = exc.errno
        out["mib"] = written
    elif kind == "bigfile":
        try:
            with open("/t2m-render/big", "wb") as fh:
                for _ in range(200):        # capped at 200 MiB in one file
                    fh.write(b"x" * (1 << 20))
        except OSError as exc:
            out["error"] = exc.errno
        out["mib"] = os.path.getsize("/t2m-render/big") >> 20
    elif kind == "files":
        n, held = 0, []
        try:
            for _ in range(1000):
                held.append(open("/dev/null"))
                n += 1
        except OSError as exc:
            out["error"] = exc.errno
        out["open"] = n
    print(json.dumps(out), flush=True)
"""


@pytest.mark.slow
@pytest.mark.parametrize(
    "kind,protections,check",
    [
        ("fork", PROTECTIONS, lambda r, rep: rep["forked"] < SMALL.processes and "error" in rep),
        ("fork", PROTECTIONS - {"limits"}, lambda r, rep: rep["forked"] == 300),
        ("memory", PROTECTIONS, lambda r, rep: r.returncode != 0 and r.usage.oom_kills >= 1
            and r.usage.memory_peak_bytes <= SMALL.memory_bytes),
        ("memory", PROTECTIONS - {"limits"}, lambda r, rep: rep["mib"] == 1536),
        ("disk", PROTECTIONS, lambda r, rep: rep["mib"] * (1 << 20) <= SMALL.disk_bytes and rep.get("error") == 28
            and r.usage.disk_used_bytes <= SMALL.disk_bytes),
        ("disk", PROTECTIONS - {"disk"}, lambda r, rep: rep["mib"] == 640),
        ("bigfile", PROTECTIONS, lambda r, rep: rep["mib"] <= SMALL.file_bytes >> 20 and rep.get("error") == 27),
        ("bigfile", PROTECTIONS - {"limits", "disk"}, lambda r, rep: rep["mib"] == 200),
        ("files", PROTECTIONS, lambda r, rep: rep["open"] < SMALL.open_files and rep.get("error") == 24),
        ("files", PROTECTIONS - {"limits"}, lambda r, rep: rep["open"] == 1000),
    ],
    ids=["fork", "fork-control", "memory", "memory-control", "disk", "disk-control", "file-size", "file-size-control",
         "open-files", "open-files-control"],
)
def test_bombs_stop_at_their_limits(kind, protections, check):
    result, report, uid = run_probe(BOMBS.replace("KIND", repr(kind)), protections=protections, timeout_s=60)
    assert check(result, report), (report, result.usage, result.stderr_tail[-500:])
    assert not any_process_of(uid)


def any_process_of(uid: int, wait_s: float = 5.0) -> list[str]:
    """Processes of `uid` still there after up to `wait_s` (bubblewrap's init may linger a moment as a zombie until
    the machine's init reaps it: a zombie runs nothing, but we wait for it to go too)."""
    deadline = time.monotonic() + wait_s
    while True:
        out = subprocess.run(["ps", "-eo", "uid=,pid=,stat=,cmd="], capture_output=True, text=True, check=True).stdout
        left = [line for line in out.splitlines() if line.split() and line.split()[0] == str(uid)]
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.1)


DETACHED = """
    import json, subprocess, sys, time
    sleeper = "import time; time.sleep(40)"
    subprocess.Popen(["setsid", sys.executable, "-c", sleeper, "MARK-setsid"], start_new_session=True)
    double_fork = "import os, sys, time\\nif os.fork(): os._exit(0)\\nos.setsid()\\ntime.sleep(40)"
    subprocess.Popen([sys.executable, "-c", double_fork, "MARK-double-fork"]).wait()
    print(json.dumps({"spawned": True}), flush=True)
    time.sleep(60)
"""


def cgroup_dirs(name: str) -> dict[str, str]:
    own, mounts = sandbox._proc_cgroups(), sandbox._cgroup_mounts()
    return {c: f"{mounts[c]}{own[c]}/{name}/cgroup.procs" for c in ("memory", "pids", "freezer") if c in mounts and c in own
            and os.path.isdir(f"{mounts[c]}{own[c]}/{name}")}


def survivors(marker: str) -> list[int]:
    """Live processes whose command line carries `marker` (read from /proc: ps cuts long lines)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if marker.encode() in (entry / "cmdline").read_bytes():
                    found.append(int(entry.name))
            except OSError:
                pass
    return found


@pytest.mark.slow
@pytest.mark.parametrize("tree", [True, False], ids=["sandboxed", "control-no-pid-namespace"])
def test_a_detached_grandchild_dies_with_the_render_on_timeout(tree):
    marker = f"t2m-detached-{uuid.uuid4().hex}"
    protections = PROTECTIONS if tree else PROTECTIONS - {"process_tree"}
    slots = []
    started = time.monotonic()
    result, report, uid = run_probe(DETACHED.replace("MARK", marker), protections=protections, timeout_s=4, keep=slots.append)
    assert result.timed_out and time.monotonic() - started < 20
    time.sleep(0.5)
    left = survivors(marker)
    try:
        if tree:
            assert left == [] and not any_process_of(uid)
        else:
            assert left, "the control expected the detached grandchild to outlive the render"
    finally:
        for pid in left:  # ours: started by the test's own render
            try:
                os.kill(pid, 9)
            except ProcessLookupError:
                pass
        if left:  # the control's cgroup could not be removed while its survivor lived
            time.sleep(0.5)
            sandbox.RenderCgroup("cgroup-v1", {c: Path(p).parent for c, p in cgroup_dirs(slots[0].root.name).items()}).remove()


def test_writes_stay_in_the_render_directory_and_vanish(host_dir):
    tmp_path = host_dir
    marker = uuid.uuid4().hex
    targets = [str(tmp_path / f"outside-{marker}"), f"/tmp/t2m-escape-{marker}", f"/root/escape-{marker}"]
    code = f"""
        import json, os
        out = {{}}
        for t in {targets!r} + ["/t2m-render/inside-{marker}", "/escape-{marker}", "/usr/escape-{marker}"]:
            try:
                open(t, "w").write("x"); out[t] = "written"
            except OSError as exc:
                out[t] = type(exc).__name__
        print(json.dumps(out), flush=True)
    """
    work_root = tmp_path / "renders"
    work_root.mkdir()
    result, report, _ = run_probe(code, work_root=work_root)
    assert report[f"/t2m-render/inside-{marker}"] == "written"
    assert report[f"/escape-{marker}"] != "written" and report[f"/usr/escape-{marker}"] != "written"
    for t in targets:
        assert not os.path.exists(t)
    assert list(work_root.iterdir()) == []  # the slot (and its tmpfs) is gone


def test_a_work_root_the_render_uid_cannot_reach_fails_closed(tmp_path):
    private = tmp_path / "private"
    private.mkdir(mode=0o700)
    with pytest.raises(SandboxUnavailableError, match="not reachable by the render's uid"):
        run_probe("print('never')", work_root=private)


def test_a_missing_bubblewrap_fails_closed_with_one_line(monkeypatch):
    monkeypatch.setattr(sandbox.shutil, "which", lambda name: None)
    with pytest.raises(SandboxUnavailableError) as info:
        run_probe("print('never')")
    assert "\n" not in str(info.value) and "bubblewrap" in str(info.value)


def test_a_cgroup_less_machine_falls_back_to_rlimits_that_still_hold(monkeypatch):
    monkeypatch.setattr(sandbox, "create_cgroup", lambda name, limits: None)
    result, report, _ = run_probe(BOMBS.replace("KIND", repr("fork")))
    assert result.usage.limits_mode == "rlimit"
    assert report["forked"] < SMALL.processes and "error" in report
    result, report, _ = run_probe(BOMBS.replace("KIND", repr("memory")), limits=RenderLimits(**{**SMALL.__dict__, "address_space_bytes": 768 << 20}))
    assert report["mib"] < 768 and report.get("error") == "MemoryError"


def test_status_reports_what_this_machine_gives():
    status = sandbox.sandbox_status()
    assert status.available and status.privileged
    assert status.limits_mode in ("cgroup-v1", "cgroup-v2", "rlimit")
    mode, _ = sandbox.cgroup_support()
    assert status.limits_mode == mode
    assert Path(status.bwrap).name == "bwrap"


TMP_INTERPRETER = """
    import json, os
    print(json.dumps({"seen": open(MARKER).read() if os.path.exists(MARKER) else None}), flush=True)
"""


@pytest.fixture
def interpreter_dir_under_tmp(monkeypatch):
    """A directory of the interpreter's (what a checkout's .venv in /tmp is) under the host's /tmp."""
    path = Path(tempfile.mkdtemp(prefix="t2m-venv-", dir="/tmp"))
    os.chmod(path, 0o755)
    marker = path / "marker"
    marker.write_text("interpreter files\n")
    os.chmod(marker, 0o644)
    real = sandbox.python_paths
    monkeypatch.setattr(sandbox, "python_paths", lambda: sorted({*real(), str(path)}, key=len))
    yield marker
    shutil.rmtree(path, ignore_errors=True)


def test_an_interpreter_under_the_hosts_tmp_is_seen_over_the_fresh_tmp(interpreter_dir_under_tmp):
    code = TMP_INTERPRETER.replace("MARKER", repr(str(interpreter_dir_under_tmp)))
    result, report, _ = run_probe(code)
    assert result.returncode == 0, result.stderr_tail
    assert report["seen"] == "interpreter files\n"


def test_control_a_fresh_tmp_mounted_after_the_interpreter_hides_it(interpreter_dir_under_tmp, monkeypatch):
    real = sandbox.bwrap_args
    monkeypatch.setattr(sandbox, "bwrap_args", lambda *a, **k: [*real(*a, **k), "--tmpfs", "/tmp"])  # the old order
    code = TMP_INTERPRETER.replace("MARKER", repr(str(interpreter_dir_under_tmp)))
    result, report, _ = run_probe(code)
    assert report.get("seen") is None
    # in a checkout under /tmp the old order hides the interpreter itself: the render cannot even start
    assert result.returncode == 0 or "No such file" in result.stderr_tail, result.stderr_tail


def test_a_stopped_render_ends_at_once_as_on_a_timeout():
    """A cancelled run sets the scenes step's stop: a render in the sandbox then ends like one that timed out,
    instead of running to its 60 s timeout."""
    import threading

    from t2m_pipeline.render.backends import LocalSandboxBackend, RenderRequest

    code = "import time\nfrom manim import Scene\nclass Scene001(Scene):\n    def construct(self):\n        time.sleep(120)\n"
    seen = {}

    @dg.asset
    def render_then_stop(context) -> dg.MaterializeResult:
        stop = threading.Event()
        threading.Timer(2.0, stop.set).start()
        started = time.monotonic()
        request = RenderRequest(code, "Scene001", "low", 60.0, label="u/j/001", stop=stop)
        with LocalSandboxBackend().render(context, request) as output:
            seen.update(seconds=time.monotonic() - started, failure=output.failure, timed_out=output.timed_out)
        return dg.MaterializeResult()  # the Pipes session asks for a result

    assert dg.materialize([render_then_stop]).success
    assert seen["failure"] is not None and seen["timed_out"], seen
    assert seen["seconds"] < 15, f"the render ran {seen['seconds']:.1f} s after its stop"


KILLED_HOLDING_A_SLOT = textwrap.dedent("""
    import os, signal, sys
    from t2m_pipeline.render.sandbox import render_slot
    held = render_slot(sys.argv[1], lanes=2)  # referenced: a collected generator would run its finally
    slot = held.__enter__()
    print(slot.root, flush=True)
    if sys.argv[2] == "die":
        os.kill(os.getpid(), signal.SIGKILL)  # no finally runs: a worker killed mid-render
    sys.stdin.read()  # alive until the test closes stdin
""")


def slot_mounts(root) -> list[str]:
    return [m for m in sandbox._mount_points() if m.startswith(f"{root}/")]


@pytest.mark.parametrize("sweep", [True, False], ids=["swept", "control-no-sweep"])
def test_a_slot_whose_process_was_killed_is_unmounted_by_the_next_slot(monkeypatch, sweep):
    """A render's disks are tmpfs mounts of the host's: a worker killed mid-render (no `finally`) would leave them,
    and their memory, until reboot. The next slot made on the machine removes them; a live process's slot is left
    alone. The control, without the sweep, keeps the dead process's disks."""
    monkeypatch.setattr(sandbox, "SWEEP_ORPHANS", sweep)
    tmp_path = Path(tempfile.mkdtemp(prefix="t2m-sweep-", dir="/tmp"))  # every parent reachable by a render's uid
    os.chmod(tmp_path, 0o755)
    run = lambda how: subprocess.Popen([sys.executable, "-c", KILLED_HOLDING_A_SLOT, str(tmp_path), how],  # noqa: E731
                                       stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    dead, alive = run("die"), run("live")
    dead_root, alive_root = dead.stdout.readline().strip(), alive.stdout.readline().strip()
    dead.wait(30)
    assert dead_root and alive_root and dead.returncode == -9
    try:
        assert len(slot_mounts(dead_root)) == 3  # its work disk and two lanes', left behind
        with render_slot(tmp_path) as slot:
            assert slot.tmpfs
        if sweep:
            assert slot_mounts(dead_root) == [] and not Path(dead_root).exists()
        else:
            assert len(slot_mounts(dead_root)) == 3
        assert len(slot_mounts(alive_root)) == 3 and Path(alive_root).exists()  # alive: its own
    finally:
        alive.stdin.close()
        alive.kill()
        alive.wait(30)
        monkeypatch.setattr(sandbox, "SWEEP_ORPHANS", True)
        sandbox.sweep_orphaned_slots(tmp_path)  # both gone now
        assert slot_mounts(dead_root) == slot_mounts(alive_root) == []
        shutil.rmtree(tmp_path, ignore_errors=True)
