"""Point a moved or copied project's MLflow store at the artifacts beside it.

MLflow records absolute artifact locations; after `mv project elsewhere` (or a copy to another
machine) the store still names the old folder. This rewrites them to the folder the store is in now.
clinfuse commands do it on their own when they open a moved store; run it before plain `mlflow`
commands (`mlflow ui`, `mlflow models serve`, `mlflow artifacts download`) on a moved project:

  clinfuse relocate-store                 # the project's mlflow.db (or MLFLOW_TRACKING_URI's SQLite file)
  clinfuse relocate-store --store path/to/mlflow.db
"""

from __future__ import annotations

from pathlib import Path

from clinfuse.etl.errors import InputError

NAME = "relocate-store"
HELP = "rebase a moved SQLite MLflow store's artifact locations onto the folder it is in now"


def add_arguments(parser) -> None:
    parser.add_argument("--store", default=None,
                        help="the SQLite store (default: MLFLOW_TRACKING_URI's file, else <project>/mlflow.db)")


def run(args) -> int:
    from clinfuse.pipeline.store_location import relocate, sqlite_path
    from clinfuse.pipeline.tracking import resolve_tracking_uri, store_lock

    uri = resolve_tracking_uri()
    db = Path(args.store) if args.store else sqlite_path(uri)
    if db is None:
        raise InputError(f"MLFLOW_TRACKING_URI={uri}: not a SQLite store (sqlite:///...); "
                         "a tracking server keeps its own artifact root")
    if not db.is_file():
        raise InputError(f"{db}: no such MLflow store (expected the SQLite file mlflow.db)")
    import sqlite3

    try:
        with sqlite3.connect(f"file:{db.resolve()}?mode=ro", uri=True) as con:
            con.execute("SELECT name FROM sqlite_master").fetchall()
    except sqlite3.DatabaseError as exc:
        raise InputError(f"{db}: not an SQLite database ({exc})") from None
    with store_lock(f"sqlite:///{db.resolve()}"):
        print(relocate(db).summary())
    return 0
