"""`t2m migrate`: legacy Redis and local files into PostgreSQL and S3."""

from __future__ import annotations

import typer

app = typer.Typer(help="Migrate the legacy platform's data.", no_args_is_help=True)
