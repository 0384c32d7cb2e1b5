"""Printing for the CLI: JSON for scripts, rich tables for people. rich is imported when something is printed for
people: a `--json` run never imports it (`console` is made when first asked for)."""

from __future__ import annotations

import json
from typing import Any

_console = None


def get_console():
    """The rich Console every command prints to, made (and rich imported) on first use."""
    global _console
    if _console is None:
        from rich.console import Console

        _console = Console()
    return _console


def __getattr__(name: str) -> Any:  # `from t2m_pipeline.cli.output import console`, as before
    if name == "console":
        return get_console()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def emit_json(data: Any) -> None:
    print(json.dumps(data, indent=2, sort_keys=True, default=str))


def table(title: str, columns: list[str], rows: list[list[Any]]) -> None:
    from rich.table import Table

    t = Table(title=title)
    for column in columns:
        t.add_column(column)
    for row in rows:
        t.add_row(*("" if v is None else str(v) for v in row))
    get_console().print(t)
