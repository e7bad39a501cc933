"""dvc.yaml's plots: one chart per label and curve, titled with the label, axes on [0, 1]."""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from clinfuse.etl.adni.labels import CLASS_NAMES
from clinfuse.etl.mimic.phenotypes import PHENOTYPE_NAMES
from clinfuse.pipeline.stages.report import slug

ROOT = Path(__file__).resolve().parents[2]
COHORT_LABELS = {"mimic-phenotype": list(PHENOTYPE_NAMES), "mimic-mortality": ["in_hospital_mortality"],
                 "adni": list(CLASS_NAMES)}


def _plots() -> dict[str, dict]:
    entries = yaml.safe_load((ROOT / "dvc.yaml").read_text())["plots"]
    return {path: spec for entry in entries for path, spec in entry.items()}


def test_every_label_has_a_pr_and_a_roc_chart_titled_with_its_name():
    plots = _plots()
    expected = {f"reports/{c}/plots/{kind}/{slug(lab)}.json": lab
                for c, labels in COHORT_LABELS.items() for lab in labels for kind in ("pr", "roc")}
    assert set(plots) == set(expected) and len(plots) == 2 * (25 + 1 + 3)
    for path, label in expected.items():
        assert label in plots[path]["title"], path


def test_curve_templates_fix_both_axes_to_zero_one_and_draw_pr_stepwise():
    templates = {spec["template"] for spec in _plots().values()}
    assert templates == {"evaluation/templates/dvc/pr_curve.json", "evaluation/templates/dvc/roc_curve.json"}
    for template in templates:
        content = json.loads((ROOT / template).read_text())
        for axis in ("x", "y"):
            assert content["encoding"][axis]["scale"]["domain"] == [0, 1]
        assert "<DVC_METRIC_DATA>" in json.dumps(content)
    pr = json.loads((ROOT / "evaluation/templates/dvc/pr_curve.json").read_text())
    assert pr["mark"]["interpolate"] == "step-before"
