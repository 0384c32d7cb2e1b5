"""`t2m`: a thin command-line shell over the library.

Fast by construction: the root knows its commands only by name and one line of help, and imports a command's
module when that command runs (`t2m --help` imports typer and nothing of the platform); the process leaves without
the interpreter's teardown once its work is done (`entry`). Every user error, usage
errors included, prints one line on stderr (no stack trace) and exits 2. When the local stack (`make dev`) is up,
its stack file supplies what the environment does not set (`t2m_pipeline.config.apply_local_stack_file`).
"""

from __future__ import annotations

import importlib
import os
import sys

from typer import Typer
from typer import _click as click  # the click that typer bundles (0.29): what its parser raises
from typer.core import TyperCommand, TyperGroup
from typer.exceptions import Abort

HELP = "T2M data platform: metadata database, S3 buckets, jobs, legacy migration and audits."

# name -> (module, attribute, one line of help); the attribute is a Typer app or a command function.
COMMANDS: dict[str, tuple[str, str, str]] = {
    "db": ("t2m_pipeline.cli.db", "app", "Metadata database: create, migrate, inspect."),
    "infra": ("t2m_pipeline.cli.infra", "app", "Buckets and their declared settings."),
    "jobs": ("t2m_pipeline.cli.jobs", "app", "Submit and inspect jobs."),
    "migrate": ("t2m_pipeline.cli.migrate", "app", "Migrate the legacy platform's data."),
    "doctor": ("t2m_pipeline.cli.doctor", "doctor", "Check the database, each bucket and Redis when configured."),
    "urls": ("t2m_pipeline.cli.jobs", "urls", "Presigned GET URLs for a job's objects: for the job's owner only."),
    "audit": ("t2m_pipeline.cli.audit", "audit", "Audit buckets, objects vs file_metadata, temp, stuck jobs, retention."),
}

# Errors a user can cause and read: (module, class). Looked up only in modules already imported: a command that
# never imported a module cannot have raised its error.
USER_ERRORS = (
    ("t2m_pipeline.config", "ConfigError"),
    ("t2m_pipeline.storage.errors", "StorageError"),
    ("t2m_pipeline.storage.errors", "NotOwnerError"),
    ("t2m_pipeline.db.job_state", "IllegalTransitionError"),
    ("t2m_pipeline.db.job_state", "JobNotFoundError"),
    ("t2m_pipeline.db.engine", "DatabaseUnavailableError"),
    ("t2m_pipeline.storage.layout", "UnsafeKeyError"),
    ("t2m_pipeline.partition_keys", "PartitionKeyError"),
)


def load_command(name: str) -> click.Command:
    """The real command behind `name`: its module imported now."""
    from typer.main import get_command, get_group

    module, attribute, _ = COMMANDS[name]
    target = getattr(importlib.import_module(module), attribute)
    if isinstance(target, Typer):  # a group, even of one command (`t2m infra bootstrap`)
        command = get_group(target)
    else:
        single = Typer(add_completion=False, pretty_exceptions_enable=False)
        single.command(name)(target)
        command = get_command(single)
    command.name = name
    return command


class LazyCommand(TyperCommand):
    """A command known by name and help until it is run; then its module is imported and it takes over."""

    def __init__(self, name: str, help: str):
        super().__init__(name, help=help, short_help=help, add_help_option=False)

    def make_context(self, info_name, args, parent=None, **extra):
        return load_command(self.name).make_context(info_name, args, parent=parent, **extra)


class LazyGroup(TyperGroup):
    def get_command(self, ctx, cmd_name):
        return self.commands.get(cmd_name)


app = LazyGroup(
    name="t2m",
    help=HELP,
    commands=[LazyCommand(name, help) for name, (_, _, help) in COMMANDS.items()],
    no_args_is_help=True,
    rich_markup_mode=None,  # plain click help: no rich import for `--help`
)


def _user_error(exc: BaseException) -> bool:
    for module_name, class_name in USER_ERRORS:
        module = sys.modules.get(module_name)
        if module is not None and isinstance(exc, getattr(module, class_name)):
            return True
    return False


def _one_line(message: str) -> str:
    return " ".join(str(message).split())


def _usage_hint(exc: BaseException) -> str:
    ctx = getattr(exc, "ctx", None)
    return f" (see `{ctx.command_path} --help`)" if ctx is not None else ""


def run(argv: list[str] | None = None) -> int:
    """Run `t2m` with `argv`; returns the exit status. User errors are one line on stderr."""
    real_click = sys.modules.get("click")  # a command module may raise the standalone click's exceptions too
    try:
        from t2m_pipeline.config import apply_local_stack_file

        apply_local_stack_file()
        code = app.main(args=argv, prog_name="t2m", standalone_mode=False)
    except click.exceptions.NoArgsIsHelpError as exc:
        exc.show()
        return 2
    except click.exceptions.UsageError as exc:
        print(f"t2m: error: {_one_line(exc.format_message())}{_usage_hint(exc)}", file=sys.stderr)
        return 2
    except click.ClickException as exc:
        print(f"t2m: error: {_one_line(exc.format_message())}", file=sys.stderr)
        return exc.exit_code if exc.exit_code not in (0, 1) else 2
    except Abort:
        print("t2m: aborted", file=sys.stderr)
        return 130
    except KeyboardInterrupt:
        print("t2m: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:
        real_click = real_click or sys.modules.get("click")
        if real_click is not None and isinstance(exc, real_click.ClickException):
            print(f"t2m: error: {_one_line(exc.format_message())}", file=sys.stderr)
            return exc.exit_code if exc.exit_code not in (0, 1) else 2
        if _user_error(exc):
            print(f"t2m: error: {_one_line(exc)}", file=sys.stderr)
            return 2
        sqlalchemy_exc = sys.modules.get("sqlalchemy.exc")
        if sqlalchemy_exc is not None and isinstance(exc, sqlalchemy_exc.OperationalError):
            print(f"t2m: error: database unreachable: {str(exc.orig or exc).splitlines()[0]}", file=sys.stderr)
            return 2
        raise
    return code if isinstance(code, int) else 0


def main(argv: list[str] | None = None) -> None:
    sys.exit(run(argv))


def entry() -> None:
    """The `t2m` process (`t2m`, `python -m t2m_pipeline.cli`): `run`, then out without the interpreter's teardown
    once the work is done and its output written. Freeing every module and object took 0.1 to 0.4 s after the last
    line was printed (more than the rest of a files migration's tail after its last upload); nothing in it is ours
    to wait for: the database sees its idle connections close. When anything could still need the teardown (a thread
    or child process still running, output that cannot be flushed) the exit is the ordinary one."""
    code = run()
    if _nothing_left_to_finish():
        os._exit(code)
    sys.exit(code)


def _nothing_left_to_finish() -> bool:
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except (OSError, ValueError):  # a closed pipe: the ordinary exit reports it as Python does
        return False
    if (logging := sys.modules.get("logging")) is not None:  # (imported here only when something used it)
        logging.shutdown()  # every handler flushed and closed
    if (threading := sys.modules.get("threading")) is not None:
        main = threading.main_thread()
        if any(t.is_alive() and not t.daemon for t in threading.enumerate() if t is not main):
            return False
    multiprocessing = sys.modules.get("multiprocessing")
    return multiprocessing is None or not multiprocessing.active_children()
