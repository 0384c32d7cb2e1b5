"""Does the render boundary hold here? What `t2m doctor` runs: a small program inside the sandbox tries what
generated code must not be able to do, and the result is judged from outside.

The probe tries to read a file planted outside (world-readable, so only the sandbox's view can keep it out), to
write next to it, to remount / read-write, to connect to a listener the probe opened on loopback, and reports its
capabilities. It holds when the planted secret never comes back, nothing is written, the listener is never
reached, the remount is refused and (as root) no capability is left.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import socket
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from t2m_pipeline.render.sandbox import (
    INSIDE_WORK,
    PROTECTIONS,
    RenderLimits,
    SandboxUnavailableError,
    is_root,
    render_slot,
    run_sandboxed,
    sandbox_env,
    sandbox_status,
)

PROBE = """
import ctypes, json, os, socket
out = {}
try:
    out["read"] = open(PLANTED).read()
except OSError as exc:
    out["read"] = type(exc).__name__
try:
    open(os.path.join(os.path.dirname(PLANTED), "probe-write"), "w").write("x")
    out["write"] = "written"
except OSError as exc:
    out["write"] = type(exc).__name__
out["remount"] = ctypes.CDLL(None, use_errno=True).mount(b"none", b"/", None, 32 | 4096, None)
try:
    socket.create_connection(("127.0.0.1", PORT), timeout=2).close()
    out["network"] = "connected"
except OSError as exc:
    out["network"] = type(exc).__name__
out["cap_eff"] = [l.split()[1] for l in open("/proc/self/status") if l.startswith("CapEff")][0]
out["uid"] = os.getuid()
print(json.dumps(out), flush=True)
"""


@dataclass(frozen=True)
class ProbeResult:
    ok: bool
    detail: str


def _planted_dir() -> Path:
    for base in ("/var/tmp", str(Path.home())):
        if os.path.isdir(base) and os.access(base, os.W_OK):
            return Path(tempfile.mkdtemp(prefix="t2m-probe-", dir=base))
    raise SandboxUnavailableError("no place outside /tmp to plant the probe's file")


def probe_sandbox(protections: frozenset[str] = PROTECTIONS) -> ProbeResult:
    """Run the probe in the local sandbox; `protections` exists for the tests' controls only."""
    status = sandbox_status()
    if not status.available:
        return ProbeResult(False, f"the render sandbox is unavailable: {status.detail}")
    token = secrets.token_hex(16)
    planted_dir = _planted_dir()
    listener = socket.socket()
    try:
        os.chmod(planted_dir, 0o755)
        planted = planted_dir / "secret"
        planted.write_text(token)
        os.chmod(planted, 0o644)
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        listener.settimeout(0.5)
        code = PROBE.replace("PLANTED", repr(str(planted))).replace("PORT", str(listener.getsockname()[1]))
        lines: list[bytes] = []
        with render_slot(limits=RenderLimits(), protections=protections) as slot:
            result = run_sandboxed(
                [sys.executable, "-I", "-c", code], slot=slot, env=sandbox_env({}, protections, work=slot.inside(INSIDE_WORK, protections)),
                files={}, timeout_s=30, on_line=lines.append, protections=protections,
            )
            uid = slot.uid
        try:
            listener.accept()[0].close()
            reached = True
        except OSError:
            reached = False
        written = (planted_dir / "probe-write").exists()
    except SandboxUnavailableError as exc:
        return ProbeResult(False, str(exc))
    finally:
        listener.close()
        shutil.rmtree(planted_dir, ignore_errors=True)
    try:
        report = json.loads(b"".join(lines).decode().strip().splitlines()[-1])
    except (ValueError, IndexError):
        return ProbeResult(False, f"the probe did not run in the sandbox (exit {result.returncode}): {result.stderr_tail.strip()[-200:]}")
    escapes = []
    if token in json.dumps(report):
        escapes.append("read a file outside")
    if written:
        escapes.append("wrote outside")
    if reached or report.get("network") == "connected":
        escapes.append("reached the host's loopback")
    if report.get("remount") == 0:
        escapes.append("remounted / read-write")
    if is_root() and report.get("cap_eff") != "0000000000000000":
        escapes.append(f"kept capabilities {report.get('cap_eff')}")
    if escapes:
        return ProbeResult(False, "the render sandbox does NOT hold: the probe " + ", ".join(escapes))
    who = f"uid {uid}" if is_root() else "your own uid"
    return ProbeResult(
        True,
        f"bubblewrap, {who}, limits {status.limits_mode}, disk {status.disk}: the probe was refused reading and "
        "writing outside, remounting /, and reaching loopback",
    )
