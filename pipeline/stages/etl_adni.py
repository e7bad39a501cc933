"""ADNIMERGE + T1 MRI -> a processed 3-class (CN / MCI / AD) cohort.

Steps: validate ADNIMERGE; baseline visit and label per subject; choose each
subject's scan (baseline, else nearest within 6 months); preprocess volumes once
with MONAI; subject-level 7:1:2 split; tabular features with training-only
statistics. Exclusions are counted in manifest.json; the output folder is
replaced only when everything succeeded.
"""

from __future__ import annotations

import time
import warnings
from functools import partial
from pathlib import Path

import numpy as np
import pandas as pd

from clinfuse.etl.adni.labels import CLASS_NAMES, REQUIRED, SEX_CODES, baseline_labels, check_codes, check_sex
from clinfuse.etl.adni.merge_table import validate_adnimerge
from clinfuse.etl.adni.mri import choose_scans, preprocess_volume, scan_path
from clinfuse.etl.adni.tabular import fit_transform_tabular
from clinfuse.etl.errors import InputError, not_utf8
from clinfuse.etl.ids import parse_ids
from clinfuse.etl.parallel import map_in_chunks
from clinfuse.etl.provenance import synthetic_sources
from clinfuse.etl.split import assign_patient_split
from clinfuse.pipeline.cohort_checks import cohort_warnings
from clinfuse.pipeline.manifest import (
    SCHEMA_VERSION,
    CohortManifest,
    exclusion_text,
    now,
    redact_path,
    source_entry,
    write_cohort_folder,
)

ID_COLUMNS = ["RID", "PTID", "IMAGEUID"]  # samples.parquet columns naming a sample
TITLE = f"ADNI diagnosis ({' / '.join(CLASS_NAMES)})"


def input_descriptions(settings) -> dict[str, str]:
    """What one model input is, per modality, from the settings the cohort was built with (model cards)."""
    return {
        "tabular": "ADNIMERGE baseline features: z-scored numeric values, missing-value and censoring indicators, "
                   "one-hot categories (training statistics)",
        "mri": f"T1 MRI, RAS, isotropic {settings.mri_spacing_mm:g} mm resampling, 0.5-99.5 percentile intensity "
               f"scaling to [0, 1], cubic crop/resize to {settings.mri_size}^3",
    }


def read_adnimerge(adni: Path) -> tuple[pd.DataFrame, Path, int]:
    """(ADNIMERGE as text columns with RID as int, its path, exact duplicate rows dropped)."""
    path = adni / "ADNIMERGE.csv"
    if not path.is_file():
        raise InputError(f"{path}: missing; expected the ADNIMERGE export (one row per visit)")
    try:
        # utf-8-sig: a byte-order mark (Excel, some Windows tools) is not part of the first column's name
        table = pd.read_csv(path, dtype=str, keep_default_na=True, encoding="utf-8-sig")
    except pd.errors.EmptyDataError:
        raise InputError(f"{path}: empty file; expected the ADNIMERGE header and one row per visit") from None
    except UnicodeDecodeError as exc:
        raise not_utf8(path, exc, "ADNIMERGE") from None
    except (pd.errors.ParserError, ValueError) as exc:
        raise InputError(f"{path}: malformed CSV ({str(exc).splitlines()[0]})") from None
    missing = [c for c in REQUIRED if c not in table.columns]
    if missing:
        raise InputError(f"{path}: missing column(s) {missing}; expected at least {REQUIRED}")
    # exactly: RID 2.5 is not subject 2, and 1e30 is not an id (read through a float it would split a subject)
    table["RID"] = parse_ids(table["RID"], str(path), "RID", row_word="row")
    check_codes(table, str(path))
    check_sex(table, str(path))
    table, duplicates = validate_adnimerge(table, str(path))
    return table, path, duplicates


def build_adni_cohort(adni: Path, out: Path, settings) -> str:
    started = time.perf_counter()
    table, source, duplicates = read_adnimerge(adni)
    if duplicates:
        print(f"  etl adni: {source.name}: {duplicates} exactly repeated row(s) dropped", flush=True)
    base, steps = baseline_labels(table, settings.smc)
    scans = choose_scans(table, base, settings.mri_window_days)
    base = base.drop(columns=["IMAGEUID"]).merge(scans, on="RID", how="left")
    has_scan = base["IMAGEUID"].notna().to_numpy()
    if settings.require_mri:
        n = len(base)
        base = base[has_scan].reset_index(drop=True)
        steps.append({"step": "T1 MRI", "reason": f"no baseline scan and none within {settings.mri_window_days} days",
                      "excluded": n - len(base), "remaining": len(base)})
        has_scan = np.ones(len(base), dtype=bool)
    paths = [str(scan_path(adni, r.PTID, r.IMAGEUID)) for r in base[has_scan].itertuples()]
    print(f"  etl adni: preprocessing {len(paths)} T1 volumes once into a {settings.mri_size}^3 uint8 cache", flush=True)
    from rich.progress import Progress

    with Progress(transient=True) as progress:
        task = progress.add_task("T1 volumes", total=len(paths))
        results = map_in_chunks(partial(preprocess_volume, size=settings.mri_size, spacing_mm=settings.mri_spacing_mm), paths,
                                settings.workers, 8, lambda k: progress.advance(task, k))
    mri = np.zeros((len(base), *(settings.mri_size,) * 3), dtype=np.uint8)
    ok = has_scan.copy()
    failures = []
    for i, ((vol, reason), path) in enumerate(zip(results, paths, strict=True)):
        row = np.flatnonzero(has_scan)[i]
        mri[row] = vol
        if reason:
            ok[row] = False
            failures.append({"path": path, "reason": reason})
            warnings.warn(f"unreadable T1 volume: {redact_path(reason, path)}; its path is in manifest.json",
                          stacklevel=1)
    if failures and settings.require_mri:
        n = len(base)
        base, mri, ok = base[ok].reset_index(drop=True), mri[ok], ok[ok]
        steps.append({"step": "readable T1 MRI", "reason": "scan file missing, corrupt or not 3D",
                      "excluded": n - len(base), "remaining": len(base)})
    if len(base) == 0:
        raise InputError(f"{source}: the cohort is empty after exclusions "
                         f"({exclusion_text(steps)})")

    base["split"] = assign_patient_split(base["RID"], tuple(settings.split), settings.split_seed).to_numpy()
    train = base["split"].to_numpy() == "train"
    tabular, names, tab_stats = fit_transform_tabular(base, train, settings.exclude_features, settings.max_missing)
    samples = pd.DataFrame({  # the ID_COLUMNS first
        "RID": base["RID"].astype(np.int64), "PTID": base["PTID"].astype(str),
        "IMAGEUID": pd.to_numeric(base["IMAGEUID"], errors="coerce").astype("Int64").where(ok),
        "split": base["split"], "label": base["label"].astype(np.int64), "label_name": base["label_name"],
        "has_tabular": True, "has_mri": ok.astype(bool),
        "sex": base["PTGENDER"].str.strip().map(SEX_CODES).fillna("UNKNOWN"),  # empty: UNKNOWN (check_sex)
        "age": pd.to_numeric(base["AGE"], errors="coerce"), "smc": base["smc"].astype(bool),
        "scan_viscode": base["scan_viscode"].where(ok), "scan_days_from_bl": base["scan_days_from_bl"].where(ok),
    })
    counts = samples["split"].value_counts().reindex(["train", "val", "test"], fill_value=0).astype(int).to_dict()
    manifest = CohortManifest(
        schema_version=SCHEMA_VERSION, dataset="adni", task="diagnosis", task_type="multiclass", title=TITLE,
        label_columns=["label"], class_names=CLASS_NAMES, modalities=["tabular", "mri"],
        input_descriptions=input_descriptions(settings), patient_column="RID", id_columns=ID_COLUMNS,
        tabular_features=names, n_samples=len(samples), counts=counts,
        exclusions=steps, duplicate_rows_dropped=duplicates,
        smc_labelled_cn=int(samples["smc"].sum()) if settings.smc == "cn" else 0,
        label_prevalence={sp: samples.loc[samples["split"] == sp, "label_name"].value_counts(normalize=True)
                          .reindex(CLASS_NAMES, fill_value=0).round(4).to_dict() for sp in ("train", "val", "test")},
        tabular=tab_stats,
        mri={"size": settings.mri_size, "spacing_mm": settings.mri_spacing_mm, "scans": int(has_scan.sum()),
             "from_baseline": int((samples["scan_viscode"] == "bl").sum()),
             "within_window": int(((samples["scan_viscode"] != "bl") & samples["has_mri"]).sum()),
             "unreadable": len(failures), "failures": failures[:100]},
        sources={"ADNIMERGE": source_entry(source), "MRI": {"path": str((adni / "MRI").resolve())}},
        **synthetic_sources({"adni": adni}),
        config=settings, created=now(),
    )
    manifest.warnings = cohort_warnings(samples, manifest) or None  # listed in manifest.json, printed here
    for warning in manifest.warnings or []:
        print(f"  etl adni: WARNING: {warning}", flush=True)
    write_cohort_folder(out, {"tabular": tabular, "mri": mri}, samples, manifest, {"tabular_features.json": names})
    by_class = samples["label_name"].value_counts().reindex(CLASS_NAMES, fill_value=0).to_dict()
    excluded = exclusion_text(steps)
    return (f"etl adni: {len(samples)} subjects ({counts['train']}/{counts['val']}/{counts['test']} train/val/test; "
            f"CN {by_class['CN']}, MCI {by_class['MCI']}, AD {by_class['AD']}), {len(names)} tabular features"
            f"{' [' + excluded + ']' if excluded else ''} -> {out} in {time.perf_counter() - started:.1f} s")
