"""`t2m`: a thin command-line shell over the library. User errors print one line (no stack trace) and exit 2."""

from __future__ import annotations

import sys

import click
import typer
from sqlalchemy.exc import OperationalError

from t2m_pipeline.cli import audit, db, doctor, infra, jobs, migrate
from t2m_pipeline.config import ConfigError
from t2m_pipeline.db.engine import DatabaseUnavailableError
from t2m_pipeline.db.job_state import IllegalTransitionError, JobNotFoundError
from t2m_pipeline.partition_keys import PartitionKeyError
from t2m_pipeline.storage.errors import NotOwnerError, StorageError
from t2m_pipeline.storage.layout import UnsafeKeyError

app = typer.Typer(
    name="t2m",
    help="T2M data platform: metadata database, S3 buckets, jobs, legacy migration and audits.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
app.add_typer(db.app, name="db")
app.add_typer(infra.app, name="infra")
app.add_typer(jobs.app, name="jobs")
app.add_typer(migrate.app, name="migrate")
app.command("doctor")(doctor.doctor)
app.command("urls")(jobs.urls)
app.command("audit")(audit.audit)

USER_ERRORS = (
    ConfigError,
    StorageError,
    NotOwnerError,
    IllegalTransitionError,
    JobNotFoundError,
    DatabaseUnavailableError,
    UnsafeKeyError,
    PartitionKeyError,
)


def main(argv: list[str] | None = None) -> None:
    try:
        code = app(args=argv, prog_name="t2m", standalone_mode=False)
    except click.exceptions.Exit as exc:
        code = exc.exit_code
    except click.ClickException as exc:
        exc.show()
        code = exc.exit_code
    except click.exceptions.Abort:
        print("t2m: aborted", file=sys.stderr)
        code = 130
    except USER_ERRORS as exc:
        print(f"t2m: error: {exc}", file=sys.stderr)
        code = 2
    except OperationalError as exc:
        print(f"t2m: error: database unreachable: {str(exc.orig or exc).splitlines()[0]}", file=sys.stderr)
        code = 2
    sys.exit(code if isinstance(code, int) else 0)
