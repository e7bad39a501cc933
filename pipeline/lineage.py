"""Data lineage for MLflow runs: which cohort, in which version, each split of a run was.

A cohort folder's content digest is a SHA-256 over every file's name, size and bytes
(manifest, samples table and the arrays). It is computed once per process and cohort
folder (cached on the files' sizes and modification times): reading a few GB of
memory-mapped arrays costs seconds, against the minutes to hours a training run takes,
and unlike a listing of sizes it changes whenever a value does. When DVC produced the
folder, `dvc.lock`'s md5 for it is logged beside it, so a run can be matched to a DVC
data version too.

Each split is logged with `mlflow.log_input` as a dataset named by the cohort, with the
context "training", "validation" or "test" and a digest of the cohort digest and the
split's rows (MLflow keeps one input per name and digest, so the splits need their own).
"""

from __future__ import annotations

import functools
import hashlib
from pathlib import Path

import numpy as np

CONTEXTS = {"train": "training", "val": "validation", "test": "test"}
_CHUNK = 1 << 22  # 4 MiB reads


def cohort_digest(folder: str | Path) -> str:
    """Hex SHA-256 of a cohort folder's files (names, sizes and contents, in name order)."""
    folder = Path(folder).resolve()
    files = sorted(p for p in folder.rglob("*") if p.is_file())
    key = tuple((str(p.relative_to(folder)), p.stat().st_size, p.stat().st_mtime_ns) for p in files)
    return _digest(folder, key)


@functools.lru_cache(maxsize=8)
def _digest(folder: Path, key: tuple) -> str:
    h = hashlib.sha256()
    for name, size, *_ in key:
        h.update(f"{name}\0{size}\0".encode())
        with open(folder / name, "rb") as fh:
            while chunk := fh.read(_CHUNK):
                h.update(chunk)
    return h.hexdigest()


# Manifest fields that say when and from which file dates a cohort was built, not what it holds:
# a rebuild of the same data from the same exports gives the same content digest.
_VOLATILE_MANIFEST_FIELDS = ("created", "sources")


def cohort_content_digest(folder: str | Path) -> str:
    """Hex SHA-256 of what a cohort holds: samples.parquet and every `*.npy` array (names, sizes and
    bytes) and manifest.json without its build time and source-file dates.

    A run records it (checkpoints, train_summary.json); resume and evaluate refuse a cohort whose
    content differs from the one the run was trained on. Cached per process like `cohort_digest`.
    """
    import json

    folder = Path(folder).resolve()
    files = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix in (".parquet", ".npy"))
    # the change time too: a file rewritten with its old size and modification time is read again
    key = tuple((p.name, (st := p.stat()).st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino) for p in files)
    h = hashlib.sha256(_digest(folder, key).encode())
    manifest = json.loads((folder / "manifest.json").read_text())
    if isinstance(manifest, dict):
        for field in _VOLATILE_MANIFEST_FIELDS:
            manifest.pop(field, None)
    h.update(json.dumps(manifest, sort_keys=True).encode())
    return h.hexdigest()


def split_digest(cohort_sha: str, rows: np.ndarray) -> str:
    """16 hex characters identifying one split: the cohort's content and the split's row indices."""
    h = hashlib.sha256(cohort_sha.encode())
    h.update(np.ascontiguousarray(rows, dtype=np.int64).tobytes())
    return h.hexdigest()[:16]


def dvc_lock_md5(folder: str | Path, root: str | Path) -> str | None:
    """The md5 `dvc.lock` (at `root`) records for `folder` as some stage's output, or None."""
    import yaml

    lock = Path(root) / "dvc.lock"
    if not lock.is_file():
        return None
    try:
        rel = Path(folder).resolve().relative_to(Path(root).resolve()).as_posix()
    except ValueError:
        return None  # the cohort is outside the DVC project
    # dvc.lock lists every stage's deps (tens of thousands of lines): libyaml's loader reads it in a
    # tenth of the pure-Python one's time (2 s per training run in make demo otherwise)
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    stages = (yaml.load(lock.read_text(), Loader=loader) or {}).get("stages", {})  # noqa: S506 (a safe loader)
    for stage in stages.values():
        for out in stage.get("outs", []) if isinstance(stage, dict) else []:
            if isinstance(out, dict) and out.get("path") == rel and out.get("md5"):
                return str(out["md5"])
    return None


def split_datasets(cohort, splits: dict[str, np.ndarray], root: str | Path | None = None) -> list[tuple]:
    """(MLflow dataset, context, tags) for each split: what `log_split_inputs` logs.

    Args:
        cohort: a `pipeline.data.Cohort`.
        splits: split name ("train", "val", "test") -> its row indices into `cohort.samples`.
        root: the DVC project root whose dvc.lock may name the cohort folder.
    """
    import warnings

    from mlflow.data.dataset_source_registry import resolve_dataset_source
    from mlflow.data.meta_dataset import MetaDataset
    from mlflow.types import Schema, TensorSpec

    sha = cohort_digest(cohort.path)
    schema = Schema([TensorSpec(np.dtype("float32"), (-1, *cohort.input_shape(m)), m) for m in cohort.modalities])
    with warnings.catch_warnings():  # MLflow registers its local-artifact source twice and says so
        warnings.simplefilter("ignore", UserWarning)
        source = resolve_dataset_source(str(Path(cohort.path).resolve()))
    synthetic = cohort.manifest.synthetic
    common = {"cohort_sha256": sha, "synthetic": "unknown" if synthetic is None else str(bool(synthetic)).lower(),
              "task": str(cohort.manifest.task), "labels": str(cohort.num_outputs)}
    md5 = dvc_lock_md5(cohort.path, root) if root else None
    if md5:
        common["dvc_md5"] = md5
    out = []
    for split, rows in splits.items():
        dataset = MetaDataset(source=source, name=cohort.name, digest=split_digest(sha, rows), schema=schema)
        out.append((dataset, CONTEXTS[split], {**common, "split": split, "rows": str(len(rows))}))
    return out


def log_split_inputs(cohort, splits: dict[str, np.ndarray], root: str | Path | None = None) -> None:
    """`mlflow.log_input` for each split of `cohort` on the active run."""
    import mlflow

    datasets, contexts, tags = zip(*split_datasets(cohort, splits, root), strict=True)
    mlflow.log_inputs(list(datasets), list(contexts), list(tags))
