"""Synthetic MIMIC-IV v2.2 export: hosp/ and icu/ tables with the real columns and quirks.

Written in chunks of patients, each from its own seeded generator, so the output
is identical for a seed and memory stays flat however large `scale` makes it.
Quirks reproduced on purpose (the ETL must cope with each): text `value` with
empty `valuenum` (GCS components, rhythm, alarms); temperature charted in F
(223761) and in C (223762); SpO2 sometimes charted as a fraction; 999999
placeholders and out-of-range values; events before `intime` and after 48 h;
stays shorter than 48 h; admissions with two ICU stays; careunit transfers;
patients under 18; deaths recorded by `deathtime` and by `dod` (a DATE) only;
ICD-9 and ICD-10 codes with leading zeros; many itemids the ETL must ignore.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from clinfuse.etl.provenance import write_synthetic_marker

from .csvgz import GzipCsvWriter
from .factors import factor_writer, write_label_model, write_stay_factors
from .latent import N_FACTORS, mortality_logit, phenotype_weights, sigmoid

COLUMNS = {
    "hosp/patients": ["subject_id", "gender", "anchor_age", "anchor_year", "anchor_year_group", "dod"],
    "hosp/admissions": [
        "subject_id", "hadm_id", "admittime", "dischtime", "deathtime", "admission_type", "admit_provider_id",
        "admission_location", "discharge_location", "insurance", "language", "marital_status", "race",
        "edregtime", "edouttime", "hospital_expire_flag",
    ],
    "hosp/diagnoses_icd": ["subject_id", "hadm_id", "seq_num", "icd_code", "icd_version"],
    "hosp/d_icd_diagnoses": ["icd_code", "icd_version", "long_title"],
    "icu/icustays": [
        "subject_id", "hadm_id", "stay_id", "first_careunit", "last_careunit", "intime", "outtime", "los",
    ],
    "icu/chartevents": [
        "subject_id", "hadm_id", "stay_id", "caregiver_id", "charttime", "storetime", "itemid", "value",
        "valuenum", "valueuom", "warning",
    ],
    "icu/d_items": [
        "itemid", "label", "abbreviation", "linksto", "category", "unitname", "param_type", "lownormalvalue",
        "highnormalvalue",
    ],
}

# (itemid, label, abbreviation, category, unit, param_type)
D_ITEMS = [
    (220045, "Heart Rate", "HR", "Routine Vital Signs", "bpm", "Numeric"),
    (220050, "Arterial Blood Pressure systolic", "ABPs", "Routine Vital Signs", "mmHg", "Numeric"),
    (220051, "Arterial Blood Pressure diastolic", "ABPd", "Routine Vital Signs", "mmHg", "Numeric"),
    (220052, "Arterial Blood Pressure mean", "ABPm", "Routine Vital Signs", "mmHg", "Numeric"),
    (220179, "Non Invasive Blood Pressure systolic", "NBPs", "Routine Vital Signs", "mmHg", "Numeric"),
    (220180, "Non Invasive Blood Pressure diastolic", "NBPd", "Routine Vital Signs", "mmHg", "Numeric"),
    (220181, "Non Invasive Blood Pressure mean", "NBPm", "Routine Vital Signs", "mmHg", "Numeric"),
    (225309, "ART BP Systolic", "ART BP Systolic", "Routine Vital Signs", "mmHg", "Numeric"),
    (225310, "ART BP Diastolic", "ART BP Diastolic", "Routine Vital Signs", "mmHg", "Numeric"),
    (225312, "ART BP Mean", "ART BP Mean", "Routine Vital Signs", "mmHg", "Numeric"),
    (220210, "Respiratory Rate", "RR", "Respiratory", "insp/min", "Numeric"),
    (224690, "Respiratory Rate (Total)", "RR (Total)", "Respiratory", "insp/min", "Numeric"),
    (223761, "Temperature Fahrenheit", "Temperature F", "Routine Vital Signs", "°F", "Numeric"),
    (223762, "Temperature Celsius", "Temperature C", "Routine Vital Signs", "°C", "Numeric"),
    (220277, "O2 saturation pulseoxymetry", "SpO2", "Respiratory", "%", "Numeric"),
    (220621, "Glucose (serum)", "Glucose (serum)", "Labs", "mg/dL", "Numeric"),
    (225664, "Glucose finger stick (range 70-100)", "Glucose FS (range 70 -100)", "Routine Vital Signs", "", "Numeric"),
    (226537, "Glucose (whole blood)", "Glucose (whole blood)", "Labs", "mg/dL", "Numeric"),
    (220739, "GCS - Eye Opening", "GCS - Eye Opening", "Neurological", "", "Text"),
    (223900, "GCS - Verbal Response", "GCS - Verbal Response", "Neurological", "", "Text"),
    (223901, "GCS - Motor Response", "GCS - Motor Response", "Neurological", "", "Text"),
    # itemids the ETL must ignore
    (220048, "Heart Rhythm", "Heart Rhythm", "Routine Vital Signs", "", "Text"),
    (223834, "O2 Flow", "O2 Flow", "Respiratory", "L/min", "Numeric"),
    (223835, "Inspired O2 Fraction", "FiO2", "Respiratory", "", "Numeric"),
    (224641, "Alarms On", "Alarms On", "Alarms", "", "Text"),
    (227969, "Safety Measures", "Safety Measures", "Safety", "", "Text"),
    (228096, "Richmond-RAS Scale", "Richmond-RAS Scale", "Neurological", "", "Text"),
    (224639, "Daily Weight", "Daily Weight", "General", "kg", "Numeric"),
    (220339, "PEEP set", "PEEP set", "Respiratory", "cmH2O", "Numeric"),
    (220615, "Creatinine (serum)", "Creatinine (serum)", "Labs", "mg/dL", "Numeric"),
    (220545, "Hematocrit (serum)", "Hematocrit (serum)", "Labs", "%", "Numeric"),
    (220228, "Hemoglobin", "Hemoglobin", "Labs", "g/dl", "Numeric"),
    (225624, "BUN", "BUN", "Labs", "mg/dL", "Numeric"),
    (224054, "Braden Sensory Perception", "Braden Sensory Perception", "Skin - Assessment", "", "Text"),
]


@dataclass(frozen=True)
class Vital:
    """A numeric channel: value = base + w . h + drift * hours/48 + noise."""

    itemids: tuple[int, ...]
    base: float
    weights: tuple[float, float, float, float]
    noise: float
    drift: float
    p_hour: float
    low: float
    high: float


VITALS = {
    "heart_rate": Vital((220045,), 86, (13, 5, 0, 0), 7, 4, 0.95, 30, 200),
    "sbp": Vital((220050, 220179, 225309), 121, (-15, 0, 0, 0), 9, -4, 0.9, 50, 230),
    "dbp": Vital((220051, 220180, 225310), 64, (-8, 0, 0, 0), 7, -2, 0.9, 20, 140),
    "mbp": Vital((220052, 220181, 225312), 80, (-10, 0, 0, 0), 7, -3, 0.9, 30, 170),
    "resp_rate": Vital((220210, 224690), 19, (2, 4, 0, 0), 3, 1, 0.9, 4, 50),
    "temperature": Vital((223762, 223761), 37.0, (0.35, 0, 0.45, 0), 0.3, 0.2, 0.25, 33.5, 41.5),
    "spo2": Vital((220277,), 96.5, (0, -2.2, 0, 0), 1.4, -0.5, 0.9, 70, 100),
    "glucose": Vital((220621, 225664, 226537), 135, (12, 0, 28, 0), 22, 5, 0.12, 40, 500),
}
PLACEHOLDER = 999999

GCS_TEXT = {
    220739: {4: "Spontaneously", 3: "To Speech", 2: "To Pain", 1: "No Response"},
    223900: {5: "Oriented", 4: "Confused", 3: "Inappropriate Words", 2: "Incomprehensible sounds", 1: "No Response"},
    223901: {
        6: "Obeys Commands", 5: "Localizes Pain", 4: "Flex-withdraws", 3: "Abnormal Flexion",
        2: "Abnormal extension", 1: "No response",
    },
}
NOISE_TEXT = {
    220048: ["SR (Sinus Rhythm)", "ST (Sinus Tachycardia)", "AF (Atrial Fibrillation)", "SB (Sinus Bradycardia)"],
    224641: ["Yes"],
    227969: ["Bed locked in low position", "Side rails up x2", "Call light within reach"],
    228096: [" 0  Alert and calm", "-1 Drowsy", "-2 Light sedation", "+1 Restless"],
    224054: ["Exposure", "Slightly Limited", "No Impairment"],
}
NOISE_NUMERIC = {223834: (2, 6), 223835: (40, 100), 224639: (60, 120), 220339: (5, 12),
                 220615: (0.6, 3.0), 220545: (25, 40), 220228: (8, 13), 225624: (10, 60)}

CAREUNITS = [
    "Medical Intensive Care Unit (MICU)", "Surgical Intensive Care Unit (SICU)",
    "Cardiac Vascular Intensive Care Unit (CVICU)", "Medical/Surgical Intensive Care Unit (MICU/SICU)",
    "Coronary Care Unit (CCU)", "Trauma SICU (TSICU)", "Neuro Surgical Intensive Care Unit (Neuro SICU)",
]
YEAR_GROUPS = ["2008 - 2010", "2011 - 2013", "2014 - 2016", "2017 - 2019", "2020 - 2022"]
RACES = ["WHITE", "WHITE", "WHITE", "BLACK/AFRICAN AMERICAN", "HISPANIC/LATINO - PUERTO RICAN",
         "ASIAN - CHINESE", "WHITE - OTHER EUROPEAN", "OTHER", "UNKNOWN", "UNABLE TO OBTAIN"]
# Codes that belong to none of the 25 benchmark phenotypes (history/status/external-cause codes).
FILLER_CODES = {9: ["V1582", "E8497", "V4986", "V1251"], 10: ["Z87891", "Z7901", "Y92239", "Z66"]}


def load_phenotype_codes() -> tuple[list[str], dict[int, dict[str, list[str]]]]:
    """Phenotype names (file order) and {version: {phenotype: [codes]}} from phenotype_codes.csv."""
    path = Path(__file__).with_name("phenotype_codes.csv")
    names: list[str] = []
    codes: dict[int, dict[str, list[str]]] = {9: {}, 10: {}}
    with open(path, newline="") as fh:
        rows = csv.DictReader(line for line in fh if not line.startswith("#"))
        for row in rows:
            if row["phenotype"] not in names:
                names.append(row["phenotype"])
            codes[int(row["icd_version"])].setdefault(row["phenotype"], []).append(row["icd_code"])
    return names, codes


def _fmt(ts: np.ndarray) -> np.ndarray:
    """datetime64[s] -> 'YYYY-MM-DD HH:MM:SS' strings."""
    return np.char.replace(np.datetime_as_string(np.asarray(ts).astype("datetime64[s]"), unit="s"), "T", " ")


def _hours(h: np.ndarray) -> np.ndarray:
    return (np.asarray(h) * 3600).astype("timedelta64[s]")


@dataclass
class Chunk:
    """One chunk of generated tables plus what the CXR generator needs per stay."""

    tables: dict[str, pd.DataFrame]
    stays: pd.DataFrame  # subject_id, hadm_id, stay_id, intime, outtime, h0..h3


def generate_chunk(seed: int, chunk_index: int, first_subject: int, n_subjects: int) -> Chunk:
    """Generate all MIMIC-IV rows for `n_subjects` patients (ids from `first_subject`)."""
    rng = np.random.default_rng([seed, chunk_index])
    names, codes = load_phenotype_codes()
    w, b = phenotype_weights(len(names))

    # --- patients ---------------------------------------------------------------------
    subj = np.arange(first_subject, first_subject + n_subjects)
    h_pat = rng.normal(size=(n_subjects, N_FACTORS))
    minor = rng.random(n_subjects) < 0.07
    age = np.where(minor, rng.integers(15, 18, n_subjects), rng.integers(20, 91, n_subjects))
    anchor_year = rng.integers(2110, 2186, n_subjects)
    group_idx = rng.integers(0, len(YEAR_GROUPS), n_subjects)
    gender = rng.choice(["F", "M"], n_subjects)

    # --- admissions (8 % of patients have a second one) ----------------------------------
    n_adm = 1 + (rng.random(n_subjects) < 0.08)
    adm_pat = np.repeat(np.arange(n_subjects), n_adm)
    n_a = len(adm_pat)
    hadm = 20_000_000 + (subj[adm_pat] - 10_000_000) * 3 + (np.arange(n_a) - np.searchsorted(adm_pat, adm_pat))
    year_start = (anchor_year[adm_pat] - 1970).astype("datetime64[Y]").astype("datetime64[s]")
    admit = year_start + (rng.integers(0, 300, n_a) * 86400 + rng.integers(0, 86400, n_a)).astype("timedelta64[s]")
    second = np.arange(n_a) != np.searchsorted(adm_pat, adm_pat)
    admit = admit + np.where(second, 400 * 86400, 0).astype("timedelta64[s]")
    h_adm = h_pat[adm_pat] + rng.normal(scale=0.3, size=(n_a, N_FACTORS))

    # --- ICU stays (6 % of admissions have two; 8 % transfer careunit; 15 % < 48 h) ----
    n_stay = 1 + (rng.random(n_a) < 0.06)
    stay_adm = np.repeat(np.arange(n_a), n_stay)
    n_s = len(stay_adm)
    stay_id = 30_000_000 + (hadm[stay_adm] - 20_000_000) * 2 + (np.arange(n_s) - np.searchsorted(stay_adm, stay_adm))
    short = rng.random(n_s) < 0.15
    icu_hours = np.where(short, rng.uniform(8, 47, n_s), rng.uniform(50, 220, n_s))
    pre_icu = rng.uniform(1, 30, n_s)
    second_stay = np.arange(n_s) != np.searchsorted(stay_adm, stay_adm)
    first_of = np.searchsorted(stay_adm, stay_adm)
    intime = admit[stay_adm] + _hours(pre_icu)
    # a second stay starts after the first one ends
    intime = np.where(second_stay, intime[first_of] + _hours(icu_hours[first_of] + rng.uniform(6, 30, n_s)), intime)
    outtime = intime + _hours(icu_hours)
    unit = rng.integers(0, len(CAREUNITS), n_s)
    transfer = rng.random(n_s) < 0.08
    last_unit = np.where(transfer, (unit + 1 + rng.integers(0, len(CAREUNITS) - 1, n_s)) % len(CAREUNITS), unit)

    last_out = pd.Series(outtime).groupby(stay_adm).max().to_numpy().astype("datetime64[s]")
    disch = last_out + _hours(rng.uniform(12, 150, n_a))
    died = rng.random(n_a) < sigmoid(mortality_logit(h_adm))
    by_dod_only = died & (rng.random(n_a) < 0.3)
    deathtime = np.where(died & ~by_dod_only, disch, np.datetime64("NaT"))
    # patient-level dod: in-hospital death date, or a later out-of-hospital death for some survivors
    dod = np.full(n_subjects, np.datetime64("NaT"), dtype="datetime64[s]")
    later = rng.random(n_a) < 0.06
    death_at = np.where(died, disch, np.where(later, disch + _hours(rng.uniform(24 * 30, 24 * 300, n_a)), np.datetime64("NaT")))
    for i in np.flatnonzero(~np.isnat(death_at)):
        p = adm_pat[i]
        if np.isnat(dod[p]) or death_at[i] > dod[p]:
            dod[p] = death_at[i]

    patients = pd.DataFrame({
        "subject_id": subj, "gender": gender, "anchor_age": age, "anchor_year": anchor_year,
        "anchor_year_group": np.array(YEAR_GROUPS)[group_idx],
        "dod": np.where(np.isnat(dod), "", np.datetime_as_string(dod, unit="D")),
    })
    ed = rng.random(n_a) < 0.6
    admissions = pd.DataFrame({
        "subject_id": subj[adm_pat], "hadm_id": hadm, "admittime": _fmt(admit), "dischtime": _fmt(disch),
        "deathtime": np.where(np.isnat(deathtime), "", _fmt(np.where(np.isnat(deathtime), disch, deathtime))),
        "admission_type": rng.choice(["EW EMER.", "URGENT", "ELECTIVE", "DIRECT EMER.", "OBSERVATION ADMIT"], n_a),
        "admit_provider_id": [f"P{v:05X}" for v in rng.integers(0, 16**5, n_a)],
        "admission_location": np.where(ed, "EMERGENCY ROOM", rng.choice(["TRANSFER FROM HOSPITAL", "PHYSICIAN REFERRAL"], n_a)),
        "discharge_location": np.where(died & ~by_dod_only, "DIED", rng.choice(["HOME", "HOME HEALTH CARE", "SKILLED NURSING FACILITY", "REHAB"], n_a)),
        "insurance": rng.choice(["Medicare", "Medicaid", "Other"], n_a),
        "language": rng.choice(["ENGLISH", "ENGLISH", "ENGLISH", "?"], n_a),
        "marital_status": rng.choice(["MARRIED", "SINGLE", "WIDOWED", "DIVORCED", ""], n_a),
        "race": rng.choice(RACES, n_a),
        "edregtime": np.where(ed, _fmt(admit - _hours(rng.uniform(2, 8, n_a))), ""),
        "edouttime": np.where(ed, _fmt(admit + _hours(0.2)), ""),
        "hospital_expire_flag": (died & ~by_dod_only).astype(int),
    })
    icustays = pd.DataFrame({
        "subject_id": subj[adm_pat[stay_adm]], "hadm_id": hadm[stay_adm], "stay_id": stay_id,
        "first_careunit": np.array(CAREUNITS)[unit], "last_careunit": np.array(CAREUNITS)[last_unit],
        "intime": _fmt(intime), "outtime": _fmt(outtime), "los": np.round(icu_hours / 24, 4),
    })

    # --- diagnoses: one code per positive phenotype plus unrelated codes ------------------
    version = np.where(group_idx[adm_pat] < 2, 9, np.where(group_idx[adm_pat] > 2, 10, rng.choice([9, 10], n_a)))
    prob = sigmoid(b[None, :] + h_adm @ w.T)
    positive = rng.random(prob.shape) < prob
    diag_rows = []
    for i in range(n_a):
        v = int(version[i])
        chosen = [rng.choice(codes[v][names[k]]) for k in np.flatnonzero(positive[i])]
        chosen += list(rng.choice(FILLER_CODES[v], rng.integers(1, 3), replace=False))
        order = rng.permutation(len(chosen))
        for seq, j in enumerate(order, start=1):
            diag_rows.append((subj[adm_pat[i]], hadm[i], seq, str(chosen[j]), v))
    diagnoses = pd.DataFrame(diag_rows, columns=COLUMNS["hosp/diagnoses_icd"])

    chartevents = _chartevents(rng, icustays, intime, outtime, h_adm[stay_adm])
    stays = pd.DataFrame({"subject_id": icustays["subject_id"], "hadm_id": icustays["hadm_id"],
                          "stay_id": stay_id, "intime": intime, "outtime": outtime})
    for k in range(N_FACTORS):
        stays[f"h{k}"] = h_adm[stay_adm][:, k]
    tables = {"hosp/patients": patients, "hosp/admissions": admissions, "hosp/diagnoses_icd": diagnoses,
              "icu/icustays": icustays, "icu/chartevents": chartevents}
    return Chunk(tables, stays)


def _chartevents(rng, icustays: pd.DataFrame, intime, outtime, h: np.ndarray) -> pd.DataFrame:
    """Hourly-ish charting from 6 h before intime to 60 h after (or the end of the stay)."""
    n_s = len(icustays)
    stay_hours = (outtime - intime).astype("timedelta64[s]").astype(float) / 3600
    end = np.minimum(stay_hours, 60.0)
    start = -6
    n_h = np.maximum(np.ceil(end - start).astype(int), 1)
    s_idx = np.repeat(np.arange(n_s), n_h)
    hour = np.arange(n_h.sum()) - np.repeat(np.cumsum(n_h) - n_h, n_h) + start
    arterial = rng.random(n_s) < 0.45
    fahrenheit = rng.random(n_s) < 0.7
    intubated = rng.random(n_s) < 0.12
    parts = []

    def emit(rows, itemid, value, valuenum, uom):
        parts.append(pd.DataFrame({"s": s_idx[rows], "hour": hour[rows], "itemid": itemid,
                                   "value": value, "valuenum": valuenum, "valueuom": uom}))

    for name, v in VITALS.items():
        rows = np.flatnonzero(rng.random(len(hour)) < v.p_hour)
        hs = h[s_idx[rows]]
        x = v.base + hs @ np.array(v.weights) + v.drift * hour[rows] / 48 + v.noise * rng.normal(size=len(rows))
        x = np.clip(x, v.low, v.high)
        if name in ("sbp", "dbp", "mbp"):
            item = np.where(arterial[s_idx[rows]], np.where(rng.random(len(rows)) < 0.15, v.itemids[2], v.itemids[0]), v.itemids[1])
        elif name == "temperature":
            f = fahrenheit[s_idx[rows]]
            item = np.where(f, 223761, 223762)
            x = np.where(f, x * 9 / 5 + 32, x)
        else:
            item = np.where(rng.random(len(rows)) < 0.85, v.itemids[0], v.itemids[-1])
        x = np.round(x, 1)
        uom = np.array([next(i[4] for i in D_ITEMS if i[0] == it) for it in item], dtype=object) if len(item) else []
        if name == "spo2":  # some monitors chart a fraction
            frac = rng.random(len(rows)) < 0.05
            x = np.where(frac, np.round(x / 100, 3), x)
        quirk = rng.random(len(rows))
        x = np.where(quirk < 0.003, PLACEHOLDER, x)  # placeholder values
        x = np.where((quirk >= 0.003) & (quirk < 0.006), -x if name != "spo2" else 180.0, x)  # impossible values
        emit(rows, item, x.astype(str), x, uom)

    # GCS components as text, usually charted together
    rows = np.flatnonzero(rng.random(len(hour)) < 0.25)
    severity = np.maximum(0.9 * h[s_idx[rows], 2] + 0.35 * rng.normal(size=len(rows)), 0)
    scores = {220739: np.clip(4 - np.round(1.1 * severity), 1, 4),
              223900: np.clip(5 - np.round(1.5 * severity), 1, 5),
              223901: np.clip(6 - np.round(1.7 * severity), 1, 6)}
    for itemid, score in scores.items():
        keep = rng.random(len(rows)) > 0.08  # sometimes one component is missing
        text = np.array([GCS_TEXT[itemid][int(s)] for s in score], dtype=object)
        if itemid == 223900:
            text = np.where(intubated[s_idx[rows]], "No Response-ETT", text)
        emit(rows[keep], itemid, text[keep], np.nan, "")

    # itemids the ETL must ignore
    for itemid, choices in NOISE_TEXT.items():
        rows = np.flatnonzero(rng.random(len(hour)) < 0.3)
        emit(rows, itemid, rng.choice(choices, len(rows)), np.nan, "")
    for itemid, (lo, hi) in NOISE_NUMERIC.items():
        rows = np.flatnonzero(rng.random(len(hour)) < 0.3)
        x = np.round(rng.uniform(lo, hi, len(rows)), 1)
        emit(rows, itemid, x.astype(str), x, next(i[4] for i in D_ITEMS if i[0] == itemid))

    ev = pd.concat(parts, ignore_index=True)
    minutes = rng.integers(0, 60, len(ev))
    seconds = (ev["hour"].to_numpy() * 3600 + minutes * 60).astype("timedelta64[s]")
    chart = intime[ev["s"].to_numpy()] + seconds
    store = chart + (rng.integers(1, 40, len(ev)) * 60).astype("timedelta64[s]")
    ev = ev.assign(chart=chart).sort_values(["s", "chart", "itemid"], kind="stable")
    idx = ev["s"].to_numpy()
    numeric = ev["valuenum"].to_numpy(dtype=float)
    out = pd.DataFrame({
        "subject_id": icustays["subject_id"].to_numpy()[idx],
        "hadm_id": icustays["hadm_id"].to_numpy()[idx],
        "stay_id": icustays["stay_id"].to_numpy()[idx],
        "caregiver_id": rng.integers(10_000, 99_999, len(ev)),
        "charttime": _fmt(ev["chart"].to_numpy()),
        "storetime": _fmt(store[ev.index.to_numpy()]),
        "itemid": ev["itemid"].to_numpy(),
        "value": ev["value"].to_numpy(),
        "valuenum": numeric,
        "valueuom": ev["valueuom"].to_numpy(),
        "warning": ((numeric == PLACEHOLDER) | (numeric < 0)).astype(int),
    })
    return out


def d_items_table() -> pd.DataFrame:
    rows = []
    for itemid, label, abbr, category, unit, ptype in D_ITEMS:
        rows.append((itemid, label, abbr, "chartevents", category, unit, ptype, "", ""))
    return pd.DataFrame(rows, columns=COLUMNS["icu/d_items"])


def d_icd_table() -> pd.DataFrame:
    names, codes = load_phenotype_codes()
    rows = set()
    for version in (9, 10):
        for name in names:
            for code in codes[version].get(name, []):
                rows.add((code, version, f"{name} [{code}]"))
        for code in FILLER_CODES[version]:
            rows.add((code, version, f"Status/history code [{code}]"))
    return pd.DataFrame(sorted(rows, key=lambda r: (r[1], r[0])), columns=COLUMNS["hosp/d_icd_diagnoses"])


def write_mimic_export(out_dir: Path, n_subjects: int, seed: int, scale: int = 1, chunk_size: int = 200,
                       on_chunk=None) -> tuple[dict[str, int], pd.DataFrame]:
    """Write hosp/ and icu/ under `out_dir`; return row counts and the stays of the first `n_subjects`.

    With `scale` K the cohort has K x n_subjects patients, generated and written chunk by
    chunk (flat memory); the returned stays (for the CXR export) cover the first
    `n_subjects` patients only, so images stay bounded.
    """
    out_dir = Path(out_dir)
    (out_dir / "hosp").mkdir(parents=True, exist_ok=True)
    (out_dir / "icu").mkdir(parents=True, exist_ok=True)
    writers = {name: GzipCsvWriter(out_dir / f"{name}.csv.gz", cols, compresslevel=6 if scale == 1 else 1)
               for name, cols in COLUMNS.items() if name not in ("icu/d_items", "hosp/d_icd_diagnoses")}
    writers["factors"] = factor_writer(out_dir, compresslevel=6 if scale == 1 else 1)  # synthetic only: factors.py
    total = n_subjects * scale
    stays_for_cxr = []
    try:
        for index, start in enumerate(range(0, total, chunk_size)):
            n = min(chunk_size, total - start)
            chunk = generate_chunk(seed, index, 10_000_000 + start, n)
            for name, frame in chunk.tables.items():
                writers[name].write(frame)
            write_stay_factors(writers["factors"], chunk.stays)
            if start < n_subjects:
                stays_for_cxr.append(chunk.stays[chunk.stays["subject_id"] < 10_000_000 + n_subjects])
            if on_chunk:
                on_chunk(n, len(chunk.tables["icu/chartevents"]))
    finally:
        for writer in writers.values():
            writer.close()
    from .csvgz import write_csv_gz

    write_csv_gz(out_dir / "icu/d_items.csv.gz", d_items_table())
    write_csv_gz(out_dir / "hosp/d_icd_diagnoses.csv.gz", d_icd_table())
    write_label_model(out_dir, load_phenotype_codes()[0])
    counts = {name: w.rows for name, w in writers.items() if name != "factors"}
    write_synthetic_marker(out_dir, "mimic-iv", seed, subjects=n_subjects, scale=scale)
    return counts, pd.concat(stays_for_cxr, ignore_index=True)
