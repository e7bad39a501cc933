"""The report's data: one pure function of the evaluated runs, the cohort and the settings.

Which methods are compared, against which reference and with which bootstrap seed comes from
the settings (params.yaml analyze.proposed / analyze.reference / evaluate.seed), not from the code.
"""

from __future__ import annotations

import dataclasses
from types import SimpleNamespace

import numpy as np
import pytest

from clinfuse.evaluation.bootstrap import paired_bootstrap_difference
from clinfuse.evaluation.report_data import (
    Predictions,
    ReportSettings,
    build_report_data,
    report_metrics,
    runs_table,
)
from clinfuse.evaluation.why import why_section
from clinfuse.pipeline.data import load_cohort
from clinfuse.pipeline.results import load_evaluations, read_predictions
from clinfuse.pipeline.stages.report import cohort_info


@pytest.fixture(scope="module")
def evaluated(pipeline_built):
    root, _, cohort_dir = pipeline_built
    cohort = load_cohort(cohort_dir)
    results = load_evaluations([root / "eval"])
    predictions = [Predictions(*read_predictions(r["_dir"], cohort)) for r in results]
    # two tiny runs may rank every patient alike; shuffle the baseline's scores so the methods differ
    rng = np.random.default_rng(0)
    predictions = [p._replace(p=rng.permutation(p.p)) if r["method"] == "late_fusion" else p
                   for r, p in zip(results, predictions, strict=True)]
    settings = ReportSettings(methods=["late_fusion", "masam"], proposed=["masam"], reference="late_fusion", seeds=[1],
                              n_resamples=30, seed=42, level=0.95, shown={"bootstrap resamples": 30})
    return results, predictions, cohort_info(cohort), settings


def _build(evaluated, **changes):
    results, predictions, cohort, settings = evaluated
    return build_report_data(results, predictions, cohort, "A cohort", dataclasses.replace(settings, **changes),
                             sources={}, generated="now")


def test_the_proposed_method_is_compared_with_every_other_method_on_the_same_patients(evaluated):
    results, predictions, _, settings = evaluated
    data = _build(evaluated)
    assert [(f["method"], f["baseline"], f["seeds"]) for f in data.forest] == [("masam", "late_fusion", [1])]
    by = {r["method"]: p for r, p in zip(results, predictions, strict=True)}
    expected = paired_bootstrap_difference(by["masam"].y, by["masam"].p, by["late_fusion"].p, by["masam"].patient_id,
                                           settings.n_resamples, settings.seed, settings.level)
    assert data.paired_difference["a"] == "masam" and data.paired_difference["b"] == "late_fusion"
    # one seed: the two-level bootstrap is the patient bootstrap, resample for resample
    for key in ("difference", "ci", "n_valid_resamples", "p_le_zero"):
        assert data.paired_difference["macro_auprc"][key] == expected["macro_auprc"][key]
    assert "forest:masam:late_fusion" in data.figures


def test_a_masam_design_alternative_is_compared_with_masam_on_seeds_and_patients(evaluated):
    results, predictions, cohort, settings = evaluated
    renamed = [{**r, "method": "masam_gamma_only"} if r["method"] == "late_fusion" else r for r in results]
    data = build_report_data(renamed, predictions, cohort, "A cohort", settings, sources={}, generated="now")
    masam, alternative = data.design_alternatives
    assert alternative["method"] == "masam_gamma_only" and alternative["paired"]["reference"] == "masam"
    assert ("masam_gamma_only", "masam") in [(c["method"], c["reference"]) for c in data.verdicts]


def test_the_comparison_follows_the_settings_not_the_method_names(evaluated):
    data = _build(evaluated, proposed=["late_fusion"], reference="masam")
    assert [(f["method"], f["baseline"]) for f in data.forest] == [("late_fusion", "masam")]
    assert (data.paired_difference["a"], data.paired_difference["b"]) == ("late_fusion", "masam")


def test_no_paired_table_when_the_reference_method_was_not_run(evaluated):
    data = _build(evaluated, reference="sam")
    assert data.paired_difference is None and len(data.forest) == 1


def test_the_paired_bootstrap_uses_the_settings_seed(evaluated):
    a, b = _build(evaluated, seed=1), _build(evaluated, seed=2)
    assert a.paired_difference["macro_auprc"]["difference"] == b.paired_difference["macro_auprc"]["difference"]
    assert a.paired_difference["macro_auprc"]["ci"] != b.paired_difference["macro_auprc"]["ci"]


def test_the_method_order_is_the_settings_order_then_the_rest_by_name(evaluated):
    assert _build(evaluated, methods=["masam"]).methods == ["masam", "late_fusion"]
    assert _build(evaluated, methods=["late_fusion", "masam"]).methods == ["late_fusion", "masam"]


def test_the_dvc_metrics_and_comparison_table_come_from_the_same_runs(evaluated):
    results = evaluated[0]
    data = _build(evaluated)
    metrics, detail, about = report_metrics(data, "tiny")
    champion = next(r for r in data.runs if r["champion"])
    assert metrics["champion"] == {"tiny": champion["test"]}
    assert detail["champion"] == {"test_headline": champion["test"], "val_headline": champion["val"],
                                  "seed": champion["seed"]}
    assert about["champion_method"] == champion["method"] and about["headline"] == data.headline_metric
    assert sorted(metrics["tiny"]) == sorted(detail["methods"]) == ["late_fusion", "masam"]
    assert metrics["tiny"] == {c["method"]: c["headline_mean"] for c in data.comparison}
    table = runs_table(results)
    assert list(table.columns) == ["method", "seed", "headline", "auroc"] and len(table) == len(results)


def _with_label_auprc(evaluated, values: dict[str, float], label: str):
    """The fixture's runs with `label`'s test AUPRC set by hand per method."""
    import copy

    results, predictions, cohort, settings = evaluated
    results = copy.deepcopy(results)
    for r in results:
        r["test"]["per_label"][label]["auprc"] = values[r["method"]]
    return results, predictions, cohort, settings


@pytest.mark.parametrize("auprc, best", [({"masam": 0.9, "late_fusion": 0.3}, "masam"),
                                         ({"masam": 0.2, "late_fusion": 0.6}, "late_fusion")])
def test_the_best_method_of_a_label_row_is_the_one_with_the_highest_auprc(evaluated, auprc, best):
    label = evaluated[0][0]["labels"][0]
    data = _build(_with_label_auprc(evaluated, auprc, label))
    row = next(r for r in data.label_rows if r.label == label)
    assert row.best_method == best


def test_a_label_row_without_any_auprc_names_no_best_method(evaluated):
    label = evaluated[0][0]["labels"][0]
    data = _build(_with_label_auprc(evaluated, {"masam": None, "late_fusion": None}, label))
    assert next(r for r in data.label_rows if r.label == label).best_method is None


def _analysis(seeds):
    runs = {f"m-s{s}": {"method": "m", "seed": s, "flatness": [{"encoder": "ehr", "trace_per_param": float(s)}]}
            for s in seeds}
    return {"runs": runs, "settings": {"sensitivity_method": "masam"}, "skipped": [], "figures": ["probes"]}


def test_the_why_section_shows_the_sweeps_first_seed_else_the_smallest():
    assert [r["trace_per_param"] for r in why_section(_analysis([7, 3]), {}, seed=7)["flatness"]] == [7.0]
    assert [r["trace_per_param"] for r in why_section(_analysis([7, 3]), {}, seed=5)["flatness"]] == [3.0]


def test_the_why_section_embeds_figures_as_base64_and_names_the_sensitivity_method():
    why = why_section(_analysis([1]), {"probes": b"\x89PNG"}, seed=1)
    assert why["figures"] == {"probes": "iVBORw=="}
    assert why["captions"]["sensitivity"].startswith("MASAM's test metric")


def test_before_registration_the_report_names_the_model_as_clinfuse_register_will(evaluated):
    results, predictions, cohort, settings = evaluated
    partial = SimpleNamespace(**{**vars(cohort), "registered_model_name": "mimic-phenotype-partial"})
    data = build_report_data(results, predictions, partial, "A cohort", settings, sources={}, generated="now")
    assert data.provenance["registry"]["name"] == "mimic-phenotype-partial"
    assert data.provenance["registry"]["version"] is None


def test_a_synthetic_cohorts_report_shows_the_oracle_ceiling_and_each_runs_film_withheld_loss(evaluated):
    import copy

    from clinfuse.evaluation.report import render_report

    results, predictions, cohort, settings = evaluated
    results = copy.deepcopy(results)
    oracle = {"n": results[0]["n_test"], "seen": {"all": ["h0", "h1", "h2", "h3"], "ehr": ["h0", "h1", "h2"],
                                                 "cxr": ["h1", "h3"]},
              "all": {"macro_auprc": 0.9, "macro_auroc": 0.95}, "ehr": {"macro_auprc": 0.8, "macro_auroc": 0.9},
              "cxr": {"macro_auprc": 0.6, "macro_auroc": 0.7}}
    for r in results:
        r["oracle"] = oracle
    data = build_report_data(results, predictions, cohort, "A cohort", settings, sources={}, generated="now")
    c = data.ceiling
    assert c["oracle_all"] == 0.9 and c["oracle_withheld_loss"] == pytest.approx(0.1)
    for row, r in zip(c["rows"], sorted(results, key=lambda r: settings.methods.index(r["method"])), strict=True):
        assert row["gap_to_ceiling"] == pytest.approx(0.9 - r["test"]["macro_auprc"])
        p = r["presence"]
        assert row["withheld_loss"] == pytest.approx(p["paired"]["macro_auprc"] - p["withheld"]["macro_auprc"])
    html = render_report(data)
    assert 'id="ceiling"' in html and "0.900" in html
    assert build_report_data(evaluated[0], predictions, cohort, "A cohort", settings, sources={},
                             generated="now").ceiling is None  # no oracle: a real (or old) cohort


def test_runs_still_improving_at_their_last_epoch_are_flagged_in_the_report(evaluated):
    import copy

    from clinfuse.evaluation.report import render_report

    results, predictions, cohort, settings = evaluated
    results = copy.deepcopy(results)
    for r in results:
        r["validation"].update(epochs_run=2, still_improving=r["method"] == "masam")
    html = render_report(build_report_data(results, predictions, cohort, "A cohort", settings, sources={},
                                           generated="now"))
    assert 'id="still-improving"' in html and "1 of 2 runs were still improving" in html
    for r in results:
        r["validation"]["still_improving"] = False
    html = render_report(build_report_data(results, predictions, cohort, "A cohort", settings, sources={},
                                           generated="now"))
    assert 'id="still-improving"' not in html
