"""Results I/O shared by the stages: the files `clinfuse evaluate` and `clinfuse analyze` write and
the report, register and analyze stages read. What is computed from them lives in `evaluation/`.

An evaluated run folder (clinfuse evaluate --out):
  metrics.json                   test metrics, CIs, calibration, subgroups, validation headline
  predictions_<split>.parquet    one row per sample: ids, patient_id, split, subgroup columns,
                                 has_<modality>, `label__<name>` (or `label` for multi-class),
                                 `prob__<name>` per output (splits: val, test, test_withheld)
  curves_pr.json, curves_roc.json   per-label curve points (test)
An analysis folder (clinfuse analyze --out): analysis.json, figures/<name>.png.
A report folder may hold registry.json (clinfuse register --out).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd

from clinfuse.etl.atomic import read_json
from clinfuse.etl.errors import InputError

from .data import Cohort

METRICS_FILE = "metrics.json"


def predictions_file(folder: Path, split: str) -> Path:
    """`<folder>/predictions_<split>.parquet` of an evaluated run."""
    return Path(folder) / f"predictions_{split}.parquet"


def prediction_frame(cohort: Cohort, rows: np.ndarray, probs: np.ndarray) -> pd.DataFrame:
    """The predictions contract: ids, patient_id, split, subgroup columns, has_*, label__/prob__ per output.

    Args:
        cohort: the processed cohort the rows index.
        rows: `[N]` row indices into the cohort's samples table.
        probs: `[N, K]` probabilities, K = the cohort's outputs, in label order.

    The sample id columns kept are the manifest's `id_columns` present in the samples table.
    """
    s = cohort.samples.iloc[rows].reset_index(drop=True)
    keep = [c for c in cohort.manifest.id_columns if c in s.columns]
    keep += [c for c in ("split", "sex", "age", "race") if c in s.columns]
    keep += [f"has_{m}" for m in cohort.modalities]
    frame = s[keep].copy()
    frame.insert(0, "patient_id", s[cohort.manifest.patient_column].to_numpy())
    names = cohort.label_names
    if cohort.task_type == "multiclass":
        frame["label"] = s[cohort.manifest.label_columns[0]].to_numpy()
    else:
        for name in names:
            frame[f"label__{name}"] = s[name].to_numpy().astype(int)
    for k, name in enumerate(names):
        frame[f"prob__{name}"] = probs[:, k]
    return frame


def labels_and_scores(frame: pd.DataFrame, cohort: Cohort) -> tuple[np.ndarray, np.ndarray]:
    """`[N, K]` 0/1 indicators (one-vs-rest for multi-class) and `[N, K]` probabilities."""
    names = cohort.label_names
    scores = frame[[f"prob__{n}" for n in names]].to_numpy(float)
    if cohort.task_type == "multiclass":
        return np.eye(len(names), dtype=int)[frame["label"].to_numpy()], scores
    return frame[[f"label__{n}" for n in names]].to_numpy(int), scores


def read_predictions(folder: Path, cohort: Cohort, split: str = "test") -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """An evaluated run's predictions on `split`: `[N, K]` labels, `[N, K]` probabilities, `[N]` patient ids.

    A truncated or foreign file, or one without the contract's columns, is an InputError naming it.
    """
    path = predictions_file(folder, split)
    if not path.is_file():
        raise InputError(f"{path}: missing; run `clinfuse evaluate` again for this run")
    try:
        frame = pd.read_parquet(path)
    except Exception as exc:  # noqa: BLE001 - pyarrow raises several types for a damaged file
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
        raise InputError(f"{path}: not a readable Parquet file ({first}); run `clinfuse evaluate` again") from None
    names = cohort.label_names
    wanted = ["patient_id", *([f"prob__{n}" for n in names]),
              *(["label"] if cohort.task_type == "multiclass" else [f"label__{n}" for n in names])]
    missing = [c for c in wanted if c not in frame.columns]
    if missing:
        raise InputError(f"{path}: missing column(s) {missing[:3]}; expected the predictions of cohort {cohort.name}")
    y, p = labels_and_scores(frame, cohort)
    return y, p, frame["patient_id"].to_numpy()


# What every consumer of an evaluated run's metrics.json reads (report, register, analyze, summary)
_EVALUATION_KEYS = {"run": str, "cohort": str, "method": str, "seed": int, "labels": list, "n_test": int,
                    "test": dict, "validation": dict, "ci": dict}


def read_evaluation(path: Path) -> dict:
    """One evaluated run's metrics.json with its keys checked (`{}`, a truncated file, a missing
    headline: an InputError naming the file and the key)."""
    from .runs import read_json_record

    what = "the metrics.json clinfuse evaluate writes"
    record = read_json_record(Path(path), _EVALUATION_KEYS, what)
    headline = record["test"].get("headline")
    if not isinstance(headline, str) or headline not in record["test"]:
        raise InputError(f"{path}: test.headline: missing or not one of its test metrics; expected {what}")
    if "value" not in record["validation"]:
        raise InputError(f"{path}: validation.value: missing; expected {what}")
    return record


def load_evaluations(evals_dirs: list[Path]) -> list[dict]:
    """Evaluated runs from folders that are one (metrics.json) or hold several (*/metrics.json).

    Each run's dict is its metrics.json with `_dir`, the folder it was read from, added.
    """
    results = []
    paths = []
    for d in evals_dirs:
        paths += ([Path(d) / METRICS_FILE] if (Path(d) / METRICS_FILE).is_file()
                  else sorted(Path(d).glob(f"*/{METRICS_FILE}")))
    for path in paths:
        r = read_evaluation(path)
        r["_dir"] = path.parent
        results.append(r)
    if not results:
        raise InputError(f"{', '.join(map(str, evals_dirs))}: no evaluated runs (metrics.json); run `clinfuse evaluate` first")
    return results


def read_curves(folder: Path, kind: str) -> list[dict]:
    """An evaluated run's curve points, `kind` "pr" or "roc": records with `label` and the coordinates."""
    return json.loads((Path(folder) / f"curves_{kind}.json").read_text())


def read_analysis(folder: Path) -> tuple[dict, dict[str, bytes]] | None:
    """analysis.json and its figures (name -> PNG bytes) from an analysis folder, or None if absent."""
    path = Path(folder) / "analysis.json"
    if not path.is_file():
        return None
    data = read_json(path)
    return data, {n: (Path(folder) / "figures" / f"{n}.png").read_bytes() for n in data["figures"]}


def read_registry_record(folder: Path) -> dict | None:
    """What `clinfuse register` recorded in `<folder>/registry.json` (its first entry), or None."""
    path = Path(folder) / "registry.json"
    if not path.is_file():
        return None
    record = json.loads(path.read_text())
    return record[0] if isinstance(record, list) and record else record


def slug(text: str) -> str:
    """A label or figure title as a file-name stem: runs of other characters become "_" (at most 60)."""
    return re.sub(r"[^A-Za-z0-9]+", "_", text).strip("_")[:60]
