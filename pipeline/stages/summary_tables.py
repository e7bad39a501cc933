"""reports/summary.html: the paper's tables (1, 6, 7 style) across cohorts from the evaluated runs.

Reads reports/<cohort>/runs/*/metrics.json (clinfuse evaluate) of each cohort, and with a tuning folder
<tuning>/<cohort>/<method>/study.json (clinfuse tune); nothing else.
"""

from __future__ import annotations

import datetime as dt
import json
import os
from pathlib import Path

import pandas as pd
from jinja2 import Environment, FileSystemLoader, select_autoescape

from clinfuse.etl.atomic import write_text
from clinfuse.etl.errors import InputError
from clinfuse.evaluation.paper_tables import cross_cohort_table, per_label_table
from clinfuse.evaluation.report import TEMPLATES

SECONDARY = ("macro_auroc", "micro_auprc", "micro_auroc", "accuracy")


def _evaluations(folder: Path) -> list[dict]:
    results = [json.loads(p.read_text()) for p in sorted(folder.glob("*/metrics.json"))]
    if not results:
        raise InputError(f"{folder}: no evaluated runs (*/metrics.json); run `clinfuse evaluate` first")
    return results


def build_summary(reports: Path, cohorts: list[str], out: Path, methods: list[str], proposed: list[str],
                  tuning_root: Path | None = None) -> str:
    """Write the summary page; returns a one-line message. `tuning_root` (<paths.tuning>) adds how each
    method was tuned (its `<cohort>/<method>/study.json`, clinfuse tune)."""
    primary, secondary, per_label, metric_of = [], [], {}, {}
    for c in cohorts:
        results = _evaluations(reports / c / "runs")
        metric_of[c] = results[0]["test"]["headline"]
        for r in results:
            primary.append({"cohort": c, "method": r["method"], "seed": r["seed"], "value": r["test"][metric_of[c]]})
            for metric in SECONDARY:
                if isinstance(r["test"].get(metric), float):
                    secondary.append({"cohort": c, "method": r["method"], "seed": r["seed"], "metric": metric,
                                      "value": r["test"][metric]})
        if results[0]["task_type"] == "multilabel":
            per_label[c] = pd.DataFrame([{"method": r["method"], "seed": r["seed"], "label": lab, "auprc": v["auprc"]}
                                         for r in results for lab, v in r["test"]["per_label"].items()])
    order = [m for m in methods if any(p["method"] == m for p in primary)]
    order += sorted({p["method"] for p in primary} - set(order))
    t1 = cross_cohort_table(pd.DataFrame(primary), "value", proposed)
    table1 = {(r.cohort, r.method): r._asdict() for r in t1.itertuples(index=False)}
    table7 = {}
    if secondary:
        sec = pd.DataFrame(secondary)
        for metric, group in sec.groupby("metric", sort=False):
            t = cross_cohort_table(group, "value", proposed)
            for r in t.itertuples(index=False):
                table7.setdefault((r.cohort, metric), {})[r.method] = r._asdict()
        table7 = dict(sorted(table7.items()))
    table6 = {}
    for c, frame in per_label.items():
        wide, ranks = per_label_table(frame)
        cols = [m for m in order if m in wide.columns]
        rows = []
        for label, row in wide[cols].iterrows():
            vals = {m: (None if pd.isna(row[m]) else float(row[m])) for m in cols}
            scored = {m: v for m, v in vals.items() if v is not None}
            rows.append({"label": label, "scores": vals, "best": max(scored, key=scored.get) if scored else None})
        table6[c] = {"methods": cols, "rows": rows, "ranks": {m: float(v) for m, v in ranks.items()}}
    out.parent.mkdir(parents=True, exist_ok=True)
    reports_links = {c: os.path.relpath(reports / c / "report.html", out.parent) for c in cohorts}
    env = Environment(loader=FileSystemLoader(TEMPLATES), autoescape=select_autoescape(["html", "j2"]))
    html = env.get_template("summary.html.j2").render(
        title="clinfuse: results across cohorts", cohorts=cohorts, methods=order, metric_of=metric_of,
        proposed=proposed, table1=table1, table6=table6, table7=table7, reports=reports_links,
        generated=dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        tuning=_tuning(tuning_root, cohorts, order) if tuning_root else None)
    write_text(out, html)
    return f"summary: {len(cohorts)} cohorts, {len(order)} methods -> {out}"


def _tuning(root: Path, cohorts: list[str], methods: list[str]) -> dict[str, list[dict]]:
    """cohort -> per-method tuning rows (evaluation.tuning), for the cohorts and methods that have a study."""
    from clinfuse.evaluation.tuning import tuning_rows

    out = {}
    for c in cohorts:
        studies = [json.loads((root / c / m / "study.json").read_text()) for m in methods
                   if (root / c / m / "study.json").is_file()]
        if studies:
            out[c] = tuning_rows(studies, figures=False)
    return out
