"""MIMIC ETL against a hand-written export (golden/input) and hand-derived expectations.

Stay 30000101 (intime 2150-01-01 10:00): HR 09:30 is before intime (dropped); HR 90 at
10:10 and 95 at 10:50 share bin 0 -> last value 95; HR 999999 at 11:05 is out of range
(bin 1 empty); HR 72 at +47h59m is bin 47 and HR 70 at exactly +48 h is outside the
window; 98.6 F -> 37.0 C; SpO2 0.97 -> 97; SBP: arterial 130 at 10:40 beats the later
non-invasive 125 (invasive first); GCS at 12:00 (bin 2) eye Spontaneously 4, verbal
No Response-ETT 1, motor Obeys Commands 6 -> total 11; GCS eye To Pain at 13:00 (bin 3)
alone gives no total; glucose "ERROR" has no value. Stay 30000201 (intime 08:00): RR 20
in bin 0, 38.5 C in bin 1, HR -5 out of range. Patient 3 is 16; admission 20000041 has
two ICU stays. The CHF code 4280 given with icd_version 10 must not match.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from etl.errors import InputError
from etl.mimic.cohort import join_stays, select_cohort
from etl.mimic.ehr import connect, derive_totals, extract_ehr_values, load_variables
from etl.mimic.schema import locate_tables
from pipeline.cli import main
from pipeline.settings.etl_mimic import MimicEtlSettings
from pipeline.stages.etl_mimic import build_mimic_cohort, read_small_tables

GOLDEN = Path(__file__).parent / "golden"
EXPECTED = json.loads((GOLDEN / "expected.json").read_text())
SETTINGS = MimicEtlSettings(workers=1, threads=1, memory_limit="256MB", cxr_size=8)


@pytest.fixture()
def raw(tmp_path):
    dst = tmp_path / "raw"
    shutil.copytree(GOLDEN / "input", dst)
    return dst


def build(raw, task, out, settings=SETTINGS):
    return build_mimic_cohort(raw / "mimic-iv", raw / "mimic-cxr-jpg", raw / "mimic-cxr-jpg", task, out, settings)


def test_binned_ehr_matches_hand_computation():
    tables = locate_tables(GOLDEN / "input" / "mimic-iv")
    stays, _ = select_cohort(join_stays(*read_small_tables(tables)), "phenotype")
    variables = load_variables()
    ids = EXPECTED["raw_ehr"]["stay_ids"]
    stays = stays.set_index("stay_id").loc[ids].reset_index()
    values, counts = extract_ehr_values(connect("256MB", 1), tables["icu/chartevents"], stays, variables)
    raw = derive_totals(values, variables)
    expected = np.full_like(raw, np.nan)
    for stay, hour, name, value in EXPECTED["raw_ehr"]["observed"]:
        expected[ids.index(stay), hour, variables.names.index(name)] = value
    np.testing.assert_allclose(raw, expected, atol=1e-4, equal_nan=True)
    by = counts.set_index("channel")
    assert by.loc["heart_rate", "out_of_range"] == 2  # 999999 and -5
    assert by.loc["glucose", "no_value"] == 1  # "ERROR"


def test_phenotype_cohort_labels_pairing_and_exclusions(raw, tmp_path):
    out = tmp_path / "pheno"
    build(raw, "phenotype", out)
    samples = pd.read_parquet(out / "samples.parquet")
    manifest = json.loads((out / "manifest.json").read_text())
    exp = EXPECTED["phenotype"]
    assert samples["stay_id"].tolist() == exp["stays"]
    assert samples["dicom_id"].tolist() == exp["dicom_id"]
    for stay, positives in exp["positive"].items():
        row = samples[samples["stay_id"] == int(stay)].iloc[0]
        assert sorted(n for n in manifest["label_columns"] if row[n] == 1) == sorted(positives)
    got = {e["reason"]: e["excluded"] for e in manifest["exclusions"][1:]}
    assert got == exp["exclusions"]
    assert len(manifest["label_columns"]) == 25 and manifest["task_type"] == "multilabel"
    ehr = np.load(out / "ehr.npy")
    assert ehr.shape == (2, 48, 24) and ehr.dtype == np.float32
    assert not np.isnan(ehr).any()
    assert manifest["ehr_channels"][:3] == ["heart_rate", "dbp", "mbp"] and manifest["ehr_channels"][12] == "heart_rate_mask"
    assert np.load(out / "cxr.npy").shape == (2, 8, 8)


def test_mortality_cohort_uses_dod_date_and_drops_short_stays(raw, tmp_path):
    out = tmp_path / "mort"
    build(raw, "mortality", out)
    samples = pd.read_parquet(out / "samples.parquet")
    assert samples["stay_id"].tolist() == EXPECTED["mortality"]["stays"]
    assert samples["in_hospital_mortality"].tolist() == EXPECTED["mortality"]["in_hospital_mortality"]
    got = {e["reason"]: e["excluded"] for e in json.loads((out / "manifest.json").read_text())["exclusions"]}
    assert got["ICU stay shorter than 48 h"] == EXPECTED["mortality"]["exclusions"]["ICU stay shorter than 48 h"]


def test_masks_mark_observed_hours_and_values_are_train_normalised(raw, tmp_path):
    out = tmp_path / "pheno"
    build(raw, "phenotype", out)
    ehr = np.load(out / "ehr.npy")
    samples = pd.read_parquet(out / "samples.parquet")
    stats = json.loads((out / "ehr_stats.json").read_text())
    row = samples.index[samples["stay_id"] == 30000101][0]
    assert ehr[row, 0, 12] == 1 and ehr[row, 1, 12] == 0 and ehr[row, 47, 12] == 1
    # forward fill: hour 1 carries hour 0's heart rate 95, z-scored with training stats
    hr = stats["heart_rate"]
    assert ehr[row, 1, 0] == pytest.approx((95 - hr["mean"]) / hr["std"], abs=1e-5)


def test_split_has_no_subject_in_two_parts_and_stats_come_from_train_only(tmp_path):
    raw = tmp_path / "raw"
    assert main(["synth", "--out", str(raw), "--subjects", "80", "--only", "mimic"]) == 0
    out = tmp_path / "cohort"
    build(raw, "phenotype", out, MimicEtlSettings(workers=1, cxr_size=8, require_cxr=False))
    samples = pd.read_parquet(out / "samples.parquet")
    assert (samples.groupby("subject_id")["split"].nunique() == 1).all()
    assert set(samples["split"]) == {"train", "val", "test"}
    # recompute training statistics from the un-normalised tensor: they must match the stats file,
    # and must differ from statistics over all rows (so test rows did not leak in)
    tables = locate_tables(raw / "mimic-iv")
    variables = load_variables()
    intime = pd.read_csv(tables["icu/icustays"], usecols=["stay_id", "intime"], parse_dates=["intime"])
    stays = samples[["stay_id"]].merge(intime, on="stay_id")
    values, _ = extract_ehr_values(connect("512MB", 1), tables["icu/chartevents"], stays, variables)
    values = derive_totals(values, variables)
    stats = json.loads((out / "ehr_stats.json").read_text())
    train = values[samples["split"].to_numpy() == "train", :, 0]
    assert stats["heart_rate"]["mean"] == pytest.approx(float(np.nanmean(train)), rel=1e-6)
    assert stats["heart_rate"]["mean"] != pytest.approx(float(np.nanmean(values[..., 0])), rel=1e-9)


def test_missing_file_names_the_file(raw, tmp_path):
    (raw / "mimic-iv/icu/chartevents.csv").unlink()
    with pytest.raises(InputError, match=r"icu/chartevents\.csv\.gz: missing"):
        build(raw, "phenotype", tmp_path / "o")


def test_renamed_column_names_file_and_column(raw, tmp_path):
    p = raw / "mimic-iv/icu/icustays.csv"
    p.write_text(p.read_text().replace("intime", "in_time", 1))
    with pytest.raises(InputError, match=r"icustays\.csv: missing column\(s\) \['intime'\]"):
        build(raw, "phenotype", tmp_path / "o")


def test_v1_layout_is_refused_clearly(raw, tmp_path):
    (raw / "mimic-iv/core").mkdir()
    with pytest.raises(InputError, match="v1.0 export .* supports v2.2 and later"):
        build(raw, "phenotype", tmp_path / "o")


def test_v1_ethnicity_column_is_refused_clearly(raw, tmp_path):
    p = raw / "mimic-iv/hosp/admissions.csv"
    p.write_text(p.read_text().replace(",race,", ",ethnicity,", 1))
    with pytest.raises(InputError, match="ethnicity"):
        build(raw, "phenotype", tmp_path / "o")


def test_absent_and_truncated_films_are_counted_and_dropped(raw, tmp_path):
    films = sorted((raw / "mimic-cxr-jpg/files").rglob("*.jpg"))
    by_name = {p.stem: p for p in films}
    by_name["bbbb0002"].unlink()  # referenced in metadata, absent
    data = by_name["ffff0006"].read_bytes()
    by_name["ffff0006"].write_bytes(data[: len(data) // 3])  # truncated
    with pytest.raises(InputError, match="cohort is empty"), pytest.warns(UserWarning, match="unreadable chest film"):
        build(raw, "phenotype", tmp_path / "o")
    out = tmp_path / "kept"
    with pytest.warns(UserWarning, match="unreadable chest film"):
        build(raw, "phenotype", out, MimicEtlSettings(workers=1, cxr_size=8, require_cxr=False))
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["cxr"]["unreadable"] == 2
    samples = pd.read_parquet(out / "samples.parquet")
    assert not samples["has_cxr"].any() and len(samples) == 2
    assert np.load(out / "cxr.npy").max() == 0


def test_failed_run_leaves_previous_output_untouched(raw, tmp_path):
    out = tmp_path / "pheno"
    build(raw, "phenotype", out)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    (raw / "mimic-iv/hosp/diagnoses_icd.csv").write_text("garbage\n")
    with pytest.raises(InputError):
        build(raw, "phenotype", out)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before


def test_cli_reports_bad_input_in_one_line(raw, tmp_path, capsys):
    (raw / "mimic-iv/core").mkdir()
    code = main(["etl", "mimic", "--task", "mortality", "--mimic-iv", str(raw / "mimic-iv"),
                 "--mimic-cxr", str(raw / "mimic-cxr-jpg"), "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("clinfuse etl: error:") and err.count("\n") == 1


def test_same_inputs_give_identical_cohort_arrays_and_split(raw, tmp_path):
    build(raw, "phenotype", tmp_path / "a")
    build(raw, "phenotype", tmp_path / "b")
    for name in ("ehr.npy", "cxr.npy", "samples.parquet", "ehr_stats.json"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name


def test_partial_flag_keeps_a_stay_whose_film_is_missing_as_an_ehr_only_stay(raw, tmp_path):
    next((raw / "mimic-cxr-jpg/files").rglob("ffff0006.jpg")).unlink()
    params = tmp_path / "params.yaml"
    params.write_text("etl_mimic: {cxr_size: 8, workers: 1, threads: 1, memory_limit: 256MB}\n")
    out = tmp_path / "partial"
    with pytest.warns(UserWarning, match="unreadable chest film"):
        assert main(["--params", str(params), "etl", "mimic", "--partial", "--task", "phenotype",
                     "--mimic-iv", str(raw / "mimic-iv"), "--mimic-cxr", str(raw / "mimic-cxr-jpg"),
                     "--out", str(out)]) == 0
    samples = pd.read_parquet(out / "samples.parquet")
    assert len(samples) == 2 and samples["has_cxr"].sum() == 1
    assert np.load(out / "cxr.npy")[~samples["has_cxr"].to_numpy()].max() == 0
    assert json.loads((out / "manifest.json").read_text())["config"]["require_cxr"] is False
