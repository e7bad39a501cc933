"""reports/summary.html: the verdicts and the paper's tables (1, 6, 7 style) across cohorts.

Reads reports/<cohort>/runs/*/metrics.json (clinfuse evaluate) and reports/<cohort>/verdicts.json
(clinfuse report: the synthetic marker, each comparison's verdict line, the champion's validation margin).
A cohort with one seed for some method is shown without spread, ranks, bold winners or percentage gains.
The registered version of each cohort (reports/<cohort>/registry.json, clinfuse register) is listed
when there is one: the cohort reports are written before `clinfuse register` runs, so this page is
where the version shows.
With a tuning folder, <tuning>/<cohort>/<method>/study.json (clinfuse tune) adds how each method was tuned.
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
from clinfuse.evaluation.report import TEMPLATES, fmt, metric_name

SECONDARY = ("macro_auroc", "micro_auprc", "micro_auroc", "accuracy")
MLFLOW_UI = "http://127.0.0.1:5000"  # `make mlflow-ui`


def registered_versions(reports: Path, cohorts: list[str]) -> list[dict]:
    """One row per cohort: its registered version from reports/<cohort>/registry.json, or `version` None."""
    rows = []
    for c in cohorts:
        path = reports / c / "registry.json"
        records = json.loads(path.read_text()) if path.is_file() else []
        record = (records[0] if isinstance(records, list) and records else records) or {}
        name, version = record.get("name"), record.get("version")
        rows.append({"cohort": c, "name": name, "version": version, "champion": bool(record.get("champion")),
                     "run": Path(str(record["run"])).name if record.get("run") else None,
                     "val_metric": record.get("val_metric"),
                     "ui": f"{MLFLOW_UI}/#/models/{name}/versions/{version}" if name and version else None})
    return rows


def _evaluations(folder: Path) -> list[dict]:
    results = [json.loads(p.read_text()) for p in sorted(folder.glob("*/metrics.json"))]
    if not results:
        raise InputError(f"{folder}: no evaluated runs (*/metrics.json); run `clinfuse evaluate` first")
    return results


def _verdicts(folder: Path) -> dict | None:
    """The cohort's verdicts.json (written by `clinfuse report`), or None before the report has run."""
    path = folder / "verdicts.json"
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise InputError(f"{path}: not valid JSON ({e.msg}, line {e.lineno}); run `clinfuse report` again") from e


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
    table7: dict[tuple[str, str], dict[str, dict]] = {}
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
            rows.append({"label": label, "scores": vals, "best": max(scored, key=lambda m: scored[m]) if scored else None})
        table6[c] = {"methods": cols, "rows": rows, "ranks": {m: float(v) for m, v in ranks.items()}}
    # a cohort where any method has one seed: training variance unmeasured, so no spread, rank, bold or gain
    seeds_measured = {c: bool(len(t1[t1.cohort == c])) and int(t1[t1.cohort == c].n_seeds.min()) >= 2
                      for c in cohorts}
    verdicts = {c: _verdicts(reports / c) for c in cohorts}
    synthetic = [c for c in cohorts if (verdicts[c] or {}).get("synthetic")]
    unknown = [c for c in cohorts if (verdicts[c] or {}).get("synthetic") is None]
    out.parent.mkdir(parents=True, exist_ok=True)
    reports_links = {c: os.path.relpath(reports / c / "report.html", out.parent) for c in cohorts}
    env = Environment(loader=FileSystemLoader(TEMPLATES), autoescape=select_autoescape(["html", "j2"]))
    env.filters["metric_name"] = metric_name
    env.filters["fmt"] = fmt
    title = "clinfuse: results across cohorts"
    html = env.get_template("summary.html.j2").render(
        title=f"SYNTHETIC DATA: {title}" if synthetic else title, cohorts=cohorts, methods=order,
        metric_of=metric_of, proposed=proposed, table1=table1, table6=table6, table7=table7, reports=reports_links,
        seeds_measured=seeds_measured, unmeasured=[c for c in cohorts if not seeds_measured[c]], verdicts=verdicts, synthetic=synthetic, provenance_unknown=unknown,
        registry=registered_versions(reports, cohorts),
        generated=dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        tuning=_tuning(tuning_root, cohorts, order) if tuning_root else None)
    write_text(out, html)
    n_verdicts = sum(len(v["verdicts"]) for v in verdicts.values() if v)
    return f"summary: {len(cohorts)} cohorts, {len(order)} methods, {n_verdicts} verdicts -> {out}"


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
