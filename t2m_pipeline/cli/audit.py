"""`t2m audit`: the storage and metadata audits from the command line."""

from __future__ import annotations

import typer


def audit(json_output: bool = typer.Option(False, "--json", help="Print JSON.")) -> None:
    """Run the audits (filled in by the audits issue)."""
    raise typer.Exit(1)
