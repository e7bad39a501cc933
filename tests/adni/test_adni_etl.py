"""ADNI ETL on a hand-made ADNIMERGE table (golden/) and small synthetic exports.

By hand: RID 6 has no baseline row. Labels: DX at baseline (CN, MCI, Dementia -> AD);
RID 4 is SMC -> CN; RID 5 has an empty DX, so DX_bl EMCI -> MCI. Scans: RID 2 has none
at baseline but one at m06 (151 days later, inside 183); RID 5's only scan is at m12
(365 days), outside the window. Features (all five in training for the golden run):
AGE 70, 75, 80, 65, 72 -> mean 72.4, std 5.004 (population); ABETA ">1700" -> 1700
(censored), 600, 500, 1200, missing -> mean 1000, std 484.77 (population), RID 5 imputed to the mean
(z = 0) with ABETA_missing 1; PIB is empty everywhere (> 90 % missing) and dropped, as is FBB; MMSE
and CDR-SB are excluded by default.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from clinfuse.etl.errors import InputError
from clinfuse.etl.synth.adni import brain_volume, nifti_bytes, write_adni_export
from clinfuse.pipeline.cli import main
from clinfuse.pipeline.data import load_cohort
from clinfuse.pipeline.settings.etl_adni import AdniEtlSettings
from clinfuse.pipeline.stages.etl_adni import build_adni_cohort

GOLDEN = Path(__file__).parent / "golden"
EXPECTED = json.loads((GOLDEN / "expected.json").read_text())
ALL_TRAIN = AdniEtlSettings(split=(1.0, 0.0, 0.0), require_mri=False, workers=1, mri_size=8)


@pytest.fixture()
def adni(tmp_path):
    root = tmp_path / "adni"
    root.mkdir()
    shutil.copy(GOLDEN / "ADNIMERGE.csv", root / "ADNIMERGE.csv")
    rng = np.random.default_rng(0)
    table = pd.read_csv(root / "ADNIMERGE.csv", dtype=str).dropna(subset=["IMAGEUID"])
    for row in table.itertuples():
        path = root / "MRI" / row.PTID / f"{row.IMAGEUID}.nii.gz"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(nifti_bytes(brain_volume(rng, np.zeros(3), 12)))
    return root


def load(out):
    return (pd.read_parquet(out / "samples.parquet"), np.load(out / "tabular.npy"),
            json.loads((out / "manifest.json").read_text()))


def test_golden_labels_scans_and_features(adni, tmp_path):
    out = tmp_path / "out"
    build_adni_cohort(adni, out, ALL_TRAIN)
    samples, tab, manifest = load(out)
    assert samples["RID"].tolist() == EXPECTED["rids"]
    assert samples["label"].tolist() == EXPECTED["labels"]
    assert samples["label_name"].tolist() == EXPECTED["label_names"]
    assert [None if pd.isna(v) else int(v) for v in samples["IMAGEUID"]] == EXPECTED["imageuid"]
    assert [None if pd.isna(v) else v for v in samples["scan_viscode"]] == EXPECTED["scan_viscode"]
    names = manifest["tabular_features"]
    for name, values in EXPECTED["features"].items():
        np.testing.assert_allclose(tab[:, names.index(name)], values, atol=1e-4, err_msg=name)
    assert not set(EXPECTED["absent_features"]) & set(names)
    assert sorted(manifest["tabular"]["dropped_missing"]) == EXPECTED["dropped_missing"]
    assert manifest["class_names"] == ["CN", "MCI", "AD"] and manifest["smc_labelled_cn"] == 1
    assert tab.dtype == np.float32 and np.load(out / "mri.npy").shape == (5, 8, 8, 8)
    assert samples["has_mri"].tolist() == [True, True, True, True, False]
    assert manifest["title"] == "ADNI diagnosis (CN / MCI / AD)"
    assert manifest["id_columns"] == ["RID", "PTID", "IMAGEUID"] == list(samples.columns[:3])
    assert "cubic crop/resize to 8^3" in manifest["input_descriptions"]["mri"]
    assert load_cohort(out).manifest.config == ALL_TRAIN


def test_require_mri_excludes_and_counts(adni, tmp_path):
    out = tmp_path / "out"
    build_adni_cohort(adni, out, AdniEtlSettings(split=(1.0, 0.0, 0.0), workers=1, mri_size=8))
    samples, _, manifest = load(out)
    assert samples["RID"].tolist() == [1, 2, 3, 4]
    got = {e["reason"]: e["excluded"] for e in manifest["exclusions"][1:]}
    assert got == EXPECTED["exclusions_require_mri"]


def test_smc_can_be_excluded(adni, tmp_path):
    out = tmp_path / "out"
    build_adni_cohort(adni, out, AdniEtlSettings(smc="exclude", require_mri=False, workers=1, mri_size=8,
                                                 split=(1.0, 0.0, 0.0)))
    assert 4 not in load(out)[0]["RID"].tolist()


def test_split_has_no_rid_in_two_parts_and_statistics_come_from_training_rows(tmp_path):
    raw = tmp_path / "adni"
    write_adni_export(raw, 40, seed=1, mri_size=10)
    settings = AdniEtlSettings(workers=1, mri_size=8, require_mri=False)
    build_adni_cohort(raw, tmp_path / "a", settings)
    samples, tab_a, manifest = load(tmp_path / "a")
    assert (samples.groupby("RID")["split"].nunique() == 1).all()
    assert set(samples["split"]) == {"train", "val", "test"}
    # change every test subject's baseline AGE: training statistics must not move
    table = pd.read_csv(raw / "ADNIMERGE.csv", dtype=str)
    test_rids = set(samples.loc[samples["split"] == "test", "RID"].astype(str))
    table.loc[table["RID"].isin(test_rids), "AGE"] = "99"
    table.to_csv(raw / "ADNIMERGE.csv", index=False)
    build_adni_cohort(raw, tmp_path / "b", settings)
    samples_b, tab_b, manifest_b = load(tmp_path / "b")
    assert manifest_b["tabular"]["numeric"]["AGE"] == manifest["tabular"]["numeric"]["AGE"]
    train = samples["split"].to_numpy() == "train"
    age = manifest["tabular_features"].index("AGE")
    np.testing.assert_array_equal(tab_a[train, age], tab_b[train, age])


def test_missing_adnimerge_names_the_file(tmp_path):
    with pytest.raises(InputError, match=r"ADNIMERGE\.csv: missing"):
        build_adni_cohort(tmp_path, tmp_path / "out", ALL_TRAIN)


def test_missing_column_names_it(adni, tmp_path):
    t = pd.read_csv(adni / "ADNIMERGE.csv", dtype=str).drop(columns=["DX_bl"])
    t.to_csv(adni / "ADNIMERGE.csv", index=False)
    with pytest.raises(InputError, match=r"missing column\(s\) \['DX_bl'\]"):
        build_adni_cohort(adni, tmp_path / "out", ALL_TRAIN)


def test_unknown_dx_code_names_row_and_column(adni, tmp_path):
    t = pd.read_csv(adni / "ADNIMERGE.csv", dtype=str)
    t.loc[2, "DX"] = "Alzheimer"
    t.to_csv(adni / "ADNIMERGE.csv", index=False)
    with pytest.raises(InputError, match=r"row 4, column DX: unknown diagnosis code 'Alzheimer'"):
        build_adni_cohort(adni, tmp_path / "out", ALL_TRAIN)


def test_corrupt_and_wrong_dimension_volumes_are_warned_and_counted(adni, tmp_path):
    (adni / "MRI/011_S_0001/1001.nii.gz").write_bytes(b"not a nifti")
    img = nib.Nifti1Image(np.zeros((6, 6, 6, 2), np.int16), np.eye(4))
    (adni / "MRI/011_S_0003/3001.nii.gz").write_bytes(__import__("gzip").compress(img.to_bytes()))
    out = tmp_path / "out"
    with pytest.warns(UserWarning, match="unreadable T1 volume"):
        build_adni_cohort(adni, out, AdniEtlSettings(split=(1.0, 0.0, 0.0), workers=1, mri_size=8))
    samples, _, manifest = load(out)
    assert samples["RID"].tolist() == [2, 4]
    assert manifest["mri"]["unreadable"] == 2
    assert any("expected a 3D T1 volume" in f["reason"] for f in manifest["mri"]["failures"])


def test_failed_run_leaves_previous_output_untouched(adni, tmp_path):
    out = tmp_path / "out"
    build_adni_cohort(adni, out, ALL_TRAIN)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    (adni / "ADNIMERGE.csv").write_text("RID,PTID\n1,x\n")
    with pytest.raises(InputError):
        build_adni_cohort(adni, out, ALL_TRAIN)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before


def test_cli_runs_on_a_synthetic_export(tmp_path, capsys):
    write_adni_export(tmp_path / "adni", 30, seed=3, mri_size=12)
    params = tmp_path / "params.yaml"
    params.write_text("etl_adni:\n  mri_size: 8\n  workers: 1\n")
    assert main(["--params", str(params), "etl", "adni", "--adni", str(tmp_path / "adni"),
                 "--out", str(tmp_path / "out")]) == 0
    assert "etl adni:" in capsys.readouterr().out
    assert len(pd.read_parquet(tmp_path / "out/samples.parquet")) > 15


def test_manifest_says_synthetic_from_the_generators_marker_not_from_the_path(adni, tmp_path):
    # the hand-written golden export carries no marker; a generated export does, wherever it lies
    build_adni_cohort(adni, tmp_path / "golden", ALL_TRAIN)
    assert load(tmp_path / "golden")[2]["synthetic"] is False
    write_adni_export(tmp_path / "site-export", 12, seed=3, mri_size=12)
    build_adni_cohort(tmp_path / "site-export", tmp_path / "generated", ALL_TRAIN)
    manifest = load(tmp_path / "generated")[2]
    assert manifest["synthetic"] is True and manifest["synthetic_sources"]["adni"]["seed"] == 3


def test_same_inputs_give_identical_cohort_arrays_and_split(adni, tmp_path):
    build_adni_cohort(adni, tmp_path / "a", ALL_TRAIN)
    build_adni_cohort(adni, tmp_path / "b", ALL_TRAIN)
    for name in ("tabular.npy", "mri.npy", "samples.parquet", "tabular_features.json"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name


@pytest.mark.parametrize("trailing", [(1,), (1, 1)])
def test_a_volume_stored_with_trailing_singleton_axes_is_read_as_3d(tmp_path, trailing):
    from clinfuse.etl.adni.mri import preprocess_volume

    rng = np.random.default_rng(1)
    volume = rng.integers(0, 1000, (10, 12, 9)).astype(np.int16)
    affine = np.diag([1.2, -1.0, 1.5, 1.0])  # not RAS: the squeezed image must keep its orientation
    plain, padded = tmp_path / "plain.nii", tmp_path / "padded.nii"
    nib.save(nib.Nifti1Image(volume, affine), plain)
    nib.save(nib.Nifti1Image(volume.reshape(volume.shape + trailing), affine), padded)
    want, reason = preprocess_volume(str(plain), 8, 1.0)
    got, reason_padded = preprocess_volume(str(padded), 8, 1.0)
    assert reason is None and reason_padded is None
    np.testing.assert_array_equal(got, want)
    assert want.max() > 0


def test_every_dx_bl_code_is_the_fallback_label_where_dx_is_empty():
    # One baseline row per DX_bl code, DX empty: CN and SMC -> CN, EMCI and LMCI -> MCI, AD -> AD.
    from clinfuse.etl.adni.labels import baseline_labels

    codes = ["CN", "SMC", "EMCI", "LMCI", "AD"]
    table = pd.DataFrame({"RID": [1, 2, 3, 4, 5], "VISCODE": ["bl"] * 5, "DX": [None] * 5, "DX_bl": codes})
    labels, _ = baseline_labels(table, smc="cn")
    assert dict(zip(labels["DX_bl"], labels["label_name"], strict=True)) == {
        "CN": "CN", "SMC": "CN", "EMCI": "MCI", "LMCI": "MCI", "AD": "AD"}
    assert labels["label"].tolist() == [0, 0, 1, 1, 2]


def test_a_present_dx_wins_over_dx_bl():
    # DX is the baseline visit's own diagnosis: it decides even where DX_bl says otherwise.
    from clinfuse.etl.adni.labels import baseline_labels

    table = pd.DataFrame({"RID": [1, 2, 3], "VISCODE": ["bl"] * 3, "DX": ["Dementia", "CN", "MCI"],
                          "DX_bl": ["LMCI", "AD", "CN"]})
    labels, _ = baseline_labels(table, smc="cn")
    assert labels["label_name"].tolist() == ["AD", "CN", "MCI"]


def _visits():
    # RID 1: bl and m06; RID 2: bl (spaces) with DX empty and DX_bl SMC; RID 3: no bl visit;
    # RID 4: bl without any diagnosis; RID 5: two bl rows, the first one counts
    return pd.DataFrame({"RID": [5, 1, 1, 2, 3, 4, 5], "VISCODE": ["bl", "bl", "m06", " bl ", "m12", "bl", "bl"],
                         "DX": ["Dementia", "CN", "MCI", "", "CN", None, "CN"],
                         "DX_bl": ["AD", "CN", "CN", "SMC", "CN", None, "AD"]})


def test_baseline_labels_count_each_exclusion_step():
    from clinfuse.etl.adni.labels import baseline_labels

    labels, steps = baseline_labels(_visits(), smc="cn")
    assert steps == [
        {"step": "subjects in ADNIMERGE", "reason": "", "excluded": 0, "remaining": 5},
        {"step": "baseline visit", "reason": "no VISCODE 'bl' row", "excluded": 1, "remaining": 4},
        {"step": "diagnosis known", "reason": "DX and DX_bl both empty", "excluded": 1, "remaining": 3}]
    assert labels[["RID", "label", "label_name", "smc"]].values.tolist() == [
        [1, 0, "CN", False], [2, 0, "CN", True], [5, 2, "AD", False]]
    assert list(labels.index) == [0, 1, 2] and "index" not in labels.columns


def test_excluding_smc_adds_its_own_step():
    from clinfuse.etl.adni.labels import baseline_labels

    labels, steps = baseline_labels(_visits(), smc="exclude")
    assert steps[-1] == {"step": "SMC", "reason": "DX_bl is SMC (excluded by setting)", "excluded": 1, "remaining": 2}
    assert labels["RID"].tolist() == [1, 5] and not labels["smc"].any()


def test_unknown_codes_and_sexes_name_the_first_bad_row_counting_the_header():
    from clinfuse.etl.adni.labels import check_codes, check_sex

    table = pd.DataFrame({"DX": ["CN", " ", "Alzheimer", "MCI", "Other"], "DX_bl": ["CN", "AD", "AD", "XYZ", "CN"],
                          "PTGENDER": ["Male\n", "", " Unknown ", "Female", "X"]})
    with pytest.raises(InputError, match=r"^ADNIMERGE\.csv: row 4, column DX: unknown diagnosis code 'Alzheimer'; "
                                         r"expected one of \['CN', 'Dementia', 'MCI'\]$"):
        check_codes(table, "ADNIMERGE.csv")
    with pytest.raises(InputError, match=r"^ADNIMERGE\.csv: row 5, column DX_bl: unknown diagnosis code 'XYZ'; "
                                         r"expected one of \['AD', 'CN', 'EMCI', 'LMCI', 'SMC'\]$"):
        check_codes(table.assign(DX="CN"), "ADNIMERGE.csv")
    with pytest.raises(InputError, match=r"^ADNIMERGE\.csv: row 4, column PTGENDER: unknown value ' Unknown '; "
                                         r"expected one of \['Female', 'Male'\] or empty$"):
        check_sex(table, "ADNIMERGE.csv")
    check_codes(table.assign(DX="CN", DX_bl=""), "x")  # empty codes are allowed
    check_sex(table.assign(PTGENDER=["Male", "", None, "Female\n", " Male"]), "x")
