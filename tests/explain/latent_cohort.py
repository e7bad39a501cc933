"""A synthetic cohort drawn from the generator's latent model (etl/synth/latent.py), without the CSV/ETL round trip.

The same factors h ~ N(0, I_4), the same phenotype weights (`phenotype_weights`), the same vital-sign
ties (`etl.synth.mimic.VITALS` weights, GCS from h2) and the same films (`etl.synth.cxr.draw_chest`,
whose opacities follow h3 and heart size h1): only the charting detail (irregular times, units,
placeholders) that the ETL removes is left out, so a test can afford a cohort large enough to learn.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd

from clinfuse.etl.split import assign_patient_split
from clinfuse.etl.synth.cxr import draw_chest
from clinfuse.etl.synth.latent import phenotype_weights, sigmoid
from clinfuse.etl.synth.mimic import VITALS
from clinfuse.pipeline.settings.etl_mimic import MimicEtlSettings
from tests.fixtures.cohorts import fixture_manifest

CHANNELS = ["heart_rate", "dbp", "mbp", "sbp", "resp_rate", "temperature", "spo2", "glucose", "gcs_total",
            "gcs_motor", "gcs_verbal", "gcs_eye"]
GCS_WEIGHT = 0.9  # GCS severity = 0.9 h2 + noise (etl/synth/mimic.py)


def factor_ties() -> dict[str, np.ndarray]:
    """Variable -> its weights `[4]` on the factors (z-scored units): which factors the generator ties it to."""
    ties = {name: np.array(v.weights, float) / v.noise for name, v in VITALS.items()}
    for g in ("gcs_total", "gcs_motor", "gcs_verbal", "gcs_eye"):
        ties[g] = np.array([0.0, 0.0, -GCS_WEIGHT / 0.35, 0.0])
    return ties


def write_latent_cohort(path, n: int, labels: list[int], seed: int = 0, film: int = 32,
                        without_film: float = 0.3):
    """A phenotype cohort of `n` stays (one per patient) with the phenotypes `labels` (indices into the 25).

    Hourly EHR `[n, 48, 24]`: each variable = its ties . h + noise (z-scored), all observed.
    Films `[n, film, film]`; a `without_film` share of stays has none (zero film, has_cxr False),
    so the model learns what a missing film means.
    """
    rng = np.random.default_rng(seed)
    path.mkdir(parents=True, exist_ok=True)
    w, b = phenotype_weights(25)
    h = rng.normal(size=(n, 4))
    y = (rng.random((n, len(labels))) < sigmoid(b[labels] + h @ w[labels].T)).astype(np.int8)
    ties = factor_ties()
    ehr = np.zeros((n, 48, 24), np.float32)
    for c, name in enumerate(CHANNELS):
        signal = h @ ties[name]
        ehr[:, :, c] = (signal[:, None] + rng.normal(size=(n, 48))) / np.sqrt(1 + signal.var())
        ehr[:, :, 12 + c] = 1.0
    has_cxr = rng.random(n) >= without_film
    cxr = np.zeros((n, film, film), np.uint8)
    for i in np.flatnonzero(has_cxr):
        cxr[i] = draw_chest(rng, h[i], film, film, "AP")
    names = [f"phenotype_{k}" for k in labels]
    subjects = np.arange(n) + 1000
    samples = pd.DataFrame({"subject_id": subjects, "hadm_id": subjects * 10, "stay_id": subjects * 100,
                            "dicom_id": "d", "split": assign_patient_split(subjects, (0.7, 0.1, 0.2), seed=1),
                            "sex": np.where(np.arange(n) % 2, "M", "F"), "age": 60.0, "race": "WHITE",
                            "has_ehr": True, "has_cxr": has_cxr})
    for j, name in enumerate(names):
        samples[name] = y[:, j]
    np.save(path / "ehr.npy", ehr)
    np.save(path / "cxr.npy", cxr)
    samples.to_parquet(path / "samples.parquet", index=False)
    manifest = fixture_manifest("mimic", label_columns=names, ehr_channels=CHANNELS + [f"{c}_mask" for c in CHANNELS],
                                n_samples=n, config=MimicEtlSettings(cxr_size=film))
    (path / "manifest.json").write_text(json.dumps(manifest.to_json()))
    return path
