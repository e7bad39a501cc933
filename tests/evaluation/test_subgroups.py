import numpy as np
import pandas as pd

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
