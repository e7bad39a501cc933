"""Per-task report: reads a cohort and its evaluated runs, writes report.html and DVC metrics/plots.

Output folder (reports/<cohort>/):
  report.html        self-contained page for a clinical reader
  metrics.json       numbers only (for `dvc metrics` / `dvc exp show`): the champion's and each method's
                     headline (mean/std over seeds), named `headline` in every cohort
  metrics_about.json what those numbers are: which metric `headline` is (macro_auprc or macro_map), the
                     champion's method, the paired comparison's methods (text stays out of metrics.json)
  comparison.csv     one row per (method, seed) with test metrics
  plots/pr/*.json, plots/roc/*.json   the champion's per-label curves (for `dvc plots`)
"""

from __future__ import annotations

import datetime as dt
import json
import re
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from etl.atomic import write_json, write_text
from etl.errors import InputError
from evaluation.bootstrap import paired_bootstrap_difference
from evaluation.comparison import average_rank, design_alternatives, mean_std_over_seeds
from evaluation.method_notes import method_note
from evaluation.metrics import MIN_EVENTS, is_degenerate, row_normalised, too_few_events
from evaluation.operating import net_benefit
from evaluation.plots import decision_curve_figure, forest_figure, reliability_figure
from evaluation.presence import presence_rows
from evaluation.report import LabelRow, ReportData, render_report
from evaluation.svg import curve_svg
from pipeline.champion import champion_of
from pipeline.data import load_cohort
from pipeline.manifest import shareable_sources
from pipeline.stages.analyze import why_section
from pipeline.stages.evaluate import labels_and_scores

TITLES = {("mimic", "phenotype"): "MIMIC-IV ICU phenotyping (25 CCS groups)",
          ("mimic", "mortality"): "MIMIC-IV in-hospital mortality",
          ("adni", "diagnosis"): "ADNI diagnosis (CN / MCI / AD)"}


def slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "_", text).strip("_")[:60]


def load_evaluations(evals_dirs: list[Path]) -> list[dict]:
    """Evaluated runs from folders that are one (metrics.json) or hold several (*/metrics.json)."""
    results = []
    paths = []
    for d in evals_dirs:
        paths += [Path(d) / "metrics.json"] if (Path(d) / "metrics.json").is_file() else sorted(Path(d).glob("*/metrics.json"))
    for path in paths:
        r = json.loads(path.read_text())
        r["_dir"] = path.parent
        results.append(r)
    if not results:
        raise InputError(f"{', '.join(map(str, evals_dirs))}: no evaluated runs (metrics.json); run `clinfuse evaluate` first")
    return results


def build_report(cohort_dir: Path, evals_dirs: list[Path], out: Path, method_order: list[str], settings: dict,
                 provenance: dict | None = None, analysis: Path | None = None, summary_link: str | None = None) -> str:
    """Write report.html, metrics.json, comparison.csv and plots/ for one cohort.

    `provenance` (git commit and dirty flag, the command) is computed by the caller and only shown;
    the registered model is read from `out/registry.json` when `clinfuse register` wrote one.
    """
    started = time.perf_counter()
    cohort = load_cohort(cohort_dir)
    results = load_evaluations(evals_dirs)
    order = [m for m in method_order if any(r["method"] == m for r in results)]
    order += sorted({r["method"] for r in results} - set(order))
    headline = results[0]["test"]["headline"]
    labels = results[0]["labels"]
    per_label_key = "per_class" if cohort.task_type == "multiclass" else "per_label"

    best_by_method = {m: champion_of([r for r in results if r["method"] == m]) for m in order}
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
        few = too_few_events(first["n_pos"], first["n"], int(champion["ci"].get("min_events", MIN_EVENTS)))
        rows.append(LabelRow(label, first["prevalence"], first["n_pos"], by_method,
                             max(scored, key=scored.get) if scored else None, few))

    # comparison over seeds and average ranks over labels (per-label metrics averaged over seeds)
    long = pd.DataFrame([{"method": r["method"], "seed": r["seed"], "headline": r["test"][headline],
                          "auroc": r["test"]["macro_auroc"]} for r in results])
    summary = mean_std_over_seeds(long, ["headline", "auroc"]).set_index("method")
    per_label = pd.DataFrame([{"method": r["method"], "label": lab, "auprc": v["auprc"], "auroc": v["auroc"]}
                              for r in results for lab, v in r["test"][per_label_key].items()])
    per_label = per_label.groupby(["method", "label"], as_index=False)[["auprc", "auroc"]].mean()
    rank_p, rank_r = average_rank(per_label, "auprc"), average_rank(per_label, "auroc")
    comparison = [{"method": m, "n_seeds": int(summary.loc[m, "n_seeds"]),
                   "headline_mean": float(summary.loc[m, "headline_mean"]),
                   "headline_std": _number_or_none(summary.loc[m, "headline_std"]),
                   "auroc_mean": _number_or_none(summary.loc[m, "auroc_mean"]), "auroc_std": _number_or_none(summary.loc[m, "auroc_std"]),
                   "rank_auprc": _number_or_none(rank_p.get(m)), "rank_auroc": _number_or_none(rank_r.get(m))} for m in order]

    n_resamples = int(settings.get("bootstrap resamples", 1000))
    forest = _forest(results, cohort, labels, n_resamples)
    paired = next(({"a": f["method"], "b": f["baseline"], "seed": f["seed"], "macro_auprc": f["macro_auprc"],
                    "macro_auroc": f["macro_auroc"]} for f in forest if f["baseline"] == "late_fusion"), None)
    calibration = [{"method": m, **{k: r["calibration"]["pooled"][k] for k in ("brier", "slope", "intercept")}}
                   for m, r in best_by_method.items()]

    # figures: every label with both classes in the test split, every method's best run
    scored = {}
    for m, r in best_by_method.items():
        scored[m] = labels_and_scores(pd.read_parquet(r["_dir"] / "predictions_test.parquet"), cohort)
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
        figures[f"forest:{f['baseline']}"] = forest_figure(f["rows"], f["baseline"], f["method"],
                                                         unit="class" if cohort.task_type == "multiclass" else "label")

    manifest = cohort.manifest
    title = TITLES.get((manifest.get("dataset"), manifest.get("task")), cohort.name) + (
        " — partially paired" if manifest.get("config", {}).get("require_cxr") is False else "")
    data = ReportData(
        title=f"SYNTHETIC DATA: {title}" if manifest.get("synthetic") else title,
        synthetic=manifest.get("synthetic"),
        dataset=manifest.get("dataset", ""), task=manifest.get("task", ""), task_type=cohort.task_type,
        headline_metric=headline, methods=order, cohort_counts=manifest.get("counts", {}),
        exclusions=manifest.get("exclusions", []),
        prevalence=_prevalence(cohort),
        label_rows=rows, excluded_labels=champion["test"]["excluded_labels"], comparison=comparison,
        paired_difference=paired, calibration=calibration, subgroups=champion["subgroups"], figures=figures,
        settings=_run_settings({k: v for k, v in settings.items()
                                if not (cohort.task_type == "multiclass" and k == "operating-point rule")}, champion),
        data_versions={"cohort": Path(cohort_dir).name, "cohort created": manifest.get("created"),
                       "cohort schema version": manifest.get("schema_version"),
                       **{f"source: {k}": v.get("path") + (f" ({v['bytes']:,} bytes, modified {v.get('modified')})"
                                                          if "bytes" in v else "")
                          for k, v in shareable_sources(manifest.get("sources", {})).items()}},
        champion={"method": champion["method"], "seed": champion["seed"], "value": champion["test"][headline],
                  "ci": champion["ci"].get(f"{headline}_ci") or champion["ci"].get("macro_auprc_ci")},
        generated=dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        runs=[{"method": r["method"], "seed": r["seed"], "run": r["run"],
               "val_metric": r["validation"]["metric"], "val": r["validation"]["value"],
               "best_epoch": r["validation"].get("best_epoch"), "test": r["test"][headline],
               "mlflow_run_id": r.get("mlflow_run_id"), "champion": r is champion,
               "best_of_method": r is best_by_method[r["method"]]}
              for r in sorted(results, key=lambda r: (order.index(r["method"]), r["seed"]))],
        method_notes=[method_note(m) for m in order],
        provenance={**(provenance or {}), "registry": _registry_record(out, champion, manifest)},
        multiclass=_multiclass(champion, labels) if cohort.task_type == "multiclass" else None,
        features=_features(manifest) if manifest.get("tabular_features") else None,
        operating_points=champion.get("operating_points"),
        reliability_bins=champion["calibration"]["pooled"]["reliability"],
        forest=forest, curves=curves, min_events=int(champion["ci"].get("min_events", MIN_EVENTS)), n_resamples=n_resamples,
        design_alternatives=design_alternatives(comparison),
        presence=presence_rows({m: r.get("presence") for m, r in best_by_method.items()}),
        why=why_section(analysis) if analysis else None, summary_link=summary_link,
    )
    out.mkdir(parents=True, exist_ok=True)
    write_text(out / "report.html", render_report(data))
    metrics, about = dvc_metrics(cohort.name, headline, champion, comparison, paired)
    write_json(out / "metrics.json", metrics)
    write_json(out / "metrics_about.json", about)
    write_text(out / "comparison.csv", long.to_csv(index=False))
    for kind in ("pr", "roc"):
        records = json.loads((champion["_dir"] / f"curves_{kind}.json").read_text())
        folder = out / "plots" / kind
        folder.mkdir(parents=True, exist_ok=True)
        for stale in folder.glob("*.json"):
            stale.unlink()
        for label in dict.fromkeys(r["label"] for r in records):
            write_json(folder / f"{slug(label)}.json", [r for r in records if r["label"] == label])
    return (f"report {cohort.name}: champion {champion['method']} (seed {champion['seed']}) test {headline} "
            f"{champion['test'][headline]:.3f}; {len(results)} runs of {len(order)} methods -> {out / 'report.html'} "
            f"in {time.perf_counter() - started:.1f} s")


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


def _prevalence(cohort) -> dict[str, dict[str, float]]:
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


def _registry_record(out: Path, champion: dict, manifest: dict) -> dict:
    """The registered model from `clinfuse register` (out/registry.json), or the name it will get."""
    name = f"{manifest.get('dataset')}-{manifest.get('task')}"
    path = Path(out) / "registry.json"
    if not path.is_file():
        return {"name": name, "version": None, "note": "not registered yet (clinfuse register)"}
    record = json.loads(path.read_text())
    record = record[0] if isinstance(record, list) and record else record
    same = Path(str(record.get("run", ""))).name == champion["run"]
    return {"name": record.get("name", name), "version": record.get("version"),
            "champion_alias": record.get("champion"), "model_uri": record.get("model_uri"),
            "note": None if same else f"registered from run {Path(str(record.get('run', ''))).name}, "
                                      f"not this report's champion {champion['run']}: run clinfuse register again"}


def _forest(results: list[dict], cohort, labels: list[str], n_resamples: int) -> list[dict]:
    """Per-label paired differences MASAM - each other method, on the first seed both have."""
    by = {(r["method"], r["seed"]): r for r in results}
    masam_seeds = sorted(s for (m, s) in by if m == "masam")
    out = []
    if not masam_seeds:
        return out
    baselines = list(dict.fromkeys(m for (m, _) in by if m != "masam"))
    for b in baselines:
        seeds = [s for s in masam_seeds if (b, s) in by]
        if not seeds:
            continue
        seed = seeds[0]
        a = pd.read_parquet(by[("masam", seed)]["_dir"] / "predictions_test.parquet")
        base = pd.read_parquet(by[(b, seed)]["_dir"] / "predictions_test.parquet")
        ya, pa = labels_and_scores(a, cohort)
        _, pb = labels_and_scores(base, cohort)
        diff = paired_bootstrap_difference(ya, pa, pb, a["patient_id"].to_numpy(), n_resamples, 42)
        rows = [{"label": lab, "difference": d["auprc"]["difference"], "ci": d["auprc"]["ci"],
                 "auroc_difference": d["auroc"]["difference"], "auroc_ci": d["auroc"]["ci"]}
                for lab, d in zip(labels, diff["per_label"], strict=True)]
        out.append({"method": "masam", "baseline": b, "seed": seed, "rows": rows,
                    "macro_auprc": diff["macro_auprc"], "macro_auroc": diff["macro_auroc"]})
    return out


def dvc_metrics(cohort: str, headline: str, champion: dict, comparison: list[dict],
                paired: dict | None) -> tuple[dict, dict]:
    """(metrics.json, metrics_about.json) for DVC.

    DVC compares metrics files key by key across experiments, and `dvc exp show` makes a column of
    every key, so metrics.json holds numbers only and names each quantity the same in every cohort:
    the model-selection metric is `headline` whether it is macro AUPRC (MIMIC tasks) or macro mAP
    (ADNI's classes). metrics_about.json says which metric that is, and the text (method names).
    """
    metrics: dict[str, Any] = {
        "champion": {"test_headline": champion["test"][headline], "val_headline": champion["validation"]["value"],
                     "seed": champion["seed"]},
        "methods": {c["method"]: {"test_headline_mean": c["headline_mean"], "test_headline_std": c["headline_std"],
                                  "test_macro_auroc_mean": c["auroc_mean"], "avg_rank_auprc": c["rank_auprc"],
                                  "n_seeds": c["n_seeds"]}
                    for c in comparison},
    }
    about: dict[str, Any] = {"cohort": cohort, "headline": headline, "champion_method": champion["method"],
                             "validation_metric": champion["validation"]["metric"]}
    if paired:
        # {difference, ci: [lo, hi], ...} -> flat numbers: DVC makes a column per key, not per list item
        metrics["paired_difference"] = {
            m: {"difference": paired[m]["difference"], "ci_low": paired[m]["ci"][0], "ci_high": paired[m]["ci"][1],
                "p_le_zero": paired[m]["p_le_zero"]}
            for m in ("macro_auprc", "macro_auroc")}
        about["paired_difference"] = {"a": paired["a"], "b": paired["b"], "seed": paired["seed"],
                                      "meaning": "test macro AUPRC/AUROC of a minus b (same seed, same patients)"}
    return metrics, about


def _number_or_none(v):
    """A float, or None for a missing or NaN value (JSON has no NaN)."""
    return None if v is None or (isinstance(v, float) and np.isnan(v)) else float(v)
