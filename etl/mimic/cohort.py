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

    `age` is the age at admission: anchor_age + (admission year - anchor_year).
    """
    stays = icustays.merge(
        admissions[["hadm_id", "admittime", "dischtime", "deathtime", "race"]], on="hadm_id", how="left"
    ).merge(patients[["subject_id", "gender", "anchor_age", "anchor_year", "dod"]], on="subject_id", how="left")
    for col in ("intime", "outtime", "admittime", "dischtime", "deathtime", "dod"):
        stays[col] = pd.to_datetime(stays[col], errors="coerce")
    stays["age"] = stays["anchor_age"] + (stays["admittime"].dt.year - stays["anchor_year"])
    stays["sex"] = stays["gender"]
    return stays


def select_cohort(stays: pd.DataFrame, task: str, min_age: int, min_stay_hours: float
                  ) -> tuple[pd.DataFrame, Exclusions]:
    """Adults, one ICU stay per admission, no careunit transfer; mortality also needs >= 48 h.

    Phenotype stays shorter than 48 h are kept (the phenotype describes the whole
    admission; the EHR window is still the first 48 h, partly empty).
    """
    steps: Exclusions = [{"step": "ICU stays in icustays", "reason": "", "excluded": 0, "remaining": len(stays)}]
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
