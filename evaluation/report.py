"""Render the per-task HTML report from plain data (no file or MLflow access here).

The report is one self-contained file (inline CSS, figures as data URIs) for a
clinical reader: cohort and exclusions, per-label results with 95 % CIs,
curves, calibration, method comparison, subgroups, settings and data versions.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader, select_autoescape

TEMPLATES = Path(__file__).parent / "templates"


@dataclass
class LabelRow:
    """One row of the per-label table (values of the best-validation run of each method)."""

    label: str
    prevalence: float | None
    n_pos: int
    by_method: dict[str, dict[str, Any]]  # method -> {auprc, auprc_ci, auroc, auroc_ci}
    best_method: str | None


@dataclass
class ReportData:
    """Everything the report shows. Numbers are plain floats (None = not computable)."""

    title: str
    dataset: str
    task: str
    task_type: str
    headline_metric: str
    methods: list[str]
    cohort_counts: dict[str, int]
    exclusions: list[dict[str, Any]]
    prevalence: dict[str, dict[str, float]]  # split -> label -> prevalence
    label_rows: list[LabelRow]
    excluded_labels: list[str]
    comparison: list[dict[str, Any]]  # method, n_seeds, headline mean/std, auroc mean/std, ranks
    paired_difference: dict[str, Any] | None  # MASAM vs late fusion
    calibration: list[dict[str, Any]]  # method -> brier, slope, intercept
    subgroups: list[dict[str, Any]]  # records from evaluation.subgroups, for the champion run
    figures: dict[str, str] = field(default_factory=dict)  # name -> base64 PNG
    settings: dict[str, Any] = field(default_factory=dict)
    data_versions: dict[str, Any] = field(default_factory=dict)
    champion: dict[str, Any] = field(default_factory=dict)
    generated: str = ""
    synthetic: bool | None = None  # cohort built from the generator's exports (True), real (False), unknown (None)
    why: dict[str, Any] | None = None  # the "Why" section (pipeline.stages.analyze), figures as base64 PNG
    summary_link: str | None = None  # relative link to the cross-cohort summary page


def fmt(value, digits: int = 3) -> str:
    return "—" if value is None else f"{value:.{digits}f}"


def fmt_ci(value, ci, digits: int = 3) -> str:
    if value is None:
        return "—"
    if not ci or ci[0] is None:
        return fmt(value, digits)
    return f"{value:.{digits}f} ({ci[0]:.{digits}f}–{ci[1]:.{digits}f})"


def render_report(data: ReportData) -> str:
    env = Environment(loader=FileSystemLoader(TEMPLATES), autoescape=select_autoescape(["html", "j2"]))
    env.filters["fmt"] = fmt
    env.globals["fmt_ci"] = fmt_ci
    return env.get_template("report.html.j2").render(d=data)
