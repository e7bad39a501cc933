"""ADNI T1 scans by hand (etl/adni/mri.py): which scan each subject gets, where it lies, which headers
are refused, and what preprocessing makes of a tiny volume whose every voxel can be computed."""

from __future__ import annotations

import logging
import struct
import warnings
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from clinfuse.etl.adni.mri import check_geometry, choose_scans, preprocess_volume, quiet_monai, scan_path

# RID 2's baseline date is written MM/DD/YYYY after an ISO date, as ADNIMERGE exports may mix them
BASE = pd.DataFrame({"RID": [1, 2, 3, 4, 5, 6], "EXAMDATE": ["2010-01-01", "01/01/2010"] + ["2010-01-01"] * 3
                     + ["unknown"]})


def _visits() -> pd.DataFrame:
    # RID 1: its bl scan (dated 300 days late) wins over a screening scan on the baseline day; RID 2: no
    # bl scan, scans at +183 (written MM/DD/YYYY, which validate_adnimerge accepts) and +200 days; RID 3: one
    # scan at +184; RID 4: scans at -20, -10 and +10 days and an IMAGEUID that is no number; RID 5: a scan
    # without a readable date; RID 6: no readable baseline date; RID 9 is not in the base table
    return pd.DataFrame([
        (1, " bl ", "2010-10-28", "11"), (1, "sc", "2010-01-01", "10"),
        (1, "m06", "2010-01-11", "12"),
        (2, "bl", "2010-01-01", None), (2, "m06", "07/03/2010", "22"), (2, "m12", "2010-07-20", "23"),
        (3, "m06", "2010-07-04", "31"),
        (4, "sc", "2009-12-12", "40"), (4, "sc", "2009-12-22", "41"), (4, "m03", "2010-01-11", "42"), (4, "bl", "2010-01-01", "abc"),
        (5, "m03", "not a date", "51"), (6, "m03", "2010-01-05", "61"),
        (9, "bl", "2010-01-01", "91"),
    ], columns=["RID", "VISCODE", "EXAMDATE", "IMAGEUID"])


def test_the_baseline_scan_wins_else_the_nearest_within_183_days_earlier_first():
    got = choose_scans(_visits(), BASE, window_days=183)
    assert list(got.columns) == ["RID", "IMAGEUID", "scan_viscode", "scan_days_from_bl"]
    assert got["RID"].tolist() == [1, 2, 3, 4, 5, 6]
    assert got["IMAGEUID"].tolist()[:2] == [11, 22] and got["IMAGEUID"][3] == 41
    assert got["IMAGEUID"][[2, 4, 5]].isna().all() and got["scan_viscode"][[2, 4, 5]].isna().all()
    assert got["scan_viscode"].tolist()[:2] == [" bl ", "m06"] and got["scan_viscode"][3] == "sc"
    assert got["scan_days_from_bl"].tolist()[:2] == [300, 183] and got["scan_days_from_bl"][3] == -10


def test_a_narrower_window_leaves_subjects_without_a_scan():
    got = choose_scans(_visits(), BASE, window_days=182)
    assert got["IMAGEUID"][0] == 11 and got["IMAGEUID"][3] == 41
    assert got["IMAGEUID"][[1, 2, 4, 5]].isna().all()


def test_a_scan_lies_at_mri_ptid_imageuid_nii_gz_or_nii_when_only_that_exists(tmp_path):
    folder = tmp_path / "MRI" / "011_S_0001"
    assert scan_path(tmp_path, "011_S_0001", 1001.0) == folder / "1001.nii.gz"
    folder.mkdir(parents=True)
    (folder / "1001.nii").write_bytes(b"")
    assert scan_path(tmp_path, "011_S_0001", 1001) == folder / "1001.nii"
    (folder / "1001.nii.gz").write_bytes(b"")
    assert scan_path(str(tmp_path), "011_S_0001", "1001") == folder / "1001.nii.gz"


def _damaged_header(tmp_path: Path, offset: int, value: float) -> Path:
    path = tmp_path / "a.nii"
    nib.save(nib.Nifti1Image(np.zeros((4, 4, 4), np.int16), np.eye(4)), path)
    raw = bytearray(path.read_bytes())
    raw[offset:offset + 4] = struct.pack("<f", value)
    path.write_bytes(bytes(raw))
    return path


@pytest.mark.parametrize(("offset", "value", "message"), [
    (280, float("nan"), "the header's affine (voxel-to-world matrix) holds NaN or inf"),   # srow_x[0]
    (280, float("inf"), "the header's affine (voxel-to-world matrix) holds NaN or inf"),
    (320, 0.0, "the header's affine is singular (a zero voxel axis)"),                     # srow_z[2]
    (84, float("nan"), "the header's voxel sizes (pixdim) are not positive numbers: [1.0, nan, 1.0]"),  # pixdim[2]
    (84, float("inf"), "the header's voxel sizes (pixdim) are not positive numbers: [1.0, inf, 1.0]"),
])
def test_a_header_that_cannot_place_the_volume_is_refused_with_its_reason(tmp_path, offset, value, message):
    path = _damaged_header(tmp_path, offset, value)
    with pytest.raises(ValueError) as err:
        check_geometry(path)
    assert str(err.value) == message
    out, reason = preprocess_volume(str(path), 4, 1.0)
    assert reason == f"ValueError: {message}"
    assert out.shape == (4, 4, 4) and out.dtype == np.uint8 and not out.any()


def test_a_nearly_singular_but_valid_affine_is_accepted(tmp_path):
    path = tmp_path / "a.nii"
    nib.save(nib.Nifti1Image(np.zeros((4, 4, 4), np.int16), np.diag([1.0, 1.0, 1e-5, 1.0])), path)
    check_geometry(path)  # det 1e-5 is a thin slab, not a zero axis


def test_a_single_volume_with_a_time_step_of_0_is_read(tmp_path):
    # converters write [X, Y, Z, 1] with pixdim[4] = 0: only the three spatial voxel sizes are checked
    path = tmp_path / "a.nii"
    nib.save(nib.Nifti1Image(np.zeros((4, 4, 4, 1), np.int16), np.eye(4)), path)
    raw = bytearray(path.read_bytes())
    raw[92:96] = struct.pack("<f", 0.0)  # pixdim[4]
    path.write_bytes(bytes(raw))
    assert nib.load(path).header.get_zooms()[3] == 0
    check_geometry(path)


def test_an_absent_scan_a_folder_and_a_4d_series_are_reasons_not_crashes(tmp_path):
    (tmp_path / "folder.nii").mkdir()
    nib.save(nib.Nifti1Image(np.ones((6, 6, 6, 2), np.int16), np.eye(4)), tmp_path / "series.nii")
    reasons = [preprocess_volume(str(tmp_path / name), 5, 1.0) for name in ("absent.nii", "folder.nii", "series.nii")]
    assert [r for _, r in reasons] == [
        "FileNotFoundError: scan referenced in ADNIMERGE (IMAGEUID) is absent",
        "OSError: not a regular file (a folder, a device or a pipe)",
        "ValueError: expected a 3D T1 volume, got shape (6, 6, 6, 2)"]
    assert all(out.shape == (5, 5, 5) and out.dtype == np.uint8 and not out.any() for out, _ in reasons)


def test_a_reason_is_one_line_of_at_most_300_characters(tmp_path):
    path = tmp_path / ("line\nbreak" + "x" * 200) / ("y" * 150 + ".dat")  # nibabel's error names the path
    path.parent.mkdir()
    path.write_bytes(b"not an image")
    _, reason = preprocess_volume(str(path), 4, 1.0)
    assert len(reason) == 300 and "\n" not in reason and "line break" in reason


def test_preprocessing_a_tiny_volume_by_hand(tmp_path):
    # 8^3 voxels: border 2, interior 20 with four 0s and two -1000s, a 2^3 block of 100 and two outliers
    # of 1000. Percentiles: 0.5th (rank 2.6 of 512) = 0, 99.5th (rank 508.4) = 100: v/100 clipped to [0, 1].
    # Foreground (> 0.05) is the interior, plus the margin of 1: the whole cube. Resize 8 -> 4 (trilinear)
    # averages each 2^3 block. The file is stored L->R flipped (x spacing -1): RAS flips axis 0 back.
    v = np.full((8, 8, 8), 2.0)
    v[1:7, 1:7, 1:7] = 20
    v[1, 1, 1:6] = 0
    v[1, 1, 1] = v[6, 6, 6] = -1000  # below the 0.5th percentile: clipped to 0 before resizing
    v[4:6, 4:6, 4:6] = 100
    v[2, 2, 2] = v[3, 3, 3] = 1000
    nib.save(nib.Nifti1Image(v[::-1].astype(np.int16), np.diag([-1.0, 1.0, 1.0, 1.0])), tmp_path / "t1.nii")
    out, reason = preprocess_volume(str(tmp_path / "t1.nii"), 4, 1.0)
    scaled = np.clip(v / 100, 0, 1)
    want = np.round(scaled.reshape(4, 2, 4, 2, 4, 2).mean(axis=(1, 3, 5)) * 255)
    assert reason is None and out.dtype == np.uint8
    np.testing.assert_array_equal(out, want)
    assert want[1, 1, 1] == 102 and want[2, 2, 2] == 255 and want[0, 0, 0] == 4  # (2*1 + 6*0.2)/8; 1; (7*0.02 + 0)/8


def test_preprocessing_resamples_to_the_requested_spacing(tmp_path):
    # only the ratio of voxel size to target spacing matters: 2 mm voxels at 2 mm = 1 mm voxels at 1 mm,
    # and 2 mm voxels at 1 mm = 1 mm voxels at 0.5 mm; resampling 2 mm voxels to 1 mm changes the result
    v = np.zeros((6, 6, 6), np.int16)
    v[1:5, 1:5, 1:5] = np.random.default_rng(0).integers(20, 100, (4, 4, 4))
    nib.save(nib.Nifti1Image(v, np.diag([2.0, 2.0, 2.0, 1.0])), tmp_path / "two.nii")
    nib.save(nib.Nifti1Image(v, np.eye(4)), tmp_path / "one.nii")
    same, finer, finer_too, coarse = (preprocess_volume(str(tmp_path / name), 4, mm)
                                      for name, mm in (("two.nii", 2.0), ("two.nii", 1.0), ("one.nii", 0.5), ("one.nii", 1.0)))
    assert {same[1], finer[1], finer_too[1], coarse[1]} == {None}
    np.testing.assert_array_equal(same[0], coarse[0])
    np.testing.assert_array_equal(finer[0], finer_too[0])
    assert not np.array_equal(finer[0], same[0])


def test_resizing_is_trilinear(tmp_path):
    # 4^3 with a 2^3 block of 100 inside: the crop keeps all 4^3; trilinear 4 -> 8 (half-voxel centres)
    # reads each axis at -0.25, 0.25, ..., 3.25: weights 0, .25, .75, 1, 1, .75, .25, 0 per axis
    v = np.zeros((4, 4, 4), np.int16)
    v[1:3, 1:3, 1:3] = 100
    nib.save(nib.Nifti1Image(v, np.eye(4)), tmp_path / "t1.nii")
    out, reason = preprocess_volume(str(tmp_path / "t1.nii"), 8, 1.0)
    p = np.array([0, 0.25, 0.75, 1, 1, 0.75, 0.25, 0])
    assert reason is None
    np.testing.assert_array_equal(out, np.round(np.einsum("i,j,k->ijk", p, p, p) * 255))


def test_the_foreground_is_above_0_05_of_the_intensity_range(tmp_path):
    # a 2^3 block of 100 and one corner voxel of 5 (scaled to exactly 0.05, not above it): the crop is the
    # block plus a margin of 1 (4^3), so the 4^3 output is the block at [1:3] and the corner is gone
    v = np.zeros((8, 8, 8), np.int16)
    v[3:5, 3:5, 3:5] = 100
    v[0, 0, 0] = 5
    nib.save(nib.Nifti1Image(v, np.eye(4)), tmp_path / "t1.nii")
    out, reason = preprocess_volume(str(tmp_path / "t1.nii"), 4, 1.0)
    want = np.zeros((4, 4, 4))
    want[1:3, 1:3, 1:3] = 255
    assert reason is None
    np.testing.assert_array_equal(out, want)


def test_a_single_slice_volume_is_3d_not_squeezed(tmp_path):
    v = np.zeros((8, 8, 1), np.int16)
    v[2:6, 2:6] = 100
    nib.save(nib.Nifti1Image(v, np.eye(4)), tmp_path / "slab.nii")
    out, reason = preprocess_volume(str(tmp_path / "slab.nii"), 4, 1.0)
    assert reason is None and out.shape == (4, 4, 4) and out.any()


def test_monais_gpu_codec_notices_are_silenced_and_other_warnings_kept():
    logging.getLogger("monai.data.nvimgcodec_pydicom_plugin").setLevel(logging.NOTSET)
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        quiet_monai()
        warnings.warn("nvImageCodec is not available", UserWarning, stacklevel=1)
        warnings.warn("something else", UserWarning, stacklevel=1)
    assert [str(w.message) for w in seen] == ["something else"]
    assert logging.getLogger("monai.data.nvimgcodec_pydicom_plugin").level == logging.ERROR
