"""The report's data: one pure function of the evaluated runs, the cohort and the settings.

Which methods are compared, against which reference and with which bootstrap seed comes from
the settings (params.yaml analyze.proposed / analyze.reference / evaluate.seed), not from the code.
"""

from __future__ import annotations

import dataclasses
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from clinfuse.evaluation.bootstrap import paired_bootstrap_difference
from clinfuse.evaluation.report_data import (
    Predictions,
    ReportSettings,
    _ceiling,
    _features,
    _multiclass,
    _number_or_none,
    _prevalence,
    _registry_status,
    _run_settings,
    build_report_data,
    report_metrics,
    report_settings,
    runs_table,
    verdicts_record,
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


def test_the_why_section_shows_how_the_efficiency_timings_were_measured():
    setup = {"repeats": 20, "warmup": 3, "threads": 4, "process": "one per method", "memory": "peak allocated",
             "clock": "perf_counter"}
    eff = {"methods": [{"method": "m", "step": {"median": 0.1}}], "device": "cpu", "batch": 8, **setup,
           "extra": "not shown"}
    why = why_section({**_analysis([1]), "efficiency": eff}, {}, seed=1)
    assert why["efficiency_setup"] == setup
    assert why["efficiency"] == [{"method": "m", "step": {"median": 0.1}}]
    assert why["efficiency_device"] == "cpu, batch 8"


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


# ---- the pure helpers, on hand-made inputs (no pipeline) ----

def _params(rule="target_sensitivity"):
    sweep = SimpleNamespace(methods=("late_fusion", "masam"), seeds=(1, 2))
    analyze = SimpleNamespace(proposed=("masam",), reference="late_fusion")
    evaluate = SimpleNamespace(n_resamples=200, ci_level=0.9, min_subgroup_patients=30, min_events=5,
                               threshold_rule=rule, target_sensitivity=0.8, seed=7)
    train = SimpleNamespace(preset="small", epochs=3, batch_size=16, optimizer="adamw", lr=0.001, weight_decay=0.01,
                            schedule="cosine")
    return sweep, analyze, evaluate, train


def test_the_report_settings_carry_params_yaml_and_show_each_row_as_written():
    s = report_settings(*_params())
    assert (s.methods, s.proposed, s.reference, s.seeds) == (["late_fusion", "masam"], ["masam"], "late_fusion", [1, 2])
    assert (s.n_resamples, s.seed, s.level) == (200, 7, 0.9)
    assert s.shown == {"bootstrap resamples": 200, "CI level": 0.9, "min subgroup patients": 30,
                       "min events (positives and negatives)": 5,
                       "operating-point rule": "target_sensitivity (sensitivity >= 0.8)", "model preset": "small",
                       "epochs": 3, "batch size": 16, "optimizer": "adamw lr 0.001 wd 0.01", "schedule": "cosine",
                       "seeds": (1, 2)}


def test_an_operating_point_rule_without_a_target_is_shown_without_one():
    assert report_settings(*_params("youden")).shown["operating-point rule"] == "youden"


def test_the_runs_table_has_one_row_per_run_with_its_headline_and_auroc():
    runs = [{"method": "a", "seed": 1, "test": {"headline": "macro_map", "macro_map": 0.5, "macro_auroc": 0.7}},
            {"method": "b", "seed": 2, "test": {"headline": "macro_map", "macro_map": 0.4, "macro_auroc": 0.6}}]
    assert runs_table(runs).to_dict("records") == [{"method": "a", "seed": 1, "headline": 0.5, "auroc": 0.7},
                                                   {"method": "b", "seed": 2, "headline": 0.4, "auroc": 0.6}]


def _comparison(method="masam", reference="late_fusion", t_interval=True):
    return {"method": method, "reference": reference, "verdict": "better", "line": f"{method} beats {reference}",
            "n_seeds": 2, "seeds": [1, 2], "n_test": 40, "n_test_patients": 30,
            "training_variance_measured": True,
            "macro_auprc": {"difference": 0.05, "ci": [0.01, 0.09], "mde": 0.03,
                            "t_interval": {"ci": [0.0, 0.1]} if t_interval else None}}


def test_the_verdicts_record_keeps_each_comparisons_line_and_macro_auprc_numbers():
    data = SimpleNamespace(synthetic=True, headline_metric="macro_auprc", seeds_measured=True,
                           comparison=[{"method": "masam", "n_seeds": 2}, {"method": "late_fusion", "n_seeds": 3}],
                           verdicts=[_comparison(), _comparison("sam", "masam", t_interval=False)],
                           champion_margin={"within_noise": False})
    first = {"method": "masam", "reference": "late_fusion", "verdict": "better", "line": "masam beats late_fusion",
             "n_seeds": 2, "seeds": [1, 2], "n_test": 40, "n_test_patients": 30, "training_variance_measured": True,
             "difference": 0.05, "ci": [0.01, 0.09], "mde": 0.03, "t_interval": [0.0, 0.1]}
    assert verdicts_record(data, "adni") == {
        "cohort": "adni", "synthetic": True, "headline": "macro_auprc", "seeds_measured": True,
        "n_seeds": {"masam": 2, "late_fusion": 3},
        "verdicts": [first, {**first, "method": "sam", "reference": "masam", "line": "sam beats masam",
                             "t_interval": None}],
        "champion_margin": {"within_noise": False}}


def _report(paired=None, verdicts=None, margin=None):
    """The fields of ReportData that report_metrics reads, champion masam seed 2."""
    return SimpleNamespace(
        headline_metric="macro_auprc", champion={"value": 0.4}, paired_difference=paired,
        runs=[{"method": "late_fusion", "seed": 1, "val_metric": "val_macro_auprc", "val": 0.3, "champion": False},
              {"method": "masam", "seed": 2, "val_metric": "val_macro_auprc", "val": 0.5, "champion": True}],
        comparison=[], verdicts=verdicts, champion_margin=margin)


def test_the_dvc_detail_of_a_seed_aware_paired_difference_has_its_mde_and_seed_count():
    block = {"difference": 0.02, "ci": [-0.01, 0.05], "p_le_zero": 0.2, "mde": 0.04}
    paired = {"a": "masam", "b": "late_fusion", "seeds": [1, 2], "n_seeds": 2, "macro_auprc": block,
              "macro_auroc": {**block, "difference": 0.01}}
    _, detail, about = report_metrics(_report(paired), "adni")
    row = {"difference": 0.02, "ci_low": -0.01, "ci_high": 0.05, "p_le_zero": 0.2, "mde": 0.04, "n_seeds": 2}
    assert detail["paired_difference"] == {"macro_auprc": row, "macro_auroc": {**row, "difference": 0.01}}
    assert (about["paired_difference"]["a"], about["paired_difference"]["b"]) == ("masam", "late_fusion")
    assert about["paired_difference"]["seeds"] == [1, 2]
    assert about["paired_difference"]["meaning"].startswith("test macro AUPRC/AUROC of a minus b, mean over the seeds")


def test_the_dvc_about_of_a_one_seed_paired_difference_names_its_seed():
    block = {"difference": 0.02, "ci": [-0.01, 0.05], "p_le_zero": 0.2}
    paired = {"a": "masam", "b": "late_fusion", "seed": 42, "macro_auprc": block, "macro_auroc": block}
    _, detail, about = report_metrics(_report(paired), "adni")
    assert about["paired_difference"]["seeds"] == [42]
    assert "mde" not in detail["paired_difference"]["macro_auprc"]


def test_the_dvc_about_holds_the_verdict_lines_and_whether_the_champions_margin_is_noise():
    _, _, about = report_metrics(_report(verdicts=[_comparison(), _comparison("sam")],
                                         margin={"within_noise": True}), "adni")
    assert about["verdicts"] == ["masam beats late_fusion", "sam beats late_fusion"]
    assert about["champion_validation_margin_within_noise"] is True
    assert about["champion_method"] == "masam" and about["validation_metric"] == "val_macro_auprc"
    _, detail, about = report_metrics(_report(), "adni")
    assert "verdicts" not in about and "champion_validation_margin_within_noise" not in about
    assert detail["champion"] == {"test_headline": 0.4, "val_headline": 0.5, "seed": 2}


def test_the_champions_own_training_config_replaces_the_params_yaml_training_rows():
    shown = {"CI level": 0.95, "model preset": "small", "epochs": 3, "batch size": 16, "optimizer": "adamw",
             "schedule": "cosine"}
    champion = {"training": {"lr": 0.1, "epochs": 5}, "method_options": {"rho": 0.05}}
    assert _run_settings(shown, champion) == {"CI level": 0.95,
                                              "champion training config": '{"epochs": 5, "lr": 0.1}',
                                              "champion method options": '{"rho": 0.05}'}
    assert _run_settings(shown, {}) == {**shown, "champion method options": "{}"}
    assert shown["epochs"] == 3  # the caller's table is left as it was


def test_the_prevalence_per_split_is_the_exact_share_and_an_empty_split_is_left_out():
    samples = pd.DataFrame({"split": ["train", "train", "train", "test", "test"], "a": [1, 0, 0, 1, 1],
                            "b": [0, 0, 1, 0, 1]})
    cohort = SimpleNamespace(samples=samples, task_type="binary", label_names=["a", "b"], manifest={})
    assert _prevalence(cohort) == {"train": {"a": 1 / 3, "b": 1 / 3}, "test": {"a": 1.0, "b": 0.5}}


def test_a_multiclass_prevalence_is_each_class_codes_share():
    samples = pd.DataFrame({"split": ["train", "train", "train", "train", "val"], "dx": [0, 2, 2, 1, 1]})
    cohort = SimpleNamespace(samples=samples, task_type="multiclass", label_names=["CN", "MCI", "AD"],
                             manifest={"label_columns": ["dx"]})
    assert _prevalence(cohort) == {"train": {"CN": 0.25, "MCI": 0.25, "AD": 0.5},
                                   "val": {"CN": 0.0, "MCI": 1.0, "AD": 0.0}}


def test_the_multiclass_block_has_counts_rates_accuracy_and_per_class_rates():
    champion = {"test": {"confusion_matrix": [[3, 1], [0, 2]], "accuracy": 5 / 6},
                "class_rates": {"accuracy": {"value": 5 / 6, "ci": [0.5, 1.0]}, "per_class": {"CN": {"n_pos": 4}}}}
    assert _multiclass(champion, ["CN", "AD"]) == {
        "classes": ["CN", "AD"], "counts": [[3, 1], [0, 2]], "row_normalised": [[0.75, 0.25], [0.0, 1.0]],
        "accuracy": {"value": 5 / 6, "ci": [0.5, 1.0]}, "per_class": {"CN": {"n_pos": 4}}}


def test_a_multiclass_block_without_class_rates_shows_the_accuracy_without_a_ci():
    block = _multiclass({"test": {"confusion_matrix": [[1, 0], [1, 2]], "accuracy": 0.75}}, ["CN", "AD"])
    assert block["accuracy"] == {"value": 0.75, "ci": None} and block["per_class"] == {}
    assert _multiclass({"test": {"accuracy": 0.75}}, ["CN", "AD"]) is None  # evaluated before the matrix existed


def test_the_features_block_groups_encodings_by_source_column_and_gives_each_reason():
    manifest = {"tabular_features": ["AGE", "TAU_missing", "TAU_censored", "TAU", "ADAS13", "PTGENDER=Male"],
                "tabular": {"dropped_missing": {"PIB": 0.95}},
                "config": {"exclude_features": ["MMSE"], "max_missing": 0.5, "smc": "cn"}, "smc_labelled_cn": 2}
    assert _features(manifest) == {
        "used": [{"column": "AGE", "encoded": ["AGE"]},
                 {"column": "TAU", "encoded": ["TAU_missing", "TAU_censored", "TAU"]},
                 {"column": "ADAS13", "encoded": ["ADAS13"]}, {"column": "PTGENDER", "encoded": ["PTGENDER=Male"]}],
        "n_encoded": 6,
        "excluded": [{"column": "MMSE", "reason": "excluded by setting (etl_adni.exclude_features): ADNI's CN / MCI "
                                                  "/ AD diagnosis is partly derived from it, so it would leak the "
                                                  "label"}],
        "dropped": [{"column": "PIB", "reason": "95.0% missing in the training split (limit 50%)"}],
        "kept_scores": ["ADAS13"], "smc": "cn", "smc_labelled_cn": 2}


def test_a_features_block_without_a_config_assumes_the_default_missing_limit():
    features = _features({"tabular_features": ["AGE"], "tabular": {"dropped_missing": {"PIB": 0.95}}})
    assert features["dropped"] == [{"column": "PIB", "reason": "95.0% missing in the training split (limit 90%)"}]
    assert (features["excluded"], features["smc"], features["smc_labelled_cn"]) == ([], None, None)
    assert _features({"tabular_features": ["AGE"]})["dropped"] == []


def test_an_unregistered_cohort_names_the_model_as_register_will():
    status = _registry_status(None, {"run": "r1"}, "adni-model")
    assert (status["name"], status["version"]) == ("adni-model", None)
    assert status["note"].startswith("registered after this report by `clinfuse register`")


def test_a_registry_record_of_the_champions_run_is_shown_without_a_note():
    record = {"run": "/mlruns/x/r1", "name": "adni-model", "version": 3, "champion": True, "model_uri": "models:/a/3"}
    assert _registry_status(record, {"run": "r1"}, "other") == {
        "name": "adni-model", "version": 3, "champion_alias": True, "model_uri": "models:/a/3", "note": None}


def test_a_registry_record_of_another_run_says_to_register_again():
    status = _registry_status({"run": "/mlruns/x/r0"}, {"run": "r1"}, "adni-model")
    assert (status["name"], status["version"], status["champion_alias"], status["model_uri"]) == (
        "adni-model", None, None, None)
    assert status["note"] == "registered from run r0, not this report's champion r1: run clinfuse register again"


def _oracle():
    return {"n": 10, "seen": {"all": ["h0"], "ehr": ["h0"]}, "all": {"macro_auprc": 0.9, "macro_auroc": 0.95},
            "ehr": {"macro_auprc": 0.8, "macro_auroc": 0.85}, "film": {"macro_auprc": 0.6, "macro_auroc": 0.7}}


def test_the_ceiling_lists_every_run_in_table_order_with_its_paired_and_withheld_scores():
    presence = {"image": "film", "anchor": "ehr", "paired": {"macro_auprc": 0.7}, "withheld": {"macro_auprc": 0.6}}
    results = [{"method": "b", "seed": 2, "test": {"macro_auprc": 0.5}, "oracle": _oracle(), "presence": presence},
               {"method": "b", "seed": 1, "test": {"macro_auprc": 0.4}},
               {"method": "a", "seed": 1, "test": {}, "oracle": None, "presence": {**presence, "paired": None}}]
    c = _ceiling(results, ["a", "b"])
    assert [(r["method"], r["seed"]) for r in c["rows"]] == [("a", 1), ("b", 1), ("b", 2)]
    assert [r["score"] for r in c["rows"]] == [None, 0.4, 0.5]
    assert c["rows"][2]["withheld_loss"] == pytest.approx(0.1)  # 0.7 paired - 0.6 withheld
    assert [r["withheld_loss"] for r in c["rows"][:2]] == [None, None]
    assert (c["image"], c["anchor"], c["oracle_image"], c["oracle_anchor"]) == ("film", "ehr", 0.6, 0.8)
    assert c["auroc"] == {"all": 0.95, "ehr": 0.85} and c["seen"] == {"all": ["h0"], "ehr": ["h0"]}


def test_the_ceiling_without_a_presence_block_withholds_the_cxr_from_the_ehr():
    c = _ceiling([{"method": "a", "seed": 1, "test": {"macro_auprc": 0.5}, "oracle": _oracle()}], ["a"])
    assert (c["image"], c["anchor"]) == ("cxr", "ehr")
    assert _ceiling([{"method": "a", "seed": 1, "test": {}}], ["a"]) is None


@pytest.mark.parametrize("value, shown", [(None, None), (float("nan"), None), (np.int64(2), 2.0), (0.5, 0.5)])
def test_a_missing_or_nan_number_is_shown_as_none_and_any_other_as_a_float(value, shown):
    assert _number_or_none(value) == shown and (shown is None or type(_number_or_none(value)) is float)


# ---- the whole report on hand-made runs: six stays, two labels, perfect or perfectly inverted scores ----

_Y = np.array([[1, 0], [0, 1], [1, 1], [0, 0], [1, 0], [0, 1]])
_RIGHT = [[.9, .1], [.2, .8], [.7, .6], [.1, .2], [.6, .3], [.3, .9]]  # every positive above every negative
_WRONG = [[.1, .7], [.6, .1], [.2, .2], [.7, .8], [.3, .9], [.8, .3]]  # every positive below every negative
# AUPRC of _WRONG per label: positives at ranks 4, 5, 6 -> (1/4 + 2/5 + 3/6) / 3 = 0.38333; AUROC 0


def _tiny_run(method, seed, val, p, **extra):
    from clinfuse.evaluation.bootstrap import bootstrap_label_cis
    from clinfuse.evaluation.calibration import calibration_summary
    from clinfuse.evaluation.metrics import task_metrics

    p = np.asarray(p, float)
    doc = {"run": f"{method}-s{seed}", "method": method, "seed": seed, "labels": ["a", "b"],
           "validation": {"metric": "val_macro_auprc", "value": val, "best_epoch": 2, "epochs_run": 3},
           "test": task_metrics("multilabel", _Y, p, ["a", "b"]),
           "ci": bootstrap_label_cis(_Y, p, np.arange(6), ["a", "b"], 5, 0, 0.95, min_events=1),
           "calibration": calibration_summary(_Y, p, ["a", "b"], 2), "subgroups": {"sex": []}, **extra}
    return doc, Predictions(_Y, p, np.arange(6))


def _tiny_report(runs=None, manifest=None, task_type="multilabel", seeds=(1,), **kw):
    runs = runs or [_tiny_run("masam", 1, 0.8, _RIGHT), _tiny_run("late_fusion", 1, 0.5, _WRONG),
                    _tiny_run("late_fusion", 2, 0.6, _RIGHT)]
    manifest = {k: v for k, v in {"dataset": "mimic-iv", "task": "phenotype", **(manifest or {})}.items()
                if v is not None}  # None removes a key
    cohort = SimpleNamespace(name="tiny", manifest=manifest,
                             task_type=task_type, label_names=["a", "b"], registered_model_name="tiny-model",
                             samples=pd.DataFrame({"split": ["test"] * 6, "a": _Y[:, 0], "b": _Y[:, 1]}))
    settings = ReportSettings(methods=["late_fusion", "masam"], proposed=["masam"], reference="late_fusion",
                              seeds=list(seeds), n_resamples=20, seed=0, level=0.95,
                              shown={"CI level": 0.95, "operating-point rule": "youden"})
    return build_report_data([r for r, _ in runs], [p for _, p in runs], cohort, "Tiny", settings,
                             **{"sources": {}, "generated": "now", **kw})


def test_the_runs_table_lists_every_run_in_table_order_and_flags_the_champion_and_each_methods_best():
    data = _tiny_report()
    assert [(r["method"], r["seed"], r["run"]) for r in data.runs] == [
        ("late_fusion", 1, "late_fusion-s1"), ("late_fusion", 2, "late_fusion-s2"), ("masam", 1, "masam-s1")]
    assert [(r["champion"], r["best_of_method"]) for r in data.runs] == [(False, False), (False, True), (True, True)]
    assert [r["test"] for r in data.runs] == [pytest.approx(0.38333, abs=1e-5), 1.0, 1.0]
    assert [r["val"] for r in data.runs] == [0.5, 0.6, 0.8]
    assert data.runs[0] | {"test": None} == {
        "method": "late_fusion", "seed": 1, "run": "late_fusion-s1", "val_metric": "val_macro_auprc", "val": 0.5,
        "best_epoch": 2, "epochs_run": 3, "still_improving": False, "test": None, "mlflow_run_id": None,
        "champion": False, "best_of_method": False}
    assert data.champion == {"method": "masam", "seed": 1, "value": 1.0, "ci": data.champion["ci"], "undefined": None}
    assert data.champion["ci"] is not None and data.headline_metric == "macro_auprc"


def test_the_comparison_averages_each_methods_seeds_and_ranks_it_per_label():
    late, masam = _tiny_report().comparison
    assert (late["method"], late["n_seeds"], masam["method"], masam["n_seeds"]) == ("late_fusion", 2, "masam", 1)
    assert late["headline_mean"] == pytest.approx((0.38333 + 1) / 2, abs=1e-5)
    assert late["headline_std"] == pytest.approx((1 - 0.38333) / np.sqrt(2), abs=1e-5)  # sample std of two seeds
    assert late["auroc_mean"] == 0.5 and late["auroc_std"] == pytest.approx(1 / np.sqrt(2))
    assert (masam["headline_mean"], masam["auroc_mean"]) == (1.0, 1.0) and masam["headline_std"] is None
    assert (late["rank_auprc"], late["rank_auroc"], masam["rank_auprc"], masam["rank_auroc"]) == (2.0, 2.0, 1.0, 1.0)


def test_each_label_row_shows_every_methods_best_run_and_names_the_highest_auprc():
    masam, late = _tiny_run("masam", 1, 0.8, _RIGHT), _tiny_run("late_fusion", 1, 0.5, _WRONG)
    for doc, _ in (masam, late):
        doc["ci"]["per_label"]["b"] = {"auprc_ci": [0.1, 0.2], "auroc_ci": [0.3, 0.4]}
    masam[0]["ci"]["min_events"] = 4  # 3 positives, 3 negatives: too few for a CI
    a, b = _tiny_report([masam, late]).label_rows
    assert [(r.label, r.prevalence, r.n_pos, r.best_method, r.few_events) for r in (a, b)] == [
        ("a", 0.5, 3, "masam", True), ("b", 0.5, 3, "masam", True)]
    assert b.by_method == {"masam": {"auprc": 1.0, "auroc": 1.0, "auprc_ci": [0.1, 0.2], "auroc_ci": [0.3, 0.4]},
                           "late_fusion": {"auprc": pytest.approx(0.38333, abs=1e-5), "auroc": 0.0,
                                           "auprc_ci": [0.1, 0.2], "auroc_ci": [0.3, 0.4]}}
    assert not _tiny_report().label_rows[0].few_events  # min_events 1


def test_the_paired_table_and_the_forest_plot_compare_the_proposed_method_with_the_reference():
    data = _tiny_report()
    verdict = data.verdicts[0]
    assert (verdict["method"], verdict["reference"], verdict["unit"]) == ("masam", "late_fusion", "stays")
    assert data.paired_difference == {"a": "masam", "b": "late_fusion", "seeds": [1], "n_seeds": 1,
                                      "macro_auprc": verdict["macro_auprc"], "macro_auroc": verdict["macro_auroc"]}
    # on seed 1 only, the one both have: 1 - 0.38333 and 1 - 0
    assert verdict["macro_auprc"]["difference"] == pytest.approx(0.61667, abs=1e-5)
    assert verdict["macro_auroc"]["difference"] == 1.0
    assert [(f["method"], f["baseline"], [r["label"] for r in f["rows"]]) for f in data.forest] == [
        ("masam", "late_fusion", ["a", "b"])]
    assert sorted(data.figures) == ["forest:masam:late_fusion", "reliability"]
    assert [label for label, _ in data.curves] == ["a", "b"]
    assert data.seeds_measured is False and data.champion_margin is None


def test_a_cohort_not_from_mimic_counts_samples_not_stays():
    assert _tiny_report(manifest={"dataset": "adni"}).verdicts[0]["unit"] == "samples"


def test_the_calibration_table_has_each_methods_best_run_pooled_numbers():
    data = _tiny_report()
    assert [c["method"] for c in data.calibration] == ["late_fusion", "masam"]
    assert set(data.calibration[0]) == {"method", "brier", "slope", "intercept", "slope_note"}
    # the best late_fusion run (seed 2) and masam score alike: the same pooled Brier
    assert data.calibration[0]["brier"] == data.calibration[1]["brier"] == pytest.approx(
        np.mean((np.asarray(_RIGHT) - _Y) ** 2))


def test_the_report_header_shows_the_manifest_the_sources_and_a_synthetic_warning():
    manifest = {"synthetic": True, "counts": {"stays": 6}, "exclusions": [{"reason": "x"}], "warnings": ["w"],
                "created": "2026-01-01", "schema_version": 3}
    sources = {"ehr": {"path": "ehr.csv", "bytes": 1234, "modified": "yesterday"}, "cxr": {"path": "cxr/"}}
    data = _tiny_report(manifest=manifest, sources=sources, generated="today")
    assert (data.title, data.synthetic, data.dataset, data.task, data.task_type) == (
        "SYNTHETIC DATA: Tiny", True, "mimic-iv", "phenotype", "multilabel")
    assert (data.cohort_counts, data.exclusions, data.cohort_warnings) == ({"stays": 6}, [{"reason": "x"}], ["w"])
    assert data.data_versions == {"cohort": "tiny", "cohort created": "2026-01-01", "cohort schema version": 3,
                                  "source: ehr": "ehr.csv (1,234 bytes, modified yesterday)", "source: cxr": "cxr/"}
    assert (data.generated, data.methods, data.prevalence) == ("today", ["late_fusion", "masam"],
                                                               {"test": {"a": 0.5, "b": 0.5}})
    plain = _tiny_report()
    assert (plain.title, plain.synthetic, plain.cohort_counts, plain.exclusions, plain.cohort_warnings) == (
        "Tiny", None, {}, [], [])
    bare = _tiny_report(manifest={"dataset": None, "task": None})
    assert (bare.dataset, bare.task) == ("", "")


def test_the_report_carries_the_champions_blocks_and_the_settings_it_ran_with():
    runs = [_tiny_run("masam", 1, 0.8, _RIGHT, operating_points={"a": 1}, mlflow_run_id="abc",
                      method_options={"rho": 0.1}),
            _tiny_run("late_fusion", 1, 0.5, _WRONG)]
    data = _tiny_report(runs, provenance={"commit": "c0"}, summary_link="../summary.html")
    assert data.operating_points == {"a": 1} and data.runs[1]["mlflow_run_id"] == "abc"
    assert data.settings == {"CI level": 0.95, "operating-point rule": "youden",
                             "champion method options": '{"rho": 0.1}'}
    assert data.provenance["commit"] == "c0" and data.provenance["registry"]["name"] == "tiny-model"
    assert data.summary_link == "../summary.html" and data.excluded_labels == runs[0][0]["test"]["excluded_labels"]
    assert data.subgroups == {"sex": []} and data.min_events == 1 and data.n_resamples == 20
    assert data.reliability_bins == runs[0][0]["calibration"]["pooled"]["reliability"]
    assert (data.multiclass, data.features, data.ceiling, data.why, data.explain) == (None, None, None, None, None)
    from clinfuse.evaluation.method_notes import method_note

    assert data.method_notes == [method_note("late_fusion"), method_note("masam")]


def test_a_binary_cohort_gets_a_decision_curve():
    runs = [_tiny_run("masam", 1, 0.8, _RIGHT), _tiny_run("late_fusion", 1, 0.5, _WRONG)]
    for doc, _ in runs:  # keep label a only
        doc["labels"] = ["a"]
    runs = [(doc, pred._replace(y=pred.y[:, :1], p=pred.p[:, :1])) for doc, pred in runs]
    data = _tiny_report(runs, task_type="binary")
    assert sorted(data.figures) == ["decision_curve", "forest:masam:late_fusion", "reliability"]
    assert [r.label for r in data.label_rows] == ["a"]


def test_a_multiclass_cohort_drops_the_operating_point_rule_and_shows_its_confusion_matrix():
    from clinfuse.evaluation.metrics import task_metrics

    codes = np.array([0, 1, 1, 0, 0, 1])
    runs = []
    for method, val, p in (("masam", 0.8, _RIGHT), ("late_fusion", 0.5, _WRONG)):
        doc, pred = _tiny_run(method, 1, val, p)
        doc["test"] = task_metrics("multiclass", codes, pred.p / pred.p.sum(1, keepdims=True), ["a", "b"])
        doc["test"]["confusion_matrix"] = [[2, 1], [0, 3]]
        runs.append((doc, pred))
    data = _tiny_report(runs, task_type="multiclass", manifest={"label_columns": ["a"]})
    assert "operating-point rule" not in data.settings and data.settings["CI level"] == 0.95
    assert data.multiclass["counts"] == [[2, 1], [0, 3]] and data.multiclass["classes"] == ["a", "b"]
    assert [r.label for r in data.label_rows] == ["a", "b"] and data.headline_metric == "macro_map"
    assert "decision_curve" not in data.figures


def test_masams_design_alternatives_are_each_compared_with_masam():
    runs = [_tiny_run("masam", 1, 0.8, _RIGHT), _tiny_run("masam_gamma_only", 1, 0.5, _WRONG),
            _tiny_run("late_fusion", 1, 0.4, _WRONG)]
    data = _tiny_report(runs)
    assert [d["method"] for d in data.design_alternatives] == ["masam", "masam_gamma_only"]
    paired = data.design_alternatives[1]["paired"]
    assert (paired["method"], paired["reference"]) == ("masam_gamma_only", "masam")
    assert paired["macro_auprc"]["difference"] == pytest.approx(0.38333 - 1, abs=1e-5)
    assert data.design_alternatives[0]["paired"] is None
    assert [(c["method"], c["reference"]) for c in data.verdicts].count(("masam_gamma_only", "masam")) == 1


def test_with_validation_predictions_the_report_says_whether_the_champions_margin_is_noise():
    runs = [_tiny_run("masam", 1, 0.8, _RIGHT), _tiny_run("late_fusion", 1, 0.5, _WRONG)]
    margin = _tiny_report(runs, val_predictions=[p for _, p in runs]).champion_margin
    assert (margin["champion"]["method"], margin["runner_up"]["method"]) == ("masam", "late_fusion")
    assert margin["difference"] == pytest.approx(1 - 0.38333, abs=1e-5)
    assert margin["level"] == 0.95 and margin["n_val"] == 6


def test_the_why_section_shows_the_settings_first_seed_and_the_registry_record_is_shown():
    record = {"run": "runs/masam-s1", "name": "tiny-model", "version": 2}
    data = _tiny_report(analysis=(_analysis([1, 3]), {}), registry_record=record)
    assert [r["trace_per_param"] for r in data.why["flatness"]] == [1.0]
    assert data.provenance["registry"]["version"] == 2 and data.provenance["registry"]["note"] is None
    assert data.explain is None  # the analysis holds no explanations
    later = _tiny_report(analysis=(_analysis([1, 3]), {}), seeds=(3, 1))
    assert [r["trace_per_param"] for r in later.why["flatness"]] == [3.0]


def test_a_cohort_with_tabular_inputs_lists_them():
    data = _tiny_report(manifest={"tabular_features": ["AGE"]})
    assert data.features["used"] == [{"column": "AGE", "encoded": ["AGE"]}]


def test_the_still_improving_flag_and_the_headline_undefined_reason_reach_the_report():
    masam = _tiny_run("masam", 1, 0.8, _RIGHT, headline_undefined="no positives")
    masam[0]["validation"]["still_improving"] = 1
    data = _tiny_report([masam, _tiny_run("late_fusion", 1, 0.5, _WRONG)])
    assert data.champion["undefined"] == "no positives"
    assert [r["still_improving"] for r in data.runs] == [False, True]


def test_predictions_that_do_not_match_the_runs_one_for_one_are_refused():
    runs = [_tiny_run("masam", 1, 0.8, _RIGHT), _tiny_run("late_fusion", 1, 0.5, _WRONG)]
    with pytest.raises(ValueError):
        build_report_data([r for r, _ in runs], [runs[0][1]], SimpleNamespace(), "Tiny", None, sources={},
                          generated="now")


def test_the_champions_ci_is_that_of_the_headline_else_of_the_macro_auprc():
    masam = _tiny_run("masam", 1, 0.8, _RIGHT)
    masam[0]["ci"].update(macro_auprc_ci=[0.1, 0.2], macro_map_ci=[0.3, 0.4])
    runs = [masam, _tiny_run("late_fusion", 1, 0.5, _WRONG)]
    assert _tiny_report(runs).champion["ci"] == [0.1, 0.2]
    for doc, _ in runs:  # a multiclass headline
        doc["test"].update(headline="macro_map", macro_map=doc["test"]["macro_auprc"])
    assert _tiny_report(runs).champion["ci"] == [0.3, 0.4]
    del masam[0]["ci"]["macro_map_ci"]
    assert _tiny_report(runs).champion["ci"] == [0.1, 0.2]


def test_the_figures_are_drawn_with_their_titles_baselines_and_units():
    from unittest import mock

    import clinfuse.evaluation.report_data as rd

    with mock.patch.object(rd, "reliability_figure", return_value="R") as reliability, \
            mock.patch.object(rd, "forest_figure", return_value="F") as forest:
        data = _tiny_report()
    assert reliability.call_args.args[2] == "Reliability (all labels pooled, quantile bins)"
    assert sorted(reliability.call_args.args[0]) == sorted(reliability.call_args.args[1]) == ["late_fusion", "masam"]
    rows, baseline, method = forest.call_args.args
    assert (baseline, method, forest.call_args.kwargs) == ("late_fusion", "masam", {"unit": "label", "n_seeds": 1})
    assert [r["label"] for r in rows] == ["a", "b"] and data.figures["forest:masam:late_fusion"] == "F"
    runs = [_tiny_run("masam", 1, 0.8, _RIGHT), _tiny_run("late_fusion", 1, 0.5, _WRONG)]
    for doc, _ in runs:
        doc["labels"] = ["a"]
    runs = [(doc, pred._replace(y=pred.y[:, :1], p=pred.p[:, :1])) for doc, pred in runs]
    with mock.patch.object(rd, "reliability_figure", return_value="R") as reliability:
        _tiny_report(runs, task_type="binary")
    assert reliability.call_args.args[2] == "Reliability (quantile bins)"


def test_a_multiclass_forest_plot_counts_classes():
    from unittest import mock

    import clinfuse.evaluation.report_data as rd
    from clinfuse.evaluation.metrics import task_metrics

    runs = []
    for method, val, p in (("masam", 0.8, _RIGHT), ("late_fusion", 0.5, _WRONG)):
        doc, pred = _tiny_run(method, 1, val, p)
        doc["test"] = task_metrics("multiclass", np.array([0, 1, 1, 0, 0, 1]), pred.p / pred.p.sum(1, keepdims=True),
                                   ["a", "b"])
        runs.append((doc, pred))
    with mock.patch.object(rd, "forest_figure", return_value="F") as forest:
        _tiny_report(runs, task_type="multiclass", manifest={"label_columns": ["a"]})
    assert forest.call_args.kwargs["unit"] == "class"


def test_a_method_neither_proposed_nor_the_reference_is_compared_with_the_reference():
    runs = [_tiny_run("masam", 1, 0.8, _RIGHT), _tiny_run("late_fusion", 1, 0.5, _WRONG),
            _tiny_run("sam", 1, 0.6, _RIGHT)]
    pairs = [(c["method"], c["reference"]) for c in _tiny_report(runs).verdicts]
    assert ("sam", "late_fusion") in pairs and ("late_fusion", "sam") not in pairs


def test_a_calibration_slope_that_could_not_be_estimated_says_why():
    masam = _tiny_run("masam", 1, 0.8, _RIGHT)
    masam[0]["calibration"]["pooled"]["slope_note"] = "separated"
    data = _tiny_report([masam, _tiny_run("late_fusion", 1, 0.5, _WRONG)])
    assert {c["method"]: c["slope_note"] for c in data.calibration}["masam"] == "separated"


def test_a_synthetic_cohorts_runs_are_measured_against_the_oracle_ceiling():
    masam = _tiny_run("masam", 1, 0.8, _RIGHT, oracle=_oracle())
    data = _tiny_report([masam, _tiny_run("late_fusion", 1, 0.5, _WRONG)])
    assert data.ceiling["oracle_all"] == 0.9
    assert [(r["method"], r["gap_to_ceiling"]) for r in data.ceiling["rows"]] == [
        ("late_fusion", pytest.approx(0.9 - 0.38333, abs=1e-5)), ("masam", pytest.approx(-0.1))]
