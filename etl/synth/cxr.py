"""Synthetic MIMIC-CXR-JPG export (metadata, split, CheXpert labels, grayscale JPEGs)
and optional MIMIC-CXR DICOM copies (some MONOCHROME1) for the DICOM path.

Per ICU stay: usually one or more AP films inside [intime, intime + 48 h], sometimes
PA/LATERAL studies inside the window, AP films before intime or after 48 h, and
some stays with no film at all. Image content follows the latent factors (see
latent.py): the cardiac silhouette widens with h1, opacities grow with h3.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from clinfuse.etl.provenance import write_synthetic_marker

from .csvgz import write_csv_gz
from .latent import sigmoid

METADATA_COLUMNS = [
    "dicom_id", "subject_id", "study_id", "PerformedProcedureStepDescription", "ViewPosition", "Rows", "Columns",
    "StudyDate", "StudyTime", "ProcedureCodeSequence_CodeMeaning", "ViewCodeSequence_CodeMeaning",
    "PatientOrientationCodeSequence_CodeMeaning",
]
SPLIT_COLUMNS = ["dicom_id", "study_id", "subject_id", "split"]
CHEXPERT_LABELS = [
    "Atelectasis", "Cardiomegaly", "Consolidation", "Edema", "Enlarged Cardiomediastinum", "Fracture",
    "Lung Lesion", "Lung Opacity", "No Finding", "Pleural Effusion", "Pleural Other", "Pneumonia",
    "Pneumothorax", "Support Devices",
]
VIEW = {
    "AP": ("CHEST (PORTABLE AP)", "antero-posterior", "Recumbent"),
    "PA": ("CHEST (PA AND LAT)", "postero-anterior", "Erect"),
    "LATERAL": ("CHEST (PA AND LAT)", "lateral", "Erect"),
}


def image_relpath(subject_id: int, study_id: int, dicom_id: str, ext: str = "jpg") -> str:
    """files/p{first 2 digits}/p{subject_id}/s{study_id}/{dicom_id}.{ext}, as in MIMIC-CXR."""
    s = str(int(subject_id))
    return f"files/p{s[:2]}/p{s}/s{int(study_id)}/{dicom_id}.{ext}"


def draw_chest(rng: np.random.Generator, h: np.ndarray, height: int, width: int, view: str) -> np.ndarray:
    """A grayscale chest-like film `[H, W]` uint8 whose features follow factors h (4,)."""
    yy, xx = np.mgrid[0:height, 0:width].astype(float)
    y, x = yy / height, xx / width
    img = 60 + 40 * y + rng.normal(0, 3, (height, width))
    lungs = (((x - 0.3) / 0.17) ** 2 + ((y - 0.45) / 0.3) ** 2 < 1) | (((x - 0.7) / 0.17) ** 2 + ((y - 0.45) / 0.3) ** 2 < 1)
    if view == "LATERAL":
        lungs = ((x - 0.5) / 0.3) ** 2 + ((y - 0.45) / 0.32) ** 2 < 1
    img = np.where(lungs, img - 35, img + 30)
    heart_w = 0.13 * (1 + 0.12 * h[1])
    heart = ((x - 0.55) / max(heart_w, 0.05)) ** 2 + ((y - 0.68) / 0.14) ** 2 < 1
    img = np.where(heart, img + 70, img)
    opacity = 45 * sigmoid(1.6 * h[3] - 0.3)
    for cx in (0.3, 0.7):
        cy = 0.55 + 0.1 * rng.normal()
        blob = np.exp(-(((x - cx) / 0.09) ** 2 + ((y - cy) / 0.08) ** 2))
        img = img + opacity * blob * lungs
    img = img + rng.normal(0, 10, (height, width))
    return np.clip(img, 0, 255).astype(np.uint8)


def real_size_film(rng: np.random.Generator, height: int = 3056, width: int = 2544, grain: float = 2.0) -> np.ndarray:
    """A chest-like film `[H, W]` uint8 at MIMIC-CXR-JPG's size, for decode benchmarks and tests.

    The anatomy of `draw_chest` drawn at a tenth of the size and upsampled (smooth, as a real
    film is), rib-like stripes, and a fine grain of `grain` grey levels: saved as JPEG quality 95
    (MIMIC-CXR-JPG's setting) it weighs about 1.8 MB, within real films' 0.5-3 MB.
    """
    small = draw_chest(rng, rng.normal(size=4), max(height // 10, 8), max(width // 10, 8), "AP")
    img = np.asarray(Image.fromarray(small).resize((width, height), Image.BICUBIC), dtype=np.float32)
    y = np.arange(height, dtype=np.float32)[:, None] / height
    x = np.arange(width, dtype=np.float32)[None, :] / width
    img = img + 8 * np.sin(2 * np.pi * 14 * y + 3 * np.sin(6 * x))
    img = img + rng.normal(0, grain, (height, width)).astype(np.float32)
    return np.clip(img, 0, 255).astype(np.uint8)


def _dicom_id(rng) -> str:
    return "-".join(f"{v:08x}" for v in rng.integers(0, 2**32, 5, dtype=np.uint64))


def _study_datetime(ts: np.datetime64) -> tuple[int, float]:
    t = pd.Timestamp(ts)
    return int(t.strftime("%Y%m%d")), float(t.hour * 10000 + t.minute * 100 + t.second + t.microsecond / 1e6)


def plan_studies(stays: pd.DataFrame, seed: int, p_window_ap: float = 0.82) -> pd.DataFrame:
    """Which films exist for each stay (one row per image), deterministic for a seed.

    `p_window_ap`: the share of stays with an AP film inside the pairing window."""
    rng = np.random.default_rng([seed, 7])
    rows = []
    study = 50_000_000
    for stay in stays.itertuples(index=False):
        intime = np.datetime64(stay.intime)
        plans = []
        r = rng.random()
        if r < p_window_ap:  # AP inside the window, sometimes two
            for _ in range(1 + (rng.random() < 0.25)):
                plans.append((["AP"], rng.uniform(0.5, 47.5)))
        if rng.random() < 0.12:
            plans.append((["PA", "LATERAL"], rng.uniform(1, 47)))
        if rng.random() < 0.2:
            plans.append((["AP"], -rng.uniform(2, 40)))  # before intime
        if rng.random() < 0.15:
            plans.append((["AP"], rng.uniform(49, 120)))  # after the window
        for views, hours in plans:
            study += 1
            taken = intime + np.timedelta64(int(hours * 3600), "s")
            for view in views:
                rows.append({"subject_id": stay.subject_id, "stay_id": stay.stay_id, "study_id": study,
                             "dicom_id": _dicom_id(rng), "view": view, "taken": taken,
                             **{f"h{k}": getattr(stay, f"h{k}") for k in range(4)}})
    return pd.DataFrame(rows)


def write_cxr_export(jpg_dir: Path, dicom_dir: Path | None, stays: pd.DataFrame, seed: int,
                     height: int = 96, width: int = 80, n_dicom: int = 12, on_image=None) -> dict[str, int]:
    """Write the MIMIC-CXR-JPG tables and images (and a few DICOM copies)."""
    plan = plan_studies(stays, seed).drop_duplicates("dicom_id")
    rng = np.random.default_rng([seed, 11])
    meta, split, chex = [], [], {}
    n_dicom_written = 0
    for row in plan.itertuples(index=False):
        date, time = _study_datetime(row.taken)
        desc, view_meaning, orient = VIEW[row.view]
        h = np.array([row.h0, row.h1, row.h2, row.h3])
        img = draw_chest(rng, h, height, width, row.view)
        path = jpg_dir / image_relpath(row.subject_id, row.study_id, row.dicom_id)
        path.parent.mkdir(parents=True, exist_ok=True)
        buf = io.BytesIO()
        Image.fromarray(img, mode="L").save(buf, format="JPEG", quality=90)
        path.write_bytes(buf.getvalue())
        if dicom_dir is not None and row.view == "AP" and n_dicom_written < n_dicom:
            write_dicom(dicom_dir / image_relpath(row.subject_id, row.study_id, row.dicom_id, "dcm"), img,
                        row, monochrome1=n_dicom_written % 2 == 1, date=date, time=time)
            n_dicom_written += 1
        meta.append((row.dicom_id, row.subject_id, row.study_id, desc, row.view, height, width, date, time,
                     desc, view_meaning, orient))
        split.append((row.dicom_id, row.study_id, row.subject_id,
                      ["train", "train", "train", "validate", "test"][row.subject_id % 5]))
        if row.study_id not in chex:
            labels = {name: "" for name in CHEXPERT_LABELS}
            labels["Cardiomegaly"] = 1.0 if h[1] > 0.8 else (0.0 if h[1] < -0.5 else -1.0)
            labels["Lung Opacity"] = 1.0 if h[3] > 0.5 else ""
            labels["Support Devices"] = 1.0 if rng.random() < 0.5 else 0.0
            labels["No Finding"] = 1.0 if h[1] < 0 and h[3] < 0 else ""
            chex[row.study_id] = (row.subject_id, row.study_id, *labels.values())
        if on_image:
            on_image()
    jpg_dir.mkdir(parents=True, exist_ok=True)
    write_csv_gz(jpg_dir / "mimic-cxr-2.0.0-metadata.csv.gz", pd.DataFrame(meta, columns=METADATA_COLUMNS))
    write_csv_gz(jpg_dir / "mimic-cxr-2.0.0-split.csv.gz", pd.DataFrame(split, columns=SPLIT_COLUMNS))
    write_csv_gz(jpg_dir / "mimic-cxr-2.0.0-chexpert.csv.gz",
                 pd.DataFrame(list(chex.values()), columns=["subject_id", "study_id", *CHEXPERT_LABELS]))
    write_synthetic_marker(jpg_dir, "mimic-cxr-jpg", seed)
    if dicom_dir is not None:
        write_synthetic_marker(dicom_dir, "mimic-cxr-dicom", seed)
    return {"images": len(meta), "studies": len(chex), "dicom": n_dicom_written}


def write_dicom(path: Path, img: np.ndarray, row, monochrome1: bool, date: int, time: float) -> None:
    """A DX DICOM whose pixels need rescale + VOI LUT (+ inversion for MONOCHROME1) to give `img`.

    Stored values are 4 * v + 100 with RescaleSlope 0.25 and RescaleIntercept -25, so the
    modality LUT returns v; v is the image for MONOCHROME2 and 255 - image for MONOCHROME1.
    """
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    sop_class = "1.2.840.10008.5.1.4.1.1.1.1"  # Digital X-Ray Image Storage - For Presentation
    uid = generate_uid(entropy_srcs=[row.dicom_id])
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = generate_uid(entropy_srcs=["clinfuse"])
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = sop_class, uid
    ds.StudyInstanceUID = generate_uid(entropy_srcs=[str(row.study_id)])
    ds.SeriesInstanceUID = generate_uid(entropy_srcs=[str(row.study_id), "series"])
    ds.PatientID, ds.Modality = str(row.subject_id), "DX"
    ds.StudyDate, ds.StudyTime = str(date), f"{time:013.6f}"
    ds.ViewPosition = row.view
    v = (255 - img.astype(np.int32)) if monochrome1 else img.astype(np.int32)
    stored = (4 * v + 100).astype(np.uint16)
    ds.Rows, ds.Columns = img.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME1" if monochrome1 else "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.RescaleSlope, ds.RescaleIntercept = 0.25, -25
    ds.WindowCenter, ds.WindowWidth = 127.5, 256
    ds.PixelData = stored.tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
