"""The generator's latent factors, kept beside a synthetic export so that its known answer can be scored.

A synthetic MIMIC-IV export (`clinfuse synth`) draws four factors h0..h3 per admission
(latent.py); the labels are logistic in them and the EHR and the chest film each see a
subset. The export writes, next to its CLINFUSE_SYNTHETIC.json marker:

  CLINFUSE_SYNTHETIC_factors.csv.gz       one row per ICU stay: subject_id, hadm_id, stay_id, h0..h3
  CLINFUSE_SYNTHETIC_label_model.json     per label: bias and weights of its logit; which factors
                                          each modality sees

The MIMIC ETL copies them into a cohort only when the export carries the marker
(`read_export_factors`): a real export never has them, and a factors file in an unmarked
folder is ignored (and said so), so no real cohort ever holds generator factors.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from clinfuse.etl.errors import InputError
from clinfuse.etl.provenance import synthetic_marker

from .csvgz import GzipCsvWriter
from .latent import N_FACTORS, mortality_logit, phenotype_weights

FACTORS_FILE = "CLINFUSE_SYNTHETIC_factors.csv.gz"
LABEL_MODEL_FILE = "CLINFUSE_SYNTHETIC_label_model.json"
FACTOR_COLUMNS = [f"h{k}" for k in range(N_FACTORS)]
ID_COLUMNS = ["subject_id", "hadm_id", "stay_id"]
# Which factors each modality carries (latent.py, mimic.py's VITALS/GCS and cxr.py's draw_chest):
# the EHR charts h0 (haemodynamics), h1 (resp. rate, SpO2) and h2 (GCS, glucose, temperature);
# the film draws the heart's width from h1 and the opacities from h3.
VISIBLE = {"ehr": [0, 1, 2], "cxr": [1, 3]}


def factor_writer(out_dir: Path, compresslevel: int = 6) -> GzipCsvWriter:
    """A streaming writer of the per-stay factors file (`write(chunk.stays)` per chunk)."""
    return GzipCsvWriter(Path(out_dir) / FACTORS_FILE, ID_COLUMNS + FACTOR_COLUMNS, compresslevel)


def write_stay_factors(writer: GzipCsvWriter, stays: pd.DataFrame) -> None:
    """Append the stays `[subject_id, hadm_id, stay_id, h0..h3, ...]` of one chunk."""
    writer.write(stays[ID_COLUMNS + FACTOR_COLUMNS])


def label_model(phenotype_names: list[str]) -> dict:
    """The generator's label model as plain JSON: logistic labels in the factors."""
    w, b = phenotype_weights(len(phenotype_names))
    eye = np.eye(N_FACTORS)
    # mortality_logit is affine: read its bias and weights off the origin and the unit vectors
    m_bias = float(mortality_logit(np.zeros((1, N_FACTORS)))[0])
    m_weights = (mortality_logit(eye) - m_bias).tolist()
    labels = {name: {"bias": float(b[k]), "weights": [float(v) for v in w[k]]}
              for k, name in enumerate(phenotype_names)}
    labels["in_hospital_mortality"] = {"bias": m_bias, "weights": [float(v) for v in m_weights]}
    return {"synthetic": True, "link": "logistic", "factors": FACTOR_COLUMNS, "visible": VISIBLE,
            "labels": labels,
            "note": "P(label = 1 | h) = sigmoid(bias + weights . h), h ~ N(0, I) per admission "
                    "(clinfuse.etl.synth.latent); written by `clinfuse synth`, never part of a real export"}


def write_label_model(out_dir: Path, phenotype_names: list[str]) -> Path:
    path = Path(out_dir) / LABEL_MODEL_FILE
    path.write_text(json.dumps(label_model(phenotype_names), indent=1) + "\n")
    return path


def read_export_factors(mimic_iv: Path, stay_ids: np.ndarray, label_columns: list[str]) -> tuple[dict, np.ndarray] | None:
    """The label model and the factors `[N, 4]` of `stay_ids`, from a MARKED synthetic export; else None.

    None when the export carries no CLINFUSE_SYNTHETIC.json marker (a real export: factor files
    there are ignored, with a warning) or no factor files (an export written before they existed).
    Raises InputError naming the file when a marked export's factor files are malformed or miss a
    stay or a label of the cohort.
    """
    mimic_iv = Path(mimic_iv)
    files = (mimic_iv / FACTORS_FILE, mimic_iv / LABEL_MODEL_FILE)
    if synthetic_marker(mimic_iv) is None:
        if any(f.exists() for f in files):
            import warnings

            warnings.warn(f"{mimic_iv}: has {FACTORS_FILE} / {LABEL_MODEL_FILE} but no CLINFUSE_SYNTHETIC.json "
                          "marker; latent factors are kept for synthetic exports only and were ignored", stacklevel=1)
        return None
    if not all(f.is_file() for f in files):
        return None
    try:
        model = json.loads(files[1].read_text())
        labels = model["labels"]
        visible = {m: [int(i) for i in v] for m, v in model["visible"].items()}
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise InputError(f"{files[1]}: not a label model written by clinfuse synth ({exc})") from None
    missing = [c for c in label_columns if c not in labels]
    if missing:
        raise InputError(f"{files[1]}: no label model for cohort label(s) {missing[:3]}")
    try:
        table = pd.read_csv(files[0], usecols=["stay_id", *FACTOR_COLUMNS])
    except (OSError, ValueError) as exc:
        raise InputError(f"{files[0]}: expected columns stay_id, {', '.join(FACTOR_COLUMNS)} ({exc})") from None
    table = table.drop_duplicates("stay_id").set_index("stay_id")
    absent = np.setdiff1d(np.asarray(stay_ids), table.index.to_numpy())
    if len(absent):
        raise InputError(f"{files[0]}: no factors for {len(absent)} cohort stay(s), e.g. stay_id {int(absent[0])}")
    factors = table.loc[np.asarray(stay_ids), FACTOR_COLUMNS].to_numpy(dtype=np.float64)
    cohort_model = {"synthetic": True, "link": model.get("link", "logistic"), "factors": FACTOR_COLUMNS,
                    "visible": visible, "labels": {c: labels[c] for c in label_columns},
                    "source": f"{FACTORS_FILE}, {LABEL_MODEL_FILE}"}
    return cohort_model, factors
