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

import importlib.util
import json
import shutil
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from clinfuse.etl.errors import InputError
from clinfuse.etl.mimic.cohort import join_stays, select_cohort
from clinfuse.etl.mimic.ehr import connect, derive_totals, extract_ehr_values, load_variables
from clinfuse.etl.mimic.schema import locate_tables
from clinfuse.etl.mimic.tables import read_small_tables
from clinfuse.pipeline.cli import main
from clinfuse.pipeline.data import load_cohort
from clinfuse.pipeline.manifest import SCHEMA_VERSION
from clinfuse.pipeline.settings.etl_mimic import MimicEtlSettings
from clinfuse.pipeline.stages.etl_mimic import build_mimic_cohort

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
    stays, _ = select_cohort(join_stays(*read_small_tables(tables)[:3]), "phenotype", SETTINGS.min_age,
                             SETTINGS.min_stay_hours)
    variables = load_variables()
    ids = EXPECTED["raw_ehr"]["stay_ids"]
    stays = stays.set_index("stay_id").loc[ids].reset_index()
    values, counts = extract_ehr_values(connect("256MB", 1), tables["icu/chartevents"], stays, variables,
                                        SETTINGS.window_hours)
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
    assert manifest["phenotype_icd10_rules"]["backward_majority"]["with_benchmark_phenotype"] > 0
    assert manifest["synthetic"] is False  # the hand-written golden export has no generator marker
    ehr = np.load(out / "ehr.npy")
    assert ehr.shape == (2, 48, 24) and ehr.dtype == np.float32
    assert not np.isnan(ehr).any()
    assert manifest["ehr_channels"][:3] == ["heart_rate", "dbp", "mbp"] and manifest["ehr_channels"][12] == "heart_rate_mask"
    assert np.load(out / "cxr.npy").shape == (2, 8, 8)
    # what the later stages read from the manifest, stated from the settings used
    assert manifest["schema_version"] == SCHEMA_VERSION
    assert manifest["title"] == "MIMIC-IV ICU phenotyping (25 CCS groups)"
    assert manifest["id_columns"] == ["subject_id", "hadm_id", "stay_id", "dicom_id"]
    assert manifest["id_columns"] == list(samples.columns[:4])
    assert "first 48 h" in manifest["input_descriptions"]["ehr"] and "12 variables" in manifest["input_descriptions"]["ehr"]
    assert "centre cropped to 8 px" in manifest["input_descriptions"]["cxr"]
    assert load_cohort(out).manifest.config == SETTINGS


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
    values, _ = extract_ehr_values(connect("512MB", 1), tables["icu/chartevents"], stays, variables,
                                   SETTINGS.window_hours)
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


def _append_chart_rows(raw, rows):
    path = raw / "mimic-iv/icu/chartevents.csv"
    with path.open("a") as fh:
        for stay_time_item_value in rows:
            stay, time, itemid, value, unit = stay_time_item_value
            subject, hadm = {30000101: (10000001, 20000011), 30000201: (10000002, 20000021)}[stay]
            fh.write(f"{subject},{hadm},{stay},1,{time},,{itemid},{value},{value},{unit},0\n")
    return path


@pytest.mark.parametrize("rows,expected", [
    # Celsius first, Fahrenheit last in the hour: the later 100.4 F = 38.0 C wins (it used to lose to 37.2 C)
    ([("2150-01-01 10:05:00", 223762, 37.2, "°C"), ("2150-01-01 10:40:00", 223761, 100.4, "°F")], 38.0),
    # and the other way round
    ([("2150-01-01 10:05:00", 223761, 100.4, "°F"), ("2150-01-01 10:40:00", 223762, 37.2, "°C")], 37.2),
])
def test_temperature_is_the_last_reading_of_the_hour_whatever_its_unit(raw, rows, expected):
    # stay 30000201 (intime 08:00): hour 2 has no temperature in the golden export
    chartevents = _append_chart_rows(raw, [(30000201, *r) for r in rows])
    variables = load_variables()
    stays = pd.DataFrame({"stay_id": [30000201], "intime": pd.to_datetime(["2150-01-01 08:00:00"])})
    values, _ = extract_ehr_values(connect("256MB", 1), chartevents, stays, variables, SETTINGS.window_hours)
    assert values[0, 2, variables.names.index("temperature")] == pytest.approx(expected, abs=1e-4)


def test_intubated_verbal_response_scores_one_and_counts_in_the_total():
    # "No Response-ETT" = 1 (CareVue's "1.0 ET/Trach" score; mimic3-benchmarks keeps it beside "1 No Response"),
    # not mimic-code's 0-and-total-15: eye 4 + verbal 1 + motor 6 = 11 at 12:00 for stay 30000101
    variables = load_variables()
    tables = locate_tables(GOLDEN / "input" / "mimic-iv")
    stays = pd.DataFrame({"stay_id": [30000101], "intime": pd.to_datetime(["2150-01-01 10:00:00"])})
    values, _ = extract_ehr_values(connect("256MB", 1), tables["icu/chartevents"], stays, variables,
                                   SETTINGS.window_hours)
    hour2 = dict(zip(variables.names, derive_totals(values, variables)[0, 2], strict=True))
    assert (hour2["gcs_eye"], hour2["gcs_verbal"], hour2["gcs_motor"], hour2["gcs_total"]) == (4, 1, 6, 11)


def test_a_channel_never_observed_in_training_never_reaches_the_tensor_in_raw_units(raw, tmp_path):
    # golden: no glucose anywhere ("ERROR" only); add glucose 140 mg/dL to one stay, and put every
    # stay in training except that one, so training has no glucose at all
    _append_chart_rows(raw, [(30000201, "2150-01-01 09:30:00", 220621, 140, "mg/dL")])
    settings = MimicEtlSettings(workers=1, threads=1, memory_limit="256MB", cxr_size=8)
    out = tmp_path / "pheno"
    from unittest import mock

    def split(subjects, fractions, seed):  # subject 10000002 (stay 30000201) is the only test patient
        return pd.Series(np.where(subjects.to_numpy() == 10000002, "test", "train"), index=subjects.index)

    with mock.patch("clinfuse.pipeline.stages.etl_mimic.assign_patient_split", split), \
            pytest.warns(UserWarning, match=r"4 EHR channel\(s\) have no observation in the training split "
                                            r"\(dbp, mbp, resp_rate, glucose\)"):
        build(raw, "phenotype", out, settings)
    manifest = json.loads((out / "manifest.json").read_text())
    # the training stay (30000101) has no diastolic/mean pressure, respiratory rate or glucose either
    assert manifest["ehr_unobserved_in_training"] == {"count": 4, "channels": ["dbp", "mbp", "resp_rate", "glucose"]}
    stats = json.loads((out / "ehr_stats.json").read_text())["glucose"]
    # mimic3-benchmarks' impute value 128 mg/dL; scale (2000 - 33) / 4 = 491.75
    assert stats == {"median": 128.0, "mean": 128.0, "std": 491.75, "n_observed": 0, "unobserved_in_training": True}
    samples = pd.read_parquet(out / "samples.parquet")
    ehr = np.load(out / "ehr.npy")
    k = manifest["ehr_channels"].index("glucose")
    test_row = samples.index[samples["stay_id"] == 30000201][0]
    assert ehr[test_row, 1, k] == pytest.approx((140 - 128) / 491.75, abs=1e-6)  # 09:30 is hour 1
    assert ehr[test_row, 0, k] == 0.0  # before the first reading: the normal value, z = 0
    assert np.abs(ehr[..., k]).max() < 1


def test_mimic_stage_over_mixed_real_world_dicoms_counts_every_failure_by_reason(tmp_path):
    # every AP film of a synthetic export rewritten as one kind of DICOM found in real archives;
    # the stage must finish, decode the readable kinds and count each unreadable film by its reason
    from PIL import Image

    from clinfuse.etl.mimic import cxr
    from tests.fixtures import dicoms

    raw = tmp_path / "raw"
    assert main(["synth", "--out", str(raw), "--subjects", "80", "--only", "mimic"]) == 0
    meta = pd.read_csv(raw / "mimic-cxr-jpg/mimic-cxr-2.0.0-metadata.csv.gz", dtype={"dicom_id": str})
    ap = meta[meta["ViewPosition"] == "AP"].sort_values("dicom_id")
    jpeg_lossless = dicoms.pydicom_test_file("SC_rgb_jpeg_gdcm.dcm")  # JPEG Lossless, process 14
    writers = {
        "monochrome2": lambda p, img: dicoms.dicom_file(p, img),
        "monochrome1": lambda p, img: dicoms.dicom_file(p, 255 - img, "MONOCHROME1"),
        "colour": lambda p, img: dicoms.dicom_file(p, np.stack([img] * 3, axis=-1), "RGB"),
        "multi-frame": lambda p, img: dicoms.dicom_file(p, np.stack([img, 255 - img])),
        "rle": lambda p, img: dicoms.dicom_file(p, img, compress=True),
        "sigmoid": lambda p, img: dicoms.dicom_file(p, img, WindowCenter=128, WindowWidth=200,
                                                    VOILUTFunction="SIGMOID"),
        "not DICOM": lambda p, img: p.write_bytes(b"<html>proxy error</html>"),
        "no pixels": lambda p, img: dicoms.without_pixels(p),
        "truncated": lambda p, img: dicoms.truncated(p, img),
        "absent": lambda p, img: None,
    }
    if jpeg_lossless is not None:
        writers["jpeg lossless"] = lambda p, img: p.write_bytes(jpeg_lossless.read_bytes())
    reason = {"not DICOM": cxr.NOT_DICOM, "no pixels": cxr.NO_PIXELS, "truncated": cxr.TRUNCATED,
              "absent": cxr.ABSENT}
    if jpeg_lossless is not None and importlib.util.find_spec("libjpeg") is None:
        reason["jpeg lossless"] = cxr.UNDECODABLE
    note = {"colour": "colour: converted to luminance", "multi-frame": "multi-frame: first frame used",
            "jpeg lossless": "colour: converted to luminance"}
    kinds = list(writers)
    kind_of = {}
    images = tmp_path / "dicom"
    for i, row in enumerate(ap.itertuples()):
        kind_of[row.dicom_id] = kind = kinds[i % len(kinds)]
        jpg = cxr.cxr_image_path(raw / "mimic-cxr-jpg", row.subject_id, row.study_id, row.dicom_id)
        path = cxr.cxr_image_path(images, row.subject_id, row.study_id, row.dicom_id, dicom=True)
        path.parent.mkdir(parents=True, exist_ok=True)
        writers[kind](path, np.asarray(Image.open(jpg).convert("L")).astype(np.int64))

    out = tmp_path / "cohort"
    settings = MimicEtlSettings(workers=1, threads=1, memory_limit="256MB", cxr_size=8, require_cxr=False,
                                cxr_format="dicom")
    with pytest.warns(UserWarning, match="unreadable chest film"):
        build_mimic_cohort(raw / "mimic-iv", raw / "mimic-cxr-jpg", images, "phenotype", out, settings)
    full = json.loads((out / "manifest.json").read_text())
    # the generated MIMIC-IV and CXR-JPG exports carry the marker; the hand-made DICOM folder does not
    assert full["synthetic"] is True and set(full["synthetic_sources"]) == {"mimic-iv", "mimic-cxr"}
    manifest = full["cxr"]
    samples = pd.read_parquet(out / "samples.parquet")
    decoded = samples.loc[samples["has_cxr"], "dicom_id"].tolist()
    failed = {Path(f["path"]).stem: f["reason"] for f in manifest["failures"]}
    paired = decoded + list(failed)
    assert len(paired) == manifest["paired"] and len(set(kind_of[d] for d in paired)) >= 8
    # every film ends as its kind says: decoded, or a failure with the kind's reason
    assert {d: kind_of[d] for d in decoded if kind_of[d] in reason} == {}
    assert failed == {d: reason[kind_of[d]] for d in paired if kind_of[d] in reason}
    assert manifest["unreadable"] == len(failed)
    assert manifest["unreadable_by_reason"] == dict(Counter(failed.values()))
    assert manifest["converted"] == dict(Counter(note[kind_of[d]] for d in decoded if kind_of[d] in note))
    cache = np.load(out / "cxr.npy")
    assert (cache[samples["has_cxr"].to_numpy()].std(axis=(1, 2)) > 0).all()  # a real image, not zeros


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
    manifest = load_cohort(out).manifest
    assert manifest.config.require_cxr is False and manifest.partially_paired
    assert manifest.title == "MIMIC-IV ICU phenotyping (25 CCS groups) — partially paired"
