"""`t2m db`: create and migrate the metadata database."""

from __future__ import annotations

import typer

from t2m_pipeline.cli.output import emit_json
from t2m_pipeline.config import load_settings
from t2m_pipeline.db import migrate
from t2m_pipeline.db.engine import safe_url

app = typer.Typer(help="Metadata database: create, migrate, inspect.", no_args_is_help=True)


@app.command()
def upgrade(
    revision: str = typer.Argument("head", help="Target revision."),
    json_output: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Create the database when missing, then apply migrations up to REVISION."""
    url = load_settings().database_url
    _print_revision(url, migrate.upgrade(url, revision), json_output)


@app.command()
def downgrade(
    revision: str = typer.Argument(..., help="Target revision, e.g. -1 or base."),
    json_output: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Revert migrations down to REVISION."""
    url = load_settings().database_url
    _print_revision(url, migrate.downgrade(url, revision), json_output)


def _print_revision(url: str, current: str | None, json_output: bool) -> None:
    if json_output:
        emit_json({"database": safe_url(url), "revision": current})
    else:
        print(f"{safe_url(url)} at revision {current}")


@app.command()
def current(json_output: bool = typer.Option(False, "--json", help="Print JSON.")) -> None:
    """Show the database's revision and the code's head."""
    url = load_settings().database_url
    data = {"database": safe_url(url), "revision": migrate.current_revision(url), "head": migrate.head_revision()}
    if json_output:
        emit_json(data)
    else:
        print(f"{data['database']}: revision {data['revision']} (head {data['head']})")
