"""Chest film pairing and decoding (JPEG and DICOM)."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from clinfuse.etl.errors import InputError
from clinfuse.etl.mimic.cxr import decode_cxr_images, pair_latest_ap, read_cxr_metadata, study_datetime
from clinfuse.pipeline.settings.etl_mimic import MimicEtlSettings


def meta(rows):
    m = pd.DataFrame(rows, columns=["subject_id", "dicom_id", "study_id", "ViewPosition", "StudyDate", "StudyTime"])
    m["study_datetime"] = study_datetime(m["StudyDate"], m["StudyTime"])
    return m


def test_study_time_without_leading_zeros_is_parsed():
    t = study_datetime(pd.Series([21500101, 21500101]), pd.Series([93012.5, 5.0]))
    assert t.tolist() == [pd.Timestamp("2150-01-01 09:30:12.5"), pd.Timestamp("2150-01-01 00:00:05")]


def test_pairing_takes_latest_ap_inside_window_only():
    stays = pd.DataFrame({"stay_id": [1], "subject_id": [7], "intime": [pd.Timestamp("2150-01-01 10:00")]})
    m = meta([
        (7, "before", 1, "AP", 21500101, 90000.0),
        (7, "early", 2, "AP", 21500101, 120000.0),
        (7, "late", 3, "AP", 21500103, 100000.0),  # exactly intime + 48 h: inside (inclusive)
        (7, "pa", 4, "PA", 21500103, 95000.0),
        (7, "lat", 4, "LATERAL", 21500103, 95000.0),
        (7, "after", 5, "AP", 21500103, 100001.0),
    ])
    assert pair_latest_ap(stays, m, MimicEtlSettings().cxr_window_hours)["dicom_id"].tolist() == ["late"]


def test_stay_without_film_is_absent_from_pairs():
    stays = pd.DataFrame({"stay_id": [1, 2], "subject_id": [7, 8], "intime": [pd.Timestamp("2150-01-01")] * 2})
    m = meta([(7, "a", 1, "AP", 21500101, 120000.0), (8, "b", 2, "PA", 21500101, 120000.0)])
    pairs = pair_latest_ap(stays, m, MimicEtlSettings().cxr_window_hours)
    assert pairs["stay_id"].tolist() == [1]
    # one row per paired stay, numbered from 0, with exactly the columns the cohort joins on
    assert list(pairs.columns) == ["stay_id", "subject_id", "dicom_id", "study_id", "study_datetime"]
    assert pairs.index.tolist() == [0]


def test_metadata_missing_column_names_file_and_column(tmp_path):
    pd.DataFrame({"dicom_id": ["a"], "subject_id": [1], "study_id": [2], "StudyDate": [21500101],
                  "StudyTime": [1.0]}).to_csv(tmp_path / "mimic-cxr-2.0.0-metadata.csv.gz", index=False)
    with pytest.raises(InputError, match=r"metadata\.csv\.gz: missing column\(s\) \['ViewPosition'\]"):
        read_cxr_metadata(tmp_path)


def test_jpeg_is_resized_on_the_shorter_side_and_center_cropped(tmp_path):
    img = np.zeros((40, 20), np.uint8)
    img[10:30, :] = 200  # a band in the middle rows
    Image.fromarray(img).save(tmp_path / "a.png")
    out, failures, _ = decode_cxr_images([tmp_path / "a.png"], 10, 1)
    assert failures == [] and out.shape == (1, 10, 10)
    # 20x40 -> 10x20, crop rows 5..15: all inside the band
    assert out[0].min() > 150


def write_dicom(path, stored, photometric):
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.1.1"
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.Rows, ds.Columns = stored.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, photometric
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.RescaleSlope, ds.RescaleIntercept = 2, -10
    ds.WindowCenter, ds.WindowWidth = 100.5, 200
    ds.PixelData = stored.astype(np.uint16).tobytes()
    ds.save_as(path, enforce_file_format=True)


def test_dicom_applies_rescale_window_and_monochrome1_inversion(tmp_path):
    stored = np.array([[5, 30, 55, 80], [105, 5, 55, 105]] * 2)  # modality values 0, 50, 100, 150, 200
    write_dicom(tmp_path / "m2.dcm", stored, "MONOCHROME2")
    write_dicom(tmp_path / "m1.dcm", stored, "MONOCHROME1")
    out, failures, _ = decode_cxr_images([tmp_path / "m2.dcm", tmp_path / "m1.dcm"], 4, 1)
    assert failures == []
    modality = stored * 2 - 10
    # linear window [c - 0.5 - (w-1)/2, c - 0.5 + (w-1)/2] = [0.5, 199.5] -> 0..255
    scaled = np.clip((modality - 0.5) / 199.0, 0, 1) * 255
    np.testing.assert_array_equal(out[0], np.round(scaled).astype(np.uint8))
    np.testing.assert_array_equal(out[1], np.round(255 - scaled).astype(np.uint8))  # inverted before rounding


def test_bad_files_give_zeros_and_failure_records(tmp_path):
    good = tmp_path / "good.jpg"
    Image.fromarray(np.full((16, 16), 100, np.uint8)).save(good)
    truncated = tmp_path / "trunc.jpg"
    truncated.write_bytes(good.read_bytes()[:40])
    out, failures, _ = decode_cxr_images([good, truncated, tmp_path / "absent.jpg"], 8, 1)
    assert out[0].mean() > 90 and out[1].max() == 0 and out[2].max() == 0
    assert [f["path"] for f in failures] == [str(truncated), str(tmp_path / "absent.jpg")]


def test_parallel_decoding_gives_the_same_bytes(tmp_path):
    rng = np.random.default_rng(0)
    paths = []
    for i in range(70):
        p = tmp_path / f"{i}.jpg"
        Image.fromarray(rng.integers(0, 255, (20, 24), dtype=np.uint8)).save(p)
        paths.append(p)
    a, _, _ = decode_cxr_images(paths, 12, 1)
    b, _, _ = decode_cxr_images(paths, 12, 2)
    assert np.array_equal(a, b)


# ---- real-world DICOM kinds (films built with pydicom; pydicom's own test files where present) ----

def decode_dicoms(paths, size):
    from clinfuse.etl.mimic.cxr import decode_cxr_images

    return decode_cxr_images(paths, size, 1)


def test_colour_dicom_becomes_bt601_luminance_and_is_counted(tmp_path):
    from tests.fixtures.dicoms import dicom_file

    rgb = np.random.default_rng(0).integers(0, 256, (6, 6, 3))
    out, failures, converted = decode_dicoms([dicom_file(tmp_path / "us.dcm", rgb, "RGB")], 6)
    assert failures == [] and converted == {"colour: converted to luminance": 1}
    luma = 0.299 * rgb[..., 0] + 0.587 * rgb[..., 1] + 0.114 * rgb[..., 2]
    np.testing.assert_array_equal(out[0], np.round(luma).astype(np.uint8))


def test_multi_frame_dicom_gives_its_first_frame_and_is_counted(tmp_path):
    from tests.fixtures.dicoms import dicom_file

    frames = np.stack([np.full((5, 5), v) for v in (10, 200, 90)])
    frames[0, 0, 0] = 250  # min-max (no window): frame 0 spans 10..250
    out, failures, converted = decode_dicoms([dicom_file(tmp_path / "cine.dcm", frames)], 5)
    assert failures == [] and converted == {"multi-frame: first frame used": 1}
    expected = np.zeros((5, 5), np.uint8)
    expected[0, 0] = 255
    np.testing.assert_array_equal(out[0], expected)


def test_sigmoid_voi_lut_function_is_honoured(tmp_path):
    from tests.fixtures.dicoms import dicom_file

    stored = np.array([[0, 1500, 1900, 2048], [2200, 2600, 3000, 4095]] * 2)
    path = dicom_file(tmp_path / "sig.dcm", stored, bits_stored=12, WindowCenter=2048, WindowWidth=1000,
                      VOILUTFunction="SIGMOID")
    out, failures, _ = decode_dicoms([path], 4)
    # PS3.3 C.11.2.1.3.1: y = (y_max - y_min) / (1 + exp(-4 (x - c) / w)) + y_min over [0, 4095]
    want = 255 / (1 + np.exp(-4 * (stored - 2048) / 1000))
    assert failures == []
    np.testing.assert_array_equal(out[0], np.round(want).astype(np.uint8))
    # a LINEAR window would saturate 0 and 255 at 1548 / 2547: the sigmoid does not (e.g. 1500 -> 26, not 0)
    assert out[0][0, 1] == 26


def test_rle_compressed_dicom_decodes_like_the_uncompressed_one(tmp_path):
    from tests.fixtures.dicoms import dicom_file

    img = np.random.default_rng(1).integers(0, 256, (8, 8))
    plain = dicom_file(tmp_path / "plain.dcm", img)
    rle = dicom_file(tmp_path / "rle.dcm", img, compress=True)
    out, failures, _ = decode_dicoms([plain, rle], 8)
    assert failures == [] and np.array_equal(out[0], out[1]) and out[0].std() > 0


@pytest.mark.parametrize("compressed,reference", [
    ("MR_small_RLE.dcm", "MR_small.dcm"),
    ("MR_small_jp2klossless.dcm", "MR_small.dcm"),  # JPEG 2000 lossless (pylibjpeg-openjpeg)
    ("MR_small_jpeg_ls_lossless.dcm", "MR_small.dcm"),  # JPEG-LS (pylibjpeg-libjpeg)
    ("SC_rgb_jpeg_gdcm.dcm", "SC_rgb_rle.dcm"),  # JPEG Lossless process 14, colour (pylibjpeg-libjpeg)
])
def test_pydicom_compressed_test_files_decode_like_their_uncompressed_twins(compressed, reference):
    from tests.fixtures.dicoms import pydicom_test_file

    a, b = pydicom_test_file(compressed), pydicom_test_file(reference)
    if a is None or b is None:
        pytest.skip("pydicom's test files are not installed")
    if "jpeg" in compressed:
        pytest.importorskip("libjpeg", reason="the dicom-jpeg extra (pylibjpeg-libjpeg) is not installed")
    out, failures, _ = decode_dicoms([a, b], 32)
    assert failures == []
    np.testing.assert_array_equal(out[0], out[1])


def test_twelve_bit_extended_jpeg_decodes():
    from tests.fixtures.dicoms import pydicom_test_file

    path = pydicom_test_file("JPGExtended.dcm")
    if path is None:
        pytest.skip("pydicom's test files are not installed")
    pytest.importorskip("libjpeg", reason="the dicom-jpeg extra (pylibjpeg-libjpeg) is not installed")
    out, failures, _ = decode_dicoms([path], 16)
    assert failures == [] and out[0].std() > 0


def test_unreadable_dicoms_are_failures_with_their_reason_never_a_crash(tmp_path):
    from clinfuse.etl.mimic.cxr import ABSENT, NO_PIXELS, NOT_DICOM, TRUNCATED, UNDECODABLE
    from tests.fixtures.dicoms import truncated, without_decoder, without_pixels

    garbage = tmp_path / "garbage.dcm"
    garbage.write_bytes(b"this is not a DICOM file" * 10)
    paths = [garbage, without_pixels(tmp_path / "sr.dcm"), truncated(tmp_path / "t.dcm", np.ones((8, 8))),
             without_decoder(tmp_path / "mpeg2.dcm"), tmp_path / "absent.dcm"]
    out, failures, converted = decode_dicoms(paths, 4)
    assert [f["reason"] for f in failures] == [NOT_DICOM, NO_PIXELS, TRUNCATED, UNDECODABLE, ABSENT]
    assert "MPEG2" in failures[3]["detail"]
    assert all(f["detail"] for f in failures) and out.max() == 0 and converted == {}
def write_plain_dicom(path, stored, **attributes):
    """MONOCHROME2, no rescale, 16-bit; `attributes` adds window or VOI LUT elements."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.1.1"
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.Rows, ds.Columns = stored.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    for key, value in attributes.items():
        setattr(ds, key, value)
    ds.PixelData = stored.astype(np.uint16).tobytes()
    ds.save_as(path, enforce_file_format=True)


STORED = np.array([[0, 1, 2, 3]] * 4)


def test_dicom_voi_lut_sequence_is_applied_then_stretched_to_0_255(tmp_path):
    from pydicom.dataset import Dataset

    lut = Dataset()
    lut.add_new(0x00283002, "US", [4, 0, 16])  # LUTDescriptor: 4 entries, first stored value 0, 16-bit
    lut.add_new(0x00283006, "US", [0, 10, 40, 100])  # LUTData: non-linear
    write_plain_dicom(tmp_path / "lut.dcm", STORED, VOILUTSequence=[lut])
    out, failures, _ = decode_cxr_images([tmp_path / "lut.dcm"], 4, 1)
    assert failures == []
    # 0, 10, 40, 100 -> min-max -> 0, 25.5, 102, 255 (rounded half to even)
    np.testing.assert_array_equal(out[0], np.array([[0, 26, 102, 255]] * 4, np.uint8))


@pytest.mark.parametrize("window", [{}, {"WindowCenter": 1.5}])
def test_dicom_without_a_complete_window_is_min_max_stretched(tmp_path, window):
    write_plain_dicom(tmp_path / "plain.dcm", STORED * 10, **window)
    out, failures, _ = decode_cxr_images([tmp_path / "plain.dcm"], 4, 1)
    assert failures == []
    np.testing.assert_array_equal(out[0], np.array([[0, 85, 170, 255]] * 4, np.uint8))


def test_dicom_min_max_stretch_uses_the_real_range_even_below_one_unit(tmp_path):
    write_plain_dicom(tmp_path / "fine.dcm", STORED, RescaleSlope=0.25, RescaleIntercept=0)  # 0 .. 0.75
    out, failures, _ = decode_cxr_images([tmp_path / "fine.dcm"], 4, 1)
    assert failures == []
    np.testing.assert_array_equal(out[0], np.array([[0, 85, 170, 255]] * 4, np.uint8))


def test_a_dicom_film_is_rounded_to_8_bits_before_resizing_like_a_jpeg(tmp_path):
    pixels = (np.add.outer(np.arange(8), np.arange(8)) * 18).astype(np.uint8)  # 0 .. 252, a diagonal ramp
    write_plain_dicom(tmp_path / "ramp.dcm", pixels.astype(np.uint16), WindowCenter=128, WindowWidth=256)
    Image.fromarray(pixels).save(tmp_path / "ramp.png")
    out, failures, _ = decode_cxr_images([tmp_path / "ramp.dcm", tmp_path / "ramp.png"], 3, 1)
    assert failures == []
    np.testing.assert_array_equal(out[0], out[1])


def test_a_real_size_jpeg_decoded_in_draft_mode_stays_within_a_grey_level_of_the_full_decode(tmp_path):
    # A 3056 x 2544 film (MIMIC-CXR-JPG's size) aimed at 224 px decodes at 1/4 scale in the DCT domain;
    # the antialiased resize that follows keeps it within 0.2 grey levels on average of decoding it whole.
    from clinfuse.etl.mimic.cxr import decode_one
    from clinfuse.etl.synth.cxr import real_size_film

    path = tmp_path / "big.jpg"
    Image.fromarray(real_size_film(np.random.default_rng(1))).save(path, format="JPEG", quality=95)
    with Image.open(path) as im:
        from clinfuse.etl.mimic.cxr import draft_jpeg

        draft_jpeg(im, 224)
        assert im.size == (636, 764)  # 1/4 scale: the smallest keeping >= 2 x 224 on the shorter side
    drafted, failure_a, _ = decode_one(str(path), 224)
    full, failure_b, _ = decode_one(str(path), 224, draft=False)
    assert failure_a is None and failure_b is None
    assert drafted.shape == full.shape == (224, 224) and drafted.dtype == np.uint8
    difference = np.abs(drafted.astype(int) - full.astype(int))
    assert difference.mean() < 0.5 and difference.max() <= 4
    assert difference.max() > 0  # drafting is the default: the two decodes are not the same film


def test_films_under_four_times_the_target_size_are_decoded_whole_larger_ones_at_a_dct_scale(tmp_path):
    from clinfuse.etl.mimic.cxr import draft_jpeg

    Image.fromarray(np.full((96, 80), 128, np.uint8)).save(tmp_path / "small.jpg", format="JPEG")
    # 80 x 96: the synthetic films at the demo's 64 px are untouched; at 20 px 1/2 scale keeps >= 40 px,
    # at 8 px 1/4 scale keeps >= 16 px (1/8 would give 10 x 12)
    for size, expected in ((64, (80, 96)), (21, (80, 96)), (20, (40, 48)), (8, (20, 24))):
        with Image.open(tmp_path / "small.jpg") as im:
            draft_jpeg(im, size)
            im.load()
            assert im.size == expected, size


def test_an_optional_decoder_counts_as_installed_only_when_python_can_find_it():
    from clinfuse.etl.mimic.cxr import _installed

    assert _installed("json") is True
    assert _installed("no_such_decoder_xyz") is False
    assert _installed("no_such_package_xyz.jpeg") is False  # a missing parent package is not an error


def test_a_palette_colour_film_goes_through_its_colour_lut_to_bt601_luminance():
    import pydicom
    from pydicom.pixels import apply_color_lut

    from clinfuse.etl.mimic.cxr import decode_one
    from tests.fixtures.dicoms import pydicom_test_file

    path = pydicom_test_file("examples_palette.dcm")  # 800 x 350, 8-bit indices into 16-bit colour LUTs
    if path is None:
        pytest.skip("pydicom's test files are not installed")
    ds = pydicom.dcmread(path)
    rgb = apply_color_lut(ds.pixel_array, ds).astype(float) / np.iinfo(np.uint16).max  # [350, 800, 3] in [0, 1]
    luma = 0.299 * rgb[..., 0] + 0.587 * rgb[..., 1] + 0.114 * rgb[..., 2]
    expected = np.round(luma * 255).astype(np.uint8)[:, 225:575]  # size 350: no scaling, the centre square
    img, failure, notes = decode_one(str(path), 350)
    assert failure is None and notes == ["colour: converted to luminance"]
    assert np.abs(img.astype(int) - expected).max() <= 1 and img.std() > 0
    assert (img != expected).mean() < 1e-3  # off by one only where float order breaks a tie, if anywhere
    # resized: the film is rounded to 8 bits first, then resized as a grey JPEG would be
    smaller, failure, _ = decode_one(str(path), 100)
    from clinfuse.etl.mimic.cxr import _resize_center_crop

    want = _resize_center_crop(np.round(luma * 255).astype(np.uint8), 100)
    assert failure is None and smaller.dtype == np.uint8 and (smaller != want).mean() < 1e-3


def test_a_single_sample_film_labelled_rgb_is_a_layout_failure_naming_what_it_found(tmp_path):
    from clinfuse.etl.mimic.cxr import LAYOUT, decode_one

    write_plain_dicom(tmp_path / "odd.dcm", STORED, PhotometricInterpretation="RGB")  # one sample per pixel
    _, failure, _ = decode_one(str(tmp_path / "odd.dcm"), 4)
    assert failure == {"reason": LAYOUT, "detail": "PhotometricInterpretation RGB, pixel array (4, 4)"}


@pytest.mark.parametrize("mode", ["I;16", "I;16B", "I;16L", "I;16N", "I", "F"])
def test_a_16_bit_or_float_film_is_stretched_from_its_own_range_not_clipped_to_white(mode):
    from clinfuse.etl.mimic.cxr import _grey_8bit

    values = np.array([[1000, 2000, 3000, 4000]], dtype=float)  # all above 255: convert("L") would saturate
    kind = {"I;16": "<u2", "I;16L": "<u2", "I;16N": "=u2", "I;16B": ">u2", "I": "<i4", "F": "<f4"}[mode]
    im = Image.frombytes(mode, (4, 1), values.astype(kind).tobytes())
    grey, notes = _grey_8bit(im)
    assert grey.dtype == np.uint8 and grey.tolist() == [[0, 85, 170, 255]]
    assert notes == [f"{mode} image: rescaled from its min-max range to 8 bits"]


def test_a_flat_16_bit_film_is_black_not_a_division_by_zero():
    from clinfuse.etl.mimic.cxr import _grey_8bit

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        grey, _ = _grey_8bit(Image.frombytes("I;16", (2, 1), np.array([700, 700], "<u2").tobytes()))
    assert grey.tolist() == [[0, 0]]


@pytest.mark.parametrize("mode,colour", [("L", False), ("1", False), ("P", False), ("LA", False), ("RGB", True),
                                         ("RGBA", True), ("CMYK", True)])
def test_only_colour_films_are_noted_as_converted_to_luminance(mode, colour):
    from clinfuse.etl.mimic.cxr import _grey_8bit

    im = Image.new("L", (2, 1), 200).convert(mode)
    grey, notes = _grey_8bit(im)
    assert grey.dtype == np.uint8 and grey.shape == (1, 2)
    assert np.array_equal(grey, np.asarray(im.convert("L")))
    assert notes == (["colour: converted to luminance"] if colour else [])


def test_failure_records_say_what_went_wrong_in_words_a_reader_can_act_on(tmp_path, monkeypatch):
    import pydicom

    from clinfuse.etl.mimic import cxr
    from tests.fixtures.dicoms import truncated, without_pixels

    garbage = tmp_path / "garbage.dcm"
    garbage.write_bytes(b"this is not a DICOM file" * 10)
    _, not_dicom, _ = cxr.decode_one(str(garbage), 4)
    assert not_dicom["reason"] == cxr.NOT_DICOM and "DICM" in not_dicom["detail"]  # pydicom's own words
    _, no_pixels, _ = cxr.decode_one(str(without_pixels(tmp_path / "sr.dcm")), 4)
    assert no_pixels["detail"] == "the file holds no image (a report, a plan, a structure set?)"
    _, cut, _ = cxr.decode_one(str(truncated(tmp_path / "t.dcm", np.ones((8, 8)))), 4)
    assert cut["reason"] == cxr.TRUNCATED and cut["detail"].split(":")[0].endswith(("Error", "Exception"))

    real_read = pydicom.dcmread
    monkeypatch.setattr(pydicom, "dcmread", lambda *a, **k: (_ for _ in ()).throw(OSError("bad tag length")))
    _, header, _ = cxr.decode_one(str(garbage), 4)
    assert header == {"reason": cxr.BAD_HEADER, "detail": "OSError: bad tag length"}
    monkeypatch.setattr(pydicom, "dcmread", real_read)


@pytest.mark.parametrize("libjpeg", [False, True])
def test_an_undecodable_jpeg_film_names_its_syntax_and_the_missing_extra_only_when_it_is_missing(
        tmp_path, monkeypatch, libjpeg):
    import pydicom
    from pydicom.uid import JPEGLossless

    from clinfuse.etl.mimic import cxr

    write_plain_dicom(tmp_path / "j.dcm", STORED)
    ds = pydicom.dcmread(tmp_path / "j.dcm")
    ds.file_meta.TransferSyntaxUID = JPEGLossless  # as the header says; decoding is made to fail below
    monkeypatch.setattr(pydicom, "dcmread", lambda *a, **k: ds)
    monkeypatch.setattr(pydicom.Dataset, "pixel_array", property(lambda self: (_ for _ in ()).throw(
        RuntimeError("no plugin could decode it"))))
    monkeypatch.setattr(cxr, "_installed", lambda module: libjpeg if module == "libjpeg" else True)
    _, failure, _ = cxr.decode_one(str(tmp_path / "j.dcm"), 4)
    hint = " (JPEG lossless, extended and JPEG-LS need the dicom-jpeg extra: pylibjpeg-libjpeg)"
    assert failure["reason"] == cxr.UNDECODABLE
    assert failure["detail"] == f"{JPEGLossless.name}{'' if libjpeg else hint}: no plugin could decode it"


def test_an_undecodable_film_without_a_transfer_syntax_says_so(tmp_path, monkeypatch):
    import pydicom

    from clinfuse.etl.mimic import cxr

    write_plain_dicom(tmp_path / "n.dcm", STORED)
    ds = pydicom.dcmread(tmp_path / "n.dcm")
    del ds.file_meta.TransferSyntaxUID
    monkeypatch.setattr(pydicom, "dcmread", lambda *a, **k: ds)
    monkeypatch.setattr(pydicom.Dataset, "pixel_array", property(lambda self: (_ for _ in ()).throw(
        NotImplementedError("unknown encoding"))))
    _, failure, _ = cxr.decode_one(str(tmp_path / "n.dcm"), 4)
    assert failure == {"reason": cxr.UNDECODABLE, "detail": "no transfer syntax: unknown encoding"}


def test_absent_metadata_names_the_file_expected_first(tmp_path):
    with pytest.raises(InputError) as raised:
        read_cxr_metadata(tmp_path)
    assert str(raised.value) == (f"{tmp_path / 'mimic-cxr-2.0.0-metadata.csv.gz'}: missing; "
                                 "expected the MIMIC-CXR-JPG metadata table")


def test_metadata_keeps_dicom_ids_as_text_and_reads_the_uncompressed_name_too(tmp_path):
    pd.DataFrame({"dicom_id": ["0012", "3400"], "subject_id": [1, 1], "study_id": [2, 3], "ViewPosition": ["AP", "PA"],
                  "StudyDate": [21500101, 21500102], "StudyTime": [101.5, 2359.0]}
                 ).to_csv(tmp_path / "mimic-cxr-2.0.0-metadata.csv", index=False)
    m = read_cxr_metadata(tmp_path)
    assert m["dicom_id"].tolist() == ["0012", "3400"]  # the file names: leading zeros matter


def test_an_unreadable_study_time_names_the_first_bad_line_of_the_file(tmp_path):
    pd.DataFrame({"dicom_id": ["a", "b", "c", "d"], "subject_id": [1] * 4, "study_id": [2] * 4,
                  "ViewPosition": ["AP"] * 4, "StudyDate": [21500101, 21500101, 21501301, 21501401],
                  "StudyTime": [1.0, 2.0, 3.0, 4.0]}).to_csv(tmp_path / "mimic-cxr-2.0.0-metadata.csv.gz", index=False)
    with pytest.raises(InputError, match=r"metadata\.csv\.gz: row 4: StudyDate/StudyTime not YYYYMMDD / HHMMSS\.fff "
                       ) as raised:  # line 1 is the header: rows 2 and 3 are fine
        read_cxr_metadata(tmp_path)
    assert "21501301" in str(raised.value) and "3.0" in str(raised.value)  # the first bad row's own values


def test_the_bad_study_time_error_shows_the_values_as_the_file_has_them(tmp_path):
    pd.DataFrame({"dicom_id": ["a"], "subject_id": [1], "study_id": [2], "ViewPosition": ["AP"],
                  "StudyDate": [21501301], "StudyTime": [3.0]}).to_csv(tmp_path / "mimic-cxr-2.0.0-metadata.csv",
                                                                       index=False)
    with pytest.raises(InputError, match=r"\(got 21501301, 3\.0\)$"):  # not np.int64(21501301)
        read_cxr_metadata(tmp_path)


@pytest.mark.parametrize("column,value", [("StudyDate", None), ("StudyTime", "noon")])
def test_a_missing_date_or_a_time_in_words_is_an_input_error_naming_the_row(tmp_path, column, value):
    table = pd.DataFrame({"dicom_id": ["a", "b"], "subject_id": [1, 1], "study_id": [2, 2], "ViewPosition": ["AP"] * 2,
                          "StudyDate": [21500101, 21500101], "StudyTime": ["1.0", "2.0"]})
    table.loc[1, column] = value
    table.to_csv(tmp_path / "mimic-cxr-2.0.0-metadata.csv", index=False)
    with pytest.raises(InputError, match=r"metadata\.csv: row 3: StudyDate/StudyTime"):
        read_cxr_metadata(tmp_path)


@pytest.mark.parametrize("width,height", [(1600, 800), (800, 1600)])
def test_a_non_square_jpeg_is_drafted_keeping_twice_the_target_on_its_shorter_side(tmp_path, width, height):
    from clinfuse.etl.mimic.cxr import draft_jpeg

    Image.new("L", (width, height), 128).save(tmp_path / "f.jpg")
    with Image.open(tmp_path / "f.jpg") as im:
        draft_jpeg(im, 100)
        assert min(im.size) == 200 and max(im.size) == 400  # 1/4 scale; 1/8 would leave 100 on the short side


def test_a_film_no_decoder_understands_is_counted_under_the_decoders_error_and_reads_in_words(tmp_path):
    from clinfuse.etl.mimic.cxr import NO_PIXELS, UnreadableFilm, decode_one

    (tmp_path / "notes.jpg").write_text("a radiology report saved under a film's name")
    _, failure, _ = decode_one(str(tmp_path / "notes.jpg"), 4)
    assert failure["reason"] == "unreadable image (UnidentifiedImageError)"
    assert str(UnreadableFilm(NO_PIXELS, "a plan")) == f"{NO_PIXELS}: a plan" and str(UnreadableFilm(NO_PIXELS)) == NO_PIXELS


def test_film_paths_follow_the_physionet_layout_for_jpegs_and_dicoms(tmp_path):
    from clinfuse.etl.mimic.cxr import cxr_image_path

    films = tmp_path / "files" / "p10" / "p10000032" / "s50414267"
    assert cxr_image_path(tmp_path, 10000032, 50414267, "02aa804e") == films / "02aa804e.jpg"
    assert cxr_image_path(tmp_path, 10000032, 50414267.0, "02aa804e", dicom=True) == films / "02aa804e.dcm"


def test_a_colour_film_is_rounded_to_8_bits_before_resizing_like_a_grey_jpeg(tmp_path):
    from tests.fixtures.dicoms import dicom_file

    rgb = np.random.default_rng(3).integers(0, 256, (12, 12, 3))
    luma = np.round(0.299 * rgb[..., 0] + 0.587 * rgb[..., 1] + 0.114 * rgb[..., 2]).astype(np.uint8)
    Image.fromarray(luma).save(tmp_path / "luma.png")
    out, failures, _ = decode_dicoms([dicom_file(tmp_path / "us.dcm", rgb, "RGB"), tmp_path / "luma.png"], 5)
    assert failures == [] and out.dtype == np.uint8
    np.testing.assert_array_equal(out[0], out[1])


def test_a_grey_film_three_pixels_wide_is_grey_not_colour(tmp_path):
    # the colour branch needs three samples per pixel in a third axis, not a last axis that happens to be 3
    write_plain_dicom(tmp_path / "narrow.dcm", np.array([[0, 10, 20]] * 4))
    out, failures, converted = decode_cxr_images([tmp_path / "narrow.dcm"], 3, 1)
    assert failures == [] and converted == {}
    np.testing.assert_array_equal(out[0], np.array([[0, 128, 255]] * 3, np.uint8))  # min-max: 127.5 to even


@pytest.mark.filterwarnings("ignore:A value of 'None' for .* 'Number of Frames' is invalid")
def test_an_empty_number_of_frames_is_a_single_frame_film(tmp_path):
    # real exports write NumberOfFrames with no value on single-frame films
    write_plain_dicom(tmp_path / "one.dcm", STORED, NumberOfFrames=None)
    out, failures, converted = decode_cxr_images([tmp_path / "one.dcm"], 4, 1)
    assert failures == [] and converted == {}
    np.testing.assert_array_equal(out[0], np.array([[0, 85, 170, 255]] * 4, np.uint8))


def test_a_sigmoid_window_reads_its_bounds_without_an_overflow_warning(tmp_path):
    from tests.fixtures.dicoms import dicom_file

    path = dicom_file(tmp_path / "sig.dcm", STORED * 1000, bits_stored=12, WindowCenter=1500, WindowWidth=1000,
                      VOILUTFunction="SIGMOID")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the probe's exp overflow is expected: it gives the bound exactly
        out, failures, _ = decode_dicoms([path], 4)
    assert failures == [] and out[0].std() > 0


@pytest.mark.parametrize("shape,expected", [((2, 5), [1, 2]), ((5, 2), [1, 2])])
def test_the_centre_crop_of_an_odd_excess_starts_at_its_floor_half(tmp_path, shape, expected):
    # 5 pixels to 2: the excess 3 is split 1 before and 2 after (Pillow would round 1.5 to 2)
    img = (np.arange(5) * 50).astype(np.uint8)
    img = np.tile(img, (shape[0], 1)) if shape[1] == 5 else np.tile(img[:, None], (1, shape[1]))
    Image.fromarray(img).save(tmp_path / "odd.png")
    out, failures, _ = decode_cxr_images([tmp_path / "odd.png"], 2, 1)
    assert failures == []
    kept = out[0][0] if shape[1] == 5 else out[0][:, 0]
    assert (kept // 50).tolist() == expected


def triangle_resample(row: np.ndarray, n_out: int) -> np.ndarray:
    """Antialiased bilinear resampling of one row (a triangle filter widened to the scale)."""
    scale = len(row) / n_out
    support = max(scale, 1.0)
    centres = np.arange(len(row)) + 0.5
    out = []
    for i in range(n_out):
        w = np.clip(1 - np.abs(centres - (i + 0.5) * scale) / support, 0, None)
        out.append((w * row).sum() / w.sum())
    return np.array(out)


def test_films_are_resized_bilinearly_with_antialiasing(tmp_path):
    # a 12 x 24 film of identical rows to 6 px: each row 24 -> 12 (a triangle filter over 4 pixels),
    # then the centre 6 columns; bicubic, nearest or no antialiasing give other grey levels
    row = np.array([0, 0, 0, 200, 200, 40, 40, 40, 255, 255, 0, 90] * 2, dtype=float)
    Image.fromarray(np.tile(row, (12, 1)).astype(np.uint8)).save(tmp_path / "rows.png")
    out, failures, _ = decode_cxr_images([tmp_path / "rows.png"], 6, 1)
    assert failures == []
    want = triangle_resample(row, 12)[3:9]
    assert np.abs(out[0][3].astype(float) - want).max() <= 0.5 + 1e-6


def test_decoding_reports_progress_per_chunk_and_passes_the_draft_choice_to_each_film(tmp_path, monkeypatch):
    import clinfuse.etl.mimic.cxr as cxr

    seen = []
    real = cxr.decode_one
    monkeypatch.setattr(cxr, "decode_one", lambda path, size, draft="not given": seen.append(draft) or
                        real(path, size, draft=False))
    paths = []
    for i in range(40):
        paths.append(tmp_path / f"{i}.png")
        Image.fromarray(np.full((4, 4), i, np.uint8)).save(paths[-1])
    done = []
    out, failures, _ = decode_cxr_images(paths, 4, 1, on_done=done.append)
    assert failures == [] and out.dtype == np.uint8 and out[:, 0, 0].tolist() == list(range(40))
    assert done == [32, 8]  # after each chunk of 32 films (a worker process's unit of work)
    assert set(seen) == {True}  # drafting is on by default
    seen.clear()
    decode_cxr_images(paths[:2], 4, 1, draft=False)
    assert seen == [False, False]
    # in this process unless the caller asks for workers (the stage passes its `workers` setting):
    # a worker process's calls would not reach this process's recorder
    seen.clear()
    decode_cxr_images(paths, 4)
    assert len(seen) == 40


def test_study_dates_are_parsed_as_text_without_a_pandas_deprecation_warning():
    # numeric dates with a format are deprecated in pandas (a future pandas reads them as epochs)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        t = study_datetime(pd.Series([21500101.0, None]), pd.Series([120000, 0]))
    assert t[0] == pd.Timestamp("2150-01-01 12:00") and pd.isna(t[1])


def test_a_failure_detail_names_the_exception_and_is_cut_at_300_characters(tmp_path, monkeypatch):
    import clinfuse.etl.mimic.cxr as cxr

    _, failure, _ = cxr.decode_one(str(tmp_path / "absent.jpg"), 4)
    assert failure["detail"] == "FileNotFoundError: file referenced in metadata is absent"
    Image.fromarray(np.zeros((4, 4), np.uint8)).save(tmp_path / "a.png")

    def fail(im):
        raise ValueError("x" * 400)

    monkeypatch.setattr(cxr, "_grey_8bit", fail)
    _, failure, _ = cxr.decode_one(str(tmp_path / "a.png"), 4)
    assert failure["detail"] == ("ValueError: " + "x" * 400)[:300]
