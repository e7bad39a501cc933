"""ICU stay cohort (MedFuse/DrFuse protocol) and in-hospital mortality, as pure table transforms.

Every exclusion is counted by reason, in order, CONSORT style.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

Exclusions = list[dict]
MAX_PLAUSIBLE_AGE = 120  # MIMIC-IV caps anchor_age at 91; anything above 120 is an entry error


def exclusion(steps: Exclusions, step: str, reason: str, before: int, after: int) -> None:
    steps.append({"step": step, "reason": reason, "excluded": int(before - after), "remaining": int(after)})


def join_stays(patients: pd.DataFrame, admissions: pd.DataFrame, icustays: pd.DataFrame) -> pd.DataFrame:
    """One row per ICU stay with its admission and patient columns; datetimes parsed.

    `age` is the age at admission: anchor_age + (admission year - anchor_year). The links between
    the tables are kept for `select_cohort` to check: `admission_subject_id` (the admission's own
    subject_id, NaN when the stay's hadm_id matches no admission) and `has_patient_row`.
    """
    linked_admissions = admissions[["hadm_id", "subject_id", "admittime", "dischtime", "deathtime", "race"]].rename(
        columns={"subject_id": "admission_subject_id"})
    stays = icustays.merge(linked_admissions, on="hadm_id", how="left").merge(
        patients[["subject_id", "gender", "anchor_age", "anchor_year", "dod"]].assign(has_patient_row=True),
        on="subject_id", how="left")
    stays["has_patient_row"] = stays["has_patient_row"].notna().to_numpy()
    for col in ("intime", "outtime", "admittime", "dischtime", "deathtime", "dod"):
        stays[col] = pd.to_datetime(stays[col], errors="coerce")
    stays["age"] = stays["anchor_age"] + (stays["admittime"].dt.year - stays["anchor_year"])
    stays["sex"] = stays["gender"]
    return stays


# Broken links between the tables, each its own CONSORT step (listed only when it excludes a stay, so the
# manifest of a consistent export is what it always was). Checked before age: a stay without its admission
# or patient row has no age, and "age missing" would name the wrong cause.
LINK_CHECKS = [
    ("admission found", "hadm_id matches no row of admissions",
     lambda s: s["admission_subject_id"].notna()),
    ("same patient as the admission", "icustays subject_id differs from its admission's subject_id",
     lambda s: s["admission_subject_id"] == s["subject_id"]),
    ("patient found", "subject_id matches no row of patients", lambda s: s["has_patient_row"]),
    ("consistent admission times", "admission dischtime before admittime",
     lambda s: s["dischtime"] >= s["admittime"]),
]


def _linked(stays: pd.DataFrame, steps: Exclusions) -> pd.DataFrame:
    """The stays whose admission and patient rows exist, belong to the stay's patient and are in time order.

    A stay joined to another patient's admission would take that admission's times, race and
    diagnoses; a discharge before the admission would make any in-hospital death window empty
    (mortality silently 0). Each is excluded and counted under its own reason.
    """
    if "admission_subject_id" not in stays.columns:  # a stays table built without the links (tests of later steps)
        return stays
    for step, reason, keep in LINK_CHECKS:
        n = len(stays)
        stays = stays[keep(stays).to_numpy(dtype=bool)]
        if len(stays) < n:
            exclusion(steps, step, reason, n, len(stays))
    return stays


def select_cohort(stays: pd.DataFrame, task: str, min_age: int, min_stay_hours: float
                  ) -> tuple[pd.DataFrame, Exclusions]:
    """Adults, one ICU stay per admission, no careunit transfer; mortality also needs >= 48 h.

    Phenotype stays shorter than 48 h are kept (the phenotype describes the whole
    admission; the EHR window is still the first 48 h, partly empty).
    """
    steps: Exclusions = [{"step": "ICU stays in icustays", "reason": "", "excluded": 0, "remaining": len(stays)}]
    stays = _linked(stays, steps)
    n = len(stays)
    # Missing, negative or impossible ages are data errors, not children: their own reason.
    stays = stays[stays["age"].between(0, MAX_PLAUSIBLE_AGE)]
    exclusion(steps, "plausible age", f"age at admission missing or outside 0-{MAX_PLAUSIBLE_AGE}", n, len(stays))
    n = len(stays)
    stays = stays[stays["outtime"].isna() | (stays["outtime"] >= stays["intime"])]
    exclusion(steps, "consistent ICU times", "ICU outtime before intime", n, len(stays))
    n = len(stays)
    stays = stays[stays["age"] >= min_age]
    exclusion(steps, "adults", f"age at admission < {min_age}", n, len(stays))
    n = len(stays)
    per_adm = stays.groupby("hadm_id")["stay_id"].transform("size")
    stays = stays[per_adm == 1]
    exclusion(steps, "one ICU stay per admission", "admission has more than one ICU stay", n, len(stays))
    n = len(stays)
    stays = stays[stays["first_careunit"] == stays["last_careunit"]]
    exclusion(steps, "no careunit transfer", "first_careunit != last_careunit", n, len(stays))
    if task == "mortality":
        n = len(stays)
        hours = (stays["outtime"] - stays["intime"]).dt.total_seconds() / 3600
        stays = stays[hours >= min_stay_hours]
        exclusion(steps, f"ICU stay >= {min_stay_hours:g} h", f"ICU stay shorter than {min_stay_hours:g} h", n, len(stays))
    return stays.sort_values("stay_id").reset_index(drop=True), steps


def in_hospital_mortality(stays: pd.DataFrame) -> pd.Series:
    """1 if the patient died during the admission: `deathtime` in [admittime, dischtime],
    or `dod` (a DATE) between the admission and discharge dates."""
    by_time = stays["deathtime"].notna() & (stays["deathtime"] >= stays["admittime"]) & (
        stays["deathtime"] <= stays["dischtime"])
    dod = stays["dod"].dt.normalize()
    by_date = dod.notna() & (dod >= stays["admittime"].dt.normalize()) & (dod <= stays["dischtime"].dt.normalize())
    return (by_time | by_date).astype(np.int8).rename("in_hospital_mortality")
