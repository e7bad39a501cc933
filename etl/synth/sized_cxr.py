"""A MIMIC-CXR-JPG export at a named size: every metadata row of MIMIC-CXR-JPG 2.1.0 (at full
size 377,110 images of 227,835 studies of 65,379 patients, the real view mix) and
real-resolution films only where the ETL can pair them.

The ICU stays' studies come from `cxr.plan_studies` (the demo's planner, with the
share of stays that have an AP film in the first 48 h set by the size); the other
metadata rows (studies of patients never in the ICU, and the remaining views) fill
each ViewPosition up to its real share. Films are written for the AP films inside
[intime, intime + 48 h] of an ICU stay, the only ones the ETL decodes; other rows
name files that do not exist (the ETL never opens them).

Films are 3056 x 2544 px (MIMIC-CXR-JPG's size) JPEGs of quality 90 with smooth
content: the demo's chest drawing at a tenth of the size, upsampled, so each is
about 0.7 MB (real films: 1-2 MB) and decodes at the full pixel count. They come
from a bank of 12 x 12 templates binned on the two factors a film shows (h1: heart
size, h3: opacities), so 144 encodes serve any number of films and images still
carry their label signal.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from clinfuse.etl.provenance import write_synthetic_marker

from .csvgz import write_csv_gz
from .cxr import (
    CHEXPERT_LABELS,
    METADATA_COLUMNS,
    SPLIT_COLUMNS,
    VIEW,
    draw_chest,
    image_relpath,
    plan_studies,
)
from .sizes import ExportSize

# MIMIC-CXR-JPG 2.1.0 metadata ViewPosition shares (377,110 rows; '' = not recorded); rarer
# positions (AP AXIAL, LAO, SWIMMERS, ...) are a few dozen rows and left out
VIEW_SHARES = {"AP": 0.3903, "PA": 0.2550, "LATERAL": 0.2197, "LL": 0.0932, "": 0.0418}
VIEW_FIELDS = VIEW | {"LL": ("CHEST (PA AND LAT)", "left lateral", "Erect"), "": ("CHEST (PORTABLE AP)", "", "")}
BINS = np.linspace(-2.2, 2.2, 12)  # template centres for h1 and h3
FILM_QUALITY = 90


def film_bank(seed: int, height: int, width: int) -> list[list[bytes]]:
    """JPEG bytes `[12][12]` for (h1 bin, h3 bin): a smooth chest drawn at 1/10 size, upsampled."""
    rng = np.random.default_rng([seed, 29, 1])
    bank = []
    for h1 in BINS:
        row = []
        for h3 in BINS:
            small = draw_chest(rng, np.array([0.0, h1, 0.0, h3]), max(height // 10, 16), max(width // 10, 16), "AP")
            big = Image.fromarray(small).resize((width, height), Image.Resampling.BICUBIC)
            buf = io.BytesIO()
            big.save(buf, format="JPEG", quality=FILM_QUALITY)
            row.append(buf.getvalue())
        bank.append(row)
    return bank


def _nearest_bin(h: np.ndarray) -> np.ndarray:
    return np.abs(np.asarray(h)[:, None] - BINS[None, :]).argmin(axis=1)


def filler_rows(rng: np.random.Generator, subjects: np.ndarray, first_study: int, n_studies: int,
                views: dict[str, int]) -> pd.DataFrame:
    """Metadata rows of studies outside any ICU stay: `views` images per ViewPosition in `n_studies`
    studies of `subjects` (every subject gets one study first)."""
    n_images = sum(views.values())
    if n_studies > n_images or n_studies < len(subjects):
        raise ValueError(f"{n_images} filler images cannot make {n_studies} studies of {len(subjects)} patients")
    view = rng.permutation(np.concatenate([np.full(n, v, dtype=object) for v, n in views.items()]))
    # each study gets one image, the rest go to random studies: study sizes 1, 2, 3... as in the real data
    study_of = np.sort(np.concatenate([np.arange(n_studies), rng.integers(0, n_studies, n_images - n_studies)]))
    subject_of_study = np.concatenate([subjects, rng.choice(subjects, n_studies - len(subjects))]) if len(subjects) \
        else np.zeros(n_studies, dtype=np.int64)
    days = rng.integers(0, 365 * 76, n_studies)
    taken = (np.datetime64("2110-01-01") + days).astype("datetime64[s]") + rng.integers(0, 86400, n_studies).astype("timedelta64[s]")
    ids = rng.integers(0, 2**32, (n_images, 5), dtype=np.uint64)
    dicom = ["-".join(f"{v:08x}" for v in row) for row in ids]
    return pd.DataFrame({"subject_id": subject_of_study[study_of], "stay_id": -1, "study_id": first_study + study_of,
                         "dicom_id": dicom, "view": view, "taken": taken[study_of]})


def write_sized_cxr_export(jpg_dir: Path, stays: pd.DataFrame, other_subjects: np.ndarray, size: ExportSize,
                           seed: int, on_image=None) -> dict[str, int]:
    """Write the metadata, split and CheXpert tables with `size`'s counts and the pairable films."""
    jpg_dir = Path(jpg_dir)
    plan = plan_studies(stays, seed, size.p_window_ap).drop_duplicates("dicom_id")
    intime = plan["stay_id"].map(stays.set_index("stay_id")["intime"])
    hours = (plan["taken"] - intime).dt.total_seconds() / 3600
    pairable = (plan["view"] == "AP") & (hours >= 0) & (hours <= 48)

    planned_views = plan["view"].value_counts().to_dict()
    target = {v: round(share * size.cxr_images) for v, share in VIEW_SHARES.items()}
    target["AP"] += size.cxr_images - sum(target.values())
    fill_views = {v: max(0, target[v] - planned_views.get(v, 0)) for v in target}
    n_fill = sum(fill_views.values())
    over = len(plan) + n_fill - size.cxr_images
    if over > 0:  # the planner made more of some view than its share: take the excess from the largest fill
        fill_views[max(fill_views, key=lambda v: fill_views[v])] -= over
    planned_subjects = plan["subject_id"].nunique()
    fill_studies = size.cxr_studies - plan["study_id"].nunique()
    fill_subjects = max(0, min(size.cxr_patients - planned_subjects, len(other_subjects), fill_studies))
    rng = np.random.default_rng([seed, 29, 2])
    fill = filler_rows(rng, rng.choice(other_subjects, fill_subjects, replace=False), int(plan["study_id"].max()) + 1,
                       fill_studies, fill_views)
    rows = pd.concat([plan.assign(pairable=pairable.to_numpy()), fill.assign(pairable=False)], ignore_index=True)

    bank = film_bank(seed, size.film_height, size.film_width)
    films = rows[rows["pairable"]]
    b1, b3 = _nearest_bin(films["h1"].to_numpy()), _nearest_bin(films["h3"].to_numpy())
    for row, i1, i3 in zip(films.itertuples(index=False), b1, b3, strict=True):
        path = jpg_dir / image_relpath(row.subject_id, row.study_id, row.dicom_id)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(bank[i1][i3])
        if on_image:
            on_image()

    taken = pd.to_datetime(rows["taken"])
    date = taken.dt.strftime("%Y%m%d").astype(int)
    time = taken.dt.hour * 10000 + taken.dt.minute * 100 + taken.dt.second + 0.0
    fields = np.array([VIEW_FIELDS[v] for v in rows["view"]], dtype=object)
    film = rows["pairable"].to_numpy()
    meta = pd.DataFrame({
        "dicom_id": rows["dicom_id"], "subject_id": rows["subject_id"], "study_id": rows["study_id"],
        "PerformedProcedureStepDescription": fields[:, 0], "ViewPosition": rows["view"],
        "Rows": size.film_height, "Columns": size.film_width,
        "StudyDate": date, "StudyTime": time, "ProcedureCodeSequence_CodeMeaning": fields[:, 0],
        "ViewCodeSequence_CodeMeaning": fields[:, 1], "PatientOrientationCodeSequence_CodeMeaning": fields[:, 2],
    })[METADATA_COLUMNS]
    split = pd.DataFrame({"dicom_id": rows["dicom_id"], "study_id": rows["study_id"], "subject_id": rows["subject_id"],
                          "split": np.array(["train", "train", "train", "validate", "test"])[rows["subject_id"] % 5]})
    studies = rows.drop_duplicates("study_id")
    chex = pd.DataFrame({"subject_id": studies["subject_id"].to_numpy(), "study_id": studies["study_id"].to_numpy()})
    for name in CHEXPERT_LABELS:  # what the real table most often holds: blank (not mentioned)
        chex[name] = ""
    h1, h3 = studies["h1"].to_numpy(), studies["h3"].to_numpy()
    known = ~np.isnan(h1)
    chex["Cardiomegaly"] = np.where(~known, "", np.where(h1 > 0.8, "1.0", np.where(h1 < -0.5, "0.0", "-1.0")))
    chex["Lung Opacity"] = np.where(known & (h3 > 0.5), "1.0", "")
    chex["No Finding"] = np.where(known & (h1 < 0) & (h3 < 0), "1.0", np.where(known, "", "1.0"))
    jpg_dir.mkdir(parents=True, exist_ok=True)
    write_csv_gz(jpg_dir / "mimic-cxr-2.0.0-metadata.csv.gz", meta, compresslevel=1)
    write_csv_gz(jpg_dir / "mimic-cxr-2.0.0-split.csv.gz", split[SPLIT_COLUMNS], compresslevel=1)
    write_csv_gz(jpg_dir / "mimic-cxr-2.0.0-chexpert.csv.gz", chex, compresslevel=1)
    write_synthetic_marker(jpg_dir, "mimic-cxr-jpg", seed, size=size.name)
    return {"images": len(meta), "studies": len(studies), "patients": int(rows["subject_id"].nunique()),
            "films": int(film.sum()), "film_bytes": int(sum(len(bank[i][j]) for i, j in zip(b1, b3, strict=True))), "dicom": 0}
