"""MIMIC-IV + MIMIC-CXR-JPG -> a processed phenotype or mortality cohort.

Steps: validate inputs; cohort (adults, one ICU stay per admission, no careunit
transfer, >= 48 h for mortality); labels; 48 h hourly EHR tensors streamed from
chartevents through DuckDB; latest AP chest film in [intime, intime + 48 h];
patient-level 7:1:2 split; forward fill, training-median imputation and
training z-scores. Every exclusion is counted in manifest.json. The output
folder is replaced only when everything succeeded.
"""

from __future__ import annotations

import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

from etl.errors import InputError
from etl.mimic.cohort import exclusion, in_hospital_mortality, join_stays, select_cohort
from etl.mimic.cxr import cxr_image_path, decode_cxr_images, pair_latest_ap, read_cxr_metadata
from etl.mimic.ehr import connect, derive_totals, extract_ehr_values, load_variables
from etl.mimic.phenotypes import assign_phenotypes, load_phenotype_definitions
from etl.mimic.schema import locate_tables
from etl.normalize import forward_fill, impute_and_scale, train_statistics
from etl.split import assign_patient_split
from pipeline.config import load_params
from pipeline.manifest import exclusion_text, now, source_entry, write_cohort_folder

TASKS = ("phenotype", "mortality")


def add_arguments(parser) -> None:
    parser.add_argument("--task", choices=TASKS, required=True, help="label set of the cohort")
    parser.add_argument("--mimic-iv", default=None, help="MIMIC-IV folder with hosp/ and icu/ (default: params)")
    parser.add_argument("--mimic-cxr", default=None, help="MIMIC-CXR-JPG folder (default: params)")
    parser.add_argument("--cxr-images", default=None,
                        help="folder holding files/p../ images if not --mimic-cxr (e.g. a MIMIC-CXR DICOM copy)")
    parser.add_argument("--out", default=None, help="output cohort folder (default: data/processed/mimic-<task>)")
    parser.add_argument("--partial", action="store_true",
                        help="partially paired cohort: keep stays without a film (etl_mimic.require_cxr: false)")


def run(args) -> int:
    params = load_params(args.params)
    mimic_iv = Path(args.mimic_iv or params.paths.mimic_iv)
    mimic_cxr = Path(args.mimic_cxr or params.paths.mimic_cxr)
    images = Path(args.cxr_images) if args.cxr_images else mimic_cxr
    out = Path(args.out or Path(params.paths.processed) / f"mimic-{args.task}")
    settings = params.etl_mimic.model_copy(update={"require_cxr": False}) if args.partial else params.etl_mimic
    summary = build_mimic_cohort(mimic_iv, mimic_cxr, images, args.task, out, settings)
    print(summary)
    return 0


def _log(msg: str) -> None:
    print(f"  etl mimic: {msg}", flush=True)


def read_small_tables(tables: dict[str, Path]) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    patients = pd.read_csv(tables["hosp/patients"], usecols=["subject_id", "gender", "anchor_age", "anchor_year", "dod"])
    admissions = pd.read_csv(tables["hosp/admissions"], usecols=[
        "subject_id", "hadm_id", "admittime", "dischtime", "deathtime", "race"])
    icustays = pd.read_csv(tables["icu/icustays"], usecols=[
        "subject_id", "hadm_id", "stay_id", "first_careunit", "last_careunit", "intime", "outtime"])
    return patients, admissions, icustays


def build_mimic_cohort(mimic_iv: Path, mimic_cxr: Path, images: Path, task: str, out: Path, s) -> str:
    """Run the whole ETL for one task; returns the one-line summary."""
    started = time.perf_counter()
    tables = locate_tables(mimic_iv)
    metadata = read_cxr_metadata(mimic_cxr)
    variables = load_variables()
    _log(f"reading cohort tables from {mimic_iv}")
    stays = join_stays(*read_small_tables(tables))
    cohort, steps = select_cohort(stays, task, s.min_age, s.min_stay_hours)

    with tempfile.TemporaryDirectory(prefix="clinfuse-duckdb-") as spill:
        con = connect(s.memory_limit, s.threads, spill)
        if task == "phenotype":
            definitions = load_phenotype_definitions()
            con.register("cohort_adm", cohort[["hadm_id"]])
            diagnoses = con.execute(f"""
                SELECT d.hadm_id, d.icd_code, d.icd_version FROM read_csv('{tables["hosp/diagnoses_icd"].as_posix()}',
                    header = true, types = {{'icd_code': 'VARCHAR', 'icd_version': 'INTEGER', 'hadm_id': 'BIGINT'}}) d
                JOIN cohort_adm USING (hadm_id)""").df()
            labels = assign_phenotypes(diagnoses, definitions)
            n = len(cohort)
            cohort = cohort.merge(labels, on="hadm_id", how="inner")
            exclusion(steps, "diagnoses recorded", "admission has no diagnoses_icd rows", n, len(cohort))
            label_columns = definitions.names
        else:
            cohort["in_hospital_mortality"] = in_hospital_mortality(cohort).to_numpy()
            label_columns = ["in_hospital_mortality"]
        _log(f"streaming chartevents ({tables['icu/chartevents'].stat().st_size / 1e6:,.0f} MB) through DuckDB "
             f"(memory limit {s.memory_limit})")
        values, channel_counts = extract_ehr_values(con, tables["icu/chartevents"], cohort, variables, s.window_hours)
        con.close()
    values = derive_totals(values, variables)
    row_of_stay = pd.Series(np.arange(len(cohort)), index=cohort["stay_id"].to_numpy())

    n = len(cohort)
    cohort = cohort[~np.isnan(values).all(axis=(1, 2))].reset_index(drop=True)
    exclusion(steps, "EHR observed", f"no valid chart value in the first {s.window_hours} h", n, len(cohort))

    pairs = pair_latest_ap(cohort, metadata, s.cxr_window_hours)
    cohort = cohort.merge(pairs[["stay_id", "dicom_id", "study_id", "study_datetime"]], on="stay_id", how="left")
    if s.require_cxr:
        n = len(cohort)
        cohort = cohort[cohort["dicom_id"].notna()].reset_index(drop=True)
        exclusion(steps, "paired chest X-ray", f"no AP film in [intime, intime + {s.cxr_window_hours} h]", n, len(cohort))
    has_film = cohort["dicom_id"].notna().to_numpy()
    paths = [cxr_image_path(images, r.subject_id, r.study_id, r.dicom_id, s.cxr_format == "dicom")
             for r in cohort[has_film].itertuples()]
    _log(f"decoding {len(paths)} chest films once into a {s.cxr_size}x{s.cxr_size} uint8 cache")
    from rich.progress import Progress

    with Progress(transient=True) as progress:
        task_id = progress.add_task("decoding films", total=len(paths))
        decoded, failures = decode_cxr_images(paths, s.cxr_size, s.workers,
                                              on_done=lambda k: progress.advance(task_id, k))
    cxr = np.zeros((len(cohort), s.cxr_size, s.cxr_size), dtype=np.uint8)
    cxr[has_film] = decoded
    failed = {f["path"] for f in failures}
    ok_film = has_film.copy()
    ok_film[np.flatnonzero(has_film)] = [str(p) not in failed for p in paths]
    for f in failures[:5]:
        warnings.warn(f"unreadable chest film {f['path']}: {f['reason']}", stacklevel=1)
    if failures:
        _log(f"WARNING: {len(failures)} chest film(s) could not be read (listed in manifest.json)")
    if s.require_cxr and failures:
        n = len(cohort)
        keep = ok_film  # every remaining stay has a paired film here; drop the unreadable ones
        cohort, cxr, ok_film = cohort[keep].reset_index(drop=True), cxr[keep], ok_film[keep]
        exclusion(steps, "readable chest X-ray", "paired film missing or unreadable", n, len(cohort))
    if len(cohort) == 0:
        raise InputError(f"{mimic_iv}: the cohort is empty after exclusions ({exclusion_text(steps)})")

    cohort["split"] = assign_patient_split(cohort["subject_id"], tuple(s.split), s.split_seed).to_numpy()
    cohort["has_ehr"] = True
    cohort["has_cxr"] = ok_film
    cohort.loc[~cohort["has_cxr"], "dicom_id"] = None

    raw = values[row_of_stay[cohort["stay_id"]].to_numpy()]
    mask = (~np.isnan(raw)).astype(np.float32)
    train_rows = np.flatnonzero(cohort["split"].to_numpy() == "train")
    stats = train_statistics(raw, train_rows, variables.names)
    ehr = np.concatenate([impute_and_scale(forward_fill(raw), stats, variables.names), mask], axis=2).astype(np.float32)

    samples = pd.DataFrame({
        "subject_id": cohort["subject_id"].astype(np.int64), "hadm_id": cohort["hadm_id"].astype(np.int64),
        "stay_id": cohort["stay_id"].astype(np.int64), "dicom_id": cohort["dicom_id"].astype(object),
        "split": cohort["split"], **{c: cohort[c].astype(np.int8) for c in label_columns},
        "has_ehr": cohort["has_ehr"].astype(bool), "has_cxr": cohort["has_cxr"].astype(bool),
        "sex": cohort["sex"], "age": cohort["age"].astype(float), "race": cohort["race"].fillna("UNKNOWN"),
        "intime": cohort["intime"], "cxr_time": cohort["study_datetime"],
    })
    counts = samples["split"].value_counts().reindex(["train", "val", "test"], fill_value=0).astype(int).to_dict()
    manifest = {
        "schema_version": 1, "dataset": "mimic", "task": task,
        "task_type": "multilabel" if task == "phenotype" else "binary",
        "label_columns": label_columns, "modalities": ["ehr", "cxr"], "patient_column": "subject_id",
        "ehr_channels": variables.names + variables.mask_names,
        "n_samples": len(samples), "counts": counts, "exclusions": steps,
        "label_prevalence": {split: samples.loc[samples["split"] == split, label_columns].mean().round(4).to_dict()
                             for split in ("train", "val", "test")},
        "ehr_rows": channel_counts.to_dict(orient="records"),
        "cxr": {"size": s.cxr_size, "format": s.cxr_format, "paired": int(has_film.sum()),
                "without_film": int((~has_film).sum()), "unreadable": len(failures), "failures": failures[:100]},
        "sources": {name: source_entry(p) for name, p in tables.items()} | {
            "mimic-cxr metadata": source_entry(next(mimic_cxr.glob("mimic-cxr-2.0.0-metadata.csv*"))),
            "mimic-cxr images": {"path": str(images.resolve())}},
        "config": s.model_dump(mode="json"), "created": now(),
    }
    write_cohort_folder(out, {"ehr": ehr, "cxr": cxr}, samples, manifest, {"ehr_stats.json": stats})
    excluded = exclusion_text(steps)
    return (f"etl mimic {task}: {len(samples)} stays ({counts['train']}/{counts['val']}/{counts['test']} "
            f"train/val/test) from {steps[0]['remaining']} ICU stays [{excluded}] -> {out} "
            f"in {time.perf_counter() - started:.1f} s")

