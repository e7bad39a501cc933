"""The generator's latent factors reach a cohort only from a marked synthetic export, never a real one."""

from __future__ import annotations

import json
import shutil
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from clinfuse.etl.errors import InputError
from clinfuse.etl.provenance import write_synthetic_marker
from clinfuse.etl.synth.factors import FACTORS_FILE, LABEL_MODEL_FILE, label_model
from clinfuse.etl.synth.latent import mortality_logit, phenotype_weights
from clinfuse.etl.synth.mimic import load_phenotype_codes
from clinfuse.pipeline.settings.etl_mimic import MimicEtlSettings
from clinfuse.pipeline.stages.etl_mimic import SYNTHETIC_FACTORS, SYNTHETIC_LABEL_MODEL, build_mimic_cohort

GOLDEN = Path(__file__).parent / "golden" / "input"
SETTINGS = MimicEtlSettings(workers=1, threads=1, memory_limit="256MB", cxr_size=8)


def _build(raw: Path, out: Path):
    build_mimic_cohort(raw / "mimic-iv", raw / "mimic-cxr-jpg", raw / "mimic-cxr-jpg", "mortality", out, SETTINGS)
    return pd.read_parquet(out / "samples.parquet")


def _plant_factors(mimic_iv: Path) -> pd.DataFrame:
    """Factor files as the synthetic export writes them, for every stay of the export."""
    stays = pd.read_csv(mimic_iv / "icu" / "icustays.csv")
    frame = stays[["subject_id", "hadm_id", "stay_id"]].copy()
    for k in range(4):
        frame[f"h{k}"] = np.arange(len(frame)) + k / 10
    frame.to_csv(mimic_iv / FACTORS_FILE, index=False)
    (mimic_iv / LABEL_MODEL_FILE).write_text(json.dumps(label_model(load_phenotype_codes()[0])))
    return frame.set_index("stay_id")


@pytest.fixture()
def raw(tmp_path):
    dst = tmp_path / "raw"
    shutil.copytree(GOLDEN, dst)
    return dst


def test_a_real_layout_export_without_the_marker_yields_no_factors_even_with_factor_files(raw, tmp_path):
    _plant_factors(raw / "mimic-iv")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        _build(raw, tmp_path / "cohort")
    assert not (tmp_path / "cohort" / f"{SYNTHETIC_FACTORS}.npy").exists()
    assert not (tmp_path / "cohort" / SYNTHETIC_LABEL_MODEL).exists()
    assert any("kept for synthetic exports only" in str(w.message) for w in caught)


def test_a_marked_export_copies_each_stays_factors_in_sample_order(raw, tmp_path):
    table = _plant_factors(raw / "mimic-iv")
    write_synthetic_marker(raw / "mimic-iv", "mimic-iv", 0)
    samples = _build(raw, tmp_path / "cohort")
    factors = np.load(tmp_path / "cohort" / f"{SYNTHETIC_FACTORS}.npy")
    assert factors.shape == (len(samples), 4)
    assert np.array_equal(factors, table.loc[samples["stay_id"], ["h0", "h1", "h2", "h3"]].to_numpy())
    model = json.loads((tmp_path / "cohort" / SYNTHETIC_LABEL_MODEL).read_text())
    assert list(model["labels"]) == ["in_hospital_mortality"] and model["synthetic"] is True


def test_a_marked_export_whose_factors_miss_a_cohort_stay_is_refused_naming_the_file(raw, tmp_path):
    table = _plant_factors(raw / "mimic-iv")
    table.iloc[1:].reset_index().to_csv(raw / "mimic-iv" / FACTORS_FILE, index=False)
    write_synthetic_marker(raw / "mimic-iv", "mimic-iv", 0)
    with pytest.raises(InputError, match=FACTORS_FILE):
        _build(raw, tmp_path / "cohort")
    assert not (tmp_path / "cohort").exists()


def test_the_exported_label_model_is_the_generators():
    names = load_phenotype_codes()[0]
    model = label_model(names)
    w, b = phenotype_weights(len(names))
    assert model["labels"][names[4]] == {"bias": b[4], "weights": list(w[4])}
    h = np.array([[0.3, -1.0, 2.0, 0.5]])
    m = model["labels"]["in_hospital_mortality"]
    assert m["bias"] + np.dot(m["weights"], h[0]) == pytest.approx(mortality_logit(h)[0])
    assert model["visible"] == {"ehr": [0, 1, 2], "cxr": [1, 3]}
