"""Evaluate finished runs on the test split: predictions, metrics with CIs, calibration, subgroups.

Per run folder it writes to its output folder:
  predictions_val.parquet, predictions_test.parquet   one row per sample (ids, labels, probabilities)
  predictions_test_withheld.parquet                   test predictions with the image (cxr, mri) withheld
  metrics.json                                        test metrics with 95 % patient-bootstrap CIs,
                                                      calibration, subgroups, validation headline,
                                                      `presence`: paired / image-absent / withheld blocks,
                                                      `oracle` (synthetic cohorts with the generator's
                                                      factors only): the Bayes ceiling on the test rows
  curves_pr.json, curves_roc.json                     per-label curve points (test)
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from clinfuse.etl.atomic import atomic_dir, read_json, write_json, write_parquet
from clinfuse.etl.errors import InputError
from clinfuse.evaluation.bootstrap import bootstrap_class_rates, bootstrap_label_cis
from clinfuse.evaluation.calibration import calibration_summary
from clinfuse.evaluation.curves import curve_records
from clinfuse.evaluation.epoch_selection import still_improving
from clinfuse.evaluation.metrics import task_metrics
from clinfuse.evaluation.operating import operating_points
from clinfuse.evaluation.oracle import oracle_metrics
from clinfuse.evaluation.presence import presence_blocks
from clinfuse.evaluation.subgroups import subgroup_metrics
from clinfuse.pipeline.data import IMAGE_MODALITIES, Cohort, load_cohort
from clinfuse.pipeline.inference import predict_split
from clinfuse.pipeline.lineage import cohort_content_digest
from clinfuse.pipeline.results import labels_and_scores, prediction_frame, predictions_file
from clinfuse.pipeline.runs import TRAIN_SUMMARY, read_run_config, read_train_summary


def withheld_modality(cohort: Cohort) -> str | None:
    """The image modality that may be missing (cxr, mri), scored again withheld; None for one modality."""
    images = [m for m in cohort.modalities[1:] if m in IMAGE_MODALITIES]
    return images[-1] if images else None


def check_same_cohort(run_dir: Path, summary: dict, cohort_dir: Path) -> None:
    """InputError unless the cohort holds what the run was trained on (the content digest its
    train_summary.json records; a run trained before runs recorded it is evaluated with a note)."""
    recorded = summary.get("cohort_digest")
    if not recorded:
        print(f"  note: {run_dir / TRAIN_SUMMARY} records no cohort digest (trained by an older clinfuse): "
              f"cannot check that {cohort_dir} is the cohort it was trained on")
        return
    now = cohort_content_digest(cohort_dir)
    if now != recorded:
        raise InputError(f"{cohort_dir}: its content changed since {run_dir} was trained (content digest "
                         f"{recorded[:12]} in {TRAIN_SUMMARY}, now {now[:12]}); retrain the run on this cohort "
                         "or evaluate it on the cohort it was trained on")


def undefined_reason(y) -> str:
    """Why a ranking metric is undefined on `[N, K]` 0/1 indicators: no label has both classes."""
    if len(y) == 0:
        return "no test samples"
    if not y.any():
        return "no positives in the test split"
    if y.all():
        return "no negatives in the test split"
    return "no label has both positives and negatives in the test split"


SYNTHETIC_FACTORS = "synthetic_factors.npy"  # written by the MIMIC ETL from a marked synthetic export only
SYNTHETIC_LABEL_MODEL = "synthetic_label_model.json"


def oracle_block(cohort: Cohort, rows, y, image: str | None) -> dict | None:
    """The oracle (Bayes) metrics on the evaluated test rows, for a synthetic cohort that kept its factors.

    None for a cohort without the generator's factors, and always for one whose manifest does not
    say it was built from synthetic sources (a real cohort never gets an oracle). With stays whose
    image is absent, `paired` holds the oracle on the paired rows, where the models' film-withheld
    loss is measured.
    """
    folder = Path(cohort.path)
    if not cohort.manifest.synthetic or not (folder / SYNTHETIC_FACTORS).is_file() \
            or not (folder / SYNTHETIC_LABEL_MODEL).is_file() or cohort.task_type == "multiclass":
        return None
    factors = np.load(folder / SYNTHETIC_FACTORS, allow_pickle=False)
    if factors.ndim != 2 or len(factors) != len(cohort.samples):
        raise InputError(f"{folder / SYNTHETIC_FACTORS}: expected [{len(cohort.samples)}, F] factors, "
                         f"got shape {list(factors.shape)}")
    model = read_json(folder / SYNTHETIC_LABEL_MODEL)
    try:
        block = oracle_metrics(cohort.task_type, y, factors[rows], model, cohort.label_names)
        if image is not None:
            present = cohort.samples[f"has_{image}"].to_numpy(bool)[rows]
            if not present.all() and present.any():
                block["paired"] = oracle_metrics(cohort.task_type, y[present], factors[rows][present], model,
                                                 cohort.label_names)
    except ValueError as exc:
        raise InputError(f"{folder / SYNTHETIC_LABEL_MODEL}: {exc}") from None
    block["source"] = "the synthetic generator's latent factors (CLINFUSE_SYNTHETIC export)"
    return block


def evaluate_run(run_dir: Path, out: Path, settings) -> dict:
    """Evaluate one run; returns its metrics dict (also written to out/metrics.json)."""
    run_dir = Path(run_dir)
    config = read_run_config(run_dir)
    summary = read_train_summary(run_dir)
    cohort = load_cohort(config["cohort"])
    check_same_cohort(run_dir, summary, cohort.path)
    frames, split_rows = {}, {}
    for split in ("val", "test"):
        rows, probs = predict_split(run_dir, cohort, split)
        frames[split] = prediction_frame(cohort, rows, probs)
        split_rows[split] = rows
    test = frames["test"]
    names = cohort.label_names
    y, p = labels_and_scores(test, cohort)
    raw_y = test["label"].to_numpy() if cohort.task_type == "multiclass" else y
    metrics = task_metrics(cohort.task_type, raw_y, p, names)
    patients = test["patient_id"].to_numpy()
    cis = bootstrap_label_cis(y, p, patients, names, settings.n_resamples, settings.seed, settings.ci_level,
                              min_events=settings.min_events)
    pr, roc = curve_records(y, p, names, settings.curve_points)
    result = {
        "run": run_dir.name, "cohort": cohort.name, "dataset": cohort.manifest.dataset,
        "task": cohort.manifest.task, "task_type": cohort.task_type,
        "method": config["method_name"], "method_options": config["method"].get("options", {}),
        "seed": config["seed"], "labels": names,
        "n_test": len(test), "n_test_patients": int(test["patient_id"].nunique()),
        "validation": {"metric": summary["metric"], "value": summary["best_val_metric"],
                       "best_epoch": summary["best_epoch"], "epochs_run": summary.get("epochs_run"),
                       "still_improving": still_improving(summary["best_epoch"], summary.get("epochs_run"),
                                                          summary["best_val_metric"])},
        "test": metrics, "ci": cis,
        "calibration": calibration_summary(y, p, names, settings.calibration_bins),
        "subgroups": subgroup_metrics(test, y, p, names, cohort.manifest.dataset, cohort.modalities,
                                      settings.n_resamples, settings.seed, settings.ci_level,
                                      settings.min_subgroup_patients, settings.min_events),
        "mlflow_run_id": summary.get("mlflow_run_id"),
        "training": config.get("train", {}),  # the run's own settings (params.yaml may have changed since)
    }
    if metrics[metrics["headline"]] is None:  # said in metrics.json, the log and the report, never a crash
        result["headline_undefined"] = undefined_reason(y)
    if cohort.task_type == "multiclass":
        result["class_rates"] = bootstrap_class_rates(raw_y, p.argmax(1), patients, names, settings.n_resamples,
                                                      settings.seed, settings.ci_level)
    else:
        y_val, p_val = labels_and_scores(frames["val"], cohort)
        result["operating_points"] = operating_points(
            y_val, p_val, y, p, patients, names, settings.threshold_rule, settings.target_sensitivity,
            settings.n_resamples, settings.seed, settings.ci_level, settings.min_events)
    image = withheld_modality(cohort)
    if image is not None:
        rows, held = predict_split(run_dir, cohort, "test", withhold=(image,))
        frames["test_withheld"] = prediction_frame(cohort, rows, held)
        _, p_held = labels_and_scores(frames["test_withheld"], cohort)
        result["presence"] = presence_blocks(y, p, p_held, test["patient_id"].to_numpy(),
                                             test[f"has_{image}"].to_numpy(bool), names, cohort.modalities[0], image,
                                             settings.n_resamples, settings.seed, settings.ci_level,
                                             settings.min_subgroup_patients, settings.min_events)
    oracle = oracle_block(cohort, split_rows["test"], y, image)
    if oracle is not None:
        result["oracle"] = oracle
    with atomic_dir(out, "evaluations") as tmp:
        for split, frame in frames.items():
            write_parquet(predictions_file(tmp, split), frame)
        write_json(tmp / "metrics.json", result)
        write_json(tmp / "curves_pr.json", pr)
        write_json(tmp / "curves_roc.json", roc)
    _log_to_mlflow(result, out)
    return result


def _log_to_mlflow(result: dict, out: Path) -> None:
    """Attach the test metrics to the training run (when it was tracked)."""
    if not result.get("mlflow_run_id"):
        return
    import mlflow

    from clinfuse.pipeline.tracking import setup_mlflow

    setup_mlflow(f"clinfuse/{result['cohort']}")
    headline = result["test"]["headline"]
    try:
        mlflow.MlflowClient().get_run(result["mlflow_run_id"])
    except mlflow.exceptions.MlflowException:
        print(f"  note: training run {result['mlflow_run_id']} is not in the tracking store "
              f"{mlflow.get_tracking_uri()}; test metrics not attached to it")
        return
    with mlflow.start_run(run_id=result["mlflow_run_id"]):
        mlflow.log_metrics({f"test_{k}": v for k, v in result["test"].items()
                            if isinstance(v, float) and k.startswith(("macro", "micro", "accuracy"))})
        lo, hi = result["ci"]["macro_auprc_ci"]
        if lo is not None:
            mlflow.log_metrics({"test_macro_auprc_ci_low": lo, "test_macro_auprc_ci_high": hi})
        mlflow.log_artifact(str(out / "metrics.json"), artifact_path="evaluation")
        mlflow.set_tag("test_headline", headline)


def evaluate_runs(run_dirs: list[Path], out: Path, settings, single: bool) -> list[dict]:
    from clinfuse.etl.atomic import check_replaceable

    targets = [out if single else out / run_dir.name for run_dir in run_dirs]
    for target in targets:  # refuse a wrong --out before any work
        check_replaceable(target, "evaluations")
    results = []
    for run_dir, target in zip(run_dirs, targets, strict=True):
        started = time.perf_counter()
        r = evaluate_run(run_dir, target, settings)
        h = r["test"]["headline"]
        lo, hi = r["ci"]["macro_auprc_ci"]
        ci = f" (95% CI {lo:.3f}-{hi:.3f})" if lo is not None and h == "macro_auprc" else ""
        value = f"{r['test'][h]:.3f}" if r["test"][h] is not None else f"undefined ({r['headline_undefined']})"
        print(f"evaluated {r['cohort']}/{r['run']}: test {h} {value}{ci} on {r['n_test']} samples "
              f"-> {target} in {time.perf_counter() - started:.1f} s", flush=True)
        results.append(r)
    return results
