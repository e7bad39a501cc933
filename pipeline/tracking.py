"""MLflow tracking: one local SQLite store per repository, no telemetry.

The store defaults to `sqlite:///<repo root>/mlflow.db` with an absolute path.
`dvc exp run --temp/--queue` runs stages in a copy under `.dvc/tmp/exps/`; the
repo root is then the OUTER repository, so those runs log to the same store.
`MLFLOW_TRACKING_URI` overrides everything. Artifacts go to
`<repo root>/mlartifacts/<experiment>` (absolute, never `./mlruns` relative to
wherever a stage happened to run).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
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


@contextlib.contextmanager
def store_lock(uri: str | None = None) -> Iterator[None]:
    """Exclusive inter-process lock on the tracking store (fcntl; released if the process dies)."""
    path = lock_path(uri)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


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


def setup_mlflow(experiment: str) -> str:
    """Point MLflow at the store and return the experiment id (created if missing).

    The first use of a SQLite store runs MLflow's schema migrations; two processes
    doing that at once corrupt it. Opening the store and creating the experiment
    happen under `store_lock`, so concurrent runs (a DVC queue, two shells) are safe.
    """
    disable_telemetry()
    import mlflow

    uri = resolve_tracking_uri()
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    with store_lock(uri):
        client = mlflow.MlflowClient()
        found = with_retries(lambda: client.get_experiment_by_name(experiment))
        if found is not None:
            return found.experiment_id
        artifacts = (repo_root() / "mlartifacts" / experiment).resolve()
        return with_retries(lambda: client.create_experiment(experiment, artifact_location=artifacts.as_uri()))


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
