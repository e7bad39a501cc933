"""Damaged ADNIMERGE exports: one-line errors naming row and column, or counted duplicates."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from clinfuse.pipeline.cli import main
from clinfuse.pipeline.stages.etl_adni import build_adni_cohort
from tests.adni.test_adni_etl import ALL_TRAIN, adni  # noqa: F401 - the golden export fixture
from tests.robustness.edits import edit_text as _edit

HEADER_ROW2 = "1,011_S_0001,bl,2010-01-10,CN,CN,70,Male"


def _cli(folder: Path, out: Path, capsys) -> tuple[int, str]:
    code = main(["etl", "adni", "--adni", str(folder), "--out", str(out)])
    return code, capsys.readouterr().err.strip()




@pytest.mark.parametrize(("old", "new", "message"), [
    (HEADER_ROW2, "1,011_S_0001,bl,2010-01-10,CN,CN,-70,Male", "row 2, column AGE: '-70' is not an age"),
    (HEADER_ROW2, "1,011_S_0001,bl,2010-01-10,CN,CN,seventy,Male", "row 2, column AGE: 'seventy' is not an age"),
    (HEADER_ROW2, "1,011_S_0001,bl,10/Jan/20x0,CN,CN,70,Male", "row 2, column EXAMDATE: '10/Jan/20x0' is not a date"),
    (",27,1001\n", ",27,I1001\n", "row 2, column IMAGEUID: 'I1001' is not an image id"),
])
def test_impossible_values_are_one_line_errors_naming_row_and_column(adni, tmp_path, capsys, old, new, message):  # noqa: F811
    _edit(adni / "ADNIMERGE.csv", old, new)
    code, err = _cli(adni, tmp_path / "out", capsys)
    assert code == 2 and len(err.splitlines()) == 1 and message in err
    assert not (tmp_path / "out").exists()


def test_two_different_baseline_rows_for_one_subject_are_an_error(adni, tmp_path, capsys):  # noqa: F811
    path = adni / "ADNIMERGE.csv"
    second = next(line for line in path.read_text().splitlines() if line.startswith(HEADER_ROW2))
    path.write_text(path.read_text() + second.replace(",CN,CN,70,", ",CN,MCI,70,") + "\n")
    code, err = _cli(adni, tmp_path / "out", capsys)
    assert code == 2 and "RID 1 has two different baseline rows (they differ in DX)" in err


def test_exactly_repeated_rows_are_dropped_and_counted(adni, tmp_path):  # noqa: F811
    build_adni_cohort(adni, tmp_path / "clean", ALL_TRAIN)
    path = adni / "ADNIMERGE.csv"
    second = next(line for line in path.read_text().splitlines() if line.startswith(HEADER_ROW2))
    path.write_text(path.read_text() + second + "\n")
    build_adni_cohort(adni, tmp_path / "dup", ALL_TRAIN)
    clean = json.loads((tmp_path / "clean" / "manifest.json").read_text())
    dup = json.loads((tmp_path / "dup" / "manifest.json").read_text())
    assert dup["duplicate_rows_dropped"] == 1 and clean["duplicate_rows_dropped"] == 0
    assert dup["exclusions"] == clean["exclusions"] and dup["counts"] == clean["counts"]


@pytest.mark.parametrize(("content", "message"), [
    (b"", "empty file"),
    (None, "has a header but no visit rows"),
    (b"RID,PTID\n\xff\xfe1,2\n", "not UTF-8"),
])
def test_empty_header_only_and_non_utf8_adnimerge_are_one_line_errors(adni, tmp_path, capsys, content, message):  # noqa: F811
    path = adni / "ADNIMERGE.csv"
    path.write_bytes(path.read_text().splitlines()[0].encode() + b"\n" if content is None else content)
    code, err = _cli(adni, tmp_path / "out", capsys)
    assert code == 2 and len(err.splitlines()) == 1 and message in err
