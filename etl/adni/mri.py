"""T1 MRI: pick each subject's scan, then preprocess it once with MONAI transforms.

Scan choice: the baseline visit's IMAGEUID; otherwise the scan whose EXAMDATE is
nearest the baseline EXAMDATE within `window_days` (the ETL setting `mri_window_days`: six months).
Preprocessing: orientation RAS, resampling to isotropic `spacing_mm`, intensity
scaled to [0, 1] between the 0.5th and 99.5th percentiles, foreground crop,
resize to a cube of side `size`, stored as uint8.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd


def choose_scans(visits: pd.DataFrame, base: pd.DataFrame, window_days: int) -> pd.DataFrame:
    """Per RID in `base`: IMAGEUID, scan VISCODE and days from baseline (NaN IMAGEUID if none)."""
    v = visits[["RID", "VISCODE", "EXAMDATE", "IMAGEUID"]].copy()
    v["EXAMDATE"] = pd.to_datetime(v["EXAMDATE"], errors="coerce", format="mixed")  # as validate_adnimerge reads it
    v["IMAGEUID"] = pd.to_numeric(v["IMAGEUID"], errors="coerce")
    v = v[v["IMAGEUID"].notna()]
    bl_date = base.set_index("RID")["EXAMDATE"].pipe(pd.to_datetime, errors="coerce", format="mixed")
    v = v[v["RID"].isin(bl_date.index)]
    v["days"] = (v["EXAMDATE"] - v["RID"].map(bl_date)).dt.days
    v["is_bl"] = v["VISCODE"].astype(str).str.strip() == "bl"
    v = v[v["is_bl"] | (v["days"].abs() <= window_days)]
    v = v.assign(rank=np.where(v["is_bl"], -1, v["days"].abs())).sort_values(["RID", "rank", "days"])
    best = v.drop_duplicates("RID")[["RID", "IMAGEUID", "VISCODE", "days"]]
    best = best.rename(columns={"VISCODE": "scan_viscode", "days": "scan_days_from_bl"})
    return base[["RID"]].merge(best, on="RID", how="left")


def scan_path(root: Path, ptid: str, image_uid) -> Path:
    """<adni>/MRI/<PTID>/<IMAGEUID>.nii.gz (or .nii)."""
    stem = Path(root) / "MRI" / str(ptid) / str(int(image_uid))
    gz = stem.with_name(stem.name + ".nii.gz")
    return gz if gz.exists() or not stem.with_name(stem.name + ".nii").exists() else stem.with_name(stem.name + ".nii")


def check_geometry(path: Path) -> None:
    """Refuse a volume whose header cannot place it in space: a NaN/inf or singular affine, or a voxel
    size that is not a positive number. The loader would otherwise substitute a default geometry and
    resample the scan at a spacing it never had.
    """
    import nibabel as nib

    image = nib.load(str(path))  # the header only: the voxels are read later, by MONAI
    affine = np.asarray(image.affine, dtype=float)
    if not np.isfinite(affine).all():
        raise ValueError("the header's affine (voxel-to-world matrix) holds NaN or inf")
    if abs(np.linalg.det(affine[:3, :3])) < 1e-12:
        raise ValueError("the header's affine is singular (a zero voxel axis)")
    zooms = np.asarray(image.header.get_zooms()[:3], dtype=float)
    if not (np.isfinite(zooms).all() and (zooms > 0).all()):
        raise ValueError(f"the header's voxel sizes (pixdim) are not positive numbers: {zooms.tolist()}")


def quiet_monai() -> None:
    """MONAI logs GPU-codec availability at import; irrelevant on CPU and noisy in stage output."""
    import logging
    import warnings

    logging.getLogger("monai.data.nvimgcodec_pydicom_plugin").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", message=".*nvImageCodec.*")


def preprocess_volume(path: str, size: int, spacing_mm: float) -> tuple[np.ndarray, str | None]:
    """(`[size]*3` uint8 volume, None), or (zeros, reason) for an unreadable or non-3D file.

    Trailing singleton axes (`[X, Y, Z, 1]`, as some converters write a single volume) are
    squeezed; a real 4D series (`[X, Y, Z, T>1]`) is refused.
    """
    quiet_monai()
    from monai.transforms import (
        Compose,
        CropForeground,
        LoadImage,
        Orientation,
        Resize,
        ScaleIntensityRangePercentiles,
        Spacing,
    )

    try:
        p = Path(path)
        try:
            p.stat()  # follows links: a symlink loop or an unreadable folder is an OSError of its own, not "absent"
        except FileNotFoundError:
            raise FileNotFoundError("scan referenced in ADNIMERGE (IMAGEUID) is absent") from None
        if not p.is_file():
            raise OSError("not a regular file (a folder, a device or a pipe)")
        check_geometry(p)
        img = LoadImage(image_only=True, ensure_channel_first=False, reader="NibabelReader")(str(p))
        while img.ndim > 3 and img.shape[-1] == 1:  # (X, Y, Z, 1[, 1]) is a 3D volume written with a time axis
            img = img[..., 0]
        if img.ndim != 3:
            raise ValueError(f"expected a 3D T1 volume, got shape {tuple(img.shape)}")
        chain = Compose([
            Orientation(axcodes="RAS", labels=(("L", "R"), ("P", "A"), ("I", "S"))),
            Spacing(pixdim=(spacing_mm,) * 3, mode="bilinear"),
            ScaleIntensityRangePercentiles(lower=0.5, upper=99.5, b_min=0.0, b_max=1.0, clip=True),
            CropForeground(select_fn=lambda x: x > 0.05, margin=1),
            Resize(spatial_size=(size,) * 3, mode="trilinear"),
        ])
        out = chain(img[None])[0]
        return np.round(np.clip(np.asarray(out), 0, 1) * 255).astype(np.uint8), None
    except Exception as exc:  # one bad volume must not stop the stage: counted and reported
        return np.zeros((size,) * 3, dtype=np.uint8), f"{type(exc).__name__}: {exc}".replace("\n", " ")[:300]
