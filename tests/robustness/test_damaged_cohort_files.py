"""Cohort files a stage reads are checked against manifest.json before anything trains on them: each
damage is one line naming the file (and the row or column) and leaves no run folder behind. Cohorts
that are legal but make results weak (one class, a split without positives, no validation split, a
modality absent everywhere) carry a warning: in manifest.json from the ETL, printed by train."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from clinfuse.etl.errors import InputError
from clinfuse.pipeline.cli import main
from clinfuse.pipeline.cohort_checks import cohort_warnings
from clinfuse.pipeline.data import load_cohort
from clinfuse.pipeline.manifest import read_manifest
from clinfuse.pipeline.settings.etl_mimic import MimicEtlSettings
from clinfuse.pipeline.stages.etl_mimic import build_mimic_cohort
from tests.fixtures.cohorts import write_cohort

GOLDEN = Path(__file__).resolve().parents[1] / "mimic" / "golden" / "input"


@pytest.fixture()
def mimic(tmp_path):
    return write_cohort(tmp_path / "mimic", "mimic")


@pytest.fixture()
def adni(tmp_path):
    return write_cohort(tmp_path / "adni", "adni")


def _samples(cohort: Path, **columns) -> None:
    samples = pd.read_parquet(cohort / "samples.parquet")
    for name, change in columns.items():
        samples[name] = change(samples[name])
    samples.to_parquet(cohort / "samples.parquet", index=False)


def _train(cohort: Path, tmp_path: Path, capsys) -> tuple[int, str, str]:
    params = tmp_path / "params.yaml"
    params.write_text("train:\n  epochs: 1\n  batch_size: 8\n  num_threads: 1\n  device: cpu\n")
    code = main(["--params", str(params), "train", "--cohort", str(cohort), "--method", "late_fusion",
                 "--out", str(tmp_path / "run"), "--no-tracking"])
    captured = capsys.readouterr()
    return code, captured.out, captured.err.strip()


def _refused(cohort: Path, tmp_path: Path, capsys, *needles) -> None:
    code, _, err = _train(cohort, tmp_path, capsys)
    assert code == 2 and len(err.splitlines()) == 1, err
    for needle in needles:
        assert needle in err
    assert not (tmp_path / "run").exists()  # nothing half-written


def test_an_ehr_array_with_10_hours_where_the_manifest_says_48_is_refused(mimic, tmp_path, capsys):
    np.save(mimic / "ehr.npy", np.load(mimic / "ehr.npy")[:, :10])
    _refused(mimic, tmp_path, capsys, "ehr.npy: shape [40, 10, 24], but manifest.json describes [N, 48, 24]")


def test_a_float64_ehr_array_is_refused_naming_its_dtype(mimic, tmp_path, capsys):
    np.save(mimic / "ehr.npy", np.load(mimic / "ehr.npy").astype(np.float64))
    _refused(mimic, tmp_path, capsys, "ehr.npy: dtype float64, expected float32")


def test_a_film_array_of_another_size_than_the_manifest_is_refused(mimic, tmp_path, capsys):
    np.save(mimic / "cxr.npy", np.zeros((40, 8, 8), np.uint8))
    _refused(mimic, tmp_path, capsys, "cxr.npy: shape [40, 8, 8], but manifest.json describes [N, 16, 16]")


def test_nan_in_the_ehr_array_is_refused_naming_the_row(mimic, tmp_path, capsys):
    ehr = np.load(mimic / "ehr.npy")
    ehr[7, 3, 2] = np.nan
    np.save(mimic / "ehr.npy", ehr)
    _refused(mimic, tmp_path, capsys, "ehr.npy: row 7 holds NaN or inf")


@pytest.mark.parametrize("name", ["ehr.npy", "samples.parquet"])
def test_a_truncated_cohort_file_is_one_line_naming_it(mimic, tmp_path, capsys, name):
    data = (mimic / name).read_bytes()
    (mimic / name).write_bytes(data[: len(data) // 2])
    _refused(mimic, tmp_path, capsys, f"{name}: not a readable", "truncated or corrupt")


def test_a_split_value_test_with_a_capital_is_refused_not_dropped_from_every_split(mimic, tmp_path, capsys):
    _samples(mimic, split=lambda s: s.replace("test", "Test"))
    _refused(mimic, tmp_path, capsys, "samples.parquet: row", "column split: 'Test' is not one of train, val, test")


def test_a_patient_in_two_splits_is_refused_as_leakage(mimic, tmp_path, capsys):
    samples = pd.read_parquet(mimic / "samples.parquet")
    first, second = samples.index[samples["subject_id"] == samples.at[0, "subject_id"]][:2]
    other = "test" if samples.at[first, "split"] != "test" else "train"
    _samples(mimic, split=lambda s: s.where(s.index != second, other))
    _refused(mimic, tmp_path, capsys, f"rows {first} and {second}, column subject_id: patient",
             "splits must be by patient")


@pytest.mark.parametrize("value", [-1, 2])
def test_a_multilabel_label_outside_0_1_is_refused(mimic, tmp_path, capsys, value):
    _samples(mimic, Shock=lambda s: s.where(s.index != 5, value))
    _refused(mimic, tmp_path, capsys, f"samples.parquet: row 5, column Shock: {value} is not 0 or 1")


def test_a_label_of_minus_one_in_a_binary_task_is_refused(mimic, tmp_path, capsys):
    manifest = json.loads((mimic / "manifest.json").read_text())
    manifest |= {"task": "mortality", "task_type": "binary", "label_columns": ["Sepsis"]}
    (mimic / "manifest.json").write_text(json.dumps(manifest))
    _samples(mimic, Sepsis=lambda s: s.where(s.index != 3, -1))
    _refused(mimic, tmp_path, capsys, "row 3, column Sepsis: -1 is not 0 or 1 (a binary label)")


def test_a_class_index_outside_the_class_names_is_refused(adni, tmp_path, capsys):
    _samples(adni, label=lambda s: s.where(s.index != 2, 3))
    with pytest.raises(InputError, match=r"samples\.parquet: row 2, column label: 3 is not a class index 0-2"):
        load_cohort(adni)


def test_a_presence_flag_that_is_not_boolean_is_refused(mimic, tmp_path, capsys):
    _samples(mimic, has_cxr=lambda s: s.astype(int).where(s.index != 4, 7))
    _refused(mimic, tmp_path, capsys, "row 4, column has_cxr: 7 is not a presence flag")


def test_fewer_samples_than_the_manifest_counts_are_refused(mimic, tmp_path, capsys):
    pd.read_parquet(mimic / "samples.parquet").iloc[:35].to_parquet(mimic / "samples.parquet", index=False)
    for name in ("ehr", "cxr"):
        np.save(mimic / f"{name}.npy", np.load(mimic / f"{name}.npy")[:35])
    _refused(mimic, tmp_path, capsys, "samples.parquet: has 35 rows but manifest.json n_samples is 40")


def test_a_cohort_without_validation_split_positives_or_films_warns_when_training(mimic, tmp_path, capsys):
    _samples(mimic, split=lambda s: s.replace("val", "train"), Sepsis=lambda s: s * 0,
             has_cxr=lambda s: s & False)
    code, out, err = _train(mimic, tmp_path, capsys)
    assert code == 0, err
    warnings = [line for line in out.splitlines() if line.startswith("WARNING: cohort mimic:")]
    text = "\n".join(warnings)
    assert "no validation split" in text
    assert "one class only: label(s) Sepsis" in text
    assert "modality cxr is absent from every sample" in text


def test_cohort_warnings_name_a_split_without_positives_and_a_missing_class(mimic, adni):
    manifest, samples = read_manifest(mimic / "manifest.json"), pd.read_parquet(mimic / "samples.parquet")
    samples.loc[samples["split"] == "test", "CHF"] = 0
    assert any(w.startswith("the test split has no positive for 1 of 3 label(s) (CHF)")
               for w in cohort_warnings(samples, manifest))
    assert cohort_warnings(pd.read_parquet(mimic / "samples.parquet"), manifest) == []  # a healthy cohort: none
    manifest, samples = read_manifest(adni / "manifest.json"), pd.read_parquet(adni / "samples.parquet")
    samples["label"] = 1
    assert cohort_warnings(samples, manifest)[0] == "one class only: the cohort has no sample of CN, AD"


def test_the_etl_writes_its_warnings_into_the_manifest(tmp_path):
    raw = tmp_path / "raw"
    shutil.copytree(GOLDEN, raw)
    settings = MimicEtlSettings(workers=1, threads=1, memory_limit="256MB", cxr_size=8)
    build_mimic_cohort(raw / "mimic-iv", raw / "mimic-cxr-jpg", raw / "mimic-cxr-jpg", "phenotype", tmp_path / "out",
                       settings)
    manifest = read_manifest(tmp_path / "out" / "manifest.json")  # the typed model reads it back
    assert "no test split: evaluate has no sample to score" in manifest.warnings  # 2 stays: 1 train, 1 val


def test_the_report_shows_the_cohorts_warnings_in_its_cohort_section():
    from dataclasses import replace

    from clinfuse.evaluation.report import render_report
    from tests.evaluation.test_report_layout import wide_report

    assert 'id="cohort-warnings"' not in render_report(wide_report())  # none: no box
    html = render_report(replace(wide_report(), cohort_warnings=["no test split: evaluate has no sample to score"]))
    box = html[html.index('id="cohort-warnings"'):]
    assert "no test split: evaluate has no sample to score" in box[:box.index("</div>")]
