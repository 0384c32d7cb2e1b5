"""Printing for the CLI: JSON for scripts, rich tables for people. rich is imported when something is printed for
people: a `--json` run never imports it (`get_console` makes the console when first asked)."""

from __future__ import annotations

import functools
import json
from typing import Any


@functools.cache
def get_console():
    """The rich Console every command prints to, made (and rich imported) on first use."""
    from rich.console import Console

    return Console()


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
