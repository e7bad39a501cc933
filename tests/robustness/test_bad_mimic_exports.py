"""Damaged or odd MIMIC-IV exports: each is a one-line error naming file, line and column, or a
counted exclusion with its own reason. Built from the hand-written golden export (4 patients)."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import numpy as np
import pytest

from clinfuse.pipeline.cli import main
from clinfuse.pipeline.settings.etl_mimic import MimicEtlSettings
from clinfuse.pipeline.stages.etl_mimic import build_mimic_cohort
from tests.robustness.edits import edit_text as _edit

GOLDEN = Path(__file__).resolve().parents[1] / "mimic" / "golden" / "input"
SETTINGS = MimicEtlSettings(workers=1, threads=1, memory_limit="256MB", cxr_size=8)




def _append_line(path: Path, line_no: int) -> None:
    """Repeat line `line_no` (1 = header) at the end of the file."""
    lines = path.read_text().splitlines()
    path.write_text("\n".join([*lines, lines[line_no - 1]]) + "\n")


def _cli(raw: Path, out: Path, capsys) -> tuple[int, str]:
    code = main(["etl", "mimic", "--task", "phenotype", "--mimic-iv", str(raw / "mimic-iv"), "--mimic-cxr",
                 str(raw / "mimic-cxr-jpg"), "--out", str(out)])
    return code, capsys.readouterr().err.strip()


def _build(raw: Path, out: Path) -> dict:
    build_mimic_cohort(raw / "mimic-iv", raw / "mimic-cxr-jpg", raw / "mimic-cxr-jpg", "phenotype", out, SETTINGS)
    return json.loads((out / "manifest.json").read_text())


def test_exactly_repeated_rows_are_dropped_and_counted_and_the_cohort_is_unchanged(raw, tmp_path):
    clean = _build(raw, tmp_path / "clean")
    _append_line(raw / "mimic-iv/icu/icustays.csv", 2)
    _append_line(raw / "mimic-iv/hosp/patients.csv", 3)
    _append_line(raw / "mimic-iv/hosp/admissions.csv", 2)
    dup = _build(raw, tmp_path / "dup")
    assert dup["duplicate_rows_dropped"] == {"hosp/patients": 1, "hosp/admissions": 1, "icu/icustays": 1}
    assert dup["exclusions"] == clean["exclusions"]  # no real stay lost as "more than one ICU stay"
    ehr = np.load(tmp_path / "dup" / "ehr.npy")
    import pandas as pd

    assert ehr.shape[0] == len(pd.read_parquet(tmp_path / "dup" / "samples.parquet")) == clean["n_samples"]


@pytest.mark.parametrize(("table", "old", "new", "message"), [
    ("icu/icustays.csv", "10000001,20000011,30000101,Medical Intensive Care Unit (MICU),Medical Intensive Care Unit "
     "(MICU),2150-01-01 10:00:00", None, "lines 2 and 7: stay_id 30000101 appears twice with different intime"),
    ("hosp/admissions.csv", "10000001,20000011,", "10000001,20000011.5,",
     "admissions.csv: line 2, column hadm_id: '20000011.5' is not a whole-number id"),
    ("icu/icustays.csv", "2150-01-01 10:00:00,2150-01-04", "yesterday,2150-01-04",
     "icustays.csv: line 2, column intime: 'yesterday' is not a date-time"),
    ("hosp/patients.csv", "10000001,F,70,", "10000001,F,seventy,",
     "patients.csv: line 2, column anchor_age: 'seventy' is not a number"),
])
def test_malformed_values_are_one_line_errors_naming_file_line_and_column(raw, tmp_path, capsys, table, old, new,
                                                                       message):
    path = raw / "mimic-iv" / table
    if new is None:  # a conflicting duplicate: the same stay with another intime
        path.write_text(path.read_text() + old.replace("10:00:00", "11:00:00") + ",2150-01-04 10:00:00,3.0\n")
    else:
        _edit(path, old, new)
    code, err = _cli(raw, tmp_path / "out", capsys)
    assert code == 2 and len(err.splitlines()) == 1
    assert message in err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(("old", "new", "reason"), [
    ("10000001,F,70,", "10000001,F,-3,", "age at admission missing or outside 0-120"),
    ("10000001,F,70,", "10000001,F,,", "age at admission missing or outside 0-120"),
    ("10000001,F,70,", "10000001,F,251,", "age at admission missing or outside 0-120"),
])
def test_impossible_ages_are_their_own_exclusion_not_children(raw, tmp_path, old, new, reason):
    _edit(raw / "mimic-iv/hosp/patients.csv", old, new)
    manifest = _build(raw, tmp_path / "out")
    got = {e["reason"]: e["excluded"] for e in manifest["exclusions"]}
    assert got[reason] == 1 and got["age at admission < 18"] == 1  # the real 16-year-old only


def test_an_icu_stay_ending_before_it_starts_is_excluded_with_its_reason(raw, tmp_path):
    _edit(raw / "mimic-iv/icu/icustays.csv", "2150-01-01 10:00:00,2150-01-04 10:00:00",
          "2150-01-01 10:00:00,2149-12-31 10:00:00")
    got = {e["reason"]: e["excluded"] for e in _build(raw, tmp_path / "out")["exclusions"]}
    assert got["ICU outtime before intime"] == 1


def test_a_truncated_gzip_table_is_a_one_line_error(raw, tmp_path, capsys):
    src = raw / "mimic-iv/hosp/admissions.csv"
    data = gzip.compress(src.read_bytes() * 50)
    src.unlink()
    (raw / "mimic-iv/hosp/admissions.csv.gz").write_bytes(data[: len(data) // 2])
    code, err = _cli(raw, tmp_path / "out", capsys)
    assert code == 2 and len(err.splitlines()) == 1 and "admissions.csv.gz" in err


def test_non_utf8_bytes_are_a_one_line_error(raw, tmp_path, capsys):
    path = raw / "mimic-iv/hosp/admissions.csv"
    path.write_bytes(path.read_bytes().replace(b"WHITE", b"WHIT\xe9", 1))
    code, err = _cli(raw, tmp_path / "out", capsys)
    assert code == 2 and "admissions.csv: not UTF-8" in err


def test_text_in_a_numeric_chartevents_column_names_file_and_column(raw, tmp_path, capsys):
    _edit(raw / "mimic-iv/icu/chartevents.csv", "2150-01-01 10:10:00,,220045,90,90,", "2150-01-01 10:10:00,,220045,90,ninety,")
    code, err = _cli(raw, tmp_path / "out", capsys)
    assert code == 2 and len(err.splitlines()) == 1
    assert "chartevents.csv" in err and "valuenum" in err


def test_a_16_bit_png_saved_as_jpg_is_rescaled_not_clipped_to_white(tmp_path):
    from PIL import Image

    from clinfuse.etl.mimic.cxr import decode_one

    ramp = (np.arange(64 * 64, dtype=np.uint16).reshape(64, 64) * 7)  # 12-bit-ish values, 0..28665
    path = tmp_path / "film.jpg"
    Image.fromarray(ramp).save(path, format="PNG")
    img, failure, notes = decode_one(str(path), 64)
    assert failure is None
    assert img.min() == 0 and img.max() == 255
    assert abs(float(img.mean()) - 127.5) < 2  # a linear ramp stays a ramp, not ~97 % white
    assert notes == ["I;16 image: rescaled from its min-max range to 8 bits"]


def test_console_warnings_about_unreadable_films_carry_no_patient_or_image_ids(raw, tmp_path):
    import warnings

    films = sorted((raw / "mimic-cxr-jpg" / "files").rglob("*.jpg"))
    for film in films:
        film.write_bytes(b"not a jpeg")  # every film unreadable
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with pytest.raises(Exception):  # noqa: B017 - the paired cohort is empty; only the warnings matter here
            _build(raw, tmp_path / "out")
    messages = [str(w.message) for w in caught if "unreadable chest film" in str(w.message)]
    assert messages
    for film in films:
        for token in (film.stem, film.parent.name, film.parent.parent.name):
            assert all(token not in m for m in messages), token
