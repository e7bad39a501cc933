"""Whether an input export is the built-in synthetic data: a marker file the generator writes.

`clinfuse synth` writes `CLINFUSE_SYNTHETIC.json` at the root of every export it creates
(MIMIC-IV, MIMIC-CXR-JPG, the DICOM copies, ADNI). The ETL stages look for it in the
folders they read, so a cohort knows from its data, not from a path, that results built
on it are not clinical. Real exports from PhysioNet or ADNI never carry the file.
"""

from __future__ import annotations

import json
from importlib import metadata
from pathlib import Path

MARKER = "CLINFUSE_SYNTHETIC.json"


def _version() -> str:
    try:
        return metadata.version("clinfuse")
    except metadata.PackageNotFoundError:  # a source checkout that was never installed
        return "unknown"


def write_synthetic_marker(folder: Path, dataset: str, seed: int, **details) -> Path:
    """Mark `folder` as a synthetic export (no timestamp: same seed, same bytes)."""
    path = Path(folder) / MARKER
    record = {"synthetic": True, "generator": "clinfuse synth", "generator_version": _version(),
              "dataset": dataset, "seed": int(seed), **details}
    path.write_text(json.dumps(record, indent=1, sort_keys=True) + "\n")
    return path


def synthetic_marker(folder: Path) -> dict | None:
    """The marker's content if `folder` is a synthetic export, else None."""
    path = Path(folder) / MARKER
    if not path.is_file():
        return None
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError):
        record = {}
    return record if isinstance(record, dict) else {}


def synthetic_sources(folders: dict[str, Path]) -> dict:
    """Manifest entry: `synthetic` (any source marked) and the markers found, by source name."""
    found = {name: marker for name, folder in folders.items() if (marker := synthetic_marker(folder)) is not None}
    return {"synthetic": bool(found), "synthetic_sources": found}
