"""The per-task report's data, built by one pure function from evaluated runs, the cohort and settings.

`build_report_data` turns what `clinfuse evaluate` (and `clinfuse analyze`) wrote, already read
by the caller, into the `ReportData` that `evaluation.report.render_report` shows. Which methods
are compared, against which reference and with which seeds comes from `ReportSettings` (params.yaml
`sweep`, `analyze`, `evaluate`), never from names written here. Changing a report table means
changing this module and the template.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple, Protocol

import numpy as np
import pandas as pd

from clinfuse.evaluation.champion import best_run_per_method, champion_of
from clinfuse.evaluation.comparison import average_rank, design_alternatives, mean_std_over_seeds
from clinfuse.evaluation.explain_section import explain_section
from clinfuse.evaluation.method_notes import method_note
from clinfuse.evaluation.metrics import is_degenerate, row_normalised, too_few_events
from clinfuse.evaluation.operating import net_benefit
from clinfuse.evaluation.oracle import ceiling_rows
from clinfuse.evaluation.plots import decision_curve_figure, forest_figure, reliability_figure
from clinfuse.evaluation.presence import presence_rows
from clinfuse.evaluation.report import LabelRow, ReportData
from clinfuse.evaluation.svg import curve_svg
from clinfuse.evaluation.verdicts import RunScores, champion_margin, compare_methods, comparison_pairs
from clinfuse.evaluation.why import why_section


class Predictions(NamedTuple):
    """One evaluated run's test predictions as arrays (the rows of its predictions_test.parquet)."""

    y: np.ndarray  # [N, K] 0/1 indicators (one-vs-rest for multi-class)
    p: np.ndarray  # [N, K] probabilities
    patient_id: np.ndarray  # [N] the patient of each row (the bootstrap resamples patients)


class CohortInfo(Protocol):
    """What the report reads of a processed cohort (pipeline.data.Cohort has it)."""

    name: str
    manifest: dict
    task_type: str
    label_names: list[str]
    samples: pd.DataFrame
    registered_model_name: str  # the name `clinfuse register` gives its models


@dataclass(frozen=True)
class ReportSettings:
    """What the report compares and how; every field comes from params.yaml (`report_settings`).

    Args:
        methods: table order (sweep.methods); evaluated methods not listed follow, sorted by name.
        proposed: the methods under study (analyze.proposed): each is compared per label with every
            other method (paired bootstrap, forest plots).
        reference: the paired-difference table shows the first proposed method minus this one
            (analyze.reference); no table when either has no run.
        seeds: the sweep's seeds (sweep.seeds): the "Why" section's flatness table shows the first.
        n_resamples: bootstrap resamples of the paired differences (evaluate.n_resamples).
        seed: the paired bootstrap's seed (evaluate.seed).
        level: the paired bootstrap's confidence level (evaluate.ci_level).
        shown: the settings table, row name -> value as shown.
    """

    methods: list[str]
    proposed: list[str]
    reference: str | None
    seeds: list[int]
    n_resamples: int
    seed: int
    level: float
    shown: dict[str, Any]


def report_settings(sweep, analyze, evaluate, train) -> ReportSettings:
    """The report's settings from params.yaml's `sweep`, `analyze`, `evaluate` and `train` sections."""
    shown = {"bootstrap resamples": evaluate.n_resamples, "CI level": evaluate.ci_level,
             "min subgroup patients": evaluate.min_subgroup_patients,
             "min events (positives and negatives)": evaluate.min_events,
             "operating-point rule": evaluate.threshold_rule + (f" (sensitivity >= {evaluate.target_sensitivity})"
                                                               if evaluate.threshold_rule == "target_sensitivity"
                                                               else ""),
             "model preset": train.preset, "epochs": train.epochs, "batch size": train.batch_size,
             "optimizer": f"{train.optimizer} lr {train.lr} wd {train.weight_decay}",
             "schedule": train.schedule, "seeds": sweep.seeds}
    return ReportSettings(methods=list(sweep.methods), proposed=list(analyze.proposed), reference=analyze.reference,
                          seeds=list(sweep.seeds), n_resamples=evaluate.n_resamples, seed=evaluate.seed,
                          level=evaluate.ci_level, shown=shown)


def runs_table(evaluations: list[dict]) -> pd.DataFrame:
    """One row per evaluated run: method, seed, test headline, test macro AUROC (comparison.csv)."""
    headline = evaluations[0]["test"]["headline"]
    return pd.DataFrame([{"method": r["method"], "seed": r["seed"], "headline": r["test"][headline],
                          "auroc": r["test"]["macro_auroc"]} for r in evaluations])


def build_report_data(evaluations: list[dict], predictions: list[Predictions], cohort: CohortInfo, title: str,
                      settings: ReportSettings, *, sources: dict, generated: str,
                      analysis: tuple[dict, dict[str, bytes]] | None = None, registry_record: dict | None = None,
                      provenance: dict | None = None, summary_link: str | None = None,
                      val_predictions: list[Predictions] | None = None) -> ReportData:
    """Everything the report shows for one cohort.

    Args:
        evaluations: the evaluated runs' metrics.json documents, each with `run`, `method`, `seed`.
        predictions: each evaluated run's test predictions, in the order of `evaluations`.
        cohort: the processed cohort (manifest, task type, label names, samples table).
        title: the cohort's title (its manifest's, which names a partially paired cohort); a
            synthetic-data warning is added here.
        settings: what is compared and how (`report_settings`).
        sources: the manifest's sources with shareable paths (shown under data versions).
        generated: when the report was made, as shown.
        analysis: analysis.json and its figures (name -> PNG bytes) for the "Why" section, if any.
        registry_record: what `clinfuse register` recorded for this cohort, if it has run.
        provenance: git commit and dirty flag, the command (only shown).
        summary_link: relative link to the cross-cohort summary page.
        val_predictions: each run's validation predictions, in the order of `evaluations`: with them the
            report says whether the champion's validation margin over the runner-up is within noise.
    """
    results = evaluations
    scored_runs = {id(r): p for r, p in zip(results, predictions, strict=True)}
    order = [m for m in settings.methods if any(r["method"] == m for r in results)]
    order += sorted({r["method"] for r in results} - set(order))
    headline = results[0]["test"]["headline"]
    labels = results[0]["labels"]
    per_label_key = "per_class" if cohort.task_type == "multiclass" else "per_label"

    best_by_method = best_run_per_method(results, order)
    champion = champion_of(results)

    # per-label table from each method's best-validation run
    rows = []
    for label in labels:
        by_method = {}
        for m, r in best_by_method.items():
            pl, ci = r["test"][per_label_key][label], r["ci"]["per_label"][label]
            by_method[m] = {"auprc": pl["auprc"], "auroc": pl["auroc"], "auprc_ci": ci["auprc_ci"],
                            "auroc_ci": ci["auroc_ci"]}
        scored = {m: v["auprc"] for m, v in by_method.items() if v["auprc"] is not None}
        first = champion["test"][per_label_key][label]
        few = too_few_events(first["n_pos"], first["n"], int(champion["ci"]["min_events"]))
        rows.append(LabelRow(label, first["prevalence"], first["n_pos"], by_method,
                             max(scored, key=scored.get) if scored else None, few))

    # comparison over seeds and average ranks over labels (per-label metrics averaged over seeds)
    summary = mean_std_over_seeds(runs_table(results), ["headline", "auroc"]).set_index("method")
    per_label = pd.DataFrame([{"method": r["method"], "label": lab, "auprc": v["auprc"], "auroc": v["auroc"]}
                              for r in results for lab, v in r["test"][per_label_key].items()])
    per_label = per_label.groupby(["method", "label"], as_index=False)[["auprc", "auroc"]].mean()
    rank_p, rank_r = average_rank(per_label, "auprc"), average_rank(per_label, "auroc")
    comparison = [{"method": m, "n_seeds": int(summary.loc[m, "n_seeds"]),
                   "headline_mean": float(summary.loc[m, "headline_mean"]),
                   "headline_std": _number_or_none(summary.loc[m, "headline_std"]),
                   "auroc_mean": _number_or_none(summary.loc[m, "auroc_mean"]),
                   "auroc_std": _number_or_none(summary.loc[m, "auroc_std"]),
                   "rank_auprc": _number_or_none(rank_p.get(m)), "rank_auroc": _number_or_none(rank_r.get(m))}
                  for m in order]

    # every method vs the reference and each proposed method vs each other method, paired on seeds and patients
    unit = "stays" if str(cohort.manifest.get("dataset", "")).startswith("mimic") else "samples"
    pairs = comparison_pairs(order, settings.proposed, settings.reference)
    designs = design_alternatives(comparison)  # MASAM's Table 8 alternatives, each compared with MASAM too
    pairs += [p for p in ((r["method"], designs[0]["method"]) for r in designs[1:]) if p not in pairs]
    verdicts = compare_methods(results, [RunScores(*p) for p in predictions], pairs, labels,
                               settings.n_resamples, settings.seed, settings.level, unit)
    by_pair = {(c["method"], c["reference"]): c for c in verdicts}
    designs = [{**r, "paired": by_pair.get((r["method"], designs[0]["method"]))} for r in designs]
    forest = [{**c, "baseline": c["reference"], "rows": c["per_label"]} for c in verdicts
              if c["method"] in settings.proposed and c["reference"] not in settings.proposed]
    paired = next(({"a": c["method"], "b": c["reference"], "seeds": c["seeds"], "n_seeds": c["n_seeds"],
                    "macro_auprc": c["macro_auprc"], "macro_auroc": c["macro_auroc"]} for c in verdicts
                   if settings.proposed and c["method"] == settings.proposed[0]
                   and c["reference"] == settings.reference), None)
    margin = champion_margin(results, [RunScores(*p) for p in val_predictions] if val_predictions else None,
                             settings.n_resamples, settings.seed, settings.level)
    calibration = [{"method": m, **{k: r["calibration"]["pooled"][k] for k in ("brier", "slope", "intercept")},
                    "slope_note": r["calibration"]["pooled"].get("slope_note")} for m, r in best_by_method.items()]

    # figures: every label with both classes in the test split, every method's best run
    scored = {m: scored_runs[id(r)][:2] for m, r in best_by_method.items()}
    figures, curves = {}, []
    for k, row in enumerate(rows):
        y_k = scored[champion["method"]][0][:, k]
        if not is_degenerate(y_k):
            curves.append((row.label, curve_svg(row.label, {m: (y[:, k], p[:, k]) for m, (y, p) in scored.items()},
                                                float(np.mean(y_k)))))
    figures["reliability"] = reliability_figure(
        {m: r["calibration"]["pooled"]["reliability"] for m, r in best_by_method.items()},
        {m: r["calibration"]["pooled"]["histogram"] for m, r in best_by_method.items()
         if "histogram" in r["calibration"]["pooled"]},
        "Reliability (quantile bins)" if len(labels) == 1 else "Reliability (all labels pooled, quantile bins)")
    if cohort.task_type == "binary":
        thresholds = np.round(np.arange(0.01, 0.61, 0.01), 2)
        figures["decision_curve"] = decision_curve_figure(
            {m: net_benefit(y[:, 0], p[:, 0], thresholds) for m, (y, p) in scored.items()}, labels[0])
    for f in forest:
        figures[f"forest:{f['method']}:{f['baseline']}"] = forest_figure(
            f["rows"], f["baseline"], f["method"], unit="class" if cohort.task_type == "multiclass" else "label",
            n_seeds=f["n_seeds"])

    manifest = cohort.manifest
    shown = {k: v for k, v in settings.shown.items()
             if not (cohort.task_type == "multiclass" and k == "operating-point rule")}
    return ReportData(
        title=f"SYNTHETIC DATA: {title}" if manifest.get("synthetic") else title,
        synthetic=manifest.get("synthetic"),
        dataset=manifest.get("dataset", ""), task=manifest.get("task", ""), task_type=cohort.task_type,
        headline_metric=headline, methods=order, cohort_counts=manifest.get("counts", {}),
        exclusions=manifest.get("exclusions", []), cohort_warnings=list(manifest.get("warnings") or []),
        prevalence=_prevalence(cohort),
        label_rows=rows, excluded_labels=champion["test"]["excluded_labels"], comparison=comparison,
        paired_difference=paired, calibration=calibration, subgroups=champion["subgroups"], figures=figures,
        settings=_run_settings(shown, champion),
        data_versions={"cohort": cohort.name, "cohort created": manifest.get("created"),
                       "cohort schema version": manifest.get("schema_version"),
                       **{f"source: {k}": v.get("path") + (f" ({v['bytes']:,} bytes, modified {v.get('modified')})"
                                                          if "bytes" in v else "")
                          for k, v in sources.items()}},
        champion={"method": champion["method"], "seed": champion["seed"], "value": champion["test"][headline],
                  "ci": champion["ci"].get(f"{headline}_ci") or champion["ci"].get("macro_auprc_ci"),
                  # why the value is None (clinfuse evaluate's `headline_undefined`), shown instead of a dash
                  "undefined": champion.get("headline_undefined")},
        generated=generated,
        runs=[{"method": r["method"], "seed": r["seed"], "run": r["run"],
               "val_metric": r["validation"]["metric"], "val": r["validation"]["value"],
               "best_epoch": r["validation"].get("best_epoch"), "epochs_run": r["validation"].get("epochs_run"),
               "still_improving": bool(r["validation"].get("still_improving")), "test": r["test"][headline],
               "mlflow_run_id": r.get("mlflow_run_id"), "champion": r is champion,
               "best_of_method": r is best_by_method[r["method"]]}
              for r in sorted(results, key=lambda r: (order.index(r["method"]), r["seed"]))],
        method_notes=[method_note(m) for m in order],
        provenance={**(provenance or {}), "registry": _registry_status(registry_record, champion, cohort.registered_model_name)},
        multiclass=_multiclass(champion, labels) if cohort.task_type == "multiclass" else None,
        features=_features(manifest) if manifest.get("tabular_features") else None,
        operating_points=champion.get("operating_points"),
        reliability_bins=champion["calibration"]["pooled"]["reliability"],
        forest=forest, curves=curves, min_events=int(champion["ci"]["min_events"]),
        n_resamples=settings.n_resamples,
        design_alternatives=designs,
        presence=presence_rows({m: r.get("presence") for m, r in best_by_method.items()}),
        ceiling=_ceiling(results, order),
        why=why_section(*analysis, seed=settings.seeds[0] if settings.seeds else None) if analysis else None,
        summary_link=summary_link,
        verdicts=verdicts, seeds_measured=bool(comparison) and min(c["n_seeds"] for c in comparison) >= 2,
        champion_margin=margin,
        explain=explain_section(*analysis) if analysis else None,
    )


def report_metrics(data: ReportData, cohort_name: str) -> tuple[dict, dict, dict]:
    """The report's numbers for DVC: (metrics.json, metrics_detail.json, metrics_about.json).

    `dvc exp show` makes a column of every key of every declared metrics file, and prefixes a key
    with its file's path when two files share it. So metrics.json, the one file declared as a DVC
    metric, holds the headline only, under keys unique across cohorts:
    `{"champion": {<cohort>: champion's test headline}, <cohort>: {<method>: test headline, mean
    over the method's seeds}}` (columns `champion.adni`, `adni.masam`, ...). The headline is the
    model-selection metric, named the same way in every cohort whether it is macro AUPRC (the MIMIC
    tasks) or macro mAP (ADNI's classes).

    metrics_detail.json (a plain output, no table columns) holds the other numbers: the champion's
    validation headline and seed; per method the std over seeds, the AUROC, the average rank, the
    number of seeds; the paired difference. metrics_about.json holds the text: which metric the
    headline is, the champion's method, the paired comparison's methods, the verdict lines.
    """
    champion = next(r for r in data.runs if r["champion"])
    metrics: dict[str, Any] = {
        "champion": {cohort_name: data.champion["value"]},
        cohort_name: {c["method"]: c["headline_mean"] for c in data.comparison},
    }
    detail: dict[str, Any] = {
        "champion": {"test_headline": data.champion["value"], "val_headline": champion["val"],
                     "seed": champion["seed"]},
        "methods": {c["method"]: {"test_headline_mean": c["headline_mean"], "test_headline_std": c["headline_std"],
                                  "test_macro_auroc_mean": c["auroc_mean"], "avg_rank_auprc": c["rank_auprc"],
                                  "n_seeds": c["n_seeds"]}
                    for c in data.comparison},
    }
    about: dict[str, Any] = {"cohort": cohort_name, "headline": data.headline_metric,
                             "champion_method": champion["method"], "validation_metric": champion["val_metric"]}
    paired = data.paired_difference
    if paired:
        # {difference, ci: [lo, hi], ...} -> flat numbers, one name per quantity (as `dvc metrics diff` would
        # compare them if the file were declared); `mde` and `n_seeds` come with the seed-aware comparison
        detail["paired_difference"] = {
            m: {"difference": paired[m]["difference"], "ci_low": paired[m]["ci"][0], "ci_high": paired[m]["ci"][1],
                "p_le_zero": paired[m]["p_le_zero"],
                **({"mde": paired[m]["mde"], "n_seeds": paired["n_seeds"]} if "mde" in paired[m] else {})}
            for m in ("macro_auprc", "macro_auroc")}
        about["paired_difference"] = {
            "a": paired["a"], "b": paired["b"], "seeds": paired.get("seeds", [paired.get("seed")]),
            "meaning": "test macro AUPRC/AUROC of a minus b, mean over the seeds both have; CI from a two-level "
                       "paired bootstrap (seeds, then test patients); with one seed it covers test patients only; "
                       "mde: smallest difference detectable at 80% power, alpha 0.05"}
    verdicts = getattr(data, "verdicts", None)
    if verdicts:
        about["verdicts"] = [c["line"] for c in verdicts]
    margin = getattr(data, "champion_margin", None)
    if margin:
        about["champion_validation_margin_within_noise"] = margin["within_noise"]
    return metrics, detail, about


def verdicts_record(data: ReportData, cohort_name: str) -> dict:
    """verdicts.json: what the cross-cohort summary shows of this cohort's comparison, as the report says it.

    The synthetic marker, the headline metric, whether training variance is measured (every method has
    two seeds or more), each comparison's verdict line and numbers, and the champion's validation margin.
    """
    def numbers(c: dict) -> dict:
        h = c["macro_auprc"]
        return {"method": c["method"], "reference": c["reference"], "verdict": c["verdict"], "line": c["line"],
                "n_seeds": c["n_seeds"], "seeds": c["seeds"], "n_test": c["n_test"],
                "n_test_patients": c["n_test_patients"], "training_variance_measured": c["training_variance_measured"],
                "difference": h["difference"], "ci": h["ci"], "mde": h["mde"],
                "t_interval": h["t_interval"]["ci"] if h["t_interval"] else None}

    return {"cohort": cohort_name, "synthetic": data.synthetic, "headline": data.headline_metric,
            "seeds_measured": data.seeds_measured,
            "n_seeds": {c["method"]: c["n_seeds"] for c in data.comparison},
            "verdicts": [numbers(c) for c in data.verdicts], "champion_margin": data.champion_margin}


# rows of the settings table that describe training: shown from the champion run's own config when it has one
TRAINING_ROWS = ("model preset", "epochs", "batch size", "optimizer", "schedule")


def _run_settings(settings: dict, champion: dict) -> dict:
    """Report settings, with the champion run's training config instead of today's params.yaml."""
    out = dict(settings)
    if champion.get("training"):
        out = {k: v for k, v in out.items() if k not in TRAINING_ROWS}
        out["champion training config"] = json.dumps(champion["training"], sort_keys=True)
    out["champion method options"] = json.dumps(champion.get("method_options", {}))
    return out


def _prevalence(cohort: CohortInfo) -> dict[str, dict[str, float]]:
    """Exact label (class) prevalence per split from the samples table, rounded only when shown."""
    s = cohort.samples
    out = {}
    for split in ("train", "val", "test"):
        part = s[s["split"] == split]
        if part.empty:
            continue
        if cohort.task_type == "multiclass":
            codes = part[cohort.manifest["label_columns"][0]].to_numpy(int)
            out[split] = {name: float(np.mean(codes == c)) for c, name in enumerate(cohort.label_names)}
        else:
            out[split] = {name: float(part[name].mean()) for name in cohort.label_names}
    return out


def _multiclass(champion: dict, classes: list[str]) -> dict | None:
    """Accuracy with CI, confusion matrix (counts and row-normalised), per-class sensitivity/specificity.

    None for an evaluation written before these were computed (re-run `clinfuse evaluate`)."""
    if "confusion_matrix" not in champion["test"]:
        return None
    matrix = np.asarray(champion["test"]["confusion_matrix"])
    rates = champion.get("class_rates", {})
    return {"classes": classes, "counts": matrix.tolist(), "row_normalised": row_normalised(matrix).tolist(),
            "accuracy": rates.get("accuracy", {"value": champion["test"].get("accuracy"), "ci": None}),
            "per_class": rates.get("per_class", {})}


# ADNI scores with their role; ADNI's diagnosis (CN / MCI / AD) uses MMSE and the CDR, so those are
# excluded by default (etl_adni.exclude_features); the others are kept and listed so a reader can judge.
COGNITIVE_SCORES = ("ADAS11", "ADAS13", "ADASQ4", "FAQ", "MOCA", "RAVLT_immediate", "RAVLT_learning",
                    "RAVLT_forgetting", "RAVLT_perc_forgetting")


def _features(manifest: dict) -> dict:
    """Tabular inputs: the source columns used (with their encodings), excluded, dropped; SMC relabels."""
    config = manifest.get("config", {})
    tab = manifest.get("tabular", {})
    encoded = manifest.get("tabular_features", [])
    used: dict[str, list[str]] = {}
    for name in encoded:
        base = name.split("=")[0]
        for suffix in ("_missing", "_censored"):
            base = base.removesuffix(suffix)
        used.setdefault(base, []).append(name)
    excluded = [{"column": c, "reason": "excluded by setting (etl_adni.exclude_features): ADNI's CN / MCI / AD "
                                        "diagnosis is partly derived from it, so it would leak the label"}
                for c in config.get("exclude_features", [])]
    dropped = [{"column": c, "reason": f"{rate:.1%} missing in the training split "
                                      f"(limit {config.get('max_missing', 0.9):.0%})"}
               for c, rate in tab.get("dropped_missing", {}).items()]
    kept_scores = [c for c in COGNITIVE_SCORES if c in used]
    return {"used": [{"column": c, "encoded": v} for c, v in used.items()], "n_encoded": len(encoded),
            "excluded": excluded, "dropped": dropped, "kept_scores": kept_scores,
            "smc": config.get("smc"), "smc_labelled_cn": manifest.get("smc_labelled_cn")}


def _registry_status(record: dict | None, champion: dict, name: str) -> dict:
    """The registered model (`clinfuse register`'s record), or the name it will get; flags a stale record."""
    if record is None:  # `dvc repro` registers after the report: the summary page shows the version
        return {"name": name, "version": None,
                "note": "registered after this report by `clinfuse register` (the pipeline's register stage); "
                        "its version and whether it holds @champion are in registry.json beside this page "
                        "and on the summary page"}
    registered_run = Path(str(record.get("run", ""))).name
    same = registered_run == champion["run"]
    return {"name": record.get("name", name), "version": record.get("version"),
            "champion_alias": record.get("champion"), "model_uri": record.get("model_uri"),
            "note": None if same else f"registered from run {registered_run}, "
                                      f"not this report's champion {champion['run']}: run clinfuse register again"}


def _ceiling(results: list[dict], order: list[str]) -> dict | None:
    """The oracle ceiling of a synthetic cohort with every run's gap to it and film-withheld loss (or None).

    The oracle was scored by `clinfuse evaluate` on the same test rows as each run (metrics.json
    `oracle`); a run's withheld loss is its paired-rows score minus its score with the image
    withheld (the presence block), compared with the oracle's loss from all factors to the
    anchor modality's factors on those rows.
    """
    oracle = next((r["oracle"] for r in results if r.get("oracle")), None)
    if oracle is None:
        return None
    runs = []
    for r in sorted(results, key=lambda r: (order.index(r["method"]), r["seed"])):
        presence = r.get("presence") or {}
        runs.append({"method": r["method"], "seed": r["seed"], "score": r["test"].get("macro_auprc"),
                     "paired": (presence.get("paired") or {}).get("macro_auprc"),
                     "withheld": (presence.get("withheld") or {}).get("macro_auprc")})
    image = next((r["presence"]["image"] for r in results if r.get("presence")), "cxr")
    anchor = next((r["presence"]["anchor"] for r in results if r.get("presence")), "ehr")
    out = ceiling_rows(oracle, runs, image, anchor)
    out["auroc"] = {k: oracle[k]["macro_auroc"] for k in oracle["seen"]}
    out["seen"] = oracle["seen"]
    return out


def _number_or_none(v):
    """A float, or None for a missing or NaN value (JSON has no NaN)."""
    return None if v is None or (isinstance(v, float) and np.isnan(v)) else float(v)
