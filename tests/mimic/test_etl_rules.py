"""One rule per test, each on a few hand-written rows: the EHR window, the GCS total, the chest
film window, age at admission and the training statistics.

These complement the golden export in golden/ with the boundary cases it lacks: an event
exactly at intime, an hour with two of three GCS components, a film that precedes intime,
an admission in a later year than anchor_year, a patient aged exactly 18.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from clinfuse.etl.mimic.cohort import in_hospital_mortality, join_stays, select_cohort
from clinfuse.etl.mimic.cxr import pair_latest_ap, study_datetime
from clinfuse.etl.mimic.ehr import connect, derive_totals, extract_ehr_values, load_variables
from clinfuse.etl.normalize import forward_fill, impute_and_scale, train_statistics
from clinfuse.pipeline.settings.etl_mimic import MimicEtlSettings

DEFAULTS = MimicEtlSettings()  # the rules below are the default settings' rules

INTIME = pd.Timestamp("2150-01-01 10:00")
HEADER = "subject_id,hadm_id,stay_id,caregiver_id,charttime,storetime,itemid,value,valuenum,valueuom,warning\n"
CHART_ROWS = [
    # heart rate: 58 one minute before intime (outside), 61 exactly at intime (bin 0)
    ("2150-01-01 09:59:00", 220045, "58", "58"),
    ("2150-01-01 10:00:00", 220045, "61", "61"),
    # hour 1: eye + motor, no verbal -> no total; hour 2: all three -> total
    ("2150-01-01 11:10:00", 220739, "Spontaneously", ""),
    ("2150-01-01 11:10:00", 223901, "Obeys Commands", ""),
    ("2150-01-01 12:10:00", 220739, "To Speech", ""),
    ("2150-01-01 12:10:00", 223900, "Confused", ""),
    ("2150-01-01 12:10:00", 223901, "Localizes Pain", ""),
    # hour 3: SpO2 charted as a fraction (x 100); a respiratory rate of 0.5 is not a fraction
    ("2150-01-01 13:10:00", 220277, "0.95", "0.95"),
    ("2150-01-01 13:10:00", 220210, "0.5", "0.5"),
]


@pytest.fixture(scope="module")
def binned(tmp_path_factory):
    path = tmp_path_factory.mktemp("chart") / "chartevents.csv"
    path.write_text(HEADER + "".join(f"1,2,3,1,{t},,{i},{v},{n},,0\n" for t, i, v, n in CHART_ROWS))
    variables = load_variables()
    stays = pd.DataFrame({"stay_id": [3], "intime": [INTIME]})
    values, _ = extract_ehr_values(connect("256MB", 1), path, stays, variables, DEFAULTS.window_hours)
    assert values.dtype == np.float32  # the tensor's dtype, as the cache stores it
    return derive_totals(values, variables)[0], variables.names


def test_only_a_channel_declared_fraction_to_percent_turns_fractions_into_percent(binned):
    values, names = binned
    assert values[3, names.index("spo2")] == pytest.approx(95.0)
    assert values[3, names.index("resp_rate")] == 0.5


def test_duckdb_spills_to_the_temp_directory_it_is_given(tmp_path):
    con = connect("256MB", 1, temp_directory=str(tmp_path / "spill"))
    assert con.execute("SELECT current_setting('temp_directory')").fetchone()[0] == str(tmp_path / "spill")


def test_a_memory_limit_that_is_not_a_size_is_refused_naming_the_setting():
    with pytest.raises(ValueError, match=r"^memory_limit must be a size such as '2GB' or '512MB', got 'lots'$"):
        connect("lots", 1)


def test_ehr_window_starts_at_intime_inclusive(binned):
    values, names = binned
    assert values[0, names.index("heart_rate")] == 61.0  # at intime: bin 0 (the 09:59 value is outside)
    assert np.isnan(values[1:, names.index("heart_rate")]).all()


def test_gcs_total_needs_all_three_components_in_the_hour(binned):
    values, names = binned
    eye, verbal, motor, total = (names.index(n) for n in ("gcs_eye", "gcs_verbal", "gcs_motor", "gcs_total"))
    # hour 1: eye 4 + motor 6 = 10 would be inside the valid range [3, 15], yet verbal is missing
    assert (values[1, eye], values[1, motor]) == (4.0, 6.0) and np.isnan(values[1, verbal])
    assert np.isnan(values[1, total])
    # hour 2: To Speech 3 + Confused 4 + Localizes Pain 5
    assert values[2, total] == 12.0


def meta(rows):
    m = pd.DataFrame(rows, columns=["subject_id", "dicom_id", "study_id", "ViewPosition", "StudyDate", "StudyTime"])
    m["study_datetime"] = study_datetime(m["StudyDate"], m["StudyTime"])
    return m


def test_chest_film_before_intime_is_never_paired():
    stays = pd.DataFrame({"stay_id": [1, 2], "subject_id": [7, 8], "intime": [INTIME, INTIME]})
    m = meta([
        (7, "day_before", 1, "AP", 21491231, 120000.0),  # stay 1's only AP film: a day before intime
        (8, "at_intime", 2, "AP", 21500101, 100000.0),  # stay 2: exactly at intime (inside)
        (8, "minute_before", 3, "AP", 21500101, 95900.0),
    ])
    pairs = pair_latest_ap(stays, m, DEFAULTS.cxr_window_hours)
    assert pairs["stay_id"].tolist() == [2] and pairs["dicom_id"].tolist() == ["at_intime"]


def cohort_from(patients_rows, admit_year):
    patients = pd.DataFrame(patients_rows, columns=["subject_id", "gender", "anchor_age", "anchor_year", "dod"])
    n = len(patients)
    admissions = pd.DataFrame({"subject_id": patients["subject_id"], "hadm_id": patients["subject_id"] + 100,
                               "admittime": [f"{admit_year}-03-01 00:00:00"] * n,
                               "dischtime": [f"{admit_year}-03-09 00:00:00"] * n, "deathtime": [None] * n,
                               "race": ["WHITE"] * n})
    icustays = pd.DataFrame({"subject_id": patients["subject_id"], "hadm_id": admissions["hadm_id"],
                             "stay_id": patients["subject_id"] + 200, "first_careunit": "MICU",
                             "last_careunit": "MICU", "intime": [f"{admit_year}-03-01 10:00:00"] * n,
                             "outtime": [f"{admit_year}-03-05 10:00:00"] * n})
    return join_stays(patients, admissions, icustays)


def test_age_is_anchor_age_shifted_by_the_years_since_anchor_year():
    stays = cohort_from([(1, "F", 16, 2150, None), (2, "M", 70, 2148, None)], admit_year=2152)
    assert stays.set_index("subject_id")["age"].to_dict() == {1: 18, 2: 74}


def test_a_patient_aged_exactly_18_at_admission_is_an_adult():
    # anchor_age 16 in 2150, admitted in 2152 -> 18: kept; anchor_age 17 in 2152 -> 17: excluded
    stays = pd.concat([cohort_from([(1, "F", 16, 2150, None)], 2152), cohort_from([(2, "M", 17, 2152, None)], 2152)])
    kept, steps = select_cohort(stays.reset_index(drop=True), "phenotype", DEFAULTS.min_age,
                                DEFAULTS.min_stay_hours)
    assert kept["subject_id"].tolist() == [1]
    adults = next(step for step in steps if step["step"] == "adults")
    assert adults == {"step": "adults", "reason": "age at admission < 18", "excluded": 1, "remaining": 1}


# Three samples x two hours x one channel; rows 0 and 1 are training rows. Observed training values
# are 1, 2 and 6: median 2, mean 3, population std (ddof=0) sqrt(((1-3)^2 + (2-3)^2 + (6-3)^2) / 3)
# = sqrt(14/3). Row 2 (not training) holds 100, which must not move any statistic.
VALUES = np.array([[[1.0], [6.0]], [[np.nan], [2.0]], [[100.0], [np.nan]]])
TRAIN = np.array([0, 1])


def test_training_statistics_are_median_mean_and_population_std_of_training_rows():
    stats = train_statistics(VALUES, TRAIN, ["x"], {"x": (0.0, 1.0)})["x"]
    assert stats == {"median": 2.0, "mean": 3.0, "std": pytest.approx(np.sqrt(14 / 3), abs=1e-12), "n_observed": 3}


def test_only_a_constant_training_channel_takes_its_fallback_scale_a_small_spread_is_kept():
    # channel "flat": 5, 5, 5 (std 0 -> the channel's fallback scale 2.5, values only centred);
    # "narrow": 0.1, 0.2, 0.3 (std < 1 kept)
    values = np.array([[[5.0, 0.1], [5.0, 0.2]], [[5.0, 0.3], [np.nan, np.nan]]])
    stats = train_statistics(values, np.array([0, 1]), ["flat", "narrow"], {"flat": (0.0, 2.5), "narrow": (0.0, 9.0)})
    assert stats["flat"]["std"] == 2.5 and stats["flat"]["mean"] == 5.0
    assert stats["narrow"]["std"] == pytest.approx(np.std([0.1, 0.2, 0.3]), abs=1e-12)
    out = impute_and_scale(values, stats, ["flat", "narrow"])
    assert out[0, 0, 0] == 0.0 and out[0, 0, 1] == pytest.approx(-0.1 / np.std([0.1, 0.2, 0.3]), rel=1e-6)


def test_a_training_spread_of_exactly_1e_8_counts_as_constant():
    # 0 and 2e-8: mean 1e-8, std exactly 1e-8 in float64 -> not above the floor, so the fallback scale
    values = np.array([[[0.0]], [[2e-8]]])
    assert float(np.std([0.0, 2e-8])) == 1e-8
    assert train_statistics(values, np.array([0, 1]), ["x"], {"x": (0.0, 4.0)})["x"]["std"] == 4.0


def test_forward_fill_carries_the_latest_observation_of_its_own_sample_and_channel():
    nan = np.nan
    values = np.array([[[nan, 1.0], [5.0, nan], [nan, nan], [7.0, 2.0], [nan, nan]],
                       [[nan, nan], [nan, nan], [3.0, nan], [nan, nan], [nan, 4.0]]])  # [2, 5, 2]
    expected = np.array([[[nan, 1.0], [5.0, 1.0], [5.0, 1.0], [7.0, 2.0], [7.0, 2.0]],
                         [[nan, nan], [nan, nan], [3.0, nan], [3.0, nan], [3.0, 4.0]]])
    np.testing.assert_array_equal(forward_fill(values), expected)


def test_gaps_before_the_first_observation_are_imputed_with_the_training_median():
    stats = train_statistics(VALUES, TRAIN, ["x"], {"x": (0.0, 1.0)})
    out = impute_and_scale(forward_fill(VALUES), stats, ["x"])
    std = np.sqrt(14 / 3)
    # row 1 hour 0 is a gap before any observation: median 2 -> (2 - 3) / std; row 2 hour 1 carries 100 forward
    expected = np.array([[(1 - 3) / std, (6 - 3) / std], [(2 - 3) / std, (2 - 3) / std], [(100 - 3) / std] * 2])
    np.testing.assert_allclose(out[..., 0], expected, rtol=1e-6)
    assert out.dtype == np.float32


def test_in_hospital_death_is_a_deathtime_or_a_dod_date_within_the_admission():
    admit, disch = pd.Timestamp("2150-03-01 14:00"), pd.Timestamp("2150-03-09 08:00")
    rows = [  # deathtime, dod, expected
        (admit, None, 1),  # death at the admission time
        (disch, None, 1),  # death at the discharge time
        (pd.Timestamp("2150-03-09 09:00"), None, 0),  # an hour after discharge
        (pd.Timestamp("2150-03-01 13:00"), None, 0),  # before the admission (inconsistent record)
        (None, "2150-03-01", 1),  # dod on the admission date, earlier in the day than admittime
        (None, "2150-03-09", 1),  # dod on the discharge date
        (None, "2150-02-28", 0),  # dod the day before admission
        (None, "2151-06-30", 0),  # died the next year: not in hospital
        (None, None, 0),
    ]
    stays = pd.DataFrame({"admittime": admit, "dischtime": disch,
                          "deathtime": pd.to_datetime([r[0] for r in rows]),
                          "dod": pd.to_datetime([r[1] for r in rows])})
    got = in_hospital_mortality(stays)
    assert got.tolist() == [r[2] for r in rows]
    assert got.name == "in_hospital_mortality" and got.dtype == np.int8


def test_mortality_cohort_keeps_a_stay_of_exactly_48_hours_and_counts_every_exclusion():
    stays = cohort_from([(1, "F", 60, 2150, None), (2, "M", 60, 2150, None), (3, "F", 60, 2150, "bad date")], 2150)
    stays["outtime"] = stays["intime"] + pd.to_timedelta([48, 47.99, 72], unit="h")
    kept, steps = select_cohort(stays, "mortality", DEFAULTS.min_age, DEFAULTS.min_stay_hours)
    assert kept["subject_id"].tolist() == [1, 3] and list(kept.index) == [0, 1] and "index" not in kept
    assert kept["sex"].tolist() == ["F", "F"] and kept["dod"].isna().all()  # an unparsable date is NaT
    assert steps == [
        {"step": "ICU stays in icustays", "reason": "", "excluded": 0, "remaining": 3},
        {"step": "plausible age", "reason": "age at admission missing or outside 0-120", "excluded": 0, "remaining": 3},
        {"step": "consistent ICU times", "reason": "ICU outtime before intime", "excluded": 0, "remaining": 3},
        {"step": "adults", "reason": "age at admission < 18", "excluded": 0, "remaining": 3},
        {"step": "one ICU stay per admission", "reason": "admission has more than one ICU stay", "excluded": 0,
         "remaining": 3},
        {"step": "no careunit transfer", "reason": "first_careunit != last_careunit", "excluded": 0, "remaining": 3},
        {"step": "ICU stay >= 48 h", "reason": "ICU stay shorter than 48 h", "excluded": 1, "remaining": 2},
    ]


def test_the_lowest_and_highest_gcs_totals_are_kept():
    variables = load_variables()
    names = variables.names
    values = np.full((1, 2, len(names)), np.nan)
    for hour, (eye, verbal, motor) in enumerate([(1, 1, 1), (4, 5, 6)]):  # deepest coma 3, fully alert 15
        values[0, hour, [names.index("gcs_eye"), names.index("gcs_verbal"), names.index("gcs_motor")]] = eye, verbal, motor
    total = derive_totals(values, variables)[0, :, names.index("gcs_total")]
    assert total.tolist() == [3.0, 15.0]
