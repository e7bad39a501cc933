"""Safe SQL text for DuckDB statements that cannot take bound parameters (SET, read_csv paths)."""

from __future__ import annotations

import re

# A memory size as DuckDB's `SET memory_limit` takes it: a number and a unit, never SQL.
MEMORY_SIZE = re.compile(r"^\s*\d+(\.\d+)?\s*(B|KB|MB|GB|TB|KIB|MIB|GIB|TIB)\s*$", re.IGNORECASE)


def sql_literal(text: str) -> str:
    """A SQL string literal with quotes doubled, so a path or setting can never end the string early."""
    return "'" + str(text).replace("'", "''") + "'"


def csv_error_message(exc: Exception, path: str) -> str:
    """One line from a DuckDB CSV error, keeping its line number and column: `<path>: line N, column C: ...`."""
    text = str(exc)
    line = re.search(r"CSV Error on Line: (\d+)", text)
    column = re.search(r'converting column "([^"]+)"', text)
    detail = re.search(r"(Could not convert [^\n]*)", text)
    where = "".join([f"line {line.group(1)}, " if line else "", f"column {column.group(1)}: " if column else ""])
    first = detail.group(1) if detail else text.strip().splitlines()[0]
    return f"{path}: {where}{first}"
