"""Per-task report: reads a cohort and its evaluated runs, writes report.html and DVC metrics/plots.

Output folder (reports/<cohort>/):
  report.html        self-contained page for a clinical reader
  metrics.json       per-method mean/std over seeds and the champion (for `dvc metrics`)
  comparison.csv     one row per (method, seed) with test metrics
  plots/pr/*.json, plots/roc/*.json   the champion's per-label curves (for `dvc plots`)
"""

from __future__ import annotations

import datetime as dt
import json
import re
import time
from pathlib import Path

import numpy as np
import pandas as pd

from etl.atomic import write_json, write_text
from etl.errors import InputError
from evaluation.bootstrap import paired_bootstrap_difference
from evaluation.comparison import average_rank, mean_std_over_seeds
from evaluation.plots import pr_roc_figure, reliability_figure
from evaluation.report import LabelRow, ReportData, render_report
from pipeline.data import load_cohort
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


def champion_of(results: list[dict]) -> dict:
    """Best validation headline (ties: first method in order, lowest seed)."""
    return max(results, key=lambda r: (r["validation"]["value"] if r["validation"]["value"] is not None else -1,
                                       -r["seed"]))


def build_report(cohort_dir: Path, evals_dirs: list[Path], out: Path, method_order: list[str], settings: dict,
                 analysis: Path | None = None, summary_link: str | None = None) -> str:
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
        rows.append(LabelRow(label, first["prevalence"], first["n_pos"], by_method,
                             max(scored, key=scored.get) if scored else None))

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
                   "headline_std": float(summary.loc[m, "headline_std"]),
                   "auroc_mean": _f(summary.loc[m, "auroc_mean"]), "auroc_std": _f(summary.loc[m, "auroc_std"]),
                   "rank_auprc": _f(rank_p.get(m)), "rank_auroc": _f(rank_r.get(m))} for m in order]

    paired = _paired_difference(results, cohort, settings)
    calibration = [{"method": m, **{k: r["calibration"]["pooled"][k] for k in ("brier", "slope", "intercept")}}
                   for m, r in best_by_method.items()]

    # figures: the most prevalent labels, every method's best run
    frames = {m: pd.read_parquet(r["_dir"] / "predictions_test.parquet") for m, r in best_by_method.items()}
    top = sorted((r for r in rows if r.prevalence and 0 < r.prevalence < 1), key=lambda r: -r.prevalence)[:4]
    figures = {}
    for row in top:
        k = labels.index(row.label)
        curves = {}
        for m, frame in frames.items():
            y, p = labels_and_scores(frame, cohort)
            curves[m] = (y[:, k], p[:, k])
        figures[f"curve:{row.label}"] = pr_roc_figure(row.label, curves, row.prevalence)
    figures["reliability"] = reliability_figure({m: r["calibration"]["pooled"]["reliability"]
                                                 for m, r in best_by_method.items()})

    manifest = cohort.manifest
    title = TITLES.get((manifest.get("dataset"), manifest.get("task")), cohort.name)
    data = ReportData(
        title=f"SYNTHETIC DATA: {title}" if manifest.get("synthetic") else title,
        synthetic=manifest.get("synthetic"),
        dataset=manifest.get("dataset", ""), task=manifest.get("task", ""), task_type=cohort.task_type,
        headline_metric=headline, methods=order, cohort_counts=manifest.get("counts", {}),
        exclusions=manifest.get("exclusions", []),
        prevalence=manifest.get("label_prevalence", {}),
        label_rows=rows, excluded_labels=champion["test"]["excluded_labels"], comparison=comparison,
        paired_difference=paired, calibration=calibration, subgroups=champion["subgroups"], figures=figures,
        settings=settings | {"champion method options": json.dumps(champion.get("method_options", {}))},
        data_versions={"cohort": str(Path(cohort_dir).resolve()), "cohort created": manifest.get("created"),
                       "cohort schema version": manifest.get("schema_version"),
                       **{f"source: {k}": v.get("path") + (f" ({v['bytes']:,} bytes, modified {v.get('modified')})"
                                                          if "bytes" in v else "")
                          for k, v in manifest.get("sources", {}).items()}},
        champion={"method": champion["method"], "seed": champion["seed"], "value": champion["test"][headline],
                  "ci": champion["ci"].get(f"{headline}_ci") or champion["ci"].get("macro_auprc_ci")},
        generated=dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        why=why_section(analysis) if analysis else None, summary_link=summary_link,
    )
    out.mkdir(parents=True, exist_ok=True)
    write_text(out / "report.html", render_report(data))
    metrics = {"cohort": cohort.name, "headline": headline,
               "champion": {"method": champion["method"], "seed": champion["seed"],
                            f"test_{headline}": champion["test"][headline],
                            "val": champion["validation"]["value"]},
               "methods": {c["method"]: {f"test_{headline}_mean": c["headline_mean"],
                                         f"test_{headline}_std": c["headline_std"],
                                         "test_macro_auroc_mean": c["auroc_mean"],
                                         "avg_rank_auprc": c["rank_auprc"], "n_seeds": c["n_seeds"]}
                           for c in comparison}}
    if paired:
        metrics["paired_difference"] = {k: paired[k] for k in ("a", "b", "seed", "macro_auprc", "macro_auroc")}
    write_json(out / "metrics.json", metrics)
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


def _f(v):
    return None if v is None or (isinstance(v, float) and np.isnan(v)) else float(v)


def _paired_difference(results: list[dict], cohort, settings: dict) -> dict | None:
    """MASAM vs late fusion on the first seed both have, on the same resampled patients."""
    by = {(r["method"], r["seed"]): r for r in results}
    seeds = sorted({s for (m, s) in by if m == "masam"} & {s for (m, s) in by if m == "late_fusion"})
    if not seeds:
        return None
    seed = seeds[0]
    a = pd.read_parquet(by[("masam", seed)]["_dir"] / "predictions_test.parquet")
    b = pd.read_parquet(by[("late_fusion", seed)]["_dir"] / "predictions_test.parquet")
    ya, pa = labels_and_scores(a, cohort)
    _, pb = labels_and_scores(b, cohort)
    diff = paired_bootstrap_difference(ya, pa, pb, a["patient_id"].to_numpy(),
                                       int(settings.get("bootstrap resamples", 1000)), 42)
    return {"a": "masam", "b": "late_fusion", "seed": seed, **diff}
