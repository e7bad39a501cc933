"""A typed check of the files of a processed cohort, and the warnings a cohort deserves.

`load_cohort` (pipeline/data.py) reads manifest.json through its pydantic model; the other files
are checked here against it before any stage uses them, so that a damaged or hand-edited cohort
is one line naming the file (and the row or column) instead of a run that trains on it:
  - samples.parquet and `<modality>.npy` must open (a truncated file is named, not a traceback);
  - the arrays have the dtype the ETL writes (float32 features, uint8 images) and the shape the
    manifest describes (EHR hours and channels, tabular features, image size), one row per sample;
  - `split` holds exactly train / val / test with each patient in one split, labels are 0/1 (binary, multilabel) or a class
    index (multiclass), `has_<modality>` is boolean, feature arrays are finite.

`cohort_warnings` lists what is legal but makes results weak or undefined (one class, a split
without positives, no validation split, a modality absent everywhere): the ETL stages write it
into manifest.json and `clinfuse train` prints it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from clinfuse.etl.errors import InputError

SPLITS = ("train", "val", "test")
FEATURE_DTYPE = {"ehr": np.float32, "tabular": np.float32}
IMAGE_DTYPE = np.uint8
CHUNK_ROWS = 4096  # finiteness is checked in chunks: a memory-mapped array is never read whole at once


def read_samples(path: Path) -> pd.DataFrame:
    """samples.parquet, or an InputError naming it when it is truncated or not Parquet."""
    try:
        return pd.read_parquet(path)
    except Exception as exc:  # pyarrow raises ArrowInvalid, OSError or its own errors for damaged files
        raise InputError(f"{path}: not a readable Parquet file (truncated or corrupt: "
                         f"{' '.join(str(exc).split())[:200]}); re-run the ETL stage") from None


def read_array(path: Path) -> np.ndarray:
    """A memory-mapped `.npy` array, or an InputError naming it (truncated, not .npy, or holding objects)."""
    try:
        return np.load(path, mmap_mode="r", allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        raise InputError(f"{path}: not a readable .npy array (truncated or corrupt: "
                         f"{' '.join(str(exc).split())[:200]}); re-run the ETL stage") from None


def _expected_shape(modality: str, manifest) -> tuple[int | None, ...] | None:
    """Per-sample shape the manifest promises (None where it says nothing)."""
    config = manifest.config
    if modality == "ehr":
        return (getattr(config, "window_hours", None), len(manifest.ehr_channels or []) or None)
    if modality == "tabular":
        return (len(manifest.tabular_features or []),)
    if modality == "cxr":
        size = manifest.cxr.size if manifest.cxr is not None else getattr(config, "cxr_size", None)
        return (size, size)
    if modality == "mri":
        size = manifest.mri.size if manifest.mri is not None else getattr(config, "mri_size", None)
        return (size, size, size)
    return None


def check_array(path: Path, array: np.ndarray, modality: str, manifest, n_samples: int) -> None:
    """dtype, shape and finiteness of one modality's array against the manifest; InputError naming the file."""
    image = modality in ("cxr", "mri")
    want = IMAGE_DTYPE if image else FEATURE_DTYPE.get(modality)
    if want is not None and array.dtype != want:
        raise InputError(f"{path}: dtype {array.dtype}, expected {np.dtype(want)} (as the ETL writes it); "
                         "re-run the ETL stage rather than converting the file")
    if array.shape[0] != n_samples:
        raise InputError(f"{path}: has {array.shape[0]} rows but samples.parquet has {n_samples}; "
                         "row i of every array must be row i of samples.parquet")
    shape = _expected_shape(modality, manifest)
    if shape is not None:
        got = tuple(array.shape[1:])
        if len(got) != len(shape) or any(w is not None and g != w for g, w in zip(got, shape, strict=False)):
            promised = "[N, " + ", ".join("?" if w is None else str(w) for w in shape) + "]"
            raise InputError(f"{path}: shape {list(array.shape)}, but manifest.json describes {promised} "
                             f"({_shape_source(modality)})")
    if not image and np.issubdtype(array.dtype, np.floating):
        for start in range(0, array.shape[0], CHUNK_ROWS):
            finite = np.isfinite(array[start:start + CHUNK_ROWS]).reshape(min(CHUNK_ROWS, array.shape[0] - start), -1)
            bad = np.flatnonzero(~finite.all(axis=1))
            if len(bad):
                raise InputError(f"{path}: row {start + int(bad[0])} holds NaN or inf; the ETL writes finite, "
                                 "imputed features")


def _shape_source(modality: str) -> str:
    return {"ehr": "config.window_hours hours x ehr_channels", "tabular": "tabular_features",
            "cxr": "cxr.size", "mri": "mri.size"}[modality]


def _first(mask: np.ndarray) -> int:
    return int(np.flatnonzero(mask)[0])


def _shown(value) -> str:
    """A cell as a reader would write it: -1, not np.int8(-1)."""
    return repr(value.item() if isinstance(value, np.generic) else value)


def check_samples(path: Path, samples: pd.DataFrame, manifest) -> None:
    """Row count, split values, labels and presence flags of samples.parquet; InputError naming row and column.

    Rows are numbered from 0, as pandas shows them (`pd.read_parquet(...).iloc[i]`).
    """
    if len(samples) != manifest.n_samples:
        raise InputError(f"{path}: has {len(samples)} rows but manifest.json n_samples is {manifest.n_samples}")
    split = samples["split"].astype(object).to_numpy()
    bad = ~np.isin(split, SPLITS)
    if bad.any():
        i = _first(bad)
        raise InputError(f"{path}: row {i}, column split: {_shown(split[i])} is not one of {', '.join(SPLITS)} "
                         "(exactly, lower case)")
    patients = samples[manifest.patient_column].to_numpy()
    per_patient = pd.Series(split).groupby(patients, sort=False).nunique()
    leaking = per_patient.index[per_patient.to_numpy() > 1]
    if len(leaking):  # one patient in two splits: test rows would share a patient with training rows
        rows = np.flatnonzero(patients == leaking[0])
        first, other = rows[0], rows[split[rows] != split[rows[0]]][0]
        raise InputError(f"{path}: rows {first} and {other}, column {manifest.patient_column}: patient "
                         f"{_shown(leaking[0])} is in the {split[first]} and {split[other]} splits; splits must "
                         "be by patient")
    for column in manifest.label_columns:
        values = pd.to_numeric(samples[column], errors="coerce").to_numpy(dtype=float)
        if manifest.task_type == "multiclass":
            k = len(manifest.class_names or [])
            bad = ~np.isfinite(values) | (values != np.round(values)) | (values < 0) | (values >= k)
            expected = f"a class index 0-{k - 1} ({', '.join(manifest.class_names or [])})"
        else:
            bad = ~np.isin(values, (0.0, 1.0))
            expected = f"0 or 1 (a {manifest.task_type} label)"
        if bad.any():
            i = _first(bad)
            raise InputError(f"{path}: row {i}, column {column}: {_shown(samples[column].iloc[i])} is not {expected}")
    for modality in manifest.modalities:
        column = f"has_{modality}"
        flags = samples[column]
        if flags.dtype != bool:
            values = pd.to_numeric(flags, errors="coerce").to_numpy(dtype=float)
            bad = ~np.isin(values, (0.0, 1.0))
            if bad.any():
                i = _first(bad)
                raise InputError(f"{path}: row {i}, column {column}: {_shown(flags.iloc[i])} is not a presence flag "
                                 "(true/false)")


def cohort_warnings(samples: pd.DataFrame, manifest) -> list[str]:
    """What is legal in a cohort but leaves a result weak or undefined, one sentence each.

    One class in the whole cohort; a split without a positive (binary, multilabel) or without a
    class (multiclass); no validation split (no epoch can be chosen on a score: the trainer keeps
    the last one); no test split; a modality absent from every sample.
    """
    out = []
    split = samples["split"].to_numpy()
    if manifest.task_type == "multiclass":
        names = list(manifest.class_names or [])
        labels = samples[manifest.label_columns[0]].to_numpy()
        absent = [names[k] for k in range(len(names)) if not (labels == k).any()]
        if len(absent) >= len(names) - 1:
            out.append(f"one class only: the cohort has no sample of {', '.join(absent)}")
        elif absent:
            out.append(f"class(es) {', '.join(absent)} have no sample in the cohort")
        for name in SPLITS:
            rows = split == name
            missing = [names[k] for k in range(len(names)) if rows.any() and not (labels[rows] == k).any()]
            if missing and len(missing) < len(names) and set(missing) - set(absent):
                out.append(f"the {name} split has no sample of class(es) {', '.join(missing)}: per-class "
                           "metrics for them are undefined there")
    else:
        labels = samples[manifest.label_columns].to_numpy(dtype=float)
        constant = [c for k, c in enumerate(manifest.label_columns) if np.unique(labels[:, k]).size < 2]
        if constant:
            out.append(f"one class only: label(s) {_names(constant)} take a single value in the whole cohort")
        for name in SPLITS:
            rows = split == name
            if not rows.any():
                continue
            none = [c for k, c in enumerate(manifest.label_columns) if not (labels[rows, k] == 1).any()]
            if none:
                why = ("the model never sees one" if name == "train" else "AUROC and AUPRC are undefined for them there")
                out.append(f"the {name} split has no positive for {len(none)} of {len(manifest.label_columns)} "
                           f"label(s) ({_names(none)}): {why}")
    if not (split == "val").any():
        out.append("no validation split: no epoch can be chosen on a validation score, so training runs "
                   "every epoch (no early stopping) and keeps the last one")
    if not (split == "test").any():
        out.append("no test split: evaluate has no sample to score")
    for modality in manifest.modalities:
        column = f"has_{modality}"
        if column in samples.columns and not samples[column].astype(bool).any():
            out.append(f"modality {modality} is absent from every sample (has_{modality} is false everywhere): "
                       "models see only the other modalities")
    return out


def _names(names: list[str], shown: int = 5) -> str:
    return ", ".join(names[:shown]) + (f" and {len(names) - shown} more" if len(names) > shown else "")
