"""`t2m jobs` and `t2m urls`: submit and inspect jobs, hand out presigned URLs to their owner."""

from __future__ import annotations

import typer

app = typer.Typer(help="Submit and inspect jobs.", no_args_is_help=True)


def urls() -> None:
    """Presigned URLs for one user's job (filled in by the pipeline issue)."""
    raise typer.Exit(1)
