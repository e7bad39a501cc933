"""With one seed the report and the summary claim no spread, no winner, no ranking and no gains, and say
why; with several seeds they show them. The summary carries the synthetic marker and the verdicts."""

from __future__ import annotations

import dataclasses
import json
import re

import numpy as np
import pytest

from clinfuse.evaluation.report import render_report
from clinfuse.evaluation.verdicts import RunScores, compare_methods
from clinfuse.pipeline.stages.summary_tables import build_summary
from tests.evaluation.test_report_layout import wide_report

GAIN = re.compile(r"[+\-−]\d+\.\d%")  # a relative gain such as "+3.0%"


def _verdicts(seeds: list[int]) -> list[dict]:
    rng = np.random.default_rng(0)
    y = (rng.random((30, 1)) < 0.4).astype(int)
    patients = np.arange(30)
    runs, scores = [], []
    for m, lift in (("late_fusion", 0.2), ("masam", 0.4)):
        for s in seeds:
            runs.append({"method": m, "seed": s, "run": f"{m}-s{s}"})
            scores.append(RunScores(y, rng.random((30, 1)) + lift * y, patients))
    return compare_methods(runs, scores, [("masam", "late_fusion")], ["Shock"], 100, 0, 0.95)


def _comparison_section(html: str) -> str:
    return html[html.index('id="sec-comparison"'):html.index('id="sec-methods"') if 'id="sec-methods"' in html
                else len(html)]


def test_a_one_seed_report_shows_no_spread_ranking_bold_or_gain_and_says_why():
    data = dataclasses.replace(wide_report(), verdicts=_verdicts([42]), seeds_measured=False)
    html = render_report(data)
    section = _comparison_section(html)
    assert "Training variance is not measured" in section
    assert "avg rank" not in section and 'class="best"' not in section
    assert "± 0.000" not in html and not GAIN.search(section)
    assert "n/a (1 seed)" in section
    assert "masam vs late_fusion:" in section and "(this one seed only: training variance not measured)" in section
    assert "with one seed it includes test-patient variance only" in section
    per_label = html[html.index('id="per-label"'):html.index("</table>", html.index('id="per-label"'))]
    assert 'class="best"' not in per_label


def test_a_report_with_seeds_shows_ranks_and_the_interval_includes_training_variance():
    data = dataclasses.replace(wide_report(), verdicts=_verdicts([1, 2, 3]), seeds_measured=True)
    section = _comparison_section(render_report(data))
    assert "avg rank (AUPRC)" in section and "Training variance is not measured" not in section
    assert "includes <b>training variance (seeds) and test-sampling variance (patients)</b>" in section
    assert "3 seeds × 30 test stays" in section


def test_the_report_says_when_the_champions_validation_margin_is_within_noise():
    margin = {"champion": {"method": "masam", "seed": 42, "run": "masam-s42"},
              "runner_up": {"method": "late_fusion", "seed": 42, "run": "late_fusion-s42"},
              "difference": 0.001, "ci": [-0.014, 0.011], "level": 0.95, "n_val": 58, "n_val_patients": 55,
              "within_noise": True}
    html = render_report(dataclasses.replace(wide_report(), champion_margin=margin))
    text = html[html.index('id="champion-margin"'):]
    assert "0.001 (−0.014 to 0.011)" in text and "<b>Within noise</b>" in text


def _cohort(reports, name: str, seeds: list[int], synthetic: bool | None, values: dict[str, list[float]]):
    for method, per_seed in values.items():
        for seed, v in zip(seeds, per_seed, strict=True):
            folder = reports / name / "runs" / f"{method}-s{seed}"
            folder.mkdir(parents=True)
            (folder / "metrics.json").write_text(json.dumps({
                "method": method, "seed": seed, "task_type": "multilabel",
                "test": {"headline": "macro_auprc", "macro_auprc": v, "macro_auroc": v + 0.2,
                         "per_label": {"Shock": {"auprc": v}, "Sepsis": {"auprc": v - 0.1}}}}))
    if synthetic is not None:
        (reports / name / "verdicts.json").write_text(json.dumps({
            "cohort": name, "synthetic": synthetic, "headline": "macro_auprc", "seeds_measured": len(seeds) > 1,
            "verdicts": [{"method": "masam", "reference": "late_fusion", "verdict": "no difference detectable",
                          "line": f"masam vs late_fusion: no difference detectable ({name})"}],
            "champion_margin": {"champion": {"method": "masam", "seed": seeds[0]},
                                "runner_up": {"method": "late_fusion", "seed": seeds[0]},
                                "difference": 0.001, "ci": [-0.01, 0.012], "within_noise": True}}))


def _summary(tmp_path, seeds, synthetic=True) -> str:
    reports = tmp_path / "reports"
    values = {"late_fusion": [0.40, 0.42, 0.41][:len(seeds)], "masam": [0.41, 0.45, 0.43][:len(seeds)]}
    _cohort(reports, "mimic-phenotype", seeds, synthetic, values)
    out = reports / "summary.html"
    build_summary(reports, ["mimic-phenotype"], out, ["late_fusion", "masam"], ["masam"])
    return out.read_text()


def test_a_one_seed_summary_shows_no_spread_bold_rank_or_percentage_gain(tmp_path):
    html = _summary(tmp_path, [42])
    body = html[html.index("<body>"):]
    assert "±" not in body and "rank" not in body.replace("no ranks", "")
    assert 'class="best' not in body and "average rank" not in body
    assert not GAIN.search(body)
    assert "Training variance is not measured</b> for mimic-phenotype" in body
    assert "0.410 (1 seed)" in body


def test_a_summary_with_seeds_shows_spread_ranks_and_gains(tmp_path):
    body = _summary(tmp_path, [1, 2, 3])
    assert "0.430 ± 0.020</span> (3)" in body and "rank 1" in body and GAIN.search(body)
    assert "Training variance is not measured" not in body


def test_the_summary_carries_the_synthetic_marker_the_verdicts_and_one_name_per_metric(tmp_path):
    body = _summary(tmp_path, [42])
    assert 'id="synthetic-banner"' in body and "<h1>SYNTHETIC DATA:" in body
    assert "masam vs late_fusion: no difference detectable (mimic-phenotype)" in body
    assert "within noise, not a demonstrated winner" in body
    assert "macro AUPRC" in body and "macro_auprc" not in body and "macro_auroc" not in body


@pytest.mark.parametrize("synthetic", [False, None])
def test_a_real_cohort_has_no_synthetic_banner_and_a_missing_report_is_named(tmp_path, synthetic):
    body = _summary(tmp_path, [42], synthetic=synthetic)
    assert 'id="synthetic-banner"' not in body
    if synthetic is None:
        assert "No verdicts: run <code>clinfuse report</code> for mimic-phenotype" in body
        assert 'id="provenance-unknown"' in body
