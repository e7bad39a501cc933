"""Provenance records for processed cohorts."""

from __future__ import annotations

import datetime as dt
from pathlib import Path


def source_entry(path: Path) -> dict:
    """Path, size and modification time of an input file (no checksum: inputs can be 30 GB)."""
    path = Path(path)
    stat = path.stat()
    return {"path": str(path.resolve()), "bytes": stat.st_size,
            "modified": dt.datetime.fromtimestamp(stat.st_mtime, dt.timezone.utc).isoformat(timespec="seconds")}


def now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
