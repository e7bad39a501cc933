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
