"""MIMIC-IV + MIMIC-CXR-JPG -> a processed phenotype or mortality cohort.

Steps: validate inputs; cohort (adults, one ICU stay per admission, no careunit
transfer, >= 48 h for mortality); labels; 48 h hourly EHR tensors streamed from
chartevents through DuckDB; latest AP chest film in [intime, intime + 48 h];
patient-level 7:1:2 split; forward fill, training-median imputation and
training z-scores (a channel never observed in training: normal value and a
scale from its valid range, counted and warned about). Every exclusion is
counted in manifest.json. The output folder is replaced only when everything
succeeded.
"""

from __future__ import annotations

import time
import warnings
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd

from clinfuse.etl.errors import InputError
from clinfuse.etl.mimic.cohort import exclusion, in_hospital_mortality, join_stays, select_cohort
from clinfuse.etl.mimic.cxr import cxr_image_path, decode_cxr_images, pair_latest_ap, read_cxr_metadata
from clinfuse.etl.mimic.ehr import connect, derive_totals, extract_ehr_values, load_variables
from clinfuse.etl.mimic.phenotypes import assign_phenotypes, load_phenotype_definitions, load_rule_counts
from clinfuse.etl.mimic.schema import locate_tables
from clinfuse.etl.mimic.tables import read_small_tables
from clinfuse.etl.normalize import forward_fill, impute_and_scale, range_scale, train_statistics
from clinfuse.etl.parallel import scratch_dir
from clinfuse.etl.provenance import synthetic_sources
from clinfuse.etl.split import assign_patient_split
from clinfuse.etl.sql import csv_error_message, sql_literal
from clinfuse.etl.synth.factors import read_export_factors
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

TASKS = ("phenotype", "mortality")
# Written into a cohort built from a marked synthetic export only (docs/cohort-format.md)
SYNTHETIC_FACTORS = "synthetic_factors"  # .npy, [N, 4] float64, row i = samples.parquet row i
SYNTHETIC_LABEL_MODEL = "synthetic_label_model.json"
ID_COLUMNS = ["subject_id", "hadm_id", "stay_id", "dicom_id"]  # samples.parquet columns naming a sample


def cohort_title(task: str, n_labels: int, require_cxr: bool) -> str:
    """The cohort's name for readers (report headings)."""
    title = (f"MIMIC-IV ICU phenotyping ({n_labels} CCS groups)" if task == "phenotype"
             else "MIMIC-IV in-hospital mortality")
    return title + ("" if require_cxr else " — partially paired")


def input_descriptions(settings, n_variables: int) -> dict[str, str]:
    """What one model input is, per modality, from the settings the cohort was built with (model cards)."""
    return {
        "ehr": f"hourly EHR, first {settings.window_hours} h of the ICU stay: {n_variables} variables z-scored "
               f"with training statistics (forward filled, then training median) followed by their "
               f"{n_variables} observation masks (0/1)",
        "cxr": f"latest AP chest radiograph in the first {settings.cxr_window_hours} h, grayscale, shorter side "
               f"resized and centre cropped to {settings.cxr_size} px, scaled to [0, 1]",
    }


def _log(msg: str) -> None:
    print(f"  etl mimic: {msg}", flush=True)


# hadm_id as text, checked before the cast: DuckDB's BIGINT reading would round '2.5' to 3 (another admission)
_WHOLE_ID_SQL = r"\+?0*[0-9]{1,18}(\.0*)?"


def read_diagnoses(con, path: Path) -> pd.DataFrame:
    """The cohort's diagnoses_icd rows (hadm_id, icd_code, icd_version); `cohort_adm` must be registered.

    A hadm_id that is not a whole number (up to 18 digits) is an InputError naming the file, the
    column and the value (DuckDB streams the table, so the value stands in for its line number).
    """
    source = f"""read_csv({sql_literal(path.as_posix())}, header = true,
                 types = {{'icd_code': 'VARCHAR', 'icd_version': 'INTEGER', 'hadm_id': 'VARCHAR'}})"""
    bad = con.execute(f"""SELECT hadm_id FROM {source}
                          WHERE hadm_id IS NULL OR NOT regexp_full_match(trim(hadm_id), '{_WHOLE_ID_SQL}')
                          LIMIT 1""").fetchall()
    if bad:
        raise InputError(f"{path}: column hadm_id: {bad[0][0] or ''!r} is not a whole-number id (at most 18 digits)")
    return con.execute(f"""
        SELECT d.hadm_id, d.icd_code, d.icd_version
        FROM (SELECT CAST(CAST(trim(hadm_id) AS DECIMAL(38, 0)) AS BIGINT) AS hadm_id, icd_code, icd_version
              FROM {source}) d
        JOIN cohort_adm USING (hadm_id)""").df()


def build_mimic_cohort(mimic_iv: Path, mimic_cxr: Path, images: Path, task: str, out: Path, settings) -> str:
    """Run the whole ETL for one task; returns the one-line summary."""
    started = time.perf_counter()
    tables = locate_tables(mimic_iv)
    metadata = read_cxr_metadata(mimic_cxr)
    variables = load_variables()
    _log(f"reading cohort tables from {mimic_iv}")
    patients, admissions, icustays, duplicates = read_small_tables(tables)
    if metadata.attrs.get("duplicate_rows_dropped"):  # listed only when non-zero: consistent exports are unchanged
        duplicates["mimic-cxr metadata"] = metadata.attrs["duplicate_rows_dropped"]
    for name, n in duplicates.items():
        if n:
            _log(f"{tables[name].name if name in tables else name}: {n} exactly repeated row(s) dropped")
    stays = join_stays(patients, admissions, icustays)
    cohort, steps = select_cohort(stays, task, settings.min_age, settings.min_stay_hours)

    with scratch_dir("clinfuse-duckdb-") as spill:  # spill folders of killed runs are removed here
        con = connect(settings.memory_limit, settings.threads, str(spill))
        if task == "phenotype":
            definitions = load_phenotype_definitions()
            con.register("cohort_adm", cohort[["hadm_id"]])
            try:
                diagnoses = read_diagnoses(con, tables["hosp/diagnoses_icd"])
            except duckdb.Error as exc:
                raise InputError(csv_error_message(exc, tables["hosp/diagnoses_icd"])) from None
            labels = assign_phenotypes(diagnoses, definitions)
            n = len(cohort)
            cohort = cohort.merge(labels, on="hadm_id", how="inner")
            exclusion(steps, "diagnoses recorded", "admission has no diagnoses_icd rows", n, len(cohort))
            label_columns = definitions.names
        else:
            cohort["in_hospital_mortality"] = in_hospital_mortality(cohort).to_numpy()
            label_columns = ["in_hospital_mortality"]
        _log(f"streaming chartevents ({tables['icu/chartevents'].stat().st_size / 1e6:,.0f} MB) through DuckDB "
             f"(memory limit {settings.memory_limit})")
        try:
            values, channel_counts = extract_ehr_values(con, tables["icu/chartevents"], cohort, variables,
                                                        settings.window_hours)
        except duckdb.Error as exc:
            raise InputError(csv_error_message(exc, tables["icu/chartevents"])) from None
        con.close()
    values = derive_totals(values, variables)
    row_of_stay = pd.Series(np.arange(len(cohort)), index=cohort["stay_id"].to_numpy())

    n = len(cohort)
    cohort = cohort[~np.isnan(values).all(axis=(1, 2))].reset_index(drop=True)
    exclusion(steps, "EHR observed", f"no valid chart value in the first {settings.window_hours} h", n, len(cohort))

    pairs = pair_latest_ap(cohort, metadata, settings.cxr_window_hours)
    cohort = cohort.merge(pairs[["stay_id", "dicom_id", "study_id", "study_datetime"]], on="stay_id", how="left")
    if settings.require_cxr:
        n = len(cohort)
        cohort = cohort[cohort["dicom_id"].notna()].reset_index(drop=True)
        exclusion(steps, "paired chest X-ray", f"no AP film in [intime, intime + {settings.cxr_window_hours} h]", n, len(cohort))
    has_film = cohort["dicom_id"].notna().to_numpy()
    paths = [cxr_image_path(images, r.subject_id, r.study_id, r.dicom_id, settings.cxr_format == "dicom")
             for r in cohort[has_film].itertuples()]
    _log(f"decoding {len(paths)} chest films once into a {settings.cxr_size}x{settings.cxr_size} uint8 cache")
    from rich.progress import Progress

    with Progress(transient=True) as progress:
        task_id = progress.add_task("decoding films", total=len(paths))
        decoded, failures, conversions = decode_cxr_images(paths, settings.cxr_size, settings.workers,
                                                           on_done=lambda k: progress.advance(task_id, k))
    cxr = np.zeros((len(cohort), settings.cxr_size, settings.cxr_size), dtype=np.uint8)
    cxr[has_film] = decoded
    failed = {f["path"] for f in failures}
    ok_film = has_film.copy()
    ok_film[np.flatnonzero(has_film)] = [str(p) not in failed for p in paths]
    by_reason = pd.Series([f["reason"] for f in failures], dtype=object).value_counts().to_dict()
    for f in failures[:5]:  # console logs travel: no subject/study/dicom ids in them (paths stay in the manifest)
        warnings.warn(f"unreadable chest film: {f['reason']} ({redact_path(f['detail'], f['path'])}); "
                      "its path is in manifest.json", stacklevel=1)
    if failures:
        _log(f"WARNING: {len(failures)} chest film(s) could not be read (counted by reason in manifest.json): "
             + "; ".join(f"{n} {reason}" for reason, n in by_reason.items()))
    for note, n in conversions.items():
        _log(f"{n} chest film(s): {note}")
    if settings.require_cxr and failures:
        n = len(cohort)
        keep = ok_film  # every remaining stay has a paired film here; drop the unreadable ones
        cohort, cxr, ok_film = cohort[keep].reset_index(drop=True), cxr[keep], ok_film[keep]
        exclusion(steps, "readable chest X-ray", "paired film missing or unreadable", n, len(cohort))
    if len(cohort) == 0:
        raise InputError(f"{mimic_iv}: the cohort is empty after exclusions ({exclusion_text(steps)})")

    cohort["split"] = assign_patient_split(cohort["subject_id"], tuple(settings.split), settings.split_seed).to_numpy()
    cohort["has_ehr"] = True
    cohort["has_cxr"] = ok_film
    cohort.loc[~cohort["has_cxr"], "dicom_id"] = None

    raw = values[row_of_stay[cohort["stay_id"]].to_numpy()]
    mask = (~np.isnan(raw)).astype(np.float32)
    train_rows = np.flatnonzero(cohort["split"].to_numpy() == "train")
    fallback = {n: (variables.impute[n], range_scale(variables.ranges[n])) for n in variables.names}
    stats = train_statistics(raw, train_rows, variables.names, fallback)
    unobserved = [n for n in variables.names if stats[n].get("unobserved_in_training")]
    if unobserved:
        warnings.warn(f"{len(unobserved)} EHR channel(s) have no observation in the training split "
                      f"({', '.join(unobserved)}): imputed with a normal value and scaled by their valid "
                      "range (listed in manifest.json)", stacklevel=1)
    ehr = np.concatenate([impute_and_scale(forward_fill(raw), stats, variables.names), mask], axis=2).astype(np.float32)

    samples = pd.DataFrame({  # the ID_COLUMNS first
        "subject_id": cohort["subject_id"].astype(np.int64), "hadm_id": cohort["hadm_id"].astype(np.int64),
        "stay_id": cohort["stay_id"].astype(np.int64), "dicom_id": cohort["dicom_id"].astype(object),
        "split": cohort["split"], **{c: cohort[c].astype(np.int8) for c in label_columns},
        "has_ehr": cohort["has_ehr"].astype(bool), "has_cxr": cohort["has_cxr"].astype(bool),
        "sex": cohort["sex"], "age": cohort["age"].astype(float), "race": cohort["race"].fillna("UNKNOWN"),
        "intime": cohort["intime"], "cxr_time": cohort["study_datetime"],
    })
    counts = samples["split"].value_counts().reindex(["train", "val", "test"], fill_value=0).astype(int).to_dict()
    manifest = CohortManifest(
        schema_version=SCHEMA_VERSION, dataset="mimic", task=task,
        task_type="multilabel" if task == "phenotype" else "binary",
        title=cohort_title(task, len(label_columns), settings.require_cxr),
        label_columns=label_columns, modalities=["ehr", "cxr"],
        input_descriptions=input_descriptions(settings, len(variables.names)),
        patient_column="subject_id", id_columns=ID_COLUMNS,
        ehr_channels=variables.names + variables.mask_names,
        n_samples=len(samples), counts=counts, exclusions=steps, duplicate_rows_dropped=duplicates,
        label_prevalence={split: samples.loc[samples["split"] == split, label_columns].mean().round(4).to_dict()
                          for split in ("train", "val", "test")},
        ehr_rows=channel_counts.to_dict(orient="records"),
        ehr_unobserved_in_training={"count": len(unobserved), "channels": unobserved},
        phenotype_icd10_rules=load_rule_counts() if task == "phenotype" else None,
        cxr={"size": settings.cxr_size, "format": settings.cxr_format, "paired": int(has_film.sum()),
             "without_film": int((~has_film).sum()), "unreadable": len(failures),
             "unreadable_by_reason": {str(k): int(v) for k, v in by_reason.items()},
             "converted": conversions, "failures": failures[:100]},
        sources={name: source_entry(p) for name, p in tables.items()} | {
            "mimic-cxr metadata": source_entry(next(mimic_cxr.glob("mimic-cxr-2.0.0-metadata.csv*"))),
            "mimic-cxr images": {"path": str(images.resolve())}},
        **synthetic_sources({"mimic-iv": mimic_iv, "mimic-cxr": mimic_cxr, "mimic-cxr images": images}),
        config=settings, created=now(),
    )
    manifest.warnings = cohort_warnings(samples, manifest) or None  # listed in manifest.json, printed here
    for warning in manifest.warnings or []:
        _log(f"WARNING: {warning}")
    arrays, extra = {"ehr": ehr, "cxr": cxr}, {"ehr_stats.json": stats}
    oracle = read_export_factors(mimic_iv, samples["stay_id"].to_numpy(), label_columns)
    if oracle is not None:  # a marked synthetic export only: the generator's factors, for the oracle ceiling
        label_model, factors = oracle
        arrays[SYNTHETIC_FACTORS] = factors
        extra[SYNTHETIC_LABEL_MODEL] = label_model
        _log(f"synthetic export: generator factors of {len(factors)} stays kept for the oracle ceiling")
    write_cohort_folder(out, arrays, samples, manifest, extra)
    excluded = exclusion_text(steps)
    return (f"etl mimic {task}: {len(samples)} stays ({counts['train']}/{counts['val']}/{counts['test']} "
            f"train/val/test) from {steps[0]['remaining']} ICU stays [{excluded}] -> {out} "
            f"in {time.perf_counter() - started:.1f} s")

