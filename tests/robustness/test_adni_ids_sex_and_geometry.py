"""ADNIMERGE ids read exactly (RID 2.5 is not subject 2; 1e30 is no id), PTGENDER with stray whitespace
stripped or refused (never a silent UNKNOWN), a BOM read as UTF-8-sig, and a T1 volume whose header
cannot place it in space counted as unreadable (never given a default geometry)."""

from __future__ import annotations

import gzip
import json
import os
import struct
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from clinfuse.etl.synth.adni import brain_volume, nifti_bytes
from clinfuse.pipeline.cli import main
from clinfuse.pipeline.stages.etl_adni import build_adni_cohort
from tests.adni.test_adni_etl import ALL_TRAIN, adni  # noqa: F401 - the golden export fixture
from tests.robustness.edits import edit_text as _edit

ROW2 = "1,011_S_0001,bl,2010-01-10,CN,CN,70,Male,"
SROW_X = 280  # byte offset of the sform's first row in a NIfTI-1 header


def _cli(folder: Path, out: Path, capsys) -> tuple[int, str]:
    code = main(["etl", "adni", "--adni", str(folder), "--out", str(out)])
    return code, capsys.readouterr().err.strip()




@pytest.mark.parametrize(("rid", "message"), [
    ("2.5", "row 2, column RID: '2.5' is not a whole-number id"),
    ("1e30", "row 2, column RID: '1e30' is not a whole-number id"),
    ("99999999999999999999", "row 2, column RID: '99999999999999999999' is too large for a 64-bit id"),
])
def test_a_rid_that_is_not_a_whole_number_in_int64_is_a_one_line_error(adni, tmp_path, capsys, rid, message):  # noqa: F811
    _edit(adni / "ADNIMERGE.csv", ROW2, ROW2.replace("1,", f"{rid},", 1))
    code, err = _cli(adni, tmp_path / "out", capsys)
    assert code == 2 and len(err.splitlines()) == 1 and message in err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("uid", ["1e30", "99999999999999999999", "1001.5"])
def test_an_imageuid_that_is_not_a_whole_number_in_int64_is_a_one_line_error(adni, tmp_path, capsys, uid):  # noqa: F811
    _edit(adni / "ADNIMERGE.csv", ",27,1001\n", f",27,{uid}\n")
    code, err = _cli(adni, tmp_path / "out", capsys)
    assert code == 2 and len(err.splitlines()) == 1
    assert f"row 2, column IMAGEUID: '{uid}' is not an image id" in err


def test_ptgender_with_a_trailing_line_break_is_stripped_not_unknown(adni, tmp_path):  # noqa: F811
    _edit(adni / "ADNIMERGE.csv", ROW2, ROW2.replace(",Male,", ',"Male\n",'))
    build_adni_cohort(adni, tmp_path / "out", ALL_TRAIN)
    samples = pd.read_parquet(tmp_path / "out" / "samples.parquet")
    assert samples.loc[samples["RID"] == 1, "sex"].tolist() == ["M"]


def test_an_unknown_ptgender_is_a_one_line_error_not_unknown(adni, tmp_path, capsys):  # noqa: F811
    _edit(adni / "ADNIMERGE.csv", ROW2, ROW2.replace(",Male,", ",Mael,"))
    code, err = _cli(adni, tmp_path / "out", capsys)
    assert code == 2 and len(err.splitlines()) == 1
    assert "row 2, column PTGENDER: unknown value 'Mael'" in err


def test_a_byte_order_mark_in_adnimerge_is_not_part_of_the_first_column(adni, tmp_path):  # noqa: F811
    path = adni / "ADNIMERGE.csv"
    path.write_bytes(b"\xef\xbb\xbf" + path.read_bytes())
    build_adni_cohort(adni, tmp_path / "out", ALL_TRAIN)
    assert pd.read_parquet(tmp_path / "out" / "samples.parquet")["RID"].tolist()[:2] == [1, 2]


def test_a_volume_with_a_nan_affine_is_counted_unreadable_not_given_a_default_geometry(adni, tmp_path):  # noqa: F811
    scan = next((adni / "MRI" / "011_S_0001").glob("*.nii.gz"))
    header_and_data = bytearray(gzip.decompress(nifti_bytes(brain_volume(np.random.default_rng(1), np.zeros(3), 12))))
    header_and_data[SROW_X:SROW_X + 4] = struct.pack("<f", float("nan"))
    scan.write_bytes(gzip.compress(bytes(header_and_data)))
    build_adni_cohort(adni, tmp_path / "out", ALL_TRAIN)
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["mri"]["unreadable"] == 1
    assert "affine" in manifest["mri"]["failures"][0]["reason"]
    samples = pd.read_parquet(tmp_path / "out" / "samples.parquet")
    assert not samples.loc[samples["RID"] == 1, "has_mri"].item()


def test_a_scan_that_is_a_symlink_loop_is_counted_unreadable_with_its_reason(adni, tmp_path):  # noqa: F811
    scan = next((adni / "MRI" / "011_S_0001").glob("*.nii.gz"))
    scan.unlink()
    os.symlink(scan.name + ".b", scan)
    os.symlink(scan.name, scan.with_name(scan.name + ".b"))
    build_adni_cohort(adni, tmp_path / "out", ALL_TRAIN)
    failures = json.loads((tmp_path / "out" / "manifest.json").read_text())["mri"]["failures"]
    assert len(failures) == 1 and "symbolic links" in failures[0]["reason"]
