"""MLflow tracking: one local SQLite store per repository, no telemetry.

The store defaults to `sqlite:///<repo root>/mlflow.db` with an absolute path.
`dvc exp run --temp/--queue` runs stages in a copy under `.dvc/tmp/exps/`; the
repo root is then the OUTER repository, so those runs log to the same store.
`MLFLOW_TRACKING_URI` overrides everything. Artifacts follow the store: next to a
SQLite file (`<folder of the .db>/mlartifacts/<experiment>`, absolute, never `./mlruns`
relative to wherever a stage happened to run); a tracking server's own artifact root
otherwise (its `--default-artifact-root` / proxied artifacts). MLflow records those locations as
absolute paths; a store that was moved with its project is rebased on first use
(pipeline.store_location, `clinfuse relocate-store`).

Runs carry what MLflow cannot detect itself here: the git commit (`mlflow.source.git.commit`;
MLflow's detection looks at the entry point, which sits in `.venv/bin`), and, under DVC, the
stage and experiment names DVC puts in the environment of a stage's command (`DVC_STAGE` for
every stage, `DVC_EXP_NAME` and `DVC_EXP_BASELINE_REV` under `dvc exp run`).
"""

from __future__ import annotations

import contextlib
import contextvars
import fcntl
import os
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")


def disable_telemetry() -> None:
    """Clinical environments forbid unexpected network traffic."""
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    os.environ.setdefault("DO_NOT_TRACK", "1")
    os.environ.setdefault("DVC_NO_ANALYTICS", "1")


def repo_root(start: Path | None = None) -> Path:
    """The project root (folder with dvc.yaml or params.yaml), outside any DVC exp temp copy."""
    if os.environ.get("CLINFUSE_REPO_ROOT"):
        return Path(os.environ["CLINFUSE_REPO_ROOT"]).resolve()
    here = (start or Path.cwd()).resolve()
    parts = here.parts
    # .../repo/.dvc/tmp/exps/<tmpdir>/... -> .../repo
    for i in range(len(parts) - 3):
        if parts[i : i + 3] == (".dvc", "tmp", "exps"):
            return Path(*parts[:i])
    for candidate in (here, *here.parents):
        if (candidate / "dvc.yaml").exists() or (candidate / "params.yaml").exists():
            return candidate
    return here


def resolve_tracking_uri() -> str:
    """MLFLOW_TRACKING_URI, else the repository's absolute SQLite store."""
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{repo_root() / 'mlflow.db'}"


def lock_path(uri: str | None = None) -> Path:
    """The lock file that serialises schema set-up and registry alias moves for a store."""
    uri = uri or resolve_tracking_uri()
    if uri.startswith("sqlite:///"):
        return Path(uri[len("sqlite:///"):] + ".lock")
    return repo_root() / ".mlflow-store.lock"


# How long to wait for another process's lock on the store (params.yaml `registry.lock_timeout_s`,
# set for its duration by `clinfuse register`); the lock is held for seconds, so minutes mean a stuck holder.
LOCK_TIMEOUT_S: contextvars.ContextVar[float] = contextvars.ContextVar("LOCK_TIMEOUT_S", default=300.0)
_LOCK_POLL_S = 0.1


@contextlib.contextmanager
def store_lock(uri: str | None = None, timeout: float | None = None) -> Iterator[None]:
    """Exclusive inter-process lock on the tracking store (fcntl; released if the process dies).

    Waits at most `timeout` seconds (default LOCK_TIMEOUT_S), saying once that it waits and for
    whom; then an InputError naming the lock file, never an endless silent wait.
    """
    from clinfuse.etl.errors import InputError

    path = lock_path(uri)
    limit = LOCK_TIMEOUT_S.get() if timeout is None else timeout
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fh = open(path, "a")  # noqa: SIM115 - closed below, after the lock is released
    except OSError as exc:
        raise InputError(f"{path}: cannot open the MLflow store's lock file ({exc.strerror})") from None
    with fh:
        deadline = time.monotonic() + limit
        told = False
        while True:
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise InputError(f"{path}: the MLflow store is still locked by another process after {limit:g} s; "
                                     "wait for it to finish (or end it), or raise registry.lock_timeout_s") from None
                if not told:
                    print(f"waiting for another process to release the MLflow store's lock {path} "
                          f"(at most {limit:g} s)", file=sys.stderr, flush=True)
                    told = True
                time.sleep(_LOCK_POLL_S)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


SQLITE_HEADER = b"SQLite format 3\x00"
_QUICK_CHECKED: set[tuple[Path, int, int]] = set()  # (path, size, mtime) of stores that passed quick_check


def _stamp(db: Path) -> tuple[Path, int, int]:
    st = db.stat()
    return db, st.st_size, st.st_mtime_ns


def sqlite_file(uri: str) -> Path | None:
    """The database file of a `sqlite:///` store URI, else None."""
    return Path(uri[len("sqlite:///"):]) if uri.startswith("sqlite:///") else None


def check_store(uri: str, write: bool = True) -> None:
    """InputError naming a SQLite store that cannot serve, before MLflow touches it.

    Refused: a path that is a folder, a file that is not a SQLite database (a text file named
    mlflow.db), a damaged database (SQLite's quick_check: corrupt pages), and, when `write`, a
    store or folder that cannot be written (SQLite also writes a journal beside the file).
    """
    from clinfuse.etl.errors import InputError

    db = sqlite_file(uri)
    if db is None:
        return
    if db.is_dir():
        raise InputError(f"{db}: is a folder, not the SQLite file of the MLflow store {uri}")
    if not db.exists():
        parent = _existing_parent(db)
        if write and (not os.access(parent, os.W_OK) or not parent.stat().st_mode & 0o222):
            raise InputError(f"{db}: the MLflow store cannot be created: {_existing_parent(db)} is not writable")
        return
    try:
        with open(db, "rb") as fh:
            header = fh.read(len(SQLITE_HEADER))
    except OSError as exc:
        raise InputError(f"{db}: the MLflow store cannot be read ({exc.strerror})") from None
    if header and header != SQLITE_HEADER:
        raise InputError(f"{db}: not a SQLite database, so not an MLflow store (it starts with {header[:12]!r}); "
                         "point MLFLOW_TRACKING_URI at the store, or move this file away")
    if header and _stamp(db) not in _QUICK_CHECKED:  # a full scan: once per process and version of the file
        import sqlite3

        try:
            con = sqlite3.connect(f"{db.resolve().as_uri()}?mode=ro", uri=True)
            try:
                problem = con.execute("PRAGMA quick_check(1)").fetchone()[0]
            finally:
                con.close()
        except sqlite3.DatabaseError as exc:
            problem = str(exc)
        if problem != "ok":
            raise InputError(f"{db}: the MLflow store is damaged (SQLite: {problem}); restore it from a backup "
                             "or move it away to start a new one") from None
        _QUICK_CHECKED.add(_stamp(db))
    if write:
        for path in (db, db.parent):
            # the mode bits too: root may write anywhere, but a store made read-only is meant to stay so
            if not os.access(path, os.W_OK) or not path.stat().st_mode & 0o222:
                raise InputError(f"{db}: the MLflow store is read-only ({path} is not writable); "
                                 "this command writes to it")


def _existing_parent(path: Path) -> Path:
    path = path.parent
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


_STORE_PROBLEMS = (("database or disk is full", "no space left on the device"),
                   ("No space left on device", "no space left on the device"),
                   ("readonly database", "it is read-only"),
                   ("Read-only file system", "it is on a read-only file system"),
                   ("Permission denied", "permission denied"),
                   ("database disk image is malformed", "the database is damaged"),
                   ("file is not a database", "it is not a SQLite database"),
                   ("unable to open database file", "the database file cannot be opened"))


@contextlib.contextmanager
def store_errors(uri: str | None = None, what: str = "the MLflow store") -> Iterator[None]:
    """Turn a store that fails mid-command (disk full, read-only, damaged) into one InputError line
    naming the store, instead of a SQLAlchemy or OSError traceback."""
    import errno

    from clinfuse.etl.errors import ClinfuseError, InputError

    uri = uri or resolve_tracking_uri()
    try:
        yield
    except ClinfuseError:
        raise
    except Exception as exc:  # noqa: BLE001 - MLflow wraps SQLAlchemy/sqlite3/OS errors in several types
        text = str(exc)
        problem: str | None
        if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
            problem = "no space left on the device"
        else:
            problem = next((say for found, say in _STORE_PROBLEMS if found in text), None)
        if problem is None:
            raise
        where = f" ({exc.filename})" if isinstance(exc, OSError) and exc.filename else ""
        raise InputError(f"{uri}: {what} failed: {problem}{where}") from None


def with_retries(fn: Callable[[], T], attempts: int = 8, first_wait: float = 0.1) -> T:
    """Call `fn`, retrying with backoff while SQLite answers "database is locked"."""
    for attempt in range(attempts):
        try:
            return fn()
        except Exception as exc:  # noqa: BLE001 - MLflow wraps the sqlite error in several types
            if "database is locked" not in str(exc) or attempt == attempts - 1:
                raise
            time.sleep(first_wait * 2**attempt)
    raise AssertionError("unreachable")


def connect() -> str:
    """Point MLflow (tracking and registry) at the store without writing to it; returns the URI.

    For readers (`clinfuse predict`): no experiment or run is created.
    """
    disable_telemetry()
    # Progress bars of artifact downloads (carriage returns) would clutter stage logs.
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    import mlflow

    uri = resolve_tracking_uri()
    follow_moved_store(uri)
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    return uri


def follow_moved_store(uri: str) -> None:
    """A SQLite store whose project folder was moved or copied: point its artifact locations at the
    artifacts beside it (pipeline.store_location), saying so on stderr. A no-op read otherwise."""
    import sys

    from .store_location import old_roots, relocate, sqlite_path

    db = sqlite_path(uri)
    if db is None or not old_roots(db):
        return
    with store_lock(uri):
        done = relocate(db)
    if done.old_roots:
        print(f"clinfuse: the MLflow store moved: {done.summary()}", file=sys.stderr)


def artifact_location(uri: str, experiment: str) -> str | None:
    """Where a new experiment's artifacts go: beside a SQLite store, or None (the server decides).

    `sqlite:///path/mlflow.db` -> `file:///path/mlartifacts/<experiment>`, so a store given by
    MLFLOW_TRACKING_URI (a temporary one in tests, a shared one on a cluster) keeps its runs'
    artifacts with it instead of in the repository's folder.
    """
    if not uri.startswith("sqlite:///"):
        return None
    db = Path(uri[len("sqlite:///"):])
    return (db.resolve().parent / "mlartifacts" / experiment).as_uri()


EXPERIMENT_DESCRIPTION = (
    "clinfuse runs on the cohort {cohort}: one run per (method, seed) trained by `clinfuse train`, "
    "each with its config as params, per-step and per-epoch metrics, the training/validation/test "
    "data as dataset inputs (content digest), the git commit and, under DVC, the stage and experiment. "
    "Compare methods on the validation metric (best_val_*); test metrics with bootstrap CIs are in "
    "the report, and the best run per task is registered as `<dataset>-<task>@champion`."
)


def setup_mlflow(experiment: str, description: str | None = None) -> str:
    """Point MLflow at the store and return the experiment id (created if missing).

    The first use of a SQLite store runs MLflow's schema migrations; two processes
    doing that at once corrupt it. Opening the store and creating the experiment
    happen under `store_lock`, so concurrent runs (a DVC queue, two shells) are safe.

    Args:
        experiment: experiment name, e.g. `clinfuse/mimic-phenotype`.
        description: shown by MLflow as the experiment's description (tag `mlflow.note.content`);
            set when the experiment is created, or on an existing one that has none. Default for
            `clinfuse/<cohort>`: what its runs hold (EXPERIMENT_DESCRIPTION).
    """
    import mlflow

    if description is None and experiment.startswith("clinfuse/"):
        description = EXPERIMENT_DESCRIPTION.format(cohort=experiment.split("/", 1)[1])

    uri = connect()
    check_store(uri)
    with store_lock(uri), store_errors(uri):
        client = mlflow.MlflowClient()
        found = with_retries(lambda: client.get_experiment_by_name(experiment))
        if found is None:
            location = artifact_location(uri, experiment)
            tags = {NOTE_TAG: description} if description else None
            return with_retries(lambda: client.create_experiment(experiment, artifact_location=location, tags=tags))
        if description and not found.tags.get(NOTE_TAG):
            with_retries(lambda: client.set_experiment_tag(found.experiment_id, NOTE_TAG, description))
        return found.experiment_id


NOTE_TAG = "mlflow.note.content"  # MLflow's description field for experiments and runs


def run_context_tags() -> dict[str, str]:
    """Tags saying where a run's code and pipeline came from: the git commit, DVC's stage and experiment.

    `mlflow.source.git.commit` is what MLflow's UI shows as the run's source version; it is
    left out outside a git checkout (an installed wheel) rather than guessed.
    """
    from .provenance import git_state

    tags: dict[str, str] = {}
    git = git_state()
    if git["commit"]:
        tags["mlflow.source.git.commit"] = git["commit"]
        tags["clinfuse.git.dirty"] = str(bool(git["dirty"])).lower()
    for env, tag in (("DVC_STAGE", "dvc.stage"), ("DVC_EXP_NAME", "dvc.experiment"),
                     ("DVC_EXP_BASELINE_REV", "dvc.baseline_rev")):
        if os.environ.get(env):
            tags[tag] = os.environ[env]
    return tags


def flatten(params: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """{'a': {'b': 1}} -> {'a.b': '1'}; lists become their repr (MLflow params are strings)."""
    flat: dict[str, str] = {}
    for key, value in params.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = str(value)[:6000]
    return flat
