"""Chest X-ray pairing (latest AP film in the first 48 h of the stay) and one-time decoding.

Decoding happens once, here, into a uint8 cache (`cxr.npy`); training never
touches JPEG or DICOM. JPEG via Pillow; DICOM via pydicom with the modality LUT
(rescale slope/intercept), the VOI LUT (windowing) and MONOCHROME1 inversion.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path

import numpy as np
import pandas as pd

from etl.errors import InputError
from etl.parallel import map_in_chunks

METADATA_NAMES = ("mimic-cxr-2.0.0-metadata.csv.gz", "mimic-cxr-2.0.0-metadata.csv")
REQUIRED = ["dicom_id", "subject_id", "study_id", "ViewPosition", "StudyDate", "StudyTime"]


def read_cxr_metadata(mimic_cxr_dir: Path) -> pd.DataFrame:
    """The metadata table with a parsed `study_datetime` column."""
    root = Path(mimic_cxr_dir)
    path = next((root / n for n in METADATA_NAMES if (root / n).is_file()), None)
    if path is None:
        raise InputError(f"{root / METADATA_NAMES[0]}: missing; expected the MIMIC-CXR-JPG metadata table")
    meta = pd.read_csv(path, dtype={"dicom_id": str, "ViewPosition": str})
    missing = [c for c in REQUIRED if c not in meta.columns]
    if missing:
        raise InputError(f"{path}: missing column(s) {missing}; expected at least {REQUIRED}")
    meta["study_datetime"] = study_datetime(meta["StudyDate"], meta["StudyTime"])
    bad = meta["study_datetime"].isna()
    if bad.any():
        row = int(np.flatnonzero(bad.to_numpy())[0])
        raise InputError(f"{path}: row {row + 2}: StudyDate/StudyTime not YYYYMMDD / HHMMSS.fff "
                         f"(got {meta.loc[bad].iloc[0]['StudyDate']!r}, {meta.loc[bad].iloc[0]['StudyTime']!r})")
    return meta


def study_datetime(date: pd.Series, time: pd.Series) -> pd.Series:
    """StudyDate (YYYYMMDD) + StudyTime (HHMMSS.fff, leading zeros often dropped) -> datetime."""
    day = pd.to_datetime(date.astype("Int64").astype(str), format="%Y%m%d", errors="coerce")
    t = pd.to_numeric(time, errors="coerce")
    whole = np.floor(t)
    seconds = (whole // 10000) * 3600 + (whole // 100 % 100) * 60 + whole % 100 + (t - whole)
    return day + pd.to_timedelta(seconds, unit="s")


def pair_latest_ap(stays: pd.DataFrame, metadata: pd.DataFrame, window_hours: int = 48) -> pd.DataFrame:
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


def _read_dicom(path: Path) -> np.ndarray:
    """Pixels -> modality LUT (rescale) -> VOI (window or LUT) -> [0, 255], MONOCHROME1 inverted."""
    import pydicom
    from pydicom.pixels import apply_modality_lut, apply_voi_lut

    ds = pydicom.dcmread(path)
    arr = apply_modality_lut(ds.pixel_array, ds).astype(np.float64)
    if "VOILUTSequence" in ds:  # a non-linear VOI LUT: pydicom applies it, then min-max
        arr = apply_voi_lut(arr, ds).astype(np.float64)
        lo, hi = float(arr.min()), float(arr.max())
    elif "WindowCenter" in ds and "WindowWidth" in ds:  # linear window (DICOM PS3.3 C.11.2.1.2)
        center = float(np.atleast_1d(ds.WindowCenter)[0])
        width = float(np.atleast_1d(ds.WindowWidth)[0])
        lo, hi = center - 0.5 - (width - 1) / 2, center - 0.5 + (width - 1) / 2
    else:
        lo, hi = float(arr.min()), float(arr.max())
    arr = np.clip((arr - lo) / max(hi - lo, 1e-6), 0, 1) * 255
    if ds.PhotometricInterpretation == "MONOCHROME1":
        arr = 255 - arr
    return np.round(arr).astype(np.uint8)


def decode_one(path: str, size: int) -> tuple[np.ndarray, str | None]:
    """(image `[size, size]` uint8, None) or (zeros, reason) for one file."""
    p = Path(path)
    try:
        if not p.is_file():
            raise FileNotFoundError("file referenced in metadata is absent")
        if p.suffix.lower() == ".dcm":
            img = _read_dicom(p)
        else:
            from PIL import Image

            with Image.open(p) as im:
                im.load()
                img = np.asarray(im.convert("L"))
        return _resize_center_crop(img, size), None
    except Exception as exc:  # one bad image must not stop the stage: it is counted and reported
        return np.zeros((size, size), dtype=np.uint8), f"{type(exc).__name__}: {exc}"


def decode_cxr_images(paths: list[Path], size: int, workers: int = 1, on_done=None
                      ) -> tuple[np.ndarray, list[dict]]:
    """Decode films once into `[N, size, size]` uint8, in input order.

    A missing, unreadable or truncated file gives a zero image and a failure
    record {path, reason}; the caller warns and counts.
    """
    decoded = map_in_chunks(partial(decode_one, size=size), [str(p) for p in paths], workers, 32, on_done)
    out = np.zeros((len(paths), size, size), dtype=np.uint8)
    failures = []
    for i, (img, reason) in enumerate(decoded):
        out[i] = img
        if reason:
            failures.append({"path": str(paths[i]), "reason": reason})
    return out, failures
