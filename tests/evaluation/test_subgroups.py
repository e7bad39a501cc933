import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import average_precision_score

from clinfuse.evaluation.subgroups import race_group, subgroup_metrics


def test_small_groups_are_marked_not_hidden():
    rng = np.random.default_rng(0)
    n = 60
    frame = pd.DataFrame({"patient_id": np.arange(n), "sex": ["F"] * 55 + ["M"] * 5, "age": rng.uniform(20, 90, n),
                          "race": ["WHITE"] * 50 + ["ASIAN - CHINESE"] * 10, "has_cxr": [True] * 40 + [False] * 20})
    y = (rng.random((n, 2)) < 0.4).astype(int)
    s = rng.random((n, 2)) + 0.3 * y
    rec = subgroup_metrics(frame, y, s, ["a", "b"], "mimic", ["ehr", "cxr"], n_resamples=50, seed=42,
                           level=0.95, min_patients=10, min_events=5)
    by = {(r["attribute"], r["group"]): r for r in rec}
    assert by[("sex", "M")]["too_small"] and by[("sex", "M")]["macro_auprc_ci"] is None
    assert not by[("sex", "F")]["too_small"] and by[("sex", "F")]["macro_auprc_ci"][0] is not None
    assert ("cxr present", "no") in by and ("race", "ASIAN") in by


def test_race_strings_are_grouped():
    assert race_group("WHITE - OTHER EUROPEAN") == "WHITE"
    assert race_group("BLACK/AFRICAN AMERICAN") == "BLACK"
    assert race_group("HISPANIC/LATINO - PUERTO RICAN") == "HISPANIC/LATINO"
    assert race_group("UNABLE TO OBTAIN") == "UNKNOWN"
    assert race_group("AMERICAN INDIAN/ALASKA NATIVE") == "OTHER"


def test_a_subgroup_ci_resamples_patients_not_rows_when_patients_have_several_stays():
    # 20 patients with 3 stays each, all in one subgroup: its CI must be the patient bootstrap's
    # (each patient's 3 rows drawn together), which a bootstrap over the 60 rows does not reproduce.
    from clinfuse.evaluation.bootstrap import bootstrap_label_cis

    rng = np.random.default_rng(1)
    patients = np.repeat(np.arange(20), 3)
    y = np.repeat((rng.random((20, 1)) < 0.5).astype(int), 3, axis=0)
    s = rng.random((60, 1)) + 0.4 * y
    frame = pd.DataFrame({"patient_id": patients, "sex": ["F"] * 60, "age": np.full(60, 50.0)})
    rec = subgroup_metrics(frame, y, s, ["a"], "mimic", ["ehr"], n_resamples=200, seed=7, level=0.95,
                           min_patients=10, min_events=5)
    group = next(r for r in rec if (r["attribute"], r["group"]) == ("sex", "F"))
    assert group["n"] == 60 and group["n_patients"] == 20
    by_patient = bootstrap_label_cis(y, s, patients, ["a"], 200, 7, 0.95, min_valid=1, min_events=5)
    by_row = bootstrap_label_cis(y, s, np.arange(60), ["a"], 200, 7, 0.95, min_valid=1, min_events=5)
    assert group["macro_auroc_ci"] == by_patient["macro_auroc_ci"]
    assert group["macro_auprc_ci"] == by_patient["macro_auprc_ci"]
    assert by_row["macro_auroc_ci"] != by_patient["macro_auroc_ci"]  # the case tells the two apart


def test_unknown_and_south_american_race_strings_are_grouped_whatever_their_case():
    for race in ("UNKNOWN", "unable to obtain", "Patient Declined To Answer", "nan", "None", "", None, float("nan")):
        assert race_group(race) == "UNKNOWN", race
    assert race_group("SOUTH AMERICAN") == "HISPANIC/LATINO"
    assert race_group("asian - korean") == "ASIAN" and race_group("white") == "WHITE"
    assert race_group("black/cape verdean") == "BLACK" and race_group("MULTIPLE RACE/ETHNICITY") == "OTHER"


def test_an_age_band_includes_its_lower_bound_and_excludes_its_upper():
    from clinfuse.evaluation.subgroups import MIMIC_AGE_BANDS, age_band

    ages = pd.Series([17.9, 18, 44.9, 45, 64.9, 65, 79.9, 80, 199, 200])
    assert age_band(ages, MIMIC_AGE_BANDS).tolist() == ["unknown", "18-44", "18-44", "45-64", "45-64", "65-79",
                                                        "65-79", "80+", "80+", "unknown"]


def test_a_presence_column_is_a_yes_no_subgroup_only_when_it_varies():
    from clinfuse.evaluation.subgroups import subgroup_columns

    frame = pd.DataFrame({"patient_id": [0, 1, 2], "sex": ["F", "M", "F"], "age": [50.0, 60.0, 70.0],
                          "has_cxr": [True, False, True], "has_ehr": [True, True, True]})
    groups = subgroup_columns(frame, "mimic", ["ehr", "cxr"])
    assert list(groups) == ["sex", "age band", "cxr present"]  # no race column, every stay has its EHR
    assert groups["cxr present"].tolist() == ["yes", "no", "yes"]
    assert groups["age band"].tolist() == ["45-64", "45-64", "65-79"]
    with_race = subgroup_columns(frame.assign(race=["WHITE", "ASIAN", "UNKNOWN"]), "mimic", [])
    assert with_race["race"].tolist() == ["WHITE", "ASIAN", "UNKNOWN"]


def test_unknown_ages_come_after_the_bands_and_other_groups_sort_by_name():
    from clinfuse.evaluation.subgroups import group_order

    assert group_order("age band", ["unknown", "80+", "18-44"], "mimic") == ["18-44", "80+", "unknown"]
    assert group_order("sex", ["M", "F"], "mimic") == ["F", "M"]


def _ten_patients(y):
    frame = pd.DataFrame({"patient_id": np.arange(10), "sex": ["F"] * 10, "age": np.full(10, 50.0)})
    s = np.linspace(0.05, 0.95, 10)[:, None] + np.zeros_like(y, float)
    return frame, np.asarray(y), s


def test_exactly_the_minimum_patients_and_events_is_enough_for_a_ci():
    frame, y, s = _ten_patients(np.array([[0], [1]] * 5))  # 10 patients, 5 positives, 5 negatives
    rec = subgroup_metrics(frame, y, s, ["x"], "mimic", [], n_resamples=30, seed=0, level=0.95, min_patients=10,
                           min_events=5)
    sex = next(r for r in rec if r["attribute"] == "sex")
    assert {k: sex[k] for k in ("n", "n_patients", "n_pos", "n_neg", "labels_averaged", "labels_total", "too_small",
                                "too_small_reason", "labels_left_out")} == {
        "n": 10, "n_patients": 10, "n_pos": [5], "n_neg": [5], "labels_averaged": 1, "labels_total": 1,
        "too_small": False, "too_small_reason": None, "labels_left_out": []}
    assert sex["macro_auroc_ci"] is not None and sex["macro_auprc_ci"] is not None
    # positives at ranks 2, 4, ..., 10 of 10 rising scores: 1 + 2 + 3 + 4 + 5 = 15 of 25 pairs ordered
    assert sex["macro_auroc"] == pytest.approx(0.6)
    assert all(isinstance(c, int) for c in sex["n_pos"] + sex["n_neg"])  # counts, not floats, in the JSON


def test_a_group_below_the_patient_minimum_counts_only_its_non_degenerate_labels():
    # label b has no positive among the 10 patients: it is excluded from the point estimate
    frame, y, s = _ten_patients(np.column_stack([np.array([0, 1] * 5), np.zeros(10, int)]))
    (sex, _age) = subgroup_metrics(frame, y, s, ["a", "b"], "mimic", [], n_resamples=30, seed=0, level=0.95,
                                   min_patients=11, min_events=5)
    assert sex["too_small"] and sex["too_small_reason"] == "10 patients < 11"
    assert sex["labels_averaged"] == 1 and sex["labels_total"] == 2 and sex["labels_left_out"] == ["b"]
    assert (sex["n_pos"], sex["n_neg"]) == ([5, 0], [5, 10]) and sex["macro_auprc_ci"] is None
    assert sex["macro_auprc"] == pytest.approx(average_precision_score(y[:, 0], s[:, 0]))
    assert sex["macro_auroc"] == pytest.approx(0.6)


def test_too_small_reasons_count_in_words_singular_and_plural():
    frame, y, s = _ten_patients(np.array([[0], [1]] * 5))
    one = subgroup_metrics(frame.iloc[:1], y[:1], s[:1], ["x"], "mimic", [], n_resamples=10, seed=0, level=0.95,
                           min_patients=2, min_events=1)
    assert one[0]["too_small_reason"] == "1 patient < 2"
    # rows 1, 2, 3: positives at 1 and 3, one negative
    few = subgroup_metrics(frame.iloc[1:4], y[1:4], s[1:4], ["x"], "mimic", [], n_resamples=10, seed=0, level=0.95,
                           min_patients=3, min_events=5)
    assert few[0]["too_small_reason"] == "2 positives, 1 negative (< 5)"


def test_a_multilabel_group_without_enough_events_in_any_label_says_so():
    frame, y, s = _ten_patients(np.column_stack([np.array([0, 1] * 5), np.array([0, 1] * 5)]))
    (sex, _age) = subgroup_metrics(frame, y, s, ["a", "b"], "mimic", [], n_resamples=30, seed=0, level=0.95,
                                   min_patients=10, min_events=6)
    assert sex["too_small"] and sex["too_small_reason"] == "no label with >= 6 positives and >= 6 negatives"
    assert sex["labels_averaged"] == 2 and sex["macro_auroc"] is not None
