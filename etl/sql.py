"""Safe SQL text for DuckDB statements that cannot take bound parameters (SET, read_csv paths)."""

from __future__ import annotations

import re

# A memory size as DuckDB's `SET memory_limit` takes it: a number and a unit, never SQL.
MEMORY_SIZE = re.compile(r"^\s*\d+(\.\d+)?\s*(B|KB|MB|GB|TB|KIB|MIB|GIB|TIB)\s*$", re.IGNORECASE)


def sql_literal(text: str) -> str:
    """A SQL string literal with quotes doubled, so a path or setting can never end the string early."""
    return "'" + str(text).replace("'", "''") + "'"
