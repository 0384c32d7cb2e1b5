"""`make dev`: everything local, then `dagster dev` (UI, daemon, the pipeline's sensors running) until Ctrl-C.

A local S3 endpoint whose state persists (unless AWS_ENDPOINT_URL names another or real AWS credentials are
configured), PostgreSQL, migrations, bucket bootstrap, Dagster's storage database; then the UI address and a submit
command that works in any terminal. Dagster logs at WARNING unless `--verbose` (`make dev VERBOSE=1`). Ctrl-C (or
SIGTERM) stops everything this started within 10 s.
"""

from __future__ import annotations

import argparse
import signal
import sys
from pathlib import Path

import local_stack
from local_stack import BIN, REPO, say


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=3000)
    parser.add_argument("--s3-port", type=int, default=local_stack.LOCAL_S3_PORT)
    parser.add_argument("--local-dir", type=Path, default=local_stack.DEFAULT_LOCAL_DIR, help="State, logs, stack file.")
    parser.add_argument("--verbose", action="store_true", help="Dagster's daemon and sensors log at INFO.")
    parser.add_argument("--reset", action="store_true", help="Empty the local S3, the metadata and Dagster databases first.")
    args = parser.parse_args()
    interrupted = []

    def on_signal(*_):
        interrupted.append(True)
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_signal)
    stack = local_stack.start(s3_port=args.s3_port, local_dir=args.local_dir, reset=args.reset)
    level = "info" if args.verbose else "warning"
    stack.env["T2M_RUN_LOG_LEVEL"] = level  # what run workers print (t2m_pipeline/definitions.py)
    try:
        dagster = stack.spawn(
            "dagster-dev",
            [str(BIN / "dagster"), "dev", "-w", str(REPO / "workspace.yaml"), "-h", args.host, "-p", str(args.port),
             "--log-level", level, "--code-server-log-level", level],
            foreground=True,
            cwd=stack.dagster_home,  # not the checkout: its dagster.yaml there would draw a warning
        )
        local_stack.wait_http(f"http://{args.host}:{args.port}/server_info", 180, dagster)
        say(f"Dagster UI: http://{args.host}:{args.port}  (sensors new_jobs, scene_runs, combine_ready_jobs are running)")
        say("submit a job: " + stack.command("jobs submit --user demo --email demo@example.com --topic 'Pythagorean theorem'"))
        say("Ctrl-C stops everything this started")
        return dagster.wait()
    except KeyboardInterrupt:
        return 0
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        stack.stop()
        say("stopped")


if __name__ == "__main__":
    sys.exit(main())
