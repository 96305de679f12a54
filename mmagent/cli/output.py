"""Printing helpers: JSON for machines, rich tables for people (rich imported only when used), and
plain aligned columns when stdout is not a terminal, so every value stays whole on its row for
grep, cut and awk."""

from __future__ import annotations

import json
import sys
from typing import Any, Iterable, Sequence


def print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")


def print_table(columns: Sequence[str], rows: Iterable[Sequence[Any]], title: str | None = None) -> None:
    """A rich table on a terminal; piped or redirected, one line per row, columns separated by at
    least two spaces, nothing folded or cut (rich would fold columns to fit 80 characters)."""
    if not _is_terminal(sys.stdout):
        print_plain_table(columns, rows, title)
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title, title_justify="left", show_lines=False)
    for column in columns:
        table.add_column(column, overflow="fold")
    for row in rows:
        table.add_row(*("" if v is None else str(v) for v in row))
    Console(soft_wrap=False).print(table)


def print_plain_table(columns: Sequence[str], rows: Iterable[Sequence[Any]], title: str | None = None) -> None:
    cells = [[_cell(v) for v in columns]] + [[_cell(v) for v in row] for row in rows]
    widths = [max(len(row[i]) for row in cells if i < len(row)) for i in range(len(columns))]
    lines = [title] if title else []
    for row in cells:
        padded = [value.ljust(widths[i]) if i < len(row) - 1 else value for i, value in enumerate(row)]
        lines.append("  ".join(padded).rstrip())
    sys.stdout.write("\n".join(lines) + "\n")


def _cell(value: Any) -> str:
    return "" if value is None else " ".join(str(value).split())


def _is_terminal(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False
