"""`make dev`: everything local, then `dagster dev` (UI, daemon, the pipeline's sensors running) until Ctrl-C.

A local S3 endpoint (unless AWS_ENDPOINT_URL names another or real AWS credentials are configured), PostgreSQL,
migrations, bucket bootstrap, Dagster's storage database; then the UI address. Ctrl-C stops what this started.
"""

from __future__ import annotations

import argparse
import signal
import sys

import local_stack
from local_stack import BIN, REPO, say


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=3000)
    args = parser.parse_args()
    stack = local_stack.start()
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    try:
        dagster = stack.spawn(
            "dagster-dev",
            [str(BIN / "dagster"), "dev", "-w", str(REPO / "workspace.yaml"), "-h", args.host, "-p", str(args.port)],
            foreground=True,
        )
        local_stack.wait_http(f"http://{args.host}:{args.port}/server_info", 180, dagster)
        say(f"Dagster UI: http://{args.host}:{args.port}  (sensors new_jobs, scene_runs, combine_ready_jobs are running)")
        say("submit a job: .venv/bin/t2m jobs submit --user demo --email demo@example.com --topic 'Pythagorean theorem'")
        say("Ctrl-C stops everything this started")
        return dagster.wait()
    except KeyboardInterrupt:
        return 0
    finally:
        stack.stop()


if __name__ == "__main__":
    sys.exit(main())
