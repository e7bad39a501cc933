"""Synthetic ADNI export: ADNIMERGE.csv (several visits per subject) and T1 NIfTI volumes.

Layout: `<out>/ADNIMERGE.csv` and `<out>/MRI/<PTID>/<IMAGEUID>.nii.gz` (the volume of
the visit whose ADNIMERGE row carries that IMAGEUID).

Generative model: each subject has three factors a ~ N(0, I_3): a0 cognitive
decline, a1 amyloid burden, a2 atrophy. The baseline diagnosis follows
s = 1.0 a0 + 0.5 a1 + 0.7 a2 + noise (CN < -0.55 <= MCI < 0.75 <= AD; EMCI/LMCI
split at 0.1; about 8 % of cognitively normal subjects are coded SMC). Cognitive
scores follow a0 (strong, tabular), CSF/PET biomarkers a1, and the MRI shows a2
(hippocampal shrinkage, ventricular enlargement), so tabular and imaging carry
partly complementary signal and the tabular signal is the easier one. Volumes
are stored LPS-oriented with anisotropic spacing, so orientation and spacing
transforms matter. About 80 % of subjects have a baseline scan; some have only a
scan at m06 (within 6 months) and some none within the window.
"""

from __future__ import annotations

import gzip
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd

from clinfuse.etl.provenance import write_synthetic_marker

ADNIMERGE_COLUMNS = [
    "RID", "PTID", "VISCODE", "EXAMDATE", "DX_bl", "DX", "AGE", "PTGENDER", "PTEDUCAT", "PTETHCAT", "PTRACCAT",
    "PTMARRY", "APOE4", "ABETA", "TAU", "PTAU", "FDG", "PIB", "AV45", "FBB", "CDRSB", "ADAS11", "ADAS13",
    "ADASQ4", "MMSE", "RAVLT_immediate", "RAVLT_learning", "RAVLT_forgetting", "RAVLT_perc_forgetting", "FAQ",
    "MOCA", "IMAGEUID",
]
VISITS = [("bl", 0), ("m06", 182), ("m12", 365), ("m24", 730)]


def brain_volume(rng: np.random.Generator, a: np.ndarray, size: int) -> np.ndarray:
    """An int16 T1-like volume `[size]*3` (RAS voxel order); atrophy follows a[2] and a[0]."""
    grid = (np.mgrid[0:size, 0:size, 0:size].astype(float) + 0.5) / size - 0.5
    x, y, z = grid
    brain = (x / 0.42) ** 2 + (y / 0.46) ** 2 + (z / 0.38) ** 2 < 1
    vol = np.where(brain, 600.0, 40.0)
    vent = 0.08 * (1 + 0.25 * a[2] + 0.15 * a[0])
    ventricles = (x / max(vent, 0.03)) ** 2 + (y / 0.16) ** 2 + ((z - 0.05) / 0.08) ** 2 < 1
    vol = np.where(ventricles, 150.0, vol)
    hippo = 0.06 * (1 - 0.2 * np.tanh(a[2]))
    for cx in (-0.18, 0.18):
        h = ((x - cx) / hippo) ** 2 + ((y + 0.05) / (1.6 * hippo)) ** 2 + ((z + 0.12) / hippo) ** 2 < 1
        vol = np.where(h, 820.0, vol)
    vol = vol + rng.normal(0, 30, vol.shape)
    return np.clip(vol, 0, 2000).astype(np.int16)


def nifti_bytes(vol_ras: np.ndarray, spacing=(1.2, 1.0, 1.1)) -> bytes:
    """Gzipped NIfTI with an LPS voxel order and anisotropic spacing (mtime 0: deterministic)."""
    data = vol_ras[::-1, ::-1, :]  # store as LPS: flip x and y
    affine = np.diag([-spacing[0], -spacing[1], spacing[2], 1.0])
    affine[:3, 3] = [spacing[0] * data.shape[0] / 2, spacing[1] * data.shape[1] / 2, -spacing[2] * data.shape[2] / 2]
    img = nib.Nifti1Image(np.ascontiguousarray(data), affine)
    img.header.set_xyzt_units("mm")
    return gzip.compress(img.to_bytes(), compresslevel=6, mtime=0)


def write_adni_export(out_dir: Path, n_subjects: int, seed: int, mri_size: int = 32) -> dict:
    """Write ADNIMERGE.csv and MRI/<PTID>/<IMAGEUID>.nii.gz under `out_dir`; returns counts."""
    out_dir = Path(out_dir)
    rng = np.random.default_rng([seed, 3])
    rows, n_volumes = [], 0
    image_uid = 100_000
    for i in range(n_subjects):
        rid = 2 + i * 3
        ptid = f"{[2, 5, 11, 23, 67, 127][i % 6]:03d}_S_{rid:04d}"
        a = rng.normal(size=3)
        s = 1.0 * a[0] + 0.5 * a[1] + 0.7 * a[2] + 0.3 * rng.normal()
        if s < -0.55:
            dx_bl = "SMC" if rng.random() < 0.08 else "CN"
        elif s < 0.75:
            dx_bl = "EMCI" if s < 0.1 else "LMCI"
        else:
            dx_bl = "AD"
        base_dx = {"CN": "CN", "SMC": "CN", "EMCI": "MCI", "LMCI": "MCI", "AD": "Dementia"}[dx_bl]
        age = float(np.clip(73 + 6 * rng.normal() + 2 * a[0], 55, 92))
        gender = rng.choice(["Male", "Female"])
        educ = int(np.clip(16 + 2.5 * rng.normal(), 6, 20))
        apoe4 = int(rng.choice([0, 1, 2], p=[0.55, 0.35, 0.1]) if a[1] < 0.5 else rng.choice([0, 1, 2], p=[0.25, 0.5, 0.25]))
        ethnicity = rng.choice(["Not Hisp/Latino", "Not Hisp/Latino", "Hisp/Latino", "Unknown"])
        race = rng.choice(["White", "White", "White", "Black", "Asian", "More than one"])
        married = rng.choice(["Married", "Married", "Widowed", "Divorced", "Never married"])
        scan_plan = rng.random()  # < .8 baseline scan; < .9 only m06 scan; else only m24 (outside 6 months)
        n_visits = int(rng.integers(2, len(VISITS) + 1))
        exam0 = np.datetime64("2006-01-01") + np.timedelta64(int(rng.integers(0, 3000)), "D")
        for v, (viscode, days) in enumerate(VISITS[:n_visits]):
            t = days / 365
            prog = a[0] + 0.25 * t * max(a[0], 0)
            dx = base_dx
            if base_dx == "MCI" and prog > 1.2 and v > 0:
                dx = "Dementia"
            if viscode == "bl" and rng.random() < 0.03:
                dx = ""
            mmse = np.clip(np.round(28.5 - 2.2 * max(prog, -0.5) - 1.5 * (base_dx == "Dementia") + rng.normal()), 10, 30)
            adas13 = np.clip(12 + 7 * prog + 3 * rng.normal(), 0, 70)
            abeta = 1100 - 380 * a[1] + 120 * rng.normal()
            tau = 260 + 90 * a[1] + 50 * a[0] + 40 * rng.normal()
            ptau = 24 + 9 * a[1] + 5 * a[0] + 4 * rng.normal()
            has_csf = rng.random() < 0.6
            csf = {
                "ABETA": (">1700" if abeta > 1700 else f"{abeta:.1f}") if has_csf else "",
                "TAU": ("<80" if tau < 80 else f"{tau:.2f}") if has_csf else "",
                "PTAU": ("<8" if ptau < 8 else f"{ptau:.2f}") if has_csf else "",
            }
            uid = ""
            wants_scan = (scan_plan < 0.8 and viscode == "bl") or (0.8 <= scan_plan < 0.9 and viscode == "m06") or (
                scan_plan >= 0.9 and viscode == "m24") or (viscode == "m12" and rng.random() < 0.5)
            if wants_scan:
                image_uid += int(rng.integers(1, 50))
                uid = str(image_uid)
                path = out_dir / "MRI" / ptid / f"{uid}.nii.gz"
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(nifti_bytes(brain_volume(rng, a + np.array([0.1 * t, 0, 0.15 * t]), mri_size)))
                n_volumes += 1
            rows.append({
                "RID": rid, "PTID": ptid, "VISCODE": viscode,
                "EXAMDATE": str(exam0 + np.timedelta64(days + int(rng.integers(-10, 10)), "D")),
                "DX_bl": dx_bl, "DX": dx, "AGE": round(age, 1), "PTGENDER": gender, "PTEDUCAT": educ,
                "PTETHCAT": ethnicity, "PTRACCAT": race, "PTMARRY": married,
                "APOE4": apoe4, **csf,
                "FDG": np.nan if rng.random() < 0.3 else round(6.4 - 0.5 * a[0] - 0.3 * a[2] + 0.3 * rng.normal(), 3),
                "PIB": np.nan if rng.random() < 0.97 else round(1.5 + 0.4 * a[1], 2),
                "AV45": np.nan if rng.random() < 0.5 else round(1.1 + 0.2 * a[1] + 0.05 * rng.normal(), 3),
                "FBB": np.nan if rng.random() < 0.85 else round(1.1 + 0.2 * a[1], 3),
                "CDRSB": round(float(np.clip(1.5 * max(prog + 0.5, 0) + 0.5 * rng.normal(), 0, 18)) * 2) / 2,
                "ADAS11": round(float(adas13 * 0.7), 2), "ADAS13": round(float(adas13), 2),
                "ADASQ4": int(np.clip(np.round(3 + 2.5 * prog + rng.normal()), 0, 10)),
                "MMSE": int(mmse),
                "RAVLT_immediate": int(np.clip(np.round(40 - 8 * prog + 4 * rng.normal()), 0, 75)),
                "RAVLT_learning": int(np.clip(np.round(5 - 1.5 * prog + rng.normal()), -5, 14)),
                "RAVLT_forgetting": int(np.clip(np.round(4 + 1.0 * prog + rng.normal()), -5, 15)),
                "RAVLT_perc_forgetting": round(float(np.clip(45 + 20 * prog + 10 * rng.normal(), -100, 100)), 3),
                "FAQ": int(np.clip(np.round(2 + 5 * max(prog, 0) + rng.normal()), 0, 30)),
                "MOCA": np.nan if rng.random() < 0.4 else int(np.clip(np.round(25 - 3 * prog + rng.normal()), 0, 30)),
                "IMAGEUID": uid,
            })
    frame = pd.DataFrame(rows, columns=ADNIMERGE_COLUMNS)
    out_dir.mkdir(parents=True, exist_ok=True)
    frame.to_csv(out_dir / "ADNIMERGE.csv", index=False, lineterminator="\n")
    write_synthetic_marker(out_dir, "adni", seed, subjects=n_subjects)
    return {"subjects": n_subjects, "visits": len(frame), "volumes": n_volumes}
