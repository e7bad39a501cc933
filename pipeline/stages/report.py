"""Per-task report: reads a cohort and its evaluated runs, writes report.html and DVC metrics/plots.

Output folder (reports/<cohort>/):
  report.html        self-contained page for a clinical reader
  metrics.json       the DVC metric (`dvc exp show` columns): the champion's test headline and each method's
                     (mean over seeds), keys unique across cohorts: {"champion": {cohort: x}, cohort: {method: x}}
  metrics_detail.json the other numbers (not a DVC metric, so no columns): the champion's validation headline
                     and seed, per method std over seeds, AUROC, average rank, seeds; the paired difference
  metrics_about.json what those numbers are: which metric `headline` is (macro_auprc or macro_map), the
                     champion's method, the paired comparison's methods (text stays out of the metrics)
  comparison.csv     one row per (method, seed) with test metrics
  verdicts.json      each comparison's verdict line and interval, the synthetic marker and whether training
                     variance is measured, the champion's validation margin (read by `clinfuse tables`)
  plots/pr/*.json, plots/roc/*.json   per label, every method's curve (its best-validation seed's test
                     predictions, a `method` field per record) for `dvc plots`
"""

from __future__ import annotations

import datetime as dt
import time
from pathlib import Path
from types import SimpleNamespace

from clinfuse.etl.atomic import write_json, write_text
from clinfuse.evaluation.champion import best_run_per_method, champion_of
from clinfuse.evaluation.curves import curves_by_label
from clinfuse.evaluation.report import render_report
from clinfuse.evaluation.report_data import (
    Predictions,
    ReportSettings,
    build_report_data,
    report_metrics,
    runs_table,
    verdicts_record,
)
from clinfuse.pipeline.data import load_cohort
from clinfuse.pipeline.manifest import shareable_sources
from clinfuse.pipeline.results import (
    load_evaluations,
    predictions_file,
    read_analysis,
    read_curves,
    read_predictions,
    read_registry_record,
    slug,
)


def cohort_info(cohort) -> SimpleNamespace:
    """What `evaluation.report_data` reads of a cohort (`CohortInfo`), its manifest as written (JSON)."""
    return SimpleNamespace(name=cohort.name, manifest=cohort.manifest.to_json(), task_type=cohort.task_type,
                           label_names=cohort.label_names, samples=cohort.samples,
                           registered_model_name=cohort.manifest.registered_model_name)


def read_studies(folder: Path, methods: list[str]) -> list[dict]:
    """`<folder>/<method>/study.json` (clinfuse tune) of each reported method that has one."""
    import json

    return [json.loads((folder / m / "study.json").read_text()) for m in methods
            if (folder / m / "study.json").is_file()]


def build_report(cohort_dir: Path, evals_dirs: list[Path], out: Path, settings: ReportSettings,
                 provenance: dict | None = None, analysis: Path | None = None, summary_link: str | None = None,
                 tuning: Path | None = None) -> str:
    """Write report.html, metrics*.json, comparison.csv, verdicts.json and plots/ for one cohort.

    Reads the cohort and the evaluated runs (and the analysis and `out/registry.json` when
    present), builds the report's data with `evaluation.report_data.build_report_data` and writes.
    `provenance` (git commit and dirty flag, the command) is computed by the caller and only shown.
    """
    started = time.perf_counter()
    cohort = load_cohort(cohort_dir)
    results = load_evaluations(evals_dirs)
    info = cohort_info(cohort)
    data = build_report_data(
        results, [Predictions(*read_predictions(r["_dir"], cohort)) for r in results], info,
        cohort.manifest.title, settings, sources=shareable_sources(info.manifest["sources"]),
        generated=dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        analysis=read_analysis(analysis) if analysis else None, registry_record=read_registry_record(out),
        provenance=provenance, summary_link=summary_link,
        val_predictions=[Predictions(*read_predictions(r["_dir"], cohort, "val")) for r in results]
        if all(predictions_file(r["_dir"], "val").is_file() for r in results) else None)
    if tuning is not None:
        from clinfuse.evaluation.tuning import tuning_rows

        data.tuning = tuning_rows(read_studies(tuning, data.methods))
    out.mkdir(parents=True, exist_ok=True)
    write_text(out / "report.html", render_report(data))
    metrics, detail, about = report_metrics(data, cohort.name)
    write_json(out / "metrics.json", metrics)
    write_json(out / "metrics_detail.json", detail)
    write_json(out / "metrics_about.json", about)
    write_text(out / "comparison.csv", runs_table(results).to_csv(index=False))
    write_json(out / "verdicts.json", verdicts_record(data, cohort.name))
    champion = champion_of(results)
    # one curve per method, from the run the report shows for it (its best validation seed)
    best = best_run_per_method(results, data.methods)
    for kind in ("pr", "roc"):
        by_label = curves_by_label({m: read_curves(r["_dir"], kind) for m, r in best.items()},
                                   {m: r["seed"] for m, r in best.items()})
        folder = out / "plots" / kind
        folder.mkdir(parents=True, exist_ok=True)
        for stale in folder.glob("*.json"):
            stale.unlink()
        for label, records in by_label.items():
            write_json(folder / f"{slug(label)}.json", records)
    headline = data.headline_metric
    value = champion["test"][headline]
    shown = f"{value:.3f}" if value is not None else f"undefined ({champion.get('headline_undefined', 'n/a')})"
    return (f"report {cohort.name}: champion {champion['method']} (seed {champion['seed']}) test {headline} "
            f"{shown}; {len(results)} runs of {len(data.methods)} methods -> "
            f"{out / 'report.html'} in {time.perf_counter() - started:.1f} s")
