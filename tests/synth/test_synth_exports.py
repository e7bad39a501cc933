"""The synthetic exports have the real layout, columns and quirks, and are deterministic."""

from __future__ import annotations

import hashlib

import numpy as np
import pandas as pd
import pytest

from clinfuse.pipeline.cli import main
from tests.fixtures.real_schema import ADNIMERGE, MIMIC_CXR, MIMIC_IV


def read(raw, name, **kw):
    return pd.read_csv(raw / "mimic-iv" / name, dtype={"icd_code": str, "value": str}, **kw)


@pytest.fixture(scope="module")
def tables(raw):
    return {name.split("/")[1].split(".")[0]: read(raw, name) for name in MIMIC_IV}


@pytest.mark.parametrize("name", sorted(MIMIC_IV))
def test_mimic_iv_file_has_exactly_the_real_columns(raw, name):
    assert list(pd.read_csv(raw / "mimic-iv" / name, nrows=0).columns) == MIMIC_IV[name]


@pytest.mark.parametrize("name", sorted(MIMIC_CXR))
def test_mimic_cxr_file_has_exactly_the_real_columns(raw, name):
    assert list(pd.read_csv(raw / "mimic-cxr-jpg" / name, nrows=0).columns) == MIMIC_CXR[name]


def test_adnimerge_has_the_real_columns(raw):
    assert list(pd.read_csv(raw / "adni" / "ADNIMERGE.csv", nrows=0).columns) == ADNIMERGE


def test_same_seed_gives_identical_bytes_and_another_seed_differs(raw, tmp_path):
    params = tmp_path / "params.yaml"
    params.write_text("synth:\n  adni_subjects: 30\n  mri_size: 12\n")
    for out, seed in ((tmp_path / "a", 5), (tmp_path / "b", 6)):
        assert main(["--params", str(params), "synth", "--out", str(out), "--subjects", "60", "--seed", str(seed)]) == 0

    def digests(root):
        return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
                for p in sorted(root.rglob("*")) if p.is_file() and p.name != "params.yaml"}

    same, other = digests(tmp_path / "a"), digests(raw)
    assert same == other
    assert digests(tmp_path / "b")["mimic-iv/icu/chartevents.csv.gz"] != same["mimic-iv/icu/chartevents.csv.gz"]


def test_text_values_have_empty_valuenum(tables):
    ce = tables["chartevents"]
    text = ce[pd.to_numeric(ce["value"], errors="coerce").isna()]
    assert len(text) > 0 and text["valuenum"].isna().all()


def test_gcs_components_are_text(tables):
    ce = tables["chartevents"]
    gcs = ce[ce["itemid"].isin([220739, 223900, 223901])]
    assert {"Spontaneously", "Oriented", "Obeys Commands", "No Response-ETT"} <= set(gcs["value"])
    assert gcs["valuenum"].isna().all()


def test_temperature_is_charted_in_fahrenheit_and_celsius(tables):
    ce = tables["chartevents"]
    f, c = ce[ce["itemid"] == 223761]["valuenum"], ce[ce["itemid"] == 223762]["valuenum"]
    assert len(f) and len(c)
    assert f[f < 1000].median() > 90 and c[c < 1000].median() < 40


def test_spo2_sometimes_recorded_as_fraction(tables):
    spo2 = tables["chartevents"].query("itemid == 220277")["valuenum"]
    assert ((spo2 > 0) & (spo2 <= 1)).any() and (spo2 > 50).any()


def test_placeholders_and_out_of_range_values_present(tables):
    v = tables["chartevents"]["valuenum"]
    assert (v == 999999).any()
    assert (v < 0).any()


def test_events_before_intime_and_after_48_hours(tables):
    ce = tables["chartevents"].merge(tables["icustays"][["stay_id", "intime"]], on="stay_id")
    hours = (pd.to_datetime(ce["charttime"]) - pd.to_datetime(ce["intime"])).dt.total_seconds() / 3600
    assert (hours < 0).any() and (hours >= 48).any()


def test_stays_shorter_than_48_hours_exist(tables):
    assert (tables["icustays"]["los"] < 2).any() and (tables["icustays"]["los"] >= 2).any()


def test_admissions_with_two_icu_stays_exist(tables):
    assert (tables["icustays"].groupby("hadm_id").size() > 1).any()


def test_careunit_transfers_exist(tables):
    s = tables["icustays"]
    assert (s["first_careunit"] != s["last_careunit"]).any()


def test_patients_under_18_exist(tables):
    assert (tables["patients"]["anchor_age"] < 18).any()


def test_deaths_recorded_by_deathtime_and_by_dod_only(tables):
    adm = tables["admissions"].merge(tables["patients"][["subject_id", "dod"]], on="subject_id")
    by_deathtime = adm["deathtime"].notna()
    dod = pd.to_datetime(adm["dod"])
    in_hospital_dod = (dod >= pd.to_datetime(adm["admittime"]).dt.normalize()) & (
        dod <= pd.to_datetime(adm["dischtime"]).dt.normalize())
    assert by_deathtime.any()
    assert (in_hospital_dod & ~by_deathtime).any()
    assert pd.to_datetime(tables["patients"]["dod"].dropna(), format="%Y-%m-%d").notna().all()


def test_icd9_and_icd10_codes_keep_leading_zeros(raw):
    dx = pd.read_csv(raw / "mimic-iv/hosp/diagnoses_icd.csv.gz", dtype={"icd_code": str})
    assert set(dx["icd_version"]) == {9, 10}
    assert dx["icd_code"].str.startswith("0").any()
    assert not dx["icd_code"].str.contains(".", regex=False).any()


def test_many_irrelevant_itemids(tables):
    vital_items = {220045, 220050, 220051, 220052, 220179, 220180, 220181, 225309, 225310, 225312, 220210,
                   224690, 223761, 223762, 220277, 220621, 225664, 226537, 220739, 223900, 223901}
    other = set(tables["chartevents"]["itemid"]) - vital_items
    assert len(other) >= 10
    assert set(tables["chartevents"]["itemid"]) <= set(tables["d_items"]["itemid"])


def test_cxr_images_exist_at_the_mimic_cxr_paths(raw):
    meta = pd.read_csv(raw / "mimic-cxr-jpg/mimic-cxr-2.0.0-metadata.csv.gz")
    assert {"AP", "PA", "LATERAL"} <= set(meta["ViewPosition"])
    for row in meta.head(20).itertuples():
        s = str(row.subject_id)
        assert (raw / "mimic-cxr-jpg" / "files" / f"p{s[:2]}" / f"p{s}" / f"s{row.study_id}" / f"{row.dicom_id}.jpg").is_file()
    assert len(row.dicom_id.split("-")) == 5


def test_some_stays_have_no_film_in_the_pairing_window(raw, tables):
    meta = pd.read_csv(raw / "mimic-cxr-jpg/mimic-cxr-2.0.0-metadata.csv.gz")
    when = pd.to_datetime(meta["StudyDate"].astype(str)) + pd.to_timedelta(
        meta["StudyTime"].map(lambda t: f"{int(t) // 10000:02d}:{int(t) // 100 % 100:02d}:{int(t) % 100:02d}"))
    films = meta.assign(when=when).query("ViewPosition == 'AP'").merge(tables["icustays"], on="subject_id")
    hours = (films["when"] - pd.to_datetime(films["intime"])).dt.total_seconds() / 3600
    inside = set(films.loc[(hours >= 0) & (hours <= 48), "stay_id"])
    assert (hours < 0).any() and (hours > 48).any()
    assert 0 < len(inside) < len(tables["icustays"])


def test_dicom_copies_include_monochrome1(raw):
    import pydicom

    kinds = {pydicom.dcmread(p).PhotometricInterpretation for p in (raw / "mimic-cxr-dicom").rglob("*.dcm")}
    assert kinds == {"MONOCHROME1", "MONOCHROME2"}


def test_adni_has_several_visits_censored_values_and_scans_linked_by_imageuid(raw):
    adni = pd.read_csv(raw / "adni/ADNIMERGE.csv", dtype=str)
    assert (adni.groupby("RID").size() > 1).all()
    censored = pd.concat([adni[c] for c in ("ABETA", "TAU", "PTAU")]).dropna()
    assert censored.str.match(r"^[<>]").any()
    with_scan = adni.dropna(subset=["IMAGEUID"])
    for row in with_scan.head(10).itertuples():
        assert (raw / "adni/MRI" / row.PTID / f"{row.IMAGEUID}.nii.gz").is_file()
    baseline_scan = set(adni.query("VISCODE == 'bl'").dropna(subset=["IMAGEUID"])["RID"])
    m06_only = set(adni.query("VISCODE == 'm06'").dropna(subset=["IMAGEUID"])["RID"]) - baseline_scan
    no_scan = set(adni["RID"]) - set(with_scan["RID"])
    assert baseline_scan and m06_only and (no_scan or len(baseline_scan | m06_only) < adni["RID"].nunique())


def test_labels_follow_latent_factors_in_both_modalities(raw, tables):
    # mortality is more frequent among stays with high heart rate: the EHR carries signal
    ce = tables["chartevents"].query("itemid == 220045 and valuenum > 0 and valuenum < 300")
    hr = ce.groupby("hadm_id")["valuenum"].mean()
    adm = tables["admissions"].set_index("hadm_id")
    died = adm["deathtime"].notna() | (adm["hospital_expire_flag"] == 1)
    joined = pd.concat([hr, died.rename("died")], axis=1, join="inner")
    assert joined.loc[joined["died"], "valuenum"].mean() > joined.loc[~joined["died"], "valuenum"].mean()


@pytest.mark.parametrize("bad", ["0", "-3"])
def test_non_positive_subjects_is_a_one_line_error(tmp_path, capsys, bad):
    code = main(["synth", "--out", str(tmp_path / "x"), "--subjects", bad])
    err = capsys.readouterr().err
    assert code == 2 and "--subjects must be a positive number" in err and err.count("\n") == 1
    assert not (tmp_path / "x").exists()


def test_scale_multiplies_patients_and_chartevents(tmp_path):
    assert main(["synth", "--out", str(tmp_path), "--subjects", "10", "--scale", "3", "--only", "mimic"]) == 0
    pats = pd.read_csv(tmp_path / "mimic-iv/hosp/patients.csv.gz")
    assert len(pats) == 30 and pats["subject_id"].is_unique
    assert np.unique(pd.read_csv(tmp_path / "mimic-iv/icu/chartevents.csv.gz", usecols=["subject_id"])).size > 20


def test_dicom_copies_decode_to_their_jpeg_films(raw):
    from clinfuse.etl.mimic.cxr import decode_cxr_images

    dicoms = sorted((raw / "mimic-cxr-dicom").rglob("*.dcm"))
    jpgs = [raw / "mimic-cxr-jpg" / p.relative_to(raw / "mimic-cxr-dicom").with_suffix(".jpg") for p in dicoms]
    a, fa, _ = decode_cxr_images(dicoms, 32, 1)
    b, fb, _ = decode_cxr_images(jpgs, 32, 1)
    assert fa == fb == []
    # rescale, window and MONOCHROME1 inversion undone: only JPEG compression differs
    assert np.abs(a.astype(int) - b.astype(int)).mean() < 3


def test_every_synthetic_diagnosis_code_maps_to_its_own_phenotype_only():
    # the ETL's ICD-10 mapping must give back the phenotype the generator meant, or labels lose their signal
    from clinfuse.etl.mimic.phenotypes import load_phenotype_definitions
    from clinfuse.etl.synth.mimic import FILLER_CODES, load_phenotype_codes

    defs = load_phenotype_definitions().codes
    phenotypes_of = defs.groupby(["icd_version", "icd_code"])["phenotype"].agg(set).to_dict()
    names, codes = load_phenotype_codes()
    assert len(names) == 25
    for version in (9, 10):
        for name in names:
            assert codes[version][name], (version, name)
            for code in codes[version][name]:
                assert phenotypes_of.get((version, code)) == {name}, (version, code, name)
        for code in FILLER_CODES[version]:
            assert (version, code) not in phenotypes_of
    examples = {9: {"0389", "4280", "5849"}, 10: {"A419", "I5020", "N179", "J9601"}}
    for version, wanted in examples.items():
        assert wanted <= {c for cs in codes[version].values() for c in cs}


def test_timestamps_are_formatted_like_mimic_and_dod_is_a_date(raw, tables):
    stamp = r"^\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}$"
    for table, cols in {"admissions": ["admittime", "dischtime", "deathtime", "edregtime", "edouttime"],
                        "icustays": ["intime", "outtime"], "chartevents": ["charttime", "storetime"]}.items():
        for col in cols:
            values = tables[table][col].dropna().astype(str)
            assert len(values) and values.str.match(stamp).all(), (table, col)
    assert tables["patients"]["dod"].dropna().astype(str).str.match(r"^\d{4}-\d{2}-\d{2}$").all()
    assert tables["patients"]["anchor_year"].between(2100, 2199).all()


def test_blood_pressure_is_charted_under_invasive_and_non_invasive_itemids(tables):
    used = set(tables["chartevents"]["itemid"])
    assert {220050, 225309, 220179, 220051, 225310, 220180, 220052, 225312, 220181} <= used


def test_gzip_headers_carry_no_timestamp_or_file_name(raw):
    for path in sorted(raw.rglob("*.csv.gz")):
        header = path.read_bytes()[:10]
        assert header[:2] == b"\x1f\x8b" and header[4:8] == b"\0\0\0\0", path  # mtime 0
        assert not header[3] & 0x08, path  # FNAME flag unset


def test_cxr_tables_agree_with_the_image_files(raw):
    root = raw / "mimic-cxr-jpg"
    meta = pd.read_csv(root / "mimic-cxr-2.0.0-metadata.csv.gz")
    split = pd.read_csv(root / "mimic-cxr-2.0.0-split.csv.gz")
    chex = pd.read_csv(root / "mimic-cxr-2.0.0-chexpert.csv.gz")
    on_disk = {p.relative_to(root).as_posix() for p in (root / "files").rglob("*.jpg")}
    listed = {f"files/p{str(r.subject_id)[:2]}/p{r.subject_id}/s{r.study_id}/{r.dicom_id}.jpg"
              for r in meta.itertuples()}
    assert on_disk == listed and meta["dicom_id"].is_unique
    assert meta["dicom_id"].str.fullmatch(r"[0-9a-f]{8}(-[0-9a-f]{8}){4}").all()
    assert set(split["dicom_id"]) == set(meta["dicom_id"]) and set(split["split"]) <= {"train", "validate", "test"}
    assert set(chex["study_id"]) == set(meta["study_id"])
    labels = chex.drop(columns=["subject_id", "study_id"]).to_numpy().ravel()
    assert set(labels[~np.isnan(labels)]) == {-1.0, 0.0, 1.0} and np.isnan(labels).any()
    assert meta["StudyDate"].between(21000101, 21991231).all()


def test_every_export_carries_the_synthetic_marker_with_its_seed(raw):
    from clinfuse.etl.provenance import MARKER, synthetic_marker

    for folder in ("mimic-iv", "mimic-cxr-jpg", "mimic-cxr-dicom", "adni"):
        assert (raw / folder / MARKER).is_file(), folder
        marker = synthetic_marker(raw / folder)
        assert marker["synthetic"] is True and marker["seed"] == 5 and marker["generator"] == "clinfuse synth"


def test_the_export_keeps_every_stays_latent_factors_in_a_file_of_its_own_beside_the_marker(raw, tables):
    from clinfuse.etl.provenance import synthetic_marker
    from clinfuse.etl.synth.factors import FACTORS_FILE, LABEL_MODEL_FILE

    factors = pd.read_csv(raw / "mimic-iv" / FACTORS_FILE)
    assert synthetic_marker(raw / "mimic-iv") is not None and (raw / "mimic-iv" / LABEL_MODEL_FILE).is_file()
    assert sorted(factors["stay_id"]) == sorted(tables["icustays"]["stay_id"])
    assert list(factors.columns) == ["subject_id", "hadm_id", "stay_id", "h0", "h1", "h2", "h3"]
