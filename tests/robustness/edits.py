"""Editing a copied export in place, for the hostile-input tests."""

from __future__ import annotations

from pathlib import Path


def edit_text(path: Path, old: str, new: str) -> None:
    """Replace the first `old` in the file by `new`; `old` must be there (the test would mean nothing)."""
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new, 1))
