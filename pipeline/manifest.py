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


def write_cohort_folder(out: Path, arrays: dict, samples, manifest: dict, extra_json: dict | None = None) -> None:
    """Write a processed cohort (docs/cohort-format.md) atomically: `<name>.npy` per array,
    samples.parquet, extra JSON files and manifest.json (last). The folder is swapped in
    whole, so a failure leaves the previous cohort untouched."""
    from etl.atomic import atomic_dir, write_json, write_npy, write_parquet

    with atomic_dir(out, "cohort") as tmp:
        for name, array in arrays.items():
            write_npy(tmp / f"{name}.npy", array)
        write_parquet(tmp / "samples.parquet", samples)
        for name, obj in (extra_json or {}).items():
            write_json(tmp / name, obj)
        write_json(tmp / "manifest.json", manifest)


def exclusion_text(steps: list[dict]) -> str:
    """'reason -n; reason -n' for the steps that excluded something (one-line summaries)."""
    return "; ".join(f"{e['reason']} -{e['excluded']}" for e in steps[1:] if e["excluded"])


def redact_path(text: str, path: str | Path) -> str:
    """`text` with the file's path and name (which hold patient, study and image ids) replaced by <file>."""
    path = Path(path)
    for token in (str(path), str(path.resolve()), path.name, path.stem):
        if token:
            text = text.replace(token, "<file>")
    return text


def shareable_path(path: str | Path, keep: int = 3) -> str:
    """A path with only its last `keep` components (`.../mimic-iv/hosp/patients.csv.gz`).

    Reports and model cards travel beyond the site: they name inputs relative to their export,
    never by the absolute path of the site's data root (which can name people and projects).
    """
    parts = Path(path).parts
    return ("…/" if len(parts) > keep else "") + "/".join(parts[-keep:])


def shareable_sources(sources: dict) -> dict:
    """The manifest's `sources` with shareable paths, sizes and dates kept."""
    return {name: {**entry, "path": shareable_path(entry["path"])} if "path" in entry else entry
            for name, entry in (sources or {}).items()}
