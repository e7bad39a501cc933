"""MIMIC-IV exports whose tables do not fit together, whose ids cannot be ids, whose times carry a zone,
or that hold two copies of one table: a counted exclusion under its own reason, or one line naming the
file, line and column. Built from the hand-written golden export (4 patients, 5 ICU stays)."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pandas as pd
import pytest

from clinfuse.pipeline.cli import main
from clinfuse.pipeline.settings.etl_mimic import MimicEtlSettings
from clinfuse.pipeline.stages.etl_mimic import build_mimic_cohort
from tests.robustness.edits import edit_text as _edit

GOLDEN = Path(__file__).resolve().parents[1] / "mimic" / "golden" / "input"
SETTINGS = MimicEtlSettings(workers=1, threads=1, memory_limit="256MB", cxr_size=8)
STAY_2 = "10000002,20000021,30000201,"  # icustays: subject 10000002's only stay (in the phenotype cohort)




def _cli(raw: Path, out: Path, capsys, task: str = "phenotype") -> tuple[int, str]:
    code = main(["etl", "mimic", "--task", task, "--mimic-iv", str(raw / "mimic-iv"), "--mimic-cxr",
                 str(raw / "mimic-cxr-jpg"), "--out", str(out)])
    return code, capsys.readouterr().err.strip()


def _build(raw: Path, out: Path, task: str = "phenotype") -> tuple[dict, pd.DataFrame]:
    build_mimic_cohort(raw / "mimic-iv", raw / "mimic-cxr-jpg", raw / "mimic-cxr-jpg", task, out, SETTINGS)
    return json.loads((out / "manifest.json").read_text()), pd.read_parquet(out / "samples.parquet")


def _excluded(manifest: dict) -> dict[str, int]:
    return {e["reason"]: e["excluded"] for e in manifest["exclusions"]}


def test_an_icu_stay_whose_hadm_id_matches_no_admission_is_counted_as_such_not_as_a_missing_age(raw, tmp_path):
    _edit(raw / "mimic-iv/icu/icustays.csv", STAY_2, "10000002,20000099,30000201,")
    manifest, samples = _build(raw, tmp_path / "out")
    got = _excluded(manifest)
    assert got["hadm_id matches no row of admissions"] == 1
    assert got["age at admission missing or outside 0-120"] == 0
    assert 30000201 not in set(samples["stay_id"])


def test_an_admitted_subject_without_a_patients_row_is_counted_as_such_not_as_a_missing_age(raw, tmp_path):
    path = raw / "mimic-iv/hosp/patients.csv"
    path.write_text("".join(line for line in path.read_text().splitlines(keepends=True)
                            if not line.startswith("10000002,")))
    manifest, samples = _build(raw, tmp_path / "out")
    got = _excluded(manifest)
    assert got["subject_id matches no row of patients"] == 1
    assert got["age at admission missing or outside 0-120"] == 0
    assert 10000002 not in set(samples["subject_id"])


def test_an_icu_stay_is_never_joined_to_another_patients_admission(raw, tmp_path):
    # stay 30000201 now claims subject 10000004, but its admission 20000021 is subject 10000002's
    _edit(raw / "mimic-iv/icu/icustays.csv", STAY_2, "10000004,20000021,30000201,")
    manifest, samples = _build(raw, tmp_path / "out")
    assert _excluded(manifest)["icustays subject_id differs from its admission's subject_id"] == 1
    assert 30000201 not in set(samples["stay_id"])


def test_a_discharge_before_the_admission_is_excluded_and_never_labels_mortality(raw, tmp_path, capsys):
    _edit(raw / "mimic-iv/hosp/admissions.csv", "10000001,20000011,2150-01-01 00:00:00,2150-01-05 00:00:00",
          "10000001,20000011,2150-01-01 00:00:00,2149-12-05 00:00:00")
    manifest, samples = _build(raw, tmp_path / "pheno")
    assert _excluded(manifest)["admission dischtime before admittime"] == 1
    assert 30000101 not in set(samples["stay_id"])
    # the mortality cohort's only stay is that admission's: nothing is labelled from impossible times
    code, err = _cli(raw, tmp_path / "mort", capsys, task="mortality")
    assert code == 2 and len(err.splitlines()) == 1
    assert "admission dischtime before admittime -1" in err
    assert not (tmp_path / "mort").exists()


def test_a_consistent_export_lists_no_broken_link_step(raw, tmp_path):
    manifest, _ = _build(raw, tmp_path / "out")
    reasons = [e["reason"] for e in manifest["exclusions"]]
    assert not any("matches no row" in r or "differs from its admission" in r for r in reasons)


@pytest.mark.parametrize(("table", "old", "new", "message"), [
    ("hosp/patients.csv", "10000001,F,70,", "99999999999999999999,F,70,",
     "patients.csv: line 2, column subject_id: '99999999999999999999' is too large for a 64-bit id"),
    ("icu/icustays.csv", STAY_2, "10000002,20000021,1e30,",
     "icustays.csv: line 3, column stay_id: '1e30' is not a whole-number id"),
    ("hosp/admissions.csv", "10000002,20000021,", "10000002,2.5,",
     "admissions.csv: line 3, column hadm_id: '2.5' is not a whole-number id"),
    ("icu/icustays.csv", STAY_2, "10000002,9223372036854775808,30000201,",
     "icustays.csv: line 3, column hadm_id: '9223372036854775808' is too large for a 64-bit id"),
    # streamed through DuckDB, whose BIGINT reading would round 20000021.5 to another admission
    ("hosp/diagnoses_icd.csv", "10000002,20000021,1,N179", "10000002,20000021.5,1,N179",
     "diagnoses_icd.csv: column hadm_id: '20000021.5' is not a whole-number id"),
    ("icu/chartevents.csv", "10000001,20000011,30000101,1,2150-01-01 09:30:00",
     "10000001,20000011,30000101.5,1,2150-01-01 09:30:00",
     "chartevents.csv: line 2, column stay_id: '30000101.5' is not a whole-number id"),
])
def test_an_id_that_is_not_a_whole_number_in_int64_is_a_one_line_error(raw, tmp_path, capsys, table, old, new,
                                                                         message):
    _edit(raw / "mimic-iv" / table, old, new)
    code, err = _cli(raw, tmp_path / "out", capsys)
    assert code == 2 and len(err.splitlines()) == 1 and message in err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(("table", "old", "new", "where"), [
    ("icu/icustays.csv", "2150-01-01 10:00:00,2150-01-04", "2150-01-01 10:00:00+00:00,2150-01-04",
     "icustays.csv: line 2, column intime: '2150-01-01 10:00:00+00:00' carries a time zone"),
    ("hosp/admissions.csv", "10000002,20000021,2150-01-01 00:00:00,", "10000002,20000021,2150-01-01T00:00:00Z,",
     "admissions.csv: line 3, column admittime"),
    # streamed through DuckDB, which would drop the offset silently: its first rows are checked
    ("icu/chartevents.csv", "30000101,1,2150-01-01 09:30:00,", "30000101,1,2150-01-01 09:30:00+05:00,",
     "chartevents.csv: line 2, column charttime: '2150-01-01 09:30:00+05:00' carries a time zone"),
])
def test_a_time_with_a_zone_suffix_is_refused_naming_file_line_and_column(raw, tmp_path, capsys, table, old, new,
                                                                         where):
    _edit(raw / "mimic-iv" / table, old, new)
    code, err = _cli(raw, tmp_path / "out", capsys)
    assert code == 2 and len(err.splitlines()) == 1 and where in err and "naive local times" in err


def test_mixed_offsets_are_refused_at_the_first_zoned_value(raw, tmp_path, capsys):
    path = raw / "mimic-iv/icu/icustays.csv"
    _edit(path, "2150-01-01 10:00:00,2150-01-04", "2150-01-01 10:00:00+01:00,2150-01-04")
    _edit(path, "2150-01-01 08:00:00,2150-01-02", "2150-01-01 08:00:00-05:00,2150-01-02")
    code, err = _cli(raw, tmp_path / "out", capsys)
    assert code == 2 and len(err.splitlines()) == 1 and "line 2, column intime" in err


@pytest.mark.parametrize("compressed", [False, True])
def test_a_byte_order_mark_is_read_as_utf8_sig_and_changes_nothing(raw, tmp_path, compressed):
    _, clean = _build(raw, tmp_path / "clean")
    for table in ("hosp/patients.csv", "icu/icustays.csv", "icu/chartevents.csv", "hosp/diagnoses_icd.csv"):
        path = raw / "mimic-iv" / table
        data = b"\xef\xbb\xbf" + path.read_bytes()
        if compressed:
            path.unlink()
            path.with_name(path.name + ".gz").write_bytes(gzip.compress(data))
        else:
            path.write_bytes(data)
    _, bom = _build(raw, tmp_path / "bom")
    pd.testing.assert_frame_equal(bom, clean)


@pytest.mark.parametrize("table", ["icu/chartevents", "hosp/patients"])
def test_a_table_present_both_as_csv_and_csv_gz_is_refused_naming_both(raw, tmp_path, capsys, table):
    path = raw / "mimic-iv" / f"{table}.csv"
    path.with_name(path.name + ".gz").write_bytes(gzip.compress(path.read_bytes()))
    code, err = _cli(raw, tmp_path / "out", capsys)
    assert code == 2 and len(err.splitlines()) == 1
    assert f"{Path(table).name}.csv.gz: {Path(table).name}.csv is also present" in err
