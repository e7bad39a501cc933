"""Chest X-ray pairing (latest AP film in the first 48 h of the stay) and one-time decoding.

Decoding happens once, here, into a uint8 cache (`cxr.npy`); training never
touches JPEG or DICOM. JPEG via Pillow; DICOM via pydicom (compressed transfer
syntaxes through the pylibjpeg plugins) with the modality LUT (rescale
slope/intercept), the VOI LUT or window (with its VOILUTFunction) and MONOCHROME1
inversion; colour films become luminance and multi-frame files give their first
frame (both counted). A film that cannot be read is counted by reason, never fatal.
"""

from __future__ import annotations

import importlib.util
import stat
from functools import partial
from pathlib import Path

import numpy as np
import pandas as pd

from clinfuse.etl.errors import InputError
from clinfuse.etl.ids import parse_ids
from clinfuse.etl.parallel import map_in_chunks

METADATA_NAMES = ("mimic-cxr-2.0.0-metadata.csv.gz", "mimic-cxr-2.0.0-metadata.csv")
# A decoded film whose shorter side is under this is refused, never upsampled into a cached image
# (a 1x1 "film" is a placeholder or a broken export; the smallest cxr_size is 8 as well).
MIN_FILM_SIDE = 8
REQUIRED = ["dicom_id", "subject_id", "study_id", "ViewPosition", "StudyDate", "StudyTime"]


def locate_cxr_metadata(mimic_cxr_dir: Path) -> Path:
    """The metadata table's path: exactly one of the .csv.gz and .csv names (both present is refused)."""
    root = Path(mimic_cxr_dir)
    present = [root / n for n in METADATA_NAMES if (root / n).is_file()]
    if not present:
        raise InputError(f"{root / METADATA_NAMES[0]}: missing; expected the MIMIC-CXR-JPG metadata table")
    if len(present) > 1:
        raise InputError(f"{present[0]}: {present[1].name} is also present; keep exactly one copy of the "
                         "MIMIC-CXR-JPG metadata table (they may differ)")
    return present[0]


def _bad_row(path: Path, mask: np.ndarray, meta: pd.DataFrame, column: str, expected: str) -> InputError:
    i = int(np.flatnonzero(mask)[0])
    return InputError(f"{path}: row {i + 2}, column {column}: {meta[column].iloc[i]!r} is not {expected}")


def _bad_moment(path: Path, mask: np.ndarray, raw: pd.DataFrame, column: str, why: str) -> InputError:
    """The StudyDate/StudyTime error: the row, the column and both values as the file has them."""
    i = int(np.flatnonzero(mask)[0])
    date, time = ("" if pd.isna(v) else str(v).strip() for v in raw.iloc[i][["StudyDate", "StudyTime"]])
    return InputError(f"{path}: row {i + 2}: StudyDate/StudyTime not YYYYMMDD / HHMMSS.fff (column {column}: "
                      f"{why}) (got {date or repr('')}, {time or repr('')})")


def read_cxr_metadata(mimic_cxr_dir: Path) -> pd.DataFrame:
    """The metadata table, read as strictly as the MIMIC-IV tables (etl/mimic/tables.py).

    Returns dicom_id (text: leading zeros matter), subject_id and study_id (int64), ViewPosition
    (text), StudyDate, StudyTime and a parsed `study_datetime`. A file that is not (gzip) CSV or not
    UTF-8, an id that is not a whole number in int64, a StudyDate that is not a real YYYYMMDD day,
    a StudyTime that is not a clock time HHMMSS.fff (hours < 24, minutes and seconds < 60) or one
    dicom_id on two different rows is an InputError naming the file, the row and the column. Rows
    repeated exactly are dropped; `attrs["duplicate_rows_dropped"]` counts them.
    """
    from clinfuse.etl.mimic.schema import read_header
    from clinfuse.etl.mimic.tables import _read_text_csv

    path = locate_cxr_metadata(mimic_cxr_dir)
    header = read_header(path)
    missing = [c for c in REQUIRED if c not in header]
    if missing:
        raise InputError(f"{path}: missing column(s) {missing}; expected at least {REQUIRED}")
    raw = _read_text_csv(path, REQUIRED)
    meta = raw.copy()
    for column in ("subject_id", "study_id"):
        meta[column] = parse_ids(raw[column], str(path), column, row_word="row")
    dicom = raw["dicom_id"].str.strip()
    if dicom.isna().any() or (dicom == "").any():
        raise _bad_row(path, (dicom.isna() | (dicom == "")).to_numpy(), raw, "dicom_id", "a dicom_id (empty)")
    meta["dicom_id"] = dicom
    meta["ViewPosition"] = raw["ViewPosition"].str.strip()
    date_text = raw["StudyDate"].str.strip()
    date_ok = date_text.str.fullmatch(r"\d{8}(\.0*)?").fillna(False).to_numpy(bool)
    day = pd.to_datetime(date_text.str[:8].where(date_ok), format="%Y%m%d", errors="coerce")
    bad = ~date_ok | day.isna().to_numpy()
    if bad.any():
        raise _bad_moment(path, bad, raw, "StudyDate", "not a real day")
    time_text = raw["StudyTime"].str.strip()
    time_ok = time_text.str.fullmatch(r"\d{1,6}(\.\d*)?").fillna(False).to_numpy(bool)
    t = pd.to_numeric(time_text.where(time_ok), errors="coerce").to_numpy(dtype=float)
    whole = np.floor(np.nan_to_num(t, nan=0.0))
    bad = ~time_ok | np.isnan(t) | (whole // 10000 >= 24) | (whole // 100 % 100 >= 60) | (whole % 100 >= 60)
    if bad.any():  # 996199 is not 99 h 61 min 99 s later: it is not a time at all
        raise _bad_moment(path, bad, raw, "StudyTime", "not a clock time: hours < 24, minutes and seconds < 60")
    meta["StudyDate"] = date_text.str[:8].astype(np.int64)
    meta["StudyTime"] = t
    meta["study_datetime"] = study_datetime(meta["StudyDate"], meta["StudyTime"])
    exact = meta.duplicated(subset=REQUIRED, keep="first").to_numpy()
    kept = meta[~exact]
    clash = kept["dicom_id"].duplicated(keep=False).to_numpy()
    if clash.any():
        a, b = kept.index[clash][:2]
        differ = [c for c in REQUIRED[1:] if kept.at[a, c] != kept.at[b, c]]
        raise InputError(f"{path}: rows {a + 2} and {b + 2}: dicom_id {kept.at[a, 'dicom_id']!r} appears twice with "
                         f"different {', '.join(differ)}; one film has one view and one study: remove the wrong row")
    kept = kept.reset_index(drop=True)
    kept.attrs["duplicate_rows_dropped"] = int(exact.sum())
    return kept


def study_datetime(date: pd.Series, time: pd.Series) -> pd.Series:
    """StudyDate (YYYYMMDD) + StudyTime (HHMMSS.fff, leading zeros often dropped) -> datetime."""
    day = pd.to_datetime(date.astype("Int64").astype(str), format="%Y%m%d", errors="coerce")
    t = pd.to_numeric(time, errors="coerce")
    whole = np.floor(t)
    seconds = (whole // 10000) * 3600 + (whole // 100 % 100) * 60 + whole % 100 + (t - whole)
    return day + pd.to_timedelta(seconds, unit="s")


def pair_latest_ap(stays: pd.DataFrame, metadata: pd.DataFrame, window_hours: int) -> pd.DataFrame:
    """Per stay, the latest AP film with intime <= study time <= intime + window (inclusive).

    Ties on time break by dicom_id (largest), so the pairing is deterministic.
    Returns stay_id, subject_id, dicom_id, study_id, study_datetime (stays with a film only).
    """
    ap = metadata.loc[metadata["ViewPosition"] == "AP", ["subject_id", "dicom_id", "study_id", "study_datetime"]]
    joined = stays[["stay_id", "subject_id", "intime"]].merge(ap, on="subject_id")
    end = joined["intime"] + pd.Timedelta(hours=window_hours)
    inside = joined[(joined["study_datetime"] >= joined["intime"]) & (joined["study_datetime"] <= end)]
    latest = inside.sort_values(["stay_id", "study_datetime", "dicom_id"]).groupby("stay_id").tail(1)
    return latest[["stay_id", "subject_id", "dicom_id", "study_id", "study_datetime"]].reset_index(drop=True)


def cxr_image_path(root: Path, subject_id, study_id, dicom_id, dicom: bool = False) -> Path:
    s = str(int(subject_id))
    return Path(root) / "files" / f"p{s[:2]}" / f"p{s}" / f"s{int(study_id)}" / f"{dicom_id}.{'dcm' if dicom else 'jpg'}"


def _resize_center_crop(img: np.ndarray, size: int) -> np.ndarray:
    from PIL import Image

    pil = Image.fromarray(img)
    w, h = pil.size
    scale = size / min(w, h)
    pil = pil.resize((max(size, round(w * scale)), max(size, round(h * scale))), Image.BILINEAR)
    w, h = pil.size
    left, top = (w - size) // 2, (h - size) // 2
    return np.asarray(pil.crop((left, top, left + size, top + size)), dtype=np.uint8)


# ITU-R BT.601 luma weights: how a colour film (ultrasound, secondary capture) becomes grey
LUMA_BT601 = np.array([0.299, 0.587, 0.114])


class UnreadableFilm(Exception):
    """A film that cannot become a grey image; `reason` is the manifest's count key."""

    def __init__(self, reason: str, detail: str = ""):
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason, self.detail = reason, detail


NOT_DICOM = "not a DICOM file"
BAD_HEADER = "DICOM header unreadable"
NO_PIXELS = "no pixel data"
UNDECODABLE = "compressed pixel data not decodable (no installed decoder, or corrupt)"
TRUNCATED = "pixel data truncated or inconsistent with its header"
LAYOUT = "unsupported image layout"
ABSENT = "file absent"
NOT_OPENABLE = "file cannot be opened (symlink loop, permissions, I/O error or not a regular file)"
TOO_SMALL = f"image too small to be a radiograph (shorter side under {MIN_FILM_SIDE} px)"


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def _failure_reason(exc: Exception) -> str:
    """A short, stable reason for counting failures (the detail goes into the failure record)."""
    if isinstance(exc, UnreadableFilm):
        return exc.reason
    if isinstance(exc, FileNotFoundError):
        return ABSENT
    return f"unreadable image ({type(exc).__name__})"


def _read_dicom(path: Path) -> tuple[np.ndarray, list[str]]:
    """One DICOM film -> (`[H, W]` uint8 grey image, notes on what was converted).

    Monochrome: pixels -> modality LUT (rescale) -> VOI (pydicom's `apply_voi_lut`: the VOI
    LUT sequence, or the window with its VOILUTFunction LINEAR / LINEAR_EXACT / SIGMOID)
    -> [0, 255], MONOCHROME1 inverted. A VOI LUT sequence is min-max scaled (its output
    range is not reliably described by real files); a window is scaled by its own output
    range. Colour (RGB, YBR decoded to RGB, PALETTE COLOR through its LUT): ITU-R BT.601
    luma over the stored range. Multi-frame: the first frame only.
    """
    import pydicom
    from pydicom.errors import InvalidDicomError
    from pydicom.pixels import apply_color_lut, apply_modality_lut, apply_voi_lut

    try:
        ds = pydicom.dcmread(path)
    except InvalidDicomError as exc:
        raise UnreadableFilm(NOT_DICOM, str(exc)) from exc
    except Exception as exc:
        raise UnreadableFilm(BAD_HEADER, f"{type(exc).__name__}: {exc}") from exc
    if "PixelData" not in ds:
        raise UnreadableFilm(NO_PIXELS, "the file holds no image (a report, a plan, a structure set?)")
    notes = []
    try:
        if int(ds.get("NumberOfFrames", 1) or 1) > 1:
            ds.pixel_array_options(index=0)  # decode the first frame only
            notes.append("multi-frame: first frame used")
        arr = ds.pixel_array
    except (RuntimeError, NotImplementedError) as exc:  # pydicom: no plugin for the syntax, or all failed
        syntax = ds.file_meta.get("TransferSyntaxUID")
        hint = ""
        if syntax is not None and "JPEG" in syntax.name and not _installed("libjpeg"):
            hint = " (JPEG lossless, extended and JPEG-LS need the dicom-jpeg extra: pylibjpeg-libjpeg)"
        raise UnreadableFilm(UNDECODABLE, f"{syntax.name if syntax else 'no transfer syntax'}{hint}: {exc}") from exc
    except Exception as exc:
        raise UnreadableFilm(TRUNCATED, f"{type(exc).__name__}: {exc}") from exc
    photometric = str(ds.get("PhotometricInterpretation", "")).strip().upper()
    if photometric == "PALETTE COLOR":
        rgb = apply_color_lut(arr, ds)
        notes.append("colour: converted to luminance")
        grey = rgb.astype(np.float64) @ LUMA_BT601 / np.iinfo(rgb.dtype).max
        return np.round(np.clip(grey, 0, 1) * 255).astype(np.uint8), notes
    if arr.ndim == 3 and arr.shape[-1] == 3:  # RGB (pydicom has converted YBR to RGB)
        notes.append("colour: converted to luminance")
        grey = arr.astype(np.float64) @ LUMA_BT601 / (2 ** int(ds.BitsStored) - 1)
        return np.round(np.clip(grey, 0, 1) * 255).astype(np.uint8), notes
    if arr.ndim != 2 or photometric not in ("MONOCHROME1", "MONOCHROME2"):
        raise UnreadableFilm(LAYOUT, f"PhotometricInterpretation {photometric or 'absent'}, pixel array {arr.shape}")
    arr = apply_modality_lut(arr, ds).astype(np.float64)
    if "VOILUTSequence" in ds:  # a non-linear VOI LUT: pydicom applies it, then min-max
        arr = apply_voi_lut(arr, ds).astype(np.float64)
        lo, hi = float(arr.min()), float(arr.max())
    elif "WindowCenter" in ds and "WindowWidth" in ds:
        # pydicom's windowing (DICOM PS3.3 C.11.2.1.2, VOILUTFunction included) maps onto a fixed
        # output range; probing it with two extreme values reads that range back
        probe = np.array([arr.min() - 1e9, arr.max() + 1e9])
        with np.errstate(over="ignore"):  # SIGMOID: exp overflows to inf, which gives the bound exactly
            lo, hi = (float(v) for v in apply_voi_lut(probe, ds))
        arr = apply_voi_lut(arr, ds).astype(np.float64)
    else:
        lo, hi = float(arr.min()), float(arr.max())
    arr = np.clip((arr - lo) / max(hi - lo, 1e-6), 0, 1) * 255
    if photometric == "MONOCHROME1":
        arr = 255 - arr
    return np.round(arr).astype(np.uint8), notes


def _grey_8bit(im) -> tuple[np.ndarray, list[str]]:
    """A Pillow image as `[H, W]` uint8 grey levels, with notes on what was converted.

    16-bit and float images (a PNG or TIFF saved under a .jpg name) are rescaled from their
    own min-max range: `convert("L")` would clip them and give an almost white film.
    """
    if im.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        arr = np.asarray(im, dtype=np.float64)
        lo, hi = float(arr.min()), float(arr.max())
        scaled = (arr - lo) / (hi - lo) * 255.0 if hi > lo else np.zeros_like(arr)
        return np.round(scaled).astype(np.uint8), [f"{im.mode} image: rescaled from its min-max range to 8 bits"]
    notes = ["colour: converted to luminance"] if im.mode not in ("L", "1", "P", "LA") else []
    return np.asarray(im.convert("L")), notes


# A JPEG film is decoded at 1/2, 1/4 or 1/8 scale (DCT-domain downscaling, Pillow's draft mode) as
# long as it keeps at least DRAFT_MARGIN x the target size on its shorter side: the antialiased
# resize that follows still averages over >= 2 decoded pixels per output pixel.
DRAFT_MARGIN = 2


def draft_jpeg(im, size: int) -> None:
    """Let Pillow decode a JPEG at the smallest DCT scale keeping >= DRAFT_MARGIN * size per side.

    A 3056 x 2544 MIMIC-CXR-JPG film aimed at 224 px decodes at 1/4 scale (764 x 636) in a
    fraction of the full decode's time; films smaller than 2 * DRAFT_MARGIN * size (the synthetic
    ones) are decoded exactly as before. The mode is kept, so colour films still go through
    `_grey_8bit`'s conversion. A no-op for other formats.
    """
    if im.format == "JPEG" and min(im.size) >= 2 * DRAFT_MARGIN * size:
        im.draft(im.mode, (DRAFT_MARGIN * size, DRAFT_MARGIN * size))


def decode_one(path: str, size: int, draft: bool = True) -> tuple[np.ndarray, dict | None, list[str]]:
    """(image `[size, size]` uint8, None, notes) or (zeros, failure {reason, detail}, []) for one file.

    `draft=False` decodes a large JPEG at full size first (benchmarks compare the two).
    """
    p = Path(path)
    try:
        try:
            mode = p.stat().st_mode  # follows links: a symlink loop or an unreadable folder raises OSError here
        except FileNotFoundError:
            raise FileNotFoundError("file referenced in metadata is absent") from None
        except OSError as exc:
            raise UnreadableFilm(NOT_OPENABLE, f"{type(exc).__name__}: {exc.strerror or exc}") from None
        if not stat.S_ISREG(mode):
            raise UnreadableFilm(NOT_OPENABLE, "not a regular file (a folder, a device or a pipe)")
        notes = []
        if p.suffix.lower() == ".dcm":
            img, notes = _read_dicom(p)
        else:
            from PIL import Image

            with Image.open(p) as im:
                if draft:
                    draft_jpeg(im, size)
                im.load()
                img, notes = _grey_8bit(im)
        if min(img.shape[:2]) < min(MIN_FILM_SIDE, size):  # (a target under 8 px exists in unit tests only)
            raise UnreadableFilm(TOO_SMALL, f"decoded to {img.shape[1]}x{img.shape[0]} px")
        if min(img.shape[:2]) < size:
            notes.append(f"smaller than {size} px on its shorter side: upsampled")
        img = _resize_center_crop(img, size)
        if img.shape != (size, size):  # a guard: nothing of another shape may reach the cache
            raise UnreadableFilm(LAYOUT, f"decoded to shape {img.shape}")
        return img, None, notes
    except Exception as exc:  # one bad image must not stop the stage: it is counted and reported
        detail = exc.detail if isinstance(exc, UnreadableFilm) else f"{type(exc).__name__}: {exc}"
        detail = " ".join(detail.split())[:300]
        return np.zeros((size, size), dtype=np.uint8), {"reason": _failure_reason(exc), "detail": detail}, []


def decode_cxr_images(paths: list[Path], size: int, workers: int = 1, on_done=None, draft: bool = True
                      ) -> tuple[np.ndarray, list[dict], dict[str, int]]:
    """Decode films once into `[N, size, size]` uint8, in input order.

    A missing, unreadable or truncated file gives a zero image and a failure record
    {path, reason, detail}; the caller warns and counts by reason. The third result
    counts conversions made on readable films (colour to luminance, first frame of a
    multi-frame file). `draft`: as in `decode_one`.
    """
    decoded = map_in_chunks(partial(decode_one, size=size, draft=draft), [str(p) for p in paths], workers, 32, on_done)
    out = np.zeros((len(paths), size, size), dtype=np.uint8)
    failures, notes = [], {}
    for i, (img, failure, film_notes) in enumerate(decoded):
        out[i] = img
        if failure:
            failures.append({"path": str(paths[i]), **failure})
        for note in film_notes:
            notes[note] = notes.get(note, 0) + 1
    return out, failures, notes
