"""`make demo`: the project's main job, headless, from a fresh clone.

Sets up the local stack (as `make dev`), starts the Dagster daemon, submits a demo job with `t2m jobs submit`,
waits while the `new_jobs` sensor launches it and the pipeline completes it, prints the job's status, S3 keys and
presigned URLs (`t2m jobs show`, `t2m urls`), then stops every process it started. Exit status 0 only when the
job completed.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import local_stack
from local_stack import BIN, REPO, say

FINAL = ("completed", "failed", "cancelled")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--topic", default="The Pythagorean theorem")
    parser.add_argument("--context", default="A right triangle has two legs and a hypotenuse. The squares on the legs add up to the square on the hypotenuse. A rearrangement of four triangles proves it.")
    parser.add_argument("--scenes", type=int, default=3)
    parser.add_argument("--user", default="user_demo")
    parser.add_argument("--timeout", type=float, default=600)
    parser.add_argument("--s3-port", type=int, default=local_stack.LOCAL_S3_PORT)
    parser.add_argument("--local-dir", type=Path, default=local_stack.DEFAULT_LOCAL_DIR, help="State, logs, stack file.")
    parser.add_argument("--verbose", action="store_true", help="The daemon logs at INFO.")
    args = parser.parse_args()

    started = time.monotonic()
    stack = local_stack.start(s3_port=args.s3_port, local_dir=args.local_dir)
    try:
        stack.env["T2M_RUN_LOG_LEVEL"] = "info" if args.verbose else "warning"
        say("starting the Dagster daemon (sensors, run queue, run monitoring)")
        daemon = stack.spawn(
            "dagster-daemon",
            [str(BIN / "dagster-daemon"), "run", "-w", str(REPO / "workspace.yaml"), "--log-level", "info" if args.verbose else "warning"],
            cwd=stack.dagster_home,
        )
        submitted = stack.t2m(
            "jobs", "submit", "--user", args.user, "--email", "demo@example.com", "--topic", args.topic,
            "--context", args.context, "--scenes", str(args.scenes), "--priority", "high", "--json", capture=True,
        )
        job_id = json.loads(submitted.stdout)["job_id"]
        say(f"submitted job {job_id}; waiting for the sensor to launch it and the pipeline to finish")
        last = None
        deadline = time.monotonic() + args.timeout
        summary = {}
        while time.monotonic() < deadline:
            if daemon.poll() is not None:
                say(f"the daemon exited ({daemon.returncode}); see {stack.logs / 'dagster-daemon.log'}")
                break
            summary = json.loads(stack.t2m("jobs", "show", job_id, "--json", capture=True).stdout)
            now = (summary["status"], summary["current_stage"], summary["progress_percentage"])
            if now != last:
                say(f"  {now[0]:<10} {now[1] or '-':<16} {now[2]:5.1f} %")
                last = now
            if summary["status"] in FINAL:
                break
            time.sleep(1)
        print()
        stack.t2m("jobs", "show", job_id, check=False)
        print()
        if summary.get("status") == "completed":
            say("presigned URLs (owner only):")
            stack.t2m("urls", job_id, "--user", args.user, check=False)
            say(f"demo completed in {time.monotonic() - started:.0f} s")
            return 0
        say(f"the job did not complete (status {summary.get('status')}); logs in {stack.logs}")
        return 1
    finally:
        stack.stop()


if __name__ == "__main__":
    sys.exit(main())
