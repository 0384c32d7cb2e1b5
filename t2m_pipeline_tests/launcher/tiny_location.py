"""A code location for the launcher tests: no services, one op that does what its config says."""

import os
import signal
import time

import dagster as dg

IMPORTED_BY_PID = os.getpid()  # the process that imported this module: the warm server, or a fresh worker
PREPARED_BY_PID = 0  # the process that called prepare_run_workers: the warm server, before it forked


PREPARED_RUN = ""  # the job name prepare_run was called with, in this worker
REPORT_TO = ""  # where this worker's run reported: finish_run reports beside it


def prepare_run_workers() -> None:
    global PREPARED_BY_PID
    PREPARED_BY_PID = os.getpid()


def prepare_run(job_name: str, tags: dict) -> None:
    global PREPARED_RUN
    PREPARED_RUN = f"{job_name} {tags.get('tiny/tag', '-')} {os.getpid()}"


def finish_run() -> None:
    if REPORT_TO:
        with open(REPORT_TO + ".finished", "w") as finished:
            finished.write(f"{os.getpid()}\n")


@dg.op(config_schema={"action": dg.Field(str, default_value="report"), "report_to": str})
def act(context: dg.OpExecutionContext) -> None:
    global REPORT_TO
    REPORT_TO = context.op_config["report_to"]
    with open(context.op_config["report_to"] + ".prepared", "w") as prepared:
        prepared.write(f"{PREPARED_BY_PID}\n")
    with open(context.op_config["report_to"] + ".run", "w") as run:
        run.write(PREPARED_RUN)
    with open(context.op_config["report_to"], "w") as report:
        report.write(f"{os.getpid()} {os.getppid()} {IMPORTED_BY_PID}\n")
    action = context.op_config["action"]
    if action == "sleep":
        time.sleep(120)
    elif action == "die":
        os.kill(os.getpid(), signal.SIGKILL)


@dg.job(executor_def=dg.in_process_executor)
def tiny_job():
    act()


defs = dg.Definitions(jobs=[tiny_job])
