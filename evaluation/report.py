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
    few_events: bool = False  # fewer than min_events positives or negatives: no CI


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
    paired_difference: dict[str, Any] | None  # first proposed method minus the reference method
    calibration: list[dict[str, Any]]  # method -> brier, slope, intercept, slope_note (why no slope)
    subgroups: list[dict[str, Any]]  # records from evaluation.subgroups, for the champion run
    n_resamples: int  # the bootstrap resamples behind every CI shown (evaluation settings)
    figures: dict[str, str] = field(default_factory=dict)  # name -> base64 PNG
    settings: dict[str, Any] = field(default_factory=dict)
    data_versions: dict[str, Any] = field(default_factory=dict)
    champion: dict[str, Any] = field(default_factory=dict)
    generated: str = ""
    synthetic: bool | None = None  # cohort built from the generator's exports (True), real (False), unknown (None)
    # every evaluated run: method, seed, validation (metric, value, best_epoch), test headline, mlflow_run_id
    runs: list[dict[str, Any]] = field(default_factory=list)
    method_notes: list[dict[str, str]] = field(default_factory=list)  # evaluation.method_notes.method_note
    # git commit/dirty, the command, the registered model (pipeline computes them, the report only shows them)
    provenance: dict[str, Any] = field(default_factory=dict)
    multiclass: dict[str, Any] | None = None  # accuracy, confusion matrix, per-class sensitivity/specificity
    features: dict[str, Any] | None = None  # tabular features used / excluded (ADNI)
    operating_points: dict[str, Any] | None = None  # champion's validation-chosen thresholds applied to test
    reliability_bins: list[dict[str, Any]] = field(default_factory=list)  # champion's quantile bins with counts
    forest: list[dict[str, Any]] = field(default_factory=list)  # per (proposed, baseline): per-label differences
    curves: list[tuple[str, str]] = field(default_factory=list)  # (label, inline SVG + legend) per evaluable label
    min_events: int = 5
    design_alternatives: list[dict[str, Any]] = field(default_factory=list)  # MASAM vs its Table 8 designs
    presence: list[dict[str, Any]] = field(default_factory=list)  # evaluation.presence.presence_rows
    ceiling: dict[str, Any] | None = None  # synthetic cohorts: oracle ceiling, each run's gap and withheld loss
    why: dict[str, Any] | None = None  # the "Why" section (evaluation.why), figures as base64 PNG
    explain: dict[str, Any] | None = None  # reliance and cases sections (evaluation.explain_section)
    summary_link: str | None = None  # relative link to the cross-cohort summary page
    # evaluation.verdicts.compare_methods: seed-aware difference, verdict line and per-label Holm per pair
    verdicts: list[dict[str, Any]] = field(default_factory=list)
    seeds_measured: bool = False  # every method has >= 2 seeds: spread, ranks and a bold best are shown
    champion_margin: dict[str, Any] | None = None  # evaluation.verdicts.champion_margin
    cohort_warnings: list[str] = field(default_factory=list)  # manifest.json `warnings` (pipeline/cohort_checks.py)
    tuning: list[dict[str, Any]] | None = None  # evaluation.tuning.tuning_rows: how each method was configured



METRIC_NAMES = {"macro_auprc": "macro AUPRC", "macro_map": "macro AUPRC", "macro_auroc": "macro AUROC",
                "micro_auprc": "micro AUPRC", "micro_auroc": "micro AUROC", "accuracy": "accuracy"}


def metric_name(key: str) -> str:
    """One display name per quantity: the multi-class mAP (mean one-vs-rest average precision) IS the
    macro AUPRC, so both keys read "macro AUPRC"."""
    key = key.removeprefix("val_").removeprefix("test_")
    return METRIC_NAMES.get(key, key.replace("_", " "))


def _num(value: float, digits: int) -> str:
    """Fixed digits with a true minus sign (U+2212), never "-0.000"."""
    text = f"{value:.{digits}f}"
    if text.startswith("-"):
        text = text[1:] if float(text) == 0 else "\u2212" + text[1:]
    return text


def fmt(value, digits: int = 3) -> str:
    return "—" if value is None else _num(value, digits)


def fmt_ci(value, ci, digits: int = 3) -> str:
    """"0.412 (0.380 to 0.440)"; the interval is left out when there is none."""
    if value is None:
        return "—"
    if not ci or ci[0] is None:
        return fmt(value, digits)
    return f"{_num(value, digits)} ({_num(ci[0], digits)} to {_num(ci[1], digits)})"


def fmt_std(std, n_seeds: int, digits: int = 3) -> str:
    """The std over seeds, or "n/a (1 seed)": one seed says nothing about variability."""
    if n_seeds < 2 or std is None:
        return f"n/a ({n_seeds} seed{'s' if n_seeds != 1 else ''})"
    return _num(std, digits)


def render_report(data: ReportData) -> str:
    env = Environment(loader=FileSystemLoader(TEMPLATES), autoescape=select_autoescape(["html", "j2"]))
    env.filters["fmt"] = fmt
    env.filters["metric_name"] = metric_name
    env.globals.update(fmt_ci=fmt_ci, fmt_std=fmt_std, metric_name=metric_name)
    return env.get_template("report.html.j2").render(d=data)
