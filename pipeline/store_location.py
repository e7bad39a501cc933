"""Keep a SQLite MLflow store usable after its project folder is moved or copied.

MLflow records absolute artifact locations in the database (`file:///<project>/mlartifacts/...` for
experiments, runs, logged models and registered model versions) and resolves a relative one against
the working directory, never against the store. A moved project therefore reads the original's
files (or none, once the original is gone: `mlflow artifacts download` then exits 0 with 0 files).

`relocate(db)` rewrites every location recorded under the folder the store was created in to the
store's current folder: the artifacts beside the store (`mlartifacts/`, and MLflow's `mlruns/0` of
the Default experiment when it was created there) are the ones that moved with it. Locations
elsewhere (a tracking server, an artifact root outside the project) are left as they are. The old
folder is read from the experiments' own locations (`<old>/mlartifacts/<experiment>`), and only
when the store's folder has an `mlartifacts/` of its own (the artifacts came along).
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import unquote, urlparse

# (table, column, optional SQL condition): every place MLflow 3 keeps an artifact location.
LOCATION_COLUMNS = (
    ("experiments", "artifact_location", None),
    ("runs", "artifact_uri", None),
    ("logged_models", "artifact_location", None),
    ("model_versions", "storage_location", None),
    ("model_versions", "source", None),  # `models:/m-...` in MLflow 3; a file URI for older versions
    ("trace_tags", "value", "key = 'mlflow.artifactLocation'"),
)
ARTIFACTS = "mlartifacts"  # clinfuse's artifact folder beside a SQLite store (pipeline.tracking.artifact_location)


@dataclass
class Relocation:
    """What `relocate` changed: the old folders found, and rows rewritten per `table.column`."""

    store: Path
    old_roots: list[Path] = field(default_factory=list)
    rewritten: dict[str, int] = field(default_factory=dict)

    @property
    def total(self) -> int:
        return sum(self.rewritten.values())

    def summary(self) -> str:
        if not self.old_roots:
            return f"{self.store}: artifact locations already point beside the store; nothing to rebase"
        return (f"{self.store}: rebased {self.total} artifact location(s) from "
                f"{', '.join(str(r) for r in self.old_roots)} to {self.store.parent}")


def location_path(location: str) -> Path | None:
    """A `file://` URI or a plain absolute path as a Path; None for anything else (s3://, models:/, ...)."""
    if location.startswith("file:"):
        return Path(unquote(urlparse(location).path))
    if location.startswith("/"):
        return Path(location)
    return None


def store_root_of(location: str) -> Path | None:
    """The folder a store was in, read from one of its experiments' artifact locations, or None."""
    path = location_path(location)
    if path is None:
        return None
    for parent in path.parents:
        if parent.name == ARTIFACTS:
            return parent.parent
    return None


def _rebase(value: str, old: Path, new: Path) -> str | None:
    """`value` with the folder `old` replaced by `new` (same URI form), or None if it is not under `old`."""
    path = location_path(value)
    if path is None or not (path == old or old in path.parents):
        return None
    moved = new / path.relative_to(old)
    return moved.as_uri() if value.startswith("file:") else str(moved)


def _tables(db: sqlite3.Connection) -> set[str]:
    return {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}


def old_roots(db_path: Path) -> list[Path]:
    """Folders other than the store's own that its experiments' artifact locations point under."""
    db_path = Path(db_path).resolve()
    if not db_path.is_file():
        return []
    try:
        with sqlite3.connect(f"file:{db_path}?mode=ro", uri=True) as db:
            if "experiments" not in _tables(db):
                return []
            locations = [row[0] for row in db.execute("SELECT artifact_location FROM experiments") if row[0]]
    except sqlite3.DatabaseError:  # not an SQLite file: MLflow says so when it opens it
        return []
    here = db_path.parent
    if not (here / ARTIFACTS).is_dir():
        return []
    roots = {root for root in map(store_root_of, locations) if root is not None and root != here}
    return sorted(roots)


def relocate(db_path: Path) -> Relocation:
    """Rewrite the artifact locations of the SQLite store `db_path` recorded under another folder.

    Idempotent: a store whose locations already point beside it is not written to. All rows change
    in one transaction (a failure leaves the store as it was).
    """
    db_path = Path(db_path).resolve()
    result = Relocation(db_path)
    roots = old_roots(db_path)
    if not roots:
        return result
    result.old_roots = roots
    new = db_path.parent
    with sqlite3.connect(str(db_path), timeout=60) as db:  # the context manager commits or rolls back
        tables = _tables(db)
        for table, column, condition in LOCATION_COLUMNS:
            if table not in tables:
                continue
            where = f" WHERE {condition}" if condition else ""
            rows = db.execute(f"SELECT rowid, {column} FROM {table}{where}").fetchall()
            count = 0
            for rowid, value in rows:
                if not value:
                    continue
                for old in roots:
                    moved = _rebase(value, old, new)
                    if moved is not None:
                        db.execute(f"UPDATE {table} SET {column} = ? WHERE rowid = ?", (moved, rowid))
                        count += 1
                        break
            if count:
                result.rewritten[f"{table}.{column}"] = count
    return result


def sqlite_path(uri: str) -> Path | None:
    """The database file of a `sqlite:///` tracking URI, or None for another kind of store."""
    return Path(uri[len("sqlite:///"):]) if uri.startswith("sqlite:///") else None
