"""Damaged MIMIC-CXR-JPG metadata and films. The metadata table is read as strictly as the MIMIC-IV
tables (one line naming the file, and the row and column where one applies); a film that cannot be
opened or is too small to be a radiograph is counted under its reason, never fatal, never upsampled."""

from __future__ import annotations

import gzip
import json
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from clinfuse.etl.mimic.cxr import NOT_OPENABLE, TOO_SMALL, decode_one
from clinfuse.pipeline.cli import main
from clinfuse.pipeline.settings.etl_mimic import MimicEtlSettings
from clinfuse.pipeline.stages.etl_mimic import build_mimic_cohort
from tests.robustness.edits import edit_text as _edit

GOLDEN = Path(__file__).resolve().parents[1] / "mimic" / "golden" / "input"
SETTINGS = MimicEtlSettings(workers=1, threads=1, memory_limit="256MB", cxr_size=8)
META = "mimic-cxr-2.0.0-metadata.csv"
ROW_B = "bbbb0002,10000001,50000002,CHEST (PORTABLE AP),AP,12,10,21500102,90000.5,"  # stay 30000101's paired film
FILM_B = "files/p10/p10000001/s50000002/bbbb0002.jpg"




def _cli(raw: Path, out: Path, capsys) -> tuple[int, str]:
    code = main(["etl", "mimic", "--task", "phenotype", "--mimic-iv", str(raw / "mimic-iv"), "--mimic-cxr",
                 str(raw / "mimic-cxr-jpg"), "--out", str(out)])
    return code, capsys.readouterr().err.strip()


def _build(raw: Path, out: Path) -> tuple[dict, pd.DataFrame]:
    build_mimic_cohort(raw / "mimic-iv", raw / "mimic-cxr-jpg", raw / "mimic-cxr-jpg", "phenotype", out, SETTINGS)
    return json.loads((out / "manifest.json").read_text()), pd.read_parquet(out / "samples.parquet")


def _one_line_error(raw, tmp_path, capsys, *needles):
    code, err = _cli(raw, tmp_path / "out", capsys)
    assert code == 2 and len(err.splitlines()) == 1, err
    for needle in needles:
        assert needle in err
    assert not (tmp_path / "out").exists()


def test_a_truncated_gzip_metadata_table_is_a_one_line_error_naming_it(raw, tmp_path, capsys):
    path = raw / "mimic-cxr-jpg" / META
    data = gzip.compress(path.read_bytes() * 200)
    path.unlink()
    (raw / "mimic-cxr-jpg" / f"{META}.gz").write_bytes(data[: len(data) // 2])
    _one_line_error(raw, tmp_path, capsys, f"{META}.gz", "truncated or corrupt")


@pytest.mark.parametrize("name", [META, f"{META}.gz"])
def test_a_zero_byte_metadata_table_is_a_one_line_error_naming_it(raw, tmp_path, capsys, name):
    (raw / "mimic-cxr-jpg" / META).unlink()
    (raw / "mimic-cxr-jpg" / name).write_bytes(b"")
    _one_line_error(raw, tmp_path, capsys, name, "empty file")


def test_non_utf8_metadata_is_a_one_line_error_naming_it(raw, tmp_path, capsys):
    path = raw / "mimic-cxr-jpg" / META
    path.write_bytes(path.read_bytes().replace(b"Recumbent", b"Recumb\xe9nt", 1))
    _one_line_error(raw, tmp_path, capsys, f"{META}: not UTF-8")


@pytest.mark.parametrize(("new", "needles"), [
    (ROW_B.replace("21500102", "21501345"), ["row 3: StudyDate/StudyTime", "column StudyDate"]),
    (ROW_B.replace("21500102", "99999999"), ["row 3: StudyDate/StudyTime", "column StudyDate"]),
    # 99 h 61 min 99 s is not a time: never rolled into another day
    (ROW_B.replace("90000.5", "996199"), ["row 3: StudyDate/StudyTime", "column StudyTime", "996199"]),
    (ROW_B.replace("90000.5", "1e5"), ["row 3: StudyDate/StudyTime", "column StudyTime"]),
    (ROW_B.replace("10000001", "p10000001"), ["row 3, column subject_id: 'p10000001' is not a whole-number id"]),
    (ROW_B.replace("10000001", "99999999999999999999"), ["row 3, column subject_id", "too large for a 64-bit id"]),
    (ROW_B.replace("50000002", "5.5"), ["row 3, column study_id: '5.5' is not a whole-number id"]),
])
def test_an_impossible_metadata_value_is_a_one_line_error_naming_row_and_column(raw, tmp_path, capsys, new,
                                                                               needles):
    _edit(raw / "mimic-cxr-jpg" / META, ROW_B, new)
    _one_line_error(raw, tmp_path, capsys, META, *needles)


def test_a_dicom_id_listed_twice_with_different_views_is_refused_naming_both_rows(raw, tmp_path, capsys):
    path = raw / "mimic-cxr-jpg" / META
    line = next(x for x in path.read_text().splitlines() if x.startswith(ROW_B))
    path.write_text(path.read_text() + line.replace(",AP,", ",PA,", 1) + "\n")
    _one_line_error(raw, tmp_path, capsys, f"{META}: rows 3 and 8: dicom_id 'bbbb0002' appears twice",
                    "ViewPosition")


def test_a_dicom_id_repeated_exactly_is_dropped_and_counted(raw, tmp_path):
    _, clean = _build(raw, tmp_path / "clean")
    path = raw / "mimic-cxr-jpg" / META
    line = next(x for x in path.read_text().splitlines() if x.startswith(ROW_B))
    path.write_text(path.read_text() + line + "\n")
    manifest, dup = _build(raw, tmp_path / "dup")
    assert manifest["duplicate_rows_dropped"]["mimic-cxr metadata"] == 1
    pd.testing.assert_frame_equal(dup, clean)


def test_metadata_present_both_as_csv_and_csv_gz_is_refused_naming_both(raw, tmp_path, capsys):
    path = raw / "mimic-cxr-jpg" / META
    path.with_name(f"{META}.gz").write_bytes(gzip.compress(path.read_bytes()))
    _one_line_error(raw, tmp_path, capsys, f"{META}.gz: {META} is also present")


def test_a_byte_order_mark_in_the_metadata_changes_nothing(raw, tmp_path):
    _, clean = _build(raw, tmp_path / "clean")
    path = raw / "mimic-cxr-jpg" / META
    path.write_bytes(b"\xef\xbb\xbf" + path.read_bytes())
    _, bom = _build(raw, tmp_path / "bom")
    pd.testing.assert_frame_equal(bom, clean)


def test_a_1x1_film_is_counted_as_too_small_and_never_upsampled(raw, tmp_path):
    Image.fromarray(np.full((1, 1), 200, np.uint8)).save(raw / "mimic-cxr-jpg" / FILM_B, format="JPEG")
    manifest, samples = _build(raw, tmp_path / "out")
    assert manifest["cxr"]["unreadable_by_reason"] == {TOO_SMALL: 1}
    assert {e["reason"]: e["excluded"] for e in manifest["exclusions"]}["paired film missing or unreadable"] == 1
    assert 30000101 not in set(samples["stay_id"])


def test_a_film_smaller_than_the_target_size_but_a_radiograph_is_upsampled_and_counted(tmp_path):
    Image.fromarray(np.full((20, 30), 90, np.uint8)).save(tmp_path / "small.jpg", format="JPEG")
    img, failure, notes = decode_one(str(tmp_path / "small.jpg"), 64)
    assert failure is None and img.shape == (64, 64)
    assert notes == ["smaller than 64 px on its shorter side: upsampled"]


@pytest.mark.parametrize("kind", ["symlink loop", "folder"])
def test_a_film_that_cannot_be_opened_is_counted_with_its_reason_not_an_abort(raw, tmp_path, capsys, kind):
    film = raw / "mimic-cxr-jpg" / FILM_B
    film.unlink()
    if kind == "symlink loop":
        os.symlink(film.name + ".b", film)
        os.symlink(film.name, film.with_name(film.name + ".b"))
    else:
        film.mkdir()
    code, err = _cli(raw, tmp_path / "out", capsys)
    assert code == 0, err
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["cxr"]["unreadable_by_reason"] == {NOT_OPENABLE: 1}
    assert {e["reason"]: e["excluded"] for e in manifest["exclusions"]}["paired film missing or unreadable"] == 1
